"""Houlsby-style bottleneck adapter."""
import tf_keras as keras

from kerasllm.layers._utils import build_sublayer, clone_initializer
from kerasllm.layers.activations import get_activation


@keras.saving.register_keras_serializable(package="kerasllm")
class Adapter(keras.layers.Layer):
    """A bottleneck adapter: ``x + up(activation(down(x)))`` (Houlsby et al., 2019).

    ``down`` projects ``hidden -> adapter_size``, ``up`` projects back; ``up`` starts
    at zero (kernel and bias), so a fresh adapter is exactly the identity and a
    model with new adapters computes what the model without them did.
    :class:`TransformerEncoderBlock` puts one after the attention sublayer and one
    after the feed-forward sublayer, before each residual add (and layer norm).
    Adapters add computation; unlike LoRA they cannot be folded into the base
    weights.

    Args:
        adapter_size: bottleneck width (>= 1).
        activation: ``"gelu"`` (exact, erf), ``"gelu_tanh"`` or ``"relu"``.
        kernel_initializer: initializer of the ``down`` kernel.

    Example:

    >>> import numpy as np
    >>> adapter = Adapter(adapter_size=4, name="adapter")
    >>> x = np.random.rand(2, 3, 8).astype("float32")
    >>> bool(np.allclose(adapter(x), x))  # identity until trained
    True
    >>> [w.name for w in adapter.weights]
    ['adapter/down/kernel:0', 'adapter/down/bias:0', 'adapter/up/kernel:0', 'adapter/up/bias:0']

    References:
        Houlsby et al., "Parameter-Efficient Transfer Learning for NLP", 2019.
    """

    def __init__(self, adapter_size, activation="gelu", kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(adapter_size, int) or isinstance(adapter_size, bool) or adapter_size < 1:
            raise ValueError(f"Adapter {self.name!r}: adapter_size must be an integer >= 1, got {adapter_size!r}")
        self.adapter_size = adapter_size
        self.activation = activation
        self._activation_fn = get_activation(activation)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.TruncatedNormal(stddev=0.02)
        )

    def build(self, input_shape):
        hidden = int(input_shape[-1])
        self.down = keras.layers.Dense(
            self.adapter_size,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            name="down",
            dtype=self.dtype_policy,
        )
        build_sublayer(self.down, [None, None, hidden])
        self.up = keras.layers.Dense(hidden, kernel_initializer="zeros", name="up", dtype=self.dtype_policy)
        build_sublayer(self.up, [None, None, self.adapter_size])
        super().build(input_shape)

    def call(self, x):
        return x + self.up(self._activation_fn(self.down(x)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "adapter_size": self.adapter_size,
                "activation": self.activation,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
