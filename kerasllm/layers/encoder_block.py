"""Transformer encoder block (BERT post-LN or GPT-2 pre-LN)."""
import tf_keras as keras

from kerasllm.layers._utils import QuantPoints, build_sublayer

from kerasllm.layers.adapter import Adapter
from kerasllm.layers.attention import MultiHeadAttention, check_attention_type
from kerasllm.layers.dropout import Dropout
from kerasllm.layers.feedforward import FeedForward
from kerasllm.layers.layer_norm import LayerNorm
from kerasllm.layers.lora import ATTENTION_TARGETS, LoRA, check_lora_args, normalize_lora_targets

PEFT_LAYERS = (LoRA, Adapter)


def freeze_base_weights(layer):
    """Freeze every weight under ``layer`` except those of :class:`LoRA` and :class:`Adapter` layers.

    A layer holding LoRA creates its own base kernels non-trainable
    (:class:`MultiHeadAttention`, :class:`FeedForward`), so a layer with PEFT
    sublayers only needs its other sublayers frozen.
    """
    if isinstance(layer, PEFT_LAYERS):
        return
    sublayers = list(layer._flatten_layers(include_self=False, recursive=False))
    if not any(isinstance(sub, PEFT_LAYERS) for sub in layer._flatten_layers(include_self=False)):
        layer.trainable = False
        return
    for sub in sublayers:
        freeze_base_weights(sub)


def default_initializer(stddev=0.02):
    """BERT's and GPT-2's truncated-normal kernel initializer."""
    return keras.initializers.TruncatedNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="kerasllm")
