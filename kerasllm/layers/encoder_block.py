"""Transformer encoder block (BERT post-LN or GPT-2 pre-LN)."""
import tf_keras as keras

from kerasllm.layers._utils import build_sublayer

from kerasllm.layers.attention import MultiHeadAttention
from kerasllm.layers.feedforward import FeedForward


def default_initializer(stddev=0.02):
    """BERT's and GPT-2's truncated-normal kernel initializer."""
    return keras.initializers.TruncatedNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="kerasllm")
class TransformerEncoderBlock(keras.layers.Layer):
    """Self-attention followed by a feed-forward network, each with a residual.

    ``normalize_first=False`` (post-LN, BERT)::

        h = norm1(x + dropout(attention(x)))
        y = norm2(h + dropout(ffn(h)))

    ``normalize_first=True`` (pre-LN, GPT-2)::

        h = x + dropout(attention(norm1(x)))
        y = h + dropout(ffn(norm2(h)))

    Sublayers: ``attention`` (:class:`MultiHeadAttention`), ``attention_norm``,
    ``ffn`` (:class:`FeedForward`), ``ffn_norm``.

    Args:
        num_heads: attention heads.
        intermediate_size: feed-forward width.
        activation: ``"gelu"`` (exact, erf), ``"gelu_tanh"`` or ``"relu"``.
        dropout: dropout on each residual branch.
        attention_dropout: dropout on the attention probabilities.
        layer_norm_epsilon: epsilon of both layer norms.
        normalize_first: pre-LN (True) or post-LN (False).
        kernel_initializer: initializer for every kernel.

    Call arguments:
        x: ``[batch, seq, hidden]``.
        attention_mask: 1 = attend; ``[batch, seq]`` padding or a full mask.
        attention_bias: additive ``[batch, heads or 1, seq, seq]`` score bias.
        use_causal_mask: restrict each position to itself and earlier ones.
        return_attention_scores: also return the attention probabilities.
        training: enables dropout.

    Example:

    >>> import numpy as np
    >>> block = TransformerEncoderBlock(num_heads=2, intermediate_size=32)
    >>> block(np.ones((2, 5, 8), "float32"), attention_mask=np.ones((2, 5))).shape
    TensorShape([2, 5, 8])

    References:
        Devlin et al., "BERT", 2019; Radford et al., "Language Models are
        Unsupervised Multitask Learners" (GPT-2), 2019.
    """

    def __init__(
        self,
        num_heads,
        intermediate_size,
        activation="gelu",
        dropout=0.1,
        attention_dropout=0.1,
        layer_norm_epsilon=1e-12,
        normalize_first=False,
        kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        self.num_heads = int(num_heads)
        self.intermediate_size = int(intermediate_size)
        self.activation = activation
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.normalize_first = normalize_first
        self.kernel_initializer = keras.initializers.get(kernel_initializer or default_initializer())

    def _norm(self, name):
        return keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name=name, dtype=self.dtype_policy
        )

    def build(self, input_shape):
        shape = [None, None, int(input_shape[-1])]
        self.attention = MultiHeadAttention(
            self.num_heads,
            dropout=self.attention_dropout,
            kernel_initializer=self.kernel_initializer,
            name="attention",
            dtype=self.dtype_policy,
        )
        build_sublayer(self.attention, shape)
        self.attention_norm = self._norm("attention_norm")
        build_sublayer(self.attention_norm, shape)
        self.ffn = FeedForward(
            self.intermediate_size,
            activation=self.activation,
            kernel_initializer=self.kernel_initializer,
            name="ffn",
            dtype=self.dtype_policy,
        )
        build_sublayer(self.ffn, shape)
        self.ffn_norm = self._norm("ffn_norm")
        build_sublayer(self.ffn_norm, shape)
        self._dropout_layer = keras.layers.Dropout(self.dropout)
        super().build(input_shape)

    def _sublayer(self, x, norm, fn, training):
        """One residual sub-block in the configured order; returns ``(x, extra)``.

        ``extra`` is the second element when ``fn`` returns a tuple (scores or cache).
        """
        h = norm(x) if self.normalize_first else x
        out = fn(h)
        extra = None
        if isinstance(out, tuple):
            out, extra = out
        x = x + self._dropout_layer(out, training=training)
        if not self.normalize_first:
            x = norm(x)
        return x, extra

    def call(
        self,
        x,
        attention_mask=None,
        attention_bias=None,
        use_causal_mask=False,
        return_attention_scores=False,
        training=None,
    ):
        def attend(h):
            return self.attention(
                h,
                attention_mask=attention_mask,
                attention_bias=attention_bias,
                use_causal_mask=use_causal_mask,
                return_attention_scores=return_attention_scores,
                training=training,
            )

        x, scores = self._sublayer(x, self.attention_norm, attend, training)
        x, _ = self._sublayer(x, self.ffn_norm, self.ffn, training)
        return (x, scores) if return_attention_scores else x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "intermediate_size": self.intermediate_size,
                "activation": self.activation,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "normalize_first": self.normalize_first,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
