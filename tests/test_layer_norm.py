"""kerasllm.layers.LayerNorm: Keras' LayerNormalization computed with MEAN and MUL only.

Checked against a NumPy layer norm (float64), against keras.layers.LayerNormalization,
under mixed precision, and for unchanged weight names / config / serialization.
"""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kerasllm.layers import LayerNorm
from kerasllm.layers._utils import portable_graph


def _numpy_layer_norm(x, gamma, beta, epsilon, axes=(-1,)):
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * gamma + beta


def _random_weights(layer, rng):
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    return [w.numpy() for w in layer.weights]


@pytest.mark.parametrize("epsilon", [1e-12, 1e-5])
def test_layer_norm_matches_numpy_and_keras(epsilon):
    rng = np.random.default_rng(0)
    # BERT-like activations: an offset and a few large "outlier" dimensions.
    x = (rng.normal(size=(3, 7, 32)) * 2 + 5).astype("float32")
    x[..., 3] *= 40
    norm = LayerNorm(epsilon=epsilon)
    norm.build(x.shape)
    gamma, beta = _random_weights(norm, rng)
    got = norm(x).numpy()
    np.testing.assert_allclose(got, _numpy_layer_norm(x, gamma, beta, epsilon), atol=2e-5, rtol=1e-5)
    reference = keras.layers.LayerNormalization(epsilon=epsilon)
    reference.build(x.shape)
    reference.set_weights([gamma, beta])
    np.testing.assert_allclose(got, reference(x).numpy(), atol=1e-5, rtol=1e-6)


def test_layer_norm_over_several_axes_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    norm = LayerNorm(axis=[2, 3], epsilon=1e-6)
    norm.build(x.shape)
    gamma, beta = _random_weights(norm, rng)
    np.testing.assert_allclose(
        norm(x).numpy(), _numpy_layer_norm(x, gamma, beta, 1e-6, axes=(2, 3)), atol=1e-5
    )


def test_layer_norm_under_mixed_precision_keeps_float32_statistics():
    rng = np.random.default_rng(2)
    # Values around 300 with spread 0.5: float16 statistics would lose most of the digits.
    x = (300 + rng.normal(size=(2, 5, 16)) * 0.5).astype("float16")
    norm = LayerNorm(epsilon=1e-5, dtype="mixed_float16")
    norm.build(x.shape)
    gamma, beta = _random_weights(norm, rng)
    assert norm.gamma.dtype == tf.float32
    got = norm(x)
    assert got.dtype == tf.float16
    expected = _numpy_layer_norm(x.astype(np.float64), gamma, beta, 1e-5)
    # Only the final cast to float16 rounds (relative 2**-11).
    np.testing.assert_allclose(got.numpy().astype(np.float64), expected, rtol=2e-3, atol=2e-3)
    reference = keras.layers.LayerNormalization(epsilon=1e-5, dtype="mixed_float16")
    reference.build(x.shape)
    reference.set_weights([gamma, beta])
    # Both compute in float32; the two float32 formulas may round to neighbouring float16 values.
    np.testing.assert_allclose(got.numpy(), reference(x).numpy(), rtol=1e-3, atol=1e-3)


def test_layer_norm_has_keras_weights_config_and_round_trips(tmp_path):
    norm = LayerNorm(epsilon=1e-12, name="attention_norm")
    norm(np.zeros((1, 2, 8), "float32"))
    assert [w.name for w in norm.weights] == ["attention_norm/gamma:0", "attention_norm/beta:0"]
    reference = keras.layers.LayerNormalization(epsilon=1e-12, name="attention_norm")
    reference(np.zeros((1, 2, 8), "float32"))
    assert norm.get_config() == reference.get_config()
    inputs = keras.Input(shape=(None, 8))
    model = keras.Model(inputs, norm(inputs))
    norm.set_weights([np.full(8, 2.0, "float32"), np.full(8, 0.5, "float32")])
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[1]) is LayerNorm
    x = np.random.default_rng(3).normal(size=(1, 4, 8)).astype("float32")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_layer_norm_graph_has_no_squared_difference():
    norm = LayerNorm(epsilon=1e-12)
    with portable_graph():  # the form the exporters trace (inference outside it may use oneDNN's kernel)
        graph = tf.function(norm).get_concrete_function(tf.TensorSpec([None, None, 8], tf.float32)).graph
    ops = {op.type for op in graph.get_operations()}
    assert "SquaredDifference" not in ops and "FusedBatchNormV3" not in ops
    assert {"Mean", "Mul", "Rsqrt"} <= ops