class TransformerEncoderBlock(QuantPoints, keras.layers.Layer):
    """Self-attention followed by a feed-forward network, each with a residual.

    ``normalize_first=False`` (post-LN, BERT)::

        h = norm1(x + dropout(attention(x)))
        y = norm2(h + dropout(ffn(h)))

    ``normalize_first=True`` (pre-LN, GPT-2)::

        h = x + dropout(attention(norm1(x)))
        y = h + dropout(ffn(norm2(h)))

    Sublayers: ``attention`` (:class:`MultiHeadAttention`), ``attention_norm``,
    ``ffn`` (:class:`FeedForward`), ``ffn_norm``.

    Parameter-efficient fine-tuning: ``lora_rank > 0`` gives the projections named
    in ``lora_targets`` LoRA updates (frozen base kernels, see
    :class:`MultiHeadAttention`); ``"ffn"`` adapts both feed-forward layers.
    ``adapter_size > 0`` adds Houlsby bottleneck adapters ``attention_adapter`` and
    ``ffn_adapter`` (:class:`Adapter`) on each branch, after its dropout and before
    the residual add (and, post-LN, the norm)::

        h = norm1(x + attention_adapter(dropout(attention(x))))
        y = norm2(h + ffn_adapter(dropout(ffn(h))))

    With LoRA or adapters every other weight of the block (kernels, biases,
    norms) is frozen when it is built, so a block rebuilt from its config
    trains exactly the same weights.

    Args:
        num_heads: attention heads.
        intermediate_size: feed-forward width.
        activation: ``"gelu"`` (exact, erf), ``"gelu_tanh"`` or ``"relu"``.
        dropout: dropout on each residual branch.
        attention_dropout: dropout on the attention probabilities.
        layer_norm_epsilon: epsilon of both layer norms.
        normalize_first: pre-LN (True) or post-LN (False).
        kernel_initializer: initializer for every kernel.
        lora_rank: rank of the LoRA updates (0 = no LoRA).
        lora_alpha: LoRA scale numerator (updates are scaled by ``alpha / rank``).
        lora_dropout: dropout on the input of the LoRA paths.
        lora_targets: from ``"query"``, ``"key"``, ``"value"``, ``"output"``
            (attention) and ``"ffn"`` (both feed-forward layers).
        adapter_size: bottleneck width of the adapters (0 = no adapters).
        attention_type, attention_window, global_tokens: the self-attention
            pattern (``"full"``, ``"sliding_window"``, ``"global_local"``), see
            :class:`MultiHeadAttention`.

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

    # The residual sums a quantization-aware copy fake-quantizes (kerasllm.compression.qat).
    QUANT_POINTS = ("attention_residual", "cross_attention_residual", "ffn_residual")

    def quant_points(self):
        cross = getattr(self, "cross_attention", None) is not None  # decoder blocks with cross-attention
        return [p for p in self.QUANT_POINTS if cross or p != "cross_attention_residual"]

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
        lora_rank=0,
        lora_alpha=16.0,
        lora_dropout=0.0,
        lora_targets=("query", "value"),
        adapter_size=0,
        attention_type="full",
        attention_window=256,
        global_tokens=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        where = f"{type(self).__name__} {self.name!r}"
        check_lora_args(lora_rank, lora_alpha, lora_dropout, where=where)
        if not isinstance(adapter_size, int) or isinstance(adapter_size, bool) or adapter_size < 0:
            raise ValueError(f"{where}: adapter_size must be an integer >= 0 (0 = no adapters), got {adapter_size!r}")
        check_attention_type(attention_type, attention_window, global_tokens, where=where)
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
        self.lora_rank = lora_rank
        self.lora_alpha = float(lora_alpha)
        self.lora_dropout = float(lora_dropout)
        self.lora_targets = normalize_lora_targets(lora_targets, where=where)
        self.adapter_size = adapter_size
        self.attention_type = attention_type
        self.attention_window = attention_window
        self.global_tokens = global_tokens

    def _lora_args(self, ffn=False):
        """LoRA arguments of the attention sublayers, or (``ffn=True``) of the feed-forward network."""
        args = {"lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout}
        if ffn:
            if "ffn" not in self.lora_targets:
                args["lora_rank"] = 0
            return args
        args["lora_targets"] = tuple(t for t in self.lora_targets if t in ATTENTION_TARGETS)
        return args

    def _adapter(self, name, shape):
        if not self.adapter_size:
            return None
        adapter = Adapter(
            self.adapter_size,
            activation=self.activation,
            kernel_initializer=self.kernel_initializer,
            name=name,
            dtype=self.dtype_policy,
        )
        build_sublayer(adapter, shape)
        return adapter

    def _norm(self, name):
        return LayerNorm(
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
            attention_type=self.attention_type,
            attention_window=self.attention_window,
            global_tokens=self.global_tokens,
            **self._lora_args(),
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
            **self._lora_args(ffn=True),
        )
        build_sublayer(self.ffn, shape)
        self.ffn_norm = self._norm("ffn_norm")
        build_sublayer(self.ffn_norm, shape)
        self.attention_adapter = self._adapter("attention_adapter", shape)
        self.ffn_adapter = self._adapter("ffn_adapter", shape)
        self._dropout_layer = Dropout(self.dropout)
        self._settle_trainable()
        super().build(input_shape)

    def _settle_trainable(self):
        """Freeze the base sublayers under LoRA/adapters; pass a frozen block's state to its new sublayers.

        (``trainable=False`` given to the constructor, as ``from_config`` does, does not
        reach sublayers created later in ``build``; the ``trainable`` setter does. Both
        must give the same weight order, or positional loading mixes weights up.)
        """
        if self.lora_rank or self.adapter_size:
            for sub in self._flatten_layers(include_self=False, recursive=False):
                freeze_base_weights(sub)
        if not self.trainable:
            self.trainable = False

    def _sublayer(self, x, norm, fn, training, adapter=None, point="attention_residual"):
        """One residual sub-block in the configured order; returns ``(x, extra)``.

        ``extra`` is the second element when ``fn`` returns a tuple (scores or cache).
        ``adapter`` (if any) transforms the branch after its dropout, before the residual add.
        ``point`` names the residual sum among the layer's ``QUANT_POINTS``.
        """
        h = norm(x) if self.normalize_first else x
        out = fn(h)
        extra = None
        if isinstance(out, tuple):
            out, extra = out
        out = self._dropout_layer(out, training=training)
        if adapter is not None:
            out = adapter(out)
        x = self.quant_point(point, x + out)
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

        x, scores = self._sublayer(x, self.attention_norm, attend, training, self.attention_adapter)
        x, _ = self._feed_forward(x, training)
        return (x, scores) if return_attention_scores else x

    def _feed_forward(self, x, training):
        return self._sublayer(
            x, self.ffn_norm, lambda h: self.ffn(h, training=training), training, self.ffn_adapter, "ffn_residual"
        )

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
                "lora_rank": self.lora_rank,
                "lora_alpha": self.lora_alpha,
                "lora_dropout": self.lora_dropout,
                "lora_targets": list(self.lora_targets),
                "adapter_size": self.adapter_size,
                "attention_type": self.attention_type,
                "attention_window": self.attention_window,
                "global_tokens": self.global_tokens,
            }
        )
        return config
