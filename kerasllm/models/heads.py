"""Small layers used by the model heads."""
import tensorflow as tf
import tf_keras as keras

from kerasllm.layers._utils import build_sublayer, clone_initializer
from kerasllm.layers.activations import get_activation


@keras.saving.register_keras_serializable(package="kerasllm")
class Pooler(keras.layers.Layer):
    """BERT's pooler: ``tanh(dense(x[:, 0]))`` over the first (``[CLS]``) token.

    Args:
        hidden_size: output width.
        kernel_initializer: initializer of the dense kernel.

    Example:

    >>> import numpy as np
    >>> Pooler(8)(np.ones((2, 5, 8), "float32")).shape
    TensorShape([2, 8])
    """

    def __init__(self, hidden_size, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = int(hidden_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.dense = keras.layers.Dense(
            self.hidden_size,
            activation="tanh",
            kernel_initializer=clone_initializer(self.kernel_initializer),
            name="dense",
            dtype=self.dtype_policy,
        )
        build_sublayer(self.dense, [None, int(input_shape[-1])])
        super().build(input_shape)

    def call(self, x):
        return self.dense(x[:, 0, :])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_size": self.hidden_size,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kerasllm")
class VocabBias(keras.layers.Layer):
    """Adds a learned bias over the vocabulary to tied-embedding logits (BERT's MLM bias).

    Args:
        vocab_size: size of the bias vector.

    Example:

    >>> import numpy as np
    >>> VocabBias(10)(np.zeros((1, 2, 10), "float32")).shape
    TensorShape([1, 2, 10])
    """

    def __init__(self, vocab_size, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=[self.vocab_size], initializer="zeros")
        super().build(input_shape)

    def call(self, logits):
        return logits + self.bias

    def get_config(self):
        config = super().get_config()
        config["vocab_size"] = self.vocab_size
        return config


@keras.saving.register_keras_serializable(package="kerasllm")
class NamedActivation(keras.layers.Layer):
    """Applies a kerasllm activation chosen by name (serializes as the name).

    Args:
        activation: ``"gelu"`` (exact, erf), ``"gelu_tanh"`` or ``"relu"``.

    Example:

    >>> NamedActivation("relu")(tf.constant([-1.0, 2.0])).numpy()
    array([0., 2.], dtype=float32)
    """

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activation
        self._fn = get_activation(activation)

    def call(self, x):
        return self._fn(x)

    def get_config(self):
        config = super().get_config()
        config["activation"] = self.activation
        return config


def float32_logits(x, name="logits"):
    """Cast logits to float32 (mixed precision keeps the loss and softmax in float32)."""
    return keras.layers.Activation("linear", dtype="float32", name=name)(x)


def dense_head(x, units, config, name):
    """A task's output projection with BERT's initializer, logits in float32."""
    dense = keras.layers.Dense(
        units,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=config.initializer_range),
        name=name,
    )
    return float32_logits(dense(x), name=f"{name}_logits")


def token_ids_input(name):
    return keras.Input(shape=(None,), dtype=tf.int32, name=name)
