"""``--static-shapes``: one fixed batch shape (TPU/XLA), no example lost, the same training.

The reference is the unpadded pipeline itself: the same batches, each padded only to its own
longest example (NER: length-bucketed windows) and the last one partial. Padding every batch to
``[batch_size, max_length]`` with rows that do not count must leave the gradients, hence the
trained weights, unchanged; the padded runs are compiled with ``jit_compile=True`` on the CPU as
a stand-in for a TPU (token labels in a slow test, one label per example in the default suite).
"""
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from typer.testing import CliRunner

from kerasllm import training
from kerasllm.data import LabelMap, generate_ner_corpus
from kerasllm.data.ner_dataset import IGNORE_INDEX, encode_sentences, make_dataset
from kerasllm.models import sequence_classifier, token_classifier
from kerasllm.tokenizers import WordPieceTokenizer, train_wordpiece_vocab
from kerasllm.training.static_shapes import is_static, static_batches
from tests.test_training_helpers import tiny_config, token_batch

BATCH, LENGTH = 8, 24


@pytest.fixture(scope="module")
def ner_windows():
    corpus = generate_ner_corpus(seed=11, num_train=20, num_dev=0, num_test=0)
    train = corpus["train"]
    labels = LabelMap.from_sentences(train)
    tokenizer = WordPieceTokenizer(train_wordpiece_vocab([" ".join(s.tokens) for s in train], 200))
    windows = encode_sentences(train, tokenizer, labels, max_length=LENGTH)
    assert len(windows) % BATCH  # a partial batch exists
    return windows, labels, tokenizer.vocab_size


def test_every_batch_has_one_static_shape_and_keeps_every_example(ner_windows):
    windows, _, _ = ner_windows
    dynamic = make_dataset(windows, BATCH, shuffle=True, seed=0)
    fixed = static_batches(dynamic, BATCH, LENGTH)
    assert not is_static(dynamic) and is_static(fixed)
    assert all(spec.shape == (BATCH, LENGTH) for spec in tf.nest.flatten(fixed.element_spec))
    assert fixed.cardinality() == dynamic.cardinality()
    real_rows = 0
    for (x, y), (fx, fy) in zip(dynamic.as_numpy_iterator(), fixed.as_numpy_iterator()):
        rows, length = y.shape
        for key in x:
            np.testing.assert_array_equal(fx[key][:rows, :length], x[key])
            assert not fx[key][rows:].any() and not fx[key][:, length:].any()
        np.testing.assert_array_equal(fy[:rows, :length], y)
        assert (fy[rows:] == IGNORE_INDEX).all() and (fy[:, length:] == IGNORE_INDEX).all()
        real_rows += int(fx["attention_mask"].any(axis=1).sum())
    assert real_rows == len(windows)


