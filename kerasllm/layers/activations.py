"""Activations used by kerasllm's feed-forward blocks.

The exact GELU is written with ``tf.math.erf`` on purpose: TF 2.21 lowers
``tf.nn.gelu(approximate=False)`` to an ``Erfc`` op that tf2onnx cannot
convert, while ``Erf`` converts to ONNX and TFLite alike.
"""
import math

import tensorflow as tf
import tf_keras as keras

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@keras.saving.register_keras_serializable(package="kerasllm")
def gelu(x):
    """Exact GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))`` (BERT)."""
    x = tf.convert_to_tensor(x)
    return 0.5 * x * (1.0 + tf.math.erf(x * tf.cast(_SQRT_HALF, x.dtype)))


@keras.saving.register_keras_serializable(package="kerasllm")
def gelu_tanh(x):
    """Tanh-approximate GELU (GPT-2's ``gelu_new``)."""
    x = tf.convert_to_tensor(x)
    c = tf.cast(_SQRT_2_OVER_PI, x.dtype)
    return 0.5 * x * (1.0 + tf.tanh(c * (x + 0.044715 * x * x * x)))


@keras.saving.register_keras_serializable(package="kerasllm")
def relu(x):
    """Rectified linear unit."""
    return tf.nn.relu(x)


ACTIVATIONS = {
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "relu": relu,
}
# Names used by Hugging Face configs, mapped onto ours.
ACTIVATION_ALIASES = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
}


def get_activation(name):
    """Return the activation function called ``name``.

    Args:
        name: one of ``"gelu"`` (exact, erf-based), ``"gelu_tanh"``, ``"relu"``,
            or a Hugging Face alias (``"gelu_new"``).

    Raises:
        ValueError: naming the allowed values when ``name`` is unknown.
    """
    key = ACTIVATION_ALIASES.get(name, name)
    if key not in ACTIVATIONS:
        raise ValueError(
            f"activation={name!r} is not supported; allowed values: "
            f"{sorted(ACTIVATIONS)} (aliases: {sorted(ACTIVATION_ALIASES)})"
        )
    return ACTIVATIONS[key]
