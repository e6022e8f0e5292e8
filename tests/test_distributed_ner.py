"""NER fine-tuning under MirroredStrategy on 2 logical CPU devices equals one device.

The run goes through the NER data path users get: kerasllm's generated corpus, a WordPiece
vocabulary trained on it, windows with first-sub-word labels, length-bucketed batches of
different shapes (the last one partial), the AdamW schedule and the masked token loss. Dropout
is 0 so that both runs are deterministic; the same global batch is split over the replicas.
Gradients are clipped to a small per-variable norm so that clipping acts on every step: an
embedding's gradient rows are grouped differently on one device and on two replicas, and the
clipped update must not depend on that grouping.
"""
import textwrap

import numpy as np
import pytest

from tests._subprocess import run_result_script

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from kerasllm import training
    from kerasllm.data import LabelMap, generate_ner_corpus
    from kerasllm.data.ner_dataset import encode_sentences, make_dataset
    from kerasllm.evaluation import ner_scores
    from kerasllm.models import get_preset, token_classifier
    from kerasllm.tokenizers import WordPieceTokenizer, train_wordpiece_vocab
    from kerasllm.training.ner_finetune import predict_tags

    corpus = generate_ner_corpus(seed=3, num_train=75, num_dev=20, num_test=0)
    train, dev = corpus["train"], corpus["dev"]
    labels = LabelMap.from_sentences(train)
    vocab = train_wordpiece_vocab([" ".join(s.tokens) for s in train], 300)
    tokenizer = WordPieceTokenizer(vocab)
    windows = encode_sentences(train, tokenizer, labels, max_length=24)
    dev_windows = encode_sentences(dev, tokenizer, labels, max_length=24)
    config = get_preset("bert-tiny", vocab_size=len(vocab), hidden_size=32, num_heads=2,
                        intermediate_size=64, max_position=32, dropout=0.0, attention_dropout=0.0)
    training.set_seed(0)
    initial = token_classifier(config, labels.num_labels).get_weights()
    EPOCHS, BATCH = 3, 16

    def run(dist):
        with dist.scope():
            model = token_classifier(config, labels.num_labels)
            model.set_weights(initial)
            steps = EPOCHS * int(np.ceil(len(windows) / BATCH))
            optimizer = training.create_optimizer(1e-3, num_train_steps=steps, warmup_steps=2, clipnorm=0.1)
            model.compile(optimizer=optimizer,
                          loss=training.masked_sparse_categorical_crossentropy(),
                          metrics=[training.masked_accuracy()])
        training.install_train_step(model)
        data = make_dataset(windows, BATCH, shuffle=True, seed=0)
        history = model.fit(data, epochs=EPOCHS, verbose=0).history
        tags, _ = predict_tags(model, dev, dev_windows, labels, batch_size=8)
        return dict(replicas=dist.num_replicas_in_sync, loss=history["loss"],
                    accuracy=history["masked_accuracy"],
                    weights=[w.tolist() for w in model.get_weights()],
                    dev_f1=ner_scores([s.tags for s in dev], tags)["f1"],
                    shapes=sorted({tuple(x["input_ids"].shape) for x, _ in data.as_numpy_iterator()}))

    default = run(training.strategy("default", verbose=False))
    mirrored = run(training.strategy("mirrored", devices=["/cpu:0", "/cpu:1"], verbose=False))
    print("RESULT " + json.dumps(dict(default=default, mirrored=mirrored, n=len(windows))))
    """
)


@pytest.fixture(scope="module")
def runs():
    return run_result_script(SCRIPT)[0]


def test_ner_batches_vary_in_shape_and_end_partial(runs):
    shapes = [tuple(s) for s in runs["default"]["shapes"]]
    assert len({s[1] for s in shapes}) > 1  # length bucketing: several padded lengths
    assert runs["n"] % 16 and any(s[0] == runs["n"] % 16 for s in shapes)  # a partial last batch


def test_mirrored_ner_matches_one_device(runs):
    default, mirrored = runs["default"], runs["mirrored"]
    assert (default["replicas"], mirrored["replicas"]) == (1, 2)
    assert default["loss"][-1] < default["loss"][0]  # it trained
    np.testing.assert_allclose(mirrored["loss"], default["loss"], atol=1e-5)
    np.testing.assert_allclose(mirrored["accuracy"], default["accuracy"], atol=1e-6)
    for got, want in zip(mirrored["weights"], default["weights"]):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    assert mirrored["dev_f1"] == pytest.approx(default["dev_f1"], abs=1e-9)
