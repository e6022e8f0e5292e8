"""kerasllm's Dropout: Keras' dropout outside XLA, ThreeFry masks inside, same statistics."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kerasllm import training
from kerasllm.layers import Dropout


def _dropped(layer, x, jit_compile):
    @tf.function(jit_compile=jit_compile)
    def run(x):
        return layer(x, training=True)

    return run(x).numpy()


@pytest.mark.parametrize(
    "jit_compile, width, scale",
    [
        (False, 1000, 1 / 0.7),  # Keras' dropout
        (True, 1000, 65536 / (65536 - 19661)),  # 16-bit numbers: rate rounded to 19661 / 65536
        (True, 999, 1 / 0.7),  # odd last axis: float ThreeFry numbers, the exact rate
    ],
)
def test_drops_the_rate_and_rescales_the_rest(jit_compile, width, scale):
    rate, n = 0.3, 200 * width
    y = _dropped(Dropout(rate, seed=3), tf.ones([200, width]), jit_compile)
    kept = y != 0
    # 5 standard deviations of a binomial(n, 0.7) count
    assert abs(kept.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
    np.testing.assert_allclose(y[kept], scale, rtol=1e-6)


def test_noise_shape_shares_the_mask_along_broadcast_axes_inside_xla():
    y = _dropped(Dropout(0.5, noise_shape=[8, 1, 64], seed=4), tf.ones([8, 5, 64]), True)
    assert (y == y[:, :1, :]).all()
    assert 0.3 < (y == 0).mean() < 0.7


def test_inside_xla_each_call_draws_a_new_mask_and_neighbours_are_independent():
    layer = Dropout(0.5)

    @tf.function(jit_compile=True)
    def run(x):
        return layer(x, training=True)

    x = tf.ones([64, 512])
    first, second = (run(x).numpy() != 0 for _ in range(2))
    assert 0.4 < (first != second).mean() < 0.6  # independent masks differ on half the elements
    a, b = first[:, :-1].ravel().astype(float), first[:, 1:].ravel().astype(float)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.02


def test_inference_and_rate_zero_are_the_identity():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(Dropout(0.4)(x, training=False).numpy(), x)
    np.testing.assert_array_equal(_dropped(Dropout(0.0), tf.constant(x), True), x)


def test_gradient_is_the_mask_times_the_scale_inside_xla():
    layer = Dropout(0.25, seed=1)
    x = tf.Variable(tf.random.normal([32, 16], seed=0))

    @tf.function(jit_compile=True)
    def value_and_grad():
        with tf.GradientTape() as tape:
            y = layer(x * 1.0, training=True)
            total = tf.reduce_sum(y)
        return y, tape.gradient(total, x)

    y, g = (t.numpy() for t in value_and_grad())
    np.testing.assert_allclose(g, np.where(y != 0, 1 / 0.75, 0.0), rtol=1e-6)


def test_xla_masks_come_from_threefry_and_plain_graphs_from_keras_generator():
    layer = Dropout(0.1, seed=2)
    layer(tf.ones([2, 2]), training=True)

    def algorithms(jit_compile):
        fn = tf.function(lambda x: layer(x, training=True), jit_compile=jit_compile)
        graph = fn.get_concrete_function(tf.TensorSpec([4, 8])).graph
        found = set()
        for op in graph.get_operations():
            if op.type.startswith("StatelessRandomUniform"):  # V2 / FullIntV2 inputs: shape, key, counter, alg
                found.add(int(tf.get_static_value(op.inputs[3])))
        return found

    threefry = tf.random.Algorithm.THREEFRY.value
    assert threefry in algorithms(True)  # the mask (the 2-integer seed comes from the layer's generator)
    plain = algorithms(False)  # Keras' generator (AUTO_SELECT: Philox on a CPU); no ThreeFry kernel outside XLA
    assert plain and threefry not in plain


def test_seeded_runs_under_xla_repeat():
    def run():
        training.set_seed(7)
        model = keras.Sequential([keras.layers.Dense(8), Dropout(0.5), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
        x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
        model.fit(x, x[:, :1], epochs=2, batch_size=8, verbose=0, shuffle=False)
        return model.get_weights()

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


def test_config_round_trips_and_serializes_as_kerasllm():
    layer = Dropout(0.2, noise_shape=[None, 1], seed=5, name="d")
    again = Dropout.from_config(layer.get_config())
    assert (again.rate, again.noise_shape, again.seed) == (0.2, [None, 1], 5)
    assert keras.saving.get_registered_name(Dropout) == "kerasllm>Dropout"
