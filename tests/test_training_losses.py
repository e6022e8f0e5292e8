"""Masked token loss and accuracy against NumPy."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kerasllm.training import (
    MaskedAccuracy,
    MaskedSparseCategoricalCrossentropy,
    masked_accuracy,
    masked_sparse_categorical_crossentropy,
)


def _numpy_masked_ce(labels, logits, ignore_index=-100, weights=None):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    kept = labels != ignore_index
    safe = np.where(kept, labels, 0)
    nll = -np.take_along_axis(log_probs, safe[..., None], -1)[..., 0]
    w = np.ones_like(nll) if weights is None else np.broadcast_to(weights, nll.shape)
    return float((nll * w * kept).sum() / kept.sum()) if kept.any() else 0.0


def _case(seed=0, shape=(3, 7), classes=5, ignore_index=-100):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape + (classes,)).astype(np.float32) * 3
    labels = rng.integers(0, classes, shape).astype(np.int32)
    labels[rng.random(shape) < 0.4] = ignore_index
    return labels, logits


@pytest.mark.parametrize("ignore_index", [-100, 0])
def test_masked_cross_entropy_matches_numpy(ignore_index):
    labels, logits = _case(ignore_index=ignore_index)
    loss = masked_sparse_categorical_crossentropy(ignore_index=ignore_index)
    assert float(loss(labels, logits)) == pytest.approx(_numpy_masked_ce(labels, logits, ignore_index), rel=1e-5)
    # Labels shaped [batch, seq, 1] are accepted too.
    assert float(loss(labels[..., None], logits)) == pytest.approx(_numpy_masked_ce(labels, logits, ignore_index), rel=1e-5)


def test_masked_cross_entropy_from_probabilities_and_weights():
    labels, logits = _case(seed=1)
    probs = tf.nn.softmax(logits).numpy()
    want = _numpy_masked_ce(labels, logits)
    assert float(MaskedSparseCategoricalCrossentropy(from_logits=False)(labels, probs)) == pytest.approx(want, rel=1e-4)
    per_sequence = np.array([1.0, 0.0, 2.0], np.float32)
    got = float(masked_sparse_categorical_crossentropy()(labels, logits, sample_weight=per_sequence))
    assert got == pytest.approx(_numpy_masked_ce(labels, logits, weights=per_sequence[:, None]), rel=1e-5)


def test_all_ignored_gives_zero_and_bad_labels_fail_clearly():
    logits = np.zeros((2, 3, 4), np.float32)
    loss = masked_sparse_categorical_crossentropy()
    assert float(loss(np.full((2, 3), -100), logits)) == 0.0
    with pytest.raises(tf.errors.InvalidArgumentError, match="label id is >= the number of classes"):
        loss(np.array([[0, 4, -100], [1, 1, 1]]), logits)
    with pytest.raises(tf.errors.InvalidArgumentError, match="negative label id"):
        loss(np.array([[0, -1, -100], [1, 1, 1]]), logits)


def test_masked_accuracy_accumulates_over_kept_tokens():
    metric = masked_accuracy()
    hits = total = 0
    for seed in range(3):
        labels, logits = _case(seed=seed)
        metric.update_state(labels, logits)
        kept = labels != -100
        hits += int(((logits.argmax(-1) == labels) & kept).sum())
        total += int(kept.sum())
    assert float(metric.result()) == pytest.approx(hits / total, rel=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_loss_and_metric_round_trip_through_keras_serialization():
    loss = keras.losses.deserialize(keras.losses.serialize(masked_sparse_categorical_crossentropy(ignore_index=7)))
    assert isinstance(loss, MaskedSparseCategoricalCrossentropy) and loss.ignore_index == 7
    metric = keras.metrics.deserialize(keras.metrics.serialize(MaskedAccuracy(ignore_index=3, name="acc")))
    assert isinstance(metric, MaskedAccuracy) and (metric.ignore_index, metric.name) == (3, "acc")


def test_compiled_loss_reports_the_masked_mean():
    # In compile/fit the reduction is SUM over replicas; with one replica the logged
    # loss is exactly the masked mean.
    labels, logits = _case(seed=4)
    inputs = keras.Input((7, 5))
    model = keras.Model(inputs, keras.layers.Activation("linear")(inputs))
    model.compile(loss=masked_sparse_categorical_crossentropy(), metrics=[masked_accuracy()])
    logs = model.evaluate(logits, labels, batch_size=3, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(_numpy_masked_ce(labels, logits), rel=1e-5)
    kept = labels != -100
    assert logs["masked_accuracy"] == pytest.approx(((logits.argmax(-1) == labels) & kept).sum() / kept.sum())