def test_length_multiple_pads_each_batch_to_the_next_multiple_only(ner_windows):
    windows, _, _ = ner_windows
    dynamic = make_dataset(windows, BATCH, shuffle=True, seed=0)
    few = static_batches(dynamic, BATCH, LENGTH, length_multiple=5)
    assert few.element_spec[1].shape.as_list() == [BATCH, None]
    lengths = set()
    for (x, y), (fx, fy) in zip(dynamic.as_numpy_iterator(), few.as_numpy_iterator()):
        rows, length = y.shape
        want = min(LENGTH, -(-length // 5) * 5)  # hand-worked: the next multiple of 5, at most 24
        assert fy.shape == (BATCH, want) and fx["input_ids"].shape == (BATCH, want)
        np.testing.assert_array_equal(fx["input_ids"][:rows, :length], x["input_ids"])
        assert (fy[rows:] == IGNORE_INDEX).all() and (fy[:, length:] == IGNORE_INDEX).all()
        lengths.add(want)
    assert lengths <= {5, 10, 15, 20, 24} and len(lengths) > 1
    with pytest.raises(ValueError, match="length_multiple must be a positive integer"):
        static_batches(dynamic, BATCH, LENGTH, length_multiple=0)


def test_static_batches_rejects_what_it_cannot_pad():
    ids = np.ones((3, 5), np.int32)
    with pytest.raises(ValueError, match="must all be \\[batch, seq\\] .* or all \\[batch\\]"):
        static_batches(tf.data.Dataset.from_tensors(({"input_ids": ids}, {"a": ids, "b": ids[:, 0]})), 4, 8)
    with pytest.raises(ValueError, match="batches of 3 rows exceed batch_size=2"):
        static_batches(tf.data.Dataset.from_tensors(({"input_ids": ids}, ids)), 2, 8)
    unknown_rows = tf.data.Dataset.from_tensor_slices(({"input_ids": ids}, ids)).batch(3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more rows than batch_size=2"):
        list(static_batches(unknown_rows, 2, 8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="longer than length=4"):
        list(static_batches(tf.data.Dataset.from_tensors(({"attention_mask": ids}, ids)), 4, 4))


class _BatchLogs(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append(dict(logs))


def _fit(model_fn, initial, data, loss, metric, epochs=2, static=False, xla=False):
    model = model_fn()
    model.set_weights(initial)
    metrics = {"weighted_metrics" if static else "metrics": [metric()]}
    optimizer = training.create_optimizer(3e-3, num_train_steps=20, warmup_steps=2, clipnorm=0.5)
    model.compile(optimizer=optimizer, loss=loss, jit_compile=xla, **metrics)
    batches = _BatchLogs()
    history = model.fit(data, epochs=epochs, verbose=0, callbacks=[batches]).history
    return model.get_weights(), history, batches.logs


@pytest.mark.slow  # ~25 s of CPU: the bucketed run traces several shapes, XLA compiles a step
def test_static_xla_training_equals_bucketed_training(ner_windows):
    windows, labels, vocab_size = ner_windows
    config = tiny_config(vocab_size=vocab_size, max_position=LENGTH)
    training.set_seed(0)
    initial = token_classifier(config, labels.num_labels).get_weights()
    dynamic = make_dataset(windows, BATCH, shuffle=True, seed=0)
    loss = training.masked_sparse_categorical_crossentropy()

    def model_fn():
        return token_classifier(config, labels.num_labels)

    want, want_history, _ = _fit(model_fn, initial, dynamic, loss, training.masked_accuracy)
    got, got_history, _ = _fit(
        model_fn, initial, static_batches(dynamic, BATCH, LENGTH), loss, training.masked_accuracy, static=True, xla=True
    )
    assert want_history["loss"][-1] < want_history["loss"][0]  # it trained
    np.testing.assert_allclose(got_history["masked_accuracy"], want_history["masked_accuracy"], atol=1e-6)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_per_example_labels_get_weights_that_keep_the_mean_under_xla():
    features, _ = token_batch(n=13, seq=6, seed=4)
    y = np.random.default_rng(4).integers(0, 3, 13).astype(np.int32)
    dynamic = tf.data.Dataset.from_tensor_slices((features, y)).batch(5)  # 5, 5, 3
    fixed = static_batches(dynamic, 5, 8)
    assert is_static(fixed) and len(fixed.element_spec) == 3
    *_, weights = list(fixed.as_numpy_iterator())[-1]
    np.testing.assert_allclose(weights, [5 / 3] * 3 + [0, 0])

    config = tiny_config(max_position=8)
    training.set_seed(1)
    initial = sequence_classifier(config, 3).get_weights()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def model_fn():
        return sequence_classifier(config, 3)

    def accuracy():
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    want, _, want_batches = _fit(model_fn, initial, dynamic, loss, accuracy)
    got, got_history, _ = _fit(model_fn, initial, fixed, loss, accuracy, static=True, xla=True)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=2e-5)  # every step's loss and gradient were unchanged
    # The padded epoch weighs each batch alike (B/n per real row): its accuracy is the mean of
    # the batches' accuracies, recovered from the unpadded run's running means.
    rows = [5, 5, 3]
    for epoch in range(2):
        running = [logs["accuracy"] for logs in want_batches[3 * epoch : 3 * epoch + 3]]
        seen = np.cumsum(rows)
        correct = np.diff(np.concatenate([[0.0], np.asarray(running) * seen]))
        assert got_history["accuracy"][epoch] == pytest.approx(np.mean(correct / rows), abs=1e-6)


@pytest.mark.slow
def test_finetune_static_shapes_option_reaches_the_training(tmp_path):
    from kerasllm.data import write_conll
    from kerasllm.training.ner_finetune import NerFinetuneConfig, run_ner_finetune

    data = generate_ner_corpus(seed=2, num_train=24, num_dev=8, num_test=0)
    for name in ("train", "dev"):
        write_conll(tmp_path / f"{name}.conll", data[name])
    lines = []
    metrics = run_ner_finetune(
        NerFinetuneConfig(
            train=str(tmp_path / "train.conll"), dev=str(tmp_path / "dev.conll"), out=str(tmp_path / "out"),
            epochs=1, batch_size=8, max_length=24, vocab_size=200, dropout=0.0, export=False,
            static_shapes=True, xla=True, steps_per_execution=2,
        ),
        log=lines.append,
    )
    assert "speed: mixed precision none, 2 step(s) per execution, static shapes on, fused element-wise ops off" in lines
    assert metrics["epochs_run"] == 1 and np.isfinite(metrics["history"]["loss"][0])
    assert 0 <= metrics["dev"]["f1"] <= 1


def test_tpu_strategy_without_a_tpu_fails_within_seconds(tmp_path, monkeypatch):
    from kerasllm.cli.main import app

    for key in ("TPU_NAME", "COLAB_TPU_ADDR", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_ACCELERATOR_TYPE"):
        monkeypatch.delenv(key, raising=False)
    started = time.monotonic()
    result = CliRunner().invoke(app, ["finetune", "ner", "--strategy", "tpu", "--out", str(tmp_path / "out")])
    assert time.monotonic() - started < 30
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "--strategy tpu: no TPU found: looked for $TPU_NAME (unset) and local TPU devices (none)" in text
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_static_shapes_docstring_examples():
    import doctest

    import kerasllm.training.static_shapes as module

    result = doctest.testmod(module, extraglobs=vars(module).copy(), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.fixture
def amx(monkeypatch):
    """``amx(True/False)``: make kerasllm.training.fusion see (or not) an AMX CPU."""
    from kerasllm.training import fusion

    def set_amx(present):
        monkeypatch.setenv("KERASLLM_AMX", "1" if present else "0")
        fusion.cpu_has_amx_bf16.cache_clear()

    yield set_amx
    monkeypatch.delenv("KERASLLM_AMX")
    fusion.cpu_has_amx_bf16.cache_clear()


def test_accelerator_settings_off_a_tpu_keep_explicit_values(amx):
    from kerasllm.training import accelerator_settings, strategy

    dist = strategy("default", verbose=False)
    amx(False)
    assert accelerator_settings(dist, "auto", 0, False, steps_per_epoch=5) == ("none", 1, False, False)
    assert accelerator_settings(dist, "auto", fuse_elementwise="auto") == ("none", 1, False, False)
    assert accelerator_settings(dist, "bfloat16", 4, True) == ("bfloat16", 4, True, False)
    assert accelerator_settings(dist, "bfloat16", fuse_elementwise="on").fuse_elementwise
    amx(True)
    assert accelerator_settings(dist, "auto", fuse_elementwise="auto") == ("bfloat16", 1, False, True)
    # XLA's CPU products do not use AMX: under --xla auto stays float32 and nothing is fused
    assert accelerator_settings(dist, "auto", xla=True, fuse_elementwise="auto") == ("none", 1, False, False)
    assert accelerator_settings(dist, "none", fuse_elementwise="auto") == ("none", 1, False, False)
    assert accelerator_settings(dist, "bfloat16", fuse_elementwise="off") == ("bfloat16", 1, False, False)
    # small models stay float32: compiling their clusters costs more than AMX saves
    assert accelerator_settings(dist, "auto", fuse_elementwise="auto", width=128) == ("none", 1, False, False)
    assert accelerator_settings(dist, "auto", fuse_elementwise="auto", width=384) == ("bfloat16", 1, False, True)
    assert accelerator_settings(dist, "bfloat16", fuse_elementwise="auto", width=128) == ("bfloat16", 1, False, False)
    with pytest.raises(ValueError, match="already compiled whole with --xla"):
        accelerator_settings(dist, "bfloat16", xla=True, fuse_elementwise="on")
    with pytest.raises(ValueError, match="fuse_elementwise must be auto, on or off"):
        accelerator_settings(dist, "bfloat16", fuse_elementwise="yes")
    with pytest.raises(ValueError, match="steps_per_execution must be >= 1"):
        accelerator_settings(dist, "auto", -2)
