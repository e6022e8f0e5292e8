"""The position-wise feed-forward network of a Transformer block."""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasllm.layers._utils import build_sublayer, clone_initializer, is_inference, tracing_portable_graph
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
        if is_inference(training) and self._plain_dense_path():  # inference; training keeps its measured graph
            return self._fused_call(x)
        h = self.intermediate(x)
        if self.intermediate_lora is not None:
            h = h + self.intermediate_lora(x, training=training)
        h = self._activation_fn(h)
        y = self.output_dense(h)
        if self.output_lora is not None:
            y = y + self.output_lora(h, training=training)
        return y

    def _plain_dense_path(self):
        """True when both projections are untouched ``Dense`` layers (no LoRA, pruning, QAT or low rank)
        and the graph is not traced for export (:func:`~kerasllm.layers._utils.portable_graph`)."""
        return self.intermediate_lora is None and not tracing_portable_graph() and all(
            type(dense) is keras.layers.Dense and dense.use_bias and dense.activation is keras.activations.linear
            for dense in (self.intermediate, self.output_dense)
        )

    def _fused_call(self, x):
        """The same products as the ``Dense`` sublayers, as 2-D ``MatMul`` + ``BiasAdd`` + activation.

        ``Dense`` on a ``[batch, length, width]`` input reshapes between its product and
        its bias, which hides the pattern TensorFlow's graph optimizer fuses on CPU:
        written this way, ``MatMul + BiasAdd + GELU`` becomes one oneDNN kernel with
        the bias and the (exact or tanh) GELU applied to the product's output tiles,
        instead of six element-wise passes over a ``[tokens, intermediate]`` tensor.
        """
        x = tf.cast(x, self.compute_dtype)
        shape = tf.shape(x)
        flat = tf.reshape(x, [-1, x.shape[-1] if x.shape[-1] is not None else shape[-1]])
        h = tf.nn.bias_add(
            tf.matmul(flat, tf.cast(self.intermediate.kernel, x.dtype)), tf.cast(self.intermediate.bias, x.dtype)
        )
        h = self._activation_fn(h)
        y = tf.nn.bias_add(
            tf.matmul(h, tf.cast(self.output_dense.kernel, x.dtype)), tf.cast(self.output_dense.bias, x.dtype)
        )
        return tf.reshape(y, tf.concat([shape[:-1], [self.output_dense.units]], axis=0))

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
