"""Transformer decoder block: causal self-attention, optional cross-attention, FFN, with a cache."""
import tf_keras as keras

from kerasllm.layers._utils import build_sublayer

from kerasllm.layers.attention import MultiHeadAttention
from kerasllm.layers.encoder_block import TransformerEncoderBlock


@keras.saving.register_keras_serializable(package="kerasllm")
class TransformerDecoderBlock(TransformerEncoderBlock):
    """Causal self-attention, optional cross-attention over encoder outputs, then an FFN.

    Takes every argument of :class:`TransformerEncoderBlock` plus ``cross_attention``.
    With ``cross_attention=True`` the extra sublayers are ``cross_attention`` and
    ``cross_attention_norm``; the residual/norm order follows ``normalize_first``.
    LoRA on ``"query"``/``"key"``/``"value"``/``"output"`` adapts those projections
    of the cross-attention too; adapters sit after the self-attention and the
    feed-forward sublayers (not after the cross-attention).
    GPT-2 is a stack of these blocks with ``normalize_first=True`` and no
    cross-attention.

    Args:
        cross_attention: add a cross-attention sub-block over ``encoder_outputs``.
        **kwargs: the arguments of :class:`TransformerEncoderBlock`.

    Call arguments:
        x: decoder states ``[batch, seq, hidden]``.
        encoder_outputs: ``[batch, src_len, hidden]`` (cross-attention only).
        attention_mask: 1 = attend; ``[batch, seq]`` (or ``[batch, cache_len]`` with
            a cache) padding mask for the self-attention; the causal mask is always on.
        encoder_attention_mask: ``[batch, src_len]`` padding mask of the encoder.
        attention_bias: additive self-attention score bias.
        cache: self-attention cache ``[batch, 2, cache_len, heads, head_dim]``.
        cache_index: position of the first token of ``x`` in a fixed-size cache.
        cross_attention_cache: precomputed encoder keys/values
            (``block.cross_attention.compute_kv(encoder_outputs)``).
        training: enables dropout.

    Returns:
        ``[batch, seq, hidden]``, or ``(outputs, new_cache)`` when a cache is given.

    Example:

    >>> import numpy as np
    >>> block = TransformerDecoderBlock(num_heads=2, intermediate_size=32,
    ...                                 normalize_first=True)
    >>> x = np.ones((1, 4, 8), "float32")
    >>> cache = np.zeros((1, 2, 6, 2, 4), "float32")
    >>> out, cache = block(x, cache=cache, cache_index=0)
    >>> out.shape, cache.shape
    (TensorShape([1, 4, 8]), TensorShape([1, 2, 6, 2, 4]))
    """

    def __init__(self, num_heads, intermediate_size, cross_attention=False, **kwargs):
        super().__init__(num_heads, intermediate_size, **kwargs)
        self.cross_attention_enabled = cross_attention

    def build(self, input_shape):
        super().build(input_shape)
        if self.cross_attention_enabled:
            shape = [None, None, int(input_shape[-1])]
            self.cross_attention = MultiHeadAttention(
                self.num_heads,
                dropout=self.attention_dropout,
                cross_attention=True,
                kernel_initializer=self.kernel_initializer,
                name="cross_attention",
                dtype=self.dtype_policy,
                **self._lora_args(),
            )
            build_sublayer(self.cross_attention, shape)
            self.cross_attention_norm = self._norm("cross_attention_norm")
            build_sublayer(self.cross_attention_norm, shape)
            self._settle_trainable()

    def call(
        self,
        x,
        encoder_outputs=None,
        attention_mask=None,
        encoder_attention_mask=None,
        attention_bias=None,
        cache=None,
        cache_index=None,
        cross_attention_cache=None,
        training=None,
    ):
        def self_attend(h):
            return self.attention(
                h,
                attention_mask=attention_mask,
                attention_bias=attention_bias,
                use_causal_mask=True,
                cache=cache,
                cache_index=cache_index,
                training=training,
            )

        x, new_cache = self._sublayer(x, self.attention_norm, self_attend, training, self.attention_adapter)
        if self.cross_attention_enabled:
            if encoder_outputs is None and cross_attention_cache is None:
                raise ValueError(
                    f"{self.name}: cross_attention=True needs encoder_outputs or cross_attention_cache"
                )

            def cross_attend(h):
                return self.cross_attention(
                    h,
                    context=encoder_outputs,
                    attention_mask=encoder_attention_mask,
                    cache=cross_attention_cache,
                    training=training,
                )

            x, _ = self._sublayer(x, self.cross_attention_norm, cross_attend, training, point="cross_attention_residual")
        x, _ = self._feed_forward(x, training)
        return x if cache is None else (x, new_cache)

    def get_config(self):
        config = super().get_config()
        config["cross_attention"] = self.cross_attention_enabled
        return config
