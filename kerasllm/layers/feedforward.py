"""The position-wise feed-forward network of a Transformer block."""
import numpy as np
import tf_keras as keras

from kerasllm.layers._utils import build_sublayer, clone_initializer
from kerasllm.layers.activations import get_activation
from kerasllm.layers.lora import LoRA, check_lora_args


@keras.saving.register_keras_serializable(package="kerasllm")
class FeedForward(keras.layers.Layer):
    """``output(activation(intermediate(x)))`` with two dense projections.

    Sublayers are plain ``tf_keras`` ``Dense`` layers named ``intermediate`` and
    ``output`` (BERT's names), so TF-MOT and checkpoint tables address them directly.
    With ``lora_rank > 0`` both get a :class:`LoRA` sublayer (``intermediate_lora``,
    ``output_lora``) and the dense layers themselves are frozen.

    Args:
        intermediate_size: width of the hidden projection.
        activation: ``"gelu"`` (exact, erf-based), ``"gelu_tanh"`` or ``"relu"``.
        kernel_initializer: initializer for both kernels.
        lora_rank: rank of the LoRA updates of both projections (0 = no LoRA).
        lora_alpha: LoRA scale numerator (updates are scaled by ``alpha / rank``).
        lora_dropout: dropout on the input of the LoRA paths.

    Example:

    >>> import numpy as np
    >>> FeedForward(intermediate_size=32)(np.ones((1, 3, 8), "float32")).shape
    TensorShape([1, 3, 8])
    >>> ffn = FeedForward(intermediate_size=32, lora_rank=4, name="ffn")
    >>> _ = ffn(np.ones((1, 3, 8), "float32"))
    >>> [w.name.split("/", 1)[1] for w in ffn.trainable_weights]  # the dense layers are frozen
    ['intermediate_lora/lora_a:0', 'intermediate_lora/lora_b:0', 'output_lora/lora_a:0', 'output_lora/lora_b:0']
    """

    def __init__(
        self,
        intermediate_size,
        activation="gelu",
        kernel_initializer="glorot_uniform",
        lora_rank=0,
        lora_alpha=16.0,
        lora_dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_lora_args(lora_rank, lora_alpha, lora_dropout, where=f"FeedForward {self.name!r}")
        self.intermediate_size = int(intermediate_size)
        self.activation = activation
        self._activation_fn = get_activation(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.lora_rank = lora_rank
        self.lora_alpha = float(lora_alpha)
        self.lora_dropout = float(lora_dropout)

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
        self.intermediate_lora = self.output_lora = None
        if self.lora_rank:
            self.intermediate.trainable = self.output_dense.trainable = False
            self.intermediate_lora = self._lora("intermediate_lora", hidden, self.intermediate_size)
            self.output_lora = self._lora("output_lora", self.intermediate_size, hidden)
        super().build(input_shape)

    def _lora(self, name, width, units):
        lora = LoRA(
            self.lora_rank, units, alpha=self.lora_alpha, dropout=self.lora_dropout, name=name, dtype=self.dtype_policy
        )
        build_sublayer(lora, [None, None, width])
        return lora

    def call(self, x, training=None):
        h = self.intermediate(x)
        if self.intermediate_lora is not None:
            h = h + self.intermediate_lora(x, training=training)
        h = self._activation_fn(h)
        y = self.output_dense(h)
        if self.output_lora is not None:
            y = y + self.output_lora(h, training=training)
        return y

    def merged_lora_kernels(self):
        """``{variable name: kernel + LoRA update}`` for both dense kernels (empty without LoRA)."""
        if self.intermediate_lora is None:
            return {}
        return {
            dense.kernel.name: np.array(dense.kernel.numpy(), np.float32) + lora.delta_kernel().numpy()
            for dense, lora in ((self.intermediate, self.intermediate_lora), (self.output_dense, self.output_lora))
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "intermediate_size": self.intermediate_size,
                "activation": self.activation,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "lora_rank": self.lora_rank,
                "lora_alpha": self.lora_alpha,
                "lora_dropout": self.lora_dropout,
            }
        )
        return config
