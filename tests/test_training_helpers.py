"""Tiny models and data shared by the training tests (no tests here)."""
import numpy as np
import tensorflow as tf

from kerasllm.models import get_preset, token_classifier

VOCAB = 50
LABELS = 3


def tiny_config(**overrides):
    settings = dict(
        vocab_size=VOCAB,
        num_layers=1,
        hidden_size=16,
        num_heads=2,
        intermediate_size=32,
        max_position=16,
        dropout=0.0,
        attention_dropout=0.0,
    )
    settings.update(overrides)
    return get_preset("bert-tiny", **settings)


def tiny_classifier(**overrides):
    return token_classifier(tiny_config(**overrides), num_labels=LABELS)


def token_batch(n=8, seq=6, seed=0, ignore_fraction=0.3):
    """(features, labels): random ids, ragged padding, ~30% of labels set to -100."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (n, seq)).astype(np.int32)
    lengths = rng.integers(2, seq + 1, n)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)
    ids *= mask
    labels = rng.integers(0, LABELS, (n, seq)).astype(np.int32)
    labels[rng.random((n, seq)) < ignore_fraction] = -100
    labels[mask == 0] = -100
    features = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return features, labels


def as_dataset(features, labels, batch_size):
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch_size)


def weights_of(model):
    return {w.name: w.numpy() for w in model.weights}


def assert_weights_close(a, b, atol):
    assert a.keys() == b.keys()
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    assert worst <= atol, f"largest weight difference {worst:.3g} > {atol}"
    return worst
