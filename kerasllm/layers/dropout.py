"""Dropout whose random mask is cheap to draw inside XLA on a CPU."""
import numbers

import tensorflow as tf
import tf_keras as keras
from tf_keras.src import backend
from tf_keras.src.utils import control_flow_util

from kerasllm.layers._utils import in_xla_context

# The generator for masks drawn inside an XLA cluster. XLA's CPU lowering of Philox (what
# TensorFlow's own dropout ops become under XLA) runs at about a third of the speed of
# ThreeFry: 29M uniform numbers (one MiniLM training step's masks at batch 16 x 128) took
# 334 ms against 91-127 ms on the 2-core machine of bench/speed_notes.md. Outside XLA,
# TensorFlow has no ThreeFry kernel and Keras' own dropout is used.
XLA_ALGORITHM = "threefry"
_INT32_MAX = 2**31 - 1


@keras.saving.register_keras_serializable(package="kerasllm")
class Dropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` that draws its mask with ThreeFry when compiled by XLA.

    The same layer as Keras' (arguments, config, no weights): each element is
    zeroed with probability ``rate`` during training and the rest are scaled by
    ``1 / (1 - rate)``. Only the random numbers differ inside an XLA cluster
    (``model.compile(jit_compile=True)``, ``tf.function(jit_compile=True)``): a
    fresh 2-integer seed is drawn from the layer's usual random source on every
    call, and the mask from ThreeFry random words (:func:`xla_dropout`), which
    XLA's CPU backend generates about 3x faster than the Philox numbers of
    Keras' dropout; each word gives two 16-bit uniforms, so the rate is rounded
    to a multiple of 1/65536. Runs are repeatable under a global seed
    (:func:`kerasllm.training.set_seed`) or a layer ``seed``: the seeds come from
    the layer's ``tf.random.Generator`` (Keras' ``rng_type="stateful"``), where
    TensorFlow's stateful random ops ignore their seeds under XLA. Outside XLA
    the layer is Keras' dropout on that generator.

    Args:
        rate: fraction of the inputs to drop, in ``[0, 1)``.
        noise_shape, seed: as in ``keras.layers.Dropout``.

    Example:

    >>> import numpy as np
    >>> drop = Dropout(0.5, seed=1)
    >>> y = drop(np.ones((1000,), "float32"), training=True).numpy()
    >>> sorted(set(y.tolist())), 400 < int((y == 0).sum()) < 600
    ([0.0, 2.0], True)
    >>> float(drop(np.ones((3,), "float32"), training=False).numpy().sum())
    3.0
    """

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        # A per-layer tf.random.Generator (seeded from `seed` or the global seed) is the
        # source of the XLA masks' seeds: TensorFlow's stateful random ops ignore their
        # seeds under XLA, a generator's state does not. It is not a weight and is not
        # in checkpoints (Keras' BaseRandomLayer).
        kwargs.setdefault("rng_type", "stateful")
        super().__init__(rate, noise_shape=noise_shape, seed=seed, **kwargs)

    def call(self, inputs, training=None):
        if isinstance(self.rate, numbers.Real) and self.rate == 0:
            return tf.identity(inputs)
        if training is None:
            training = backend.learning_phase()
        return control_flow_util.smart_cond(training, lambda: self._drop(inputs), lambda: tf.identity(inputs))

    def _drop(self, inputs):
        noise_shape = self._get_noise_shape(inputs)
        if not in_xla_context():
            return self._random_generator.dropout(inputs, self.rate, noise_shape=noise_shape)
        seed = self._random_generator.make_seed_for_stateless_op()
        if seed is None:  # rng_type="legacy_stateful" asked for: one stateful draw per call (unseeded in XLA)
            seed = tf.random.uniform(
                [2], maxval=_INT32_MAX, dtype=tf.int32, seed=self._random_generator.make_legacy_seed()
            )
        return xla_dropout(inputs, self.rate, seed, noise_shape)


def xla_dropout(inputs, rate, seed, noise_shape=None):
    """Dropout of ``inputs`` with a ThreeFry mask, two 16-bit uniforms per random word.

    Each 32-bit ThreeFry output is cut into two 16-bit numbers, so half as many
    words are generated; an element is kept when its number is at least
    ``round(rate * 65536)``, and kept elements are scaled by the inverse of the
    exact keep probability, so the expectation is preserved. The rate used is
    that rounding of ``rate`` (0.1 becomes 0.100006). On the MiniLM attention
    probabilities ([16, 12, 128, 128]) this took 6.3 ms against 13.7 ms for
    float ThreeFry numbers and 2.7 ms for no dropout at all. A last axis of odd
    or unknown length gets float ThreeFry numbers instead (the exact rate).

    Args:
        inputs: a float tensor.
        rate: probability of dropping an element, in ``[0, 1)``.
        seed: a shape-``[2]`` integer tensor; equal seeds give equal masks.
        noise_shape: as in ``tf.nn.dropout`` (a broadcastable mask shape).
    """
    shape = inputs.shape if noise_shape is None else tf.TensorShape(tf.get_static_value(noise_shape))
    width = shape[-1] if shape.rank else None
    if not width or width % 2:
        return tf.nn.experimental.stateless_dropout(
            inputs, rate=rate, seed=seed, rng_alg=XLA_ALGORITHM, noise_shape=noise_shape
        )
    dynamic = tf.shape(inputs) if noise_shape is None else tf.convert_to_tensor(noise_shape, tf.int32)
    words = tf.random.stateless_uniform(
        tf.concat([dynamic[:-1], [width // 2]], 0), seed, minval=None, maxval=None, dtype=tf.uint32,
        alg=XLA_ALGORITHM,
    )
    halves = tf.bitwise.right_shift(words[..., None], tf.constant([0, 16], tf.uint32))
    numbers = tf.reshape(tf.bitwise.bitwise_and(halves, tf.constant(0xFFFF, tf.uint32)), dynamic)
    threshold = int(round(rate * 65536))
    keep = numbers >= tf.constant(threshold, tf.uint32)
    scale = tf.cast(65536.0 / (65536 - threshold), inputs.dtype)
    return tf.where(keep, inputs * scale, tf.zeros([], inputs.dtype))
