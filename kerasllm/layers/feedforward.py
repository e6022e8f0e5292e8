"""The position-wise feed-forward network of a Transformer block."""
import tf_keras as keras

from kerasllm.layers._utils import build_sublayer, clone_initializer
from kerasllm.layers.activations import get_activation


@keras.saving.register_keras_serializable(package="kerasllm")
class FeedForward(keras.layers.Layer):
    """``output(activation(intermediate(x)))`` with two dense projections.

    Sublayers are plain ``tf_keras`` ``Dense`` layers named ``intermediate`` and
    ``output`` (BERT's names), so TF-MOT and checkpoint tables address them directly.

    Args:
        intermediate_size: width of the hidden projection.
        activation: ``"gelu"`` (exact, erf-based), ``"gelu_tanh"`` or ``"relu"``.
        kernel_initializer: initializer for both kernels.

    Example:

    >>> import numpy as np
    >>> FeedForward(intermediate_size=32)(np.ones((1, 3, 8), "float32")).shape
    TensorShape([1, 3, 8])
    """

    def __init__(self, intermediate_size, activation="gelu", kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.intermediate_size = int(intermediate_size)
        self.activation = activation
        self._activation_fn = get_activation(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        hidden = int(input_shape[-1])
        self.intermediate = keras.layers.Dense(
            self.intermediate_size,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            name="intermediate",
            dtype=self.dtype_policy,
        )
        build_sublayer(self.intermediate, [None, None, hidden])
        self.output_dense = keras.layers.Dense(
            hidden,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            name="output", dtype=self.dtype_policy
        )
        build_sublayer(self.output_dense, [None, None, self.intermediate_size])
        super().build(input_shape)

    def call(self, x):
        return self.output_dense(self._activation_fn(self.intermediate(x)))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "intermediate_size": self.intermediate_size,
                "activation": self.activation,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
