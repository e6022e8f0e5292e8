"""BERT pretraining (masked LM + next sentence) under MirroredStrategy on 2 logical CPUs equals one device.

The batches are built here, fixed: about 15% of the real tokens replaced by ``[MASK]`` with their
original id as label and -100 everywhere else, padding of different lengths, segment ids and a
next-sentence label per pair. The MLM head is tied to the token embedding, so the embedding
receives both a sparse gradient (the lookup) and a dense one (the output projection); gradients
are clipped per variable to a norm small enough that clipping acts on the first step (checked),
so a clipped update that depended on how the replicas split the batch would show. Dropout is 0;
the global batch of 8 splits into 4 per replica. Both runs start from the same weights (seeded
with ``training.set_seed``, which seeds tf_keras's initialisers).
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
    import tf_keras as keras
    from kerasllm import training
    from kerasllm.models import bert_pretraining, get_preset

    VOCAB, SEQ, N, BATCH, EPOCHS, MASK_ID, CLIPNORM = 60, 12, 32, 8, 2, 3, 0.1
    rng = np.random.default_rng(0)
    lengths = rng.integers(6, SEQ + 1, N)
    real = np.arange(SEQ)[None, :] < lengths[:, None]
    ids = np.where(real, rng.integers(5, VOCAB, (N, SEQ)), 0).astype(np.int32)
    segments = (np.arange(SEQ)[None, :] >= (lengths // 2)[:, None]) & real
    masked = real & (rng.random((N, SEQ)) < 0.15)
    masked[np.arange(N), rng.integers(1, 5, N)] = True  # at least one masked token per example
    mlm_labels = np.where(masked, ids, -100).astype(np.int32)
    inputs = {"input_ids": np.where(masked, MASK_ID, ids).astype(np.int32),
              "attention_mask": real.astype(np.int32), "token_type_ids": segments.astype(np.int32)}
    labels = {"mlm_logits": mlm_labels, "nsp_logits": rng.integers(0, 2, N).astype(np.int32)}
    data = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(BATCH)

    config = get_preset("bert-tiny", vocab_size=VOCAB, hidden_size=32, num_layers=1, num_heads=2,
                        intermediate_size=64, max_position=16, dropout=0.0, attention_dropout=0.0)
    training.set_seed(0)
    initial = bert_pretraining(config).get_weights()

    def compiled(dist):
        with dist.scope():
            model = bert_pretraining(config)
            model.set_weights(initial)
            optimizer = training.create_optimizer(2e-3, num_train_steps=EPOCHS * N // BATCH, warmup_steps=2,
                                                  clipnorm=CLIPNORM)
            model.compile(optimizer=optimizer,
                          loss={"mlm_logits": training.masked_sparse_categorical_crossentropy(),
                                "nsp_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
                          metrics={"mlm_logits": [training.masked_accuracy()]})
        training.install_train_step(model)
        return model

    class StepLosses(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.steps = []
        def on_train_batch_end(self, batch, logs=None):
            self.steps.append([float(logs[k]) for k in ("loss", "mlm_logits_loss", "nsp_logits_loss")])

    def run(dist):
        model = compiled(dist)
        steps = StepLosses()
        history = model.fit(data, epochs=EPOCHS, verbose=0, callbacks=[steps]).history
        return dict(replicas=dist.num_replicas_in_sync, steps=steps.steps, loss=history["loss"],
                    accuracy=history["mlm_logits_masked_accuracy"], tokens=history["tokens"],
                    weights=[w.tolist() for w in model.get_weights()])

    # The largest per-variable gradient norm of the first step (it must exceed CLIPNORM).
    probe = compiled(tf.distribute.get_strategy())
    x, y = next(iter(data))
    with tf.GradientTape() as tape:
        out = probe(x, training=True)
        loss = probe.compute_loss(x, y, out)
    grad_norms = [float(tf.norm(tf.convert_to_tensor(g))) for g in tape.gradient(loss, probe.trainable_variables)]

    default = run(training.strategy("default", verbose=False))
    mirrored = run(training.strategy("mirrored", devices=["/cpu:0", "/cpu:1"], verbose=False))
    print("RESULT " + json.dumps(dict(default=default, mirrored=mirrored, max_grad_norm=max(grad_norms),
                                      clipnorm=CLIPNORM, last_batch_tokens=int(real[-BATCH:].sum()))))
    """
)


@pytest.fixture(scope="module")
def runs():
    return run_result_script(SCRIPT, timeout=420)[0]


def test_clipping_acts(runs):
    assert runs["max_grad_norm"] > 2 * runs["clipnorm"]


def test_mirrored_mlm_matches_one_device(runs):
    default, mirrored = runs["default"], runs["mirrored"]
    assert (default["replicas"], mirrored["replicas"]) == (1, 2)
    assert len(default["steps"]) == len(mirrored["steps"]) == 8
    assert default["loss"][-1] < default["loss"][0]  # it trained
    # Every step's total, MLM and NSP losses (the logs' running means), and the epochs'.
    np.testing.assert_allclose(mirrored["steps"], default["steps"], atol=1e-5)
    np.testing.assert_allclose(mirrored["loss"], default["loss"], atol=1e-5)
    np.testing.assert_allclose(mirrored["accuracy"], default["accuracy"], atol=1e-6)
    for got, want in zip(mirrored["weights"], default["weights"]):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    # The tokens log counts the whole global batch (here the last one), not one replica's share.
    assert mirrored["tokens"][-1] == default["tokens"][-1] == runs["last_batch_tokens"]
