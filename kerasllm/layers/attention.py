"""Multi-head scaled dot-product attention with masks, bias and a key/value cache."""
import math

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasllm.layers._utils import QuantPoints, build_sublayer, clone_initializer, in_xla_context, is_inference
from kerasllm.layers.dropout import Dropout
from kerasllm.layers.local_attention import chunked_local_attention, local_attention
from kerasllm.layers.lora import ATTENTION_TARGETS, LoRA, check_lora_args, normalize_lora_targets
from kerasllm.layers.masks import MASK_VALUE as _MASK_VALUE
from kerasllm.layers.masks import causal_mask, combine_masks, expand_attention_mask, local_attention_mask

ATTENTION_TYPES = ("full", "sliding_window", "global_local")


def _project(x, kernel, bias):
    """``x @ kernel + bias`` over the last axis as one 2-D matmul (one GEMM, TFLite FullyConnected)."""
    batch_shape = tf.shape(x)[:-1]
    y = tf.matmul(tf.reshape(x, [-1, tf.shape(x)[-1]]), kernel)
    if bias is not None:
        y = y + bias
    return tf.reshape(y, tf.concat([batch_shape, [kernel.shape[-1]]], axis=0))


def attention_type_problem(attention_type, attention_window, global_tokens):
    """``(argument, what is wrong)`` for a bad combination of attention-variant arguments, else None."""
    if attention_type not in ATTENTION_TYPES:
        return "attention_type", f"allowed values: {list(ATTENTION_TYPES)}"
    if not isinstance(attention_window, int) or isinstance(attention_window, bool) or attention_window < 1:
        return "attention_window", "must be a positive integer (keys seen on each side of a query)"
    if not isinstance(global_tokens, int) or isinstance(global_tokens, bool) or global_tokens < 0:
        return "global_tokens", "must be an integer >= 0"
    if attention_type == "global_local" and global_tokens < 1:
        return "global_tokens", "attention_type='global_local' needs at least 1 global token"
    if attention_type != "global_local" and global_tokens:
        return "global_tokens", f"only attention_type='global_local' uses global tokens (got {attention_type!r})"
    return None


def check_attention_type(attention_type, attention_window, global_tokens, where):
    """Raise one ``ValueError`` naming ``where`` and the bad attention-variant argument."""
    problem = attention_type_problem(attention_type, attention_window, global_tokens)
    if problem:
        values = {"attention_type": attention_type, "attention_window": attention_window, "global_tokens": global_tokens}
        raise ValueError(f"{where}: {problem[0]}={values[problem[0]]!r} is invalid: {problem[1]}")


def _masked_softmax(scores, mask, values):
    """Attention weights and values with masked keys left out, and the weight left per row.

    Returns ``(weights, values, total)``: the softmax of ``scores`` with masked keys
    set to large negative values (``MASK_VALUE``); ``values`` with the rows of the
    keys that every query has masked (padding) set to 0; and ``total``, the weight of
    the other keys per query (``[..., q, 1]``). Attention is ``weights @ values /
    total``. Without a mask: ``(softmax(scores), values, None)``.

    In float the softmax already gives masked keys a weight of exactly 0 and
    ``total`` is 1 up to rounding. In a full-integer TFLite model it does not: the
    scores are quantized to their calibrated range, which clamps the masked value
    to the lowest calibrated score, so a padded key would keep a small weight. The
    padded keys are therefore removed on the value side (a select, whose range is
    that of the values) and ``total`` (a matmul of the weights, which keep the
    softmax's fixed output scale, with the 0/1 key mask) renormalises; zeroing the
    weights themselves would give them a calibrated range that clamps short rows. A
    sequence whose keys are all masked keeps every key (never NaN).

    Args:
        scores: float ``[b, h, q, k]`` attention logits.
        mask: boolean ``[b, 1|h, q|1, k]`` (True = may attend), or ``None``.
        values: ``[b, h, k, d]``.

    Example:

    >>> weights, values, total = _masked_softmax(
    ...     tf.constant([[[[1.0, 2.0, 3.0]]]]), tf.constant([[[[True, True, False]]]]), tf.ones([1, 1, 3, 1]))
    >>> (weights.numpy().round(3), values.numpy()[0, 0, :, 0], total.numpy().round(3))
    (array([[[[0.269, 0.731, 0.   ]]]], dtype=float32), array([1., 1., 0.], dtype=float32), array([[[[1.]]]], dtype=float32))
    """
    if mask is None:
        return tf.nn.softmax(scores, axis=-1), values, None
    weights = tf.nn.softmax(tf.where(mask, scores, tf.constant(_MASK_VALUE, scores.dtype)), axis=-1)
    # On the (small, broadcast) mask: the keys some query may see, as a column [b, 1|h, k, 1].
    keys = tf.reduce_any(mask, axis=-2)
    keys = tf.expand_dims(tf.logical_or(keys, tf.logical_not(tf.reduce_any(keys, axis=-1, keepdims=True))), -1)
    values = tf.where(keys, values, tf.zeros([], values.dtype))
    total = tf.matmul(weights, tf.where(keys, tf.ones([], weights.dtype), tf.zeros([], weights.dtype)))
    return weights, values, total


def _biased_softmax(q, k, scale, mask, attention_bias):
    """``softmax(q @ k^T * scale + bias)``: masked keys get ``MASK_VALUE`` added, ``attention_bias`` is added.

    The same weights as scaling ``q`` and selecting ``MASK_VALUE`` for masked keys
    (:func:`_masked_softmax`) in the form TensorFlow's CPU graph optimizer fuses: a
    ``BatchMatMul`` followed by a scalar ``Mul`` and an ``AddV2`` becomes one oneDNN
    kernel (``_MklFusedBatchMatMulV2``), so the ``[b, h, q, k]`` scores are written
    once instead of being scaled, selected and re-read. The additive mask is built on
    the small broadcast mask (``[b, 1, 1|q, k]``). In float a masked key's weight is
    exactly 0, as with the select; a row whose keys are all masked gets finite
    weights (never NaN). The scores, mask and softmax are float32 under mixed precision.
    """
    scores = tf.matmul(q, k, transpose_b=True) * tf.cast(scale, q.dtype)
    if scores.dtype != tf.float32:
        scores = tf.cast(scores, tf.float32)
    addend = None
    if mask is not None:
        addend = tf.where(mask, tf.zeros([], tf.float32), tf.constant(_MASK_VALUE, tf.float32))
    if attention_bias is not None:
        bias = tf.cast(attention_bias, tf.float32)
        addend = bias if addend is None else addend + bias
    return tf.nn.softmax(scores if addend is None else scores + addend, axis=-1)


def _heads_first(x):
    """``[b, t, h, d]`` -> ``[b, h, t, d]``."""
    return tf.transpose(x, [0, 2, 1, 3])


def update_cache(cache, kv, index):
    """Write ``kv`` ``[b, 2, n, h, d]`` into ``cache`` ``[b, 2, S, h, d]`` at positions ``index..index+n``.

    Uses a one-hot placement matrix instead of a dynamic slice so every shape stays
    static: the same graph compiles under XLA and converts to TFLite and ONNX.
    """
    size = tf.shape(cache)[2]
    positions = tf.cast(index, tf.int32) + tf.range(tf.shape(kv)[2])
    place = tf.one_hot(positions, size, dtype=cache.dtype)  # [n, S]
    written = tf.reduce_sum(place, axis=0)[None, None, :, None, None]  # [1, 1, S, 1, 1]
    return cache * (1 - written) + tf.einsum("ns,bcnhd->bcshd", place, kv)


@keras.saving.register_keras_serializable(package="kerasllm")
class MultiHeadAttention(QuantPoints, keras.layers.Layer):
    """Multi-head scaled dot-product attention.

    Self-attention (the default) projects queries, keys and values with one fused
    kernel ``qkv_kernel`` of shape ``[hidden, 3 * heads * head_dim]`` whose columns
    are ``[Q | K | V]``: GPT-2's ``c_attn`` maps onto it as is and BERT's
    ``query``/``key``/``value`` kernels by concatenation. Cross-attention
    (``cross_attention=True``) has ``query_kernel`` ``[hidden, heads * head_dim]``
    and a fused ``kv_kernel`` ``[context_dim, 2 * heads * head_dim]``. The output
    projection is ``output_kernel`` ``[heads * head_dim, hidden]``.

    With ``lora_rank > 0`` each projection named in ``lora_targets`` gets a
    :class:`LoRA` sublayer (``query_lora``, ``key_lora``, ``value_lora``,
    ``output_lora``) whose update is added to its slice of the fused kernel's
    output, and the layer's own kernels and biases are created non-trainable:
    only the low-rank factors train.

    Scores are computed and soft-maxed in float32 under mixed precision.

    ``attention_type`` picks the pattern of self-attention: ``"full"`` (every key),
    ``"sliding_window"`` (query ``i`` sees keys ``j`` with ``|i - j| <= attention_window``,
    computed block by block in memory ``O(n * attention_window)``, see
    :func:`~kerasllm.layers.local_attention.local_attention`) or ``"global_local"``
    (the sliding window plus ``global_tokens`` leading positions that see, and are
    seen by, every position; Longformer). The variants take a ``[batch, k_len]``
    padding mask; with a cache (decoding) they run as full attention with the
    equivalent :func:`~kerasllm.layers.masks.local_attention_mask`. Traced for
    inference in float32 (outside ``portable_graph``, without XLA), ``"sliding_window"``
    runs as :func:`~kerasllm.layers.local_attention.chunked_local_attention`, the same
    function in smaller blocks, a few at a time. The weights are the same for every
    type, so a checkpoint loads into any of them.

    Args:
        num_heads: number of attention heads.
        key_dim: size of each head. Defaults to ``hidden // num_heads``.
        dropout: dropout rate on the attention probabilities.
        use_bias: whether the projections have biases.
        cross_attention: attend from ``query`` to a separate ``context`` sequence.
        context_dim: width of ``context`` for cross-attention (defaults to the
            query width).
        kernel_initializer: initializer for the projection kernels.
        bias_initializer: initializer for the biases.
        lora_rank: rank of the LoRA updates (0 = no LoRA).
        lora_alpha: LoRA scale numerator (updates are scaled by ``alpha / rank``).
        lora_dropout: dropout on the input of the LoRA paths.
        lora_targets: projections that get LoRA, from ``"query"``, ``"key"``,
            ``"value"``, ``"output"``.
        attention_type: ``"full"``, ``"sliding_window"`` or ``"global_local"``
            (self-attention only).
        attention_window: keys seen on each side of a query by the local types.
        global_tokens: leading global positions of ``"global_local"``.

    Call arguments:
        query: ``[batch, q_len, hidden]``.
        context: ``[batch, k_len, context_dim]``, cross-attention only.
        attention_mask: 1 = attend, 0 = masked; ``[batch, k_len]`` (padding),
            ``[batch, q_len, k_len]`` or ``[batch, heads, q_len, k_len]``.
            With a cache it covers the cache positions.
        attention_bias: additive float bias ``[batch, heads or 1, q_len, k_len]``
            (relative positions, knowledge-guided attention); full attention only.
        use_causal_mask: query ``i`` sees only keys at positions ``<= i`` (offset
            by ``cache_index`` when decoding with a cache).
        cache: key/value cache ``[batch, 2, cache_len, heads, head_dim]``. For
            self-attention the new keys/values are written into it (at
            ``cache_index``) or appended (without ``cache_index``) and the updated
            cache is returned; for cross-attention it holds the precomputed
            context keys/values and is returned unchanged.
        cache_index: scalar int, position of the first query in a fixed-size
            cache (static shapes for XLA/TFLite).
        return_attention_scores: also return the probabilities ``[batch, heads, q, k]``
            (full attention only).
        training: enables dropout.

    Returns:
        ``output`` ``[batch, q_len, hidden]``; followed by the scores if asked,
        then the updated cache if one was given.

    Example:

    >>> import numpy as np
    >>> layer = MultiHeadAttention(num_heads=2)
    >>> x = np.random.rand(1, 4, 8).astype("float32")
    >>> layer(x, attention_mask=np.array([[1, 1, 1, 0]])).shape
    TensorShape([1, 4, 8])
    >>> lora = MultiHeadAttention(num_heads=2, lora_rank=2, lora_targets=("query", "value"), name="attn")
    >>> _ = lora(x)
    >>> [w.name.split("/", 1)[1] for w in lora.trainable_weights]  # the base kernels are frozen
    ['query_lora/lora_a:0', 'query_lora/lora_b:0', 'value_lora/lora_a:0', 'value_lora/lora_b:0']
    >>> local = MultiHeadAttention(num_heads=2, attention_type="sliding_window", attention_window=2)
    >>> local(np.random.rand(1, 9, 8).astype("float32")).shape
    TensorShape([1, 9, 8])

    References:
        Vaswani et al., "Attention Is All You Need", 2017; Beltagy et al.,
        "Longformer: The Long-Document Transformer", 2020.
    """

    # Tensors a quantization-aware copy fake-quantizes (kerasllm.compression.qat): the
    # fused projection, cross-attention's keys/values, the scaled queries, the scores,
    # the weighted values (probs @ v), the renormalised context and the output projection.
    QUANT_POINTS = ("projection", "kv", "scaled_query", "scores", "weighted_values", "context", "output")

    def quant_points(self):
        return [p for p in self.QUANT_POINTS if self.cross_attention or p != "kv"]

    def __init__(
        self,
        num_heads,
        key_dim=None,
        dropout=0.0,
        use_bias=True,
        cross_attention=False,
        context_dim=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        lora_rank=0,
        lora_alpha=16.0,
        lora_dropout=0.0,
        lora_targets=("query", "value"),
        attention_type="full",
        attention_window=256,
        global_tokens=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_lora_args(lora_rank, lora_alpha, lora_dropout, where=f"MultiHeadAttention {self.name!r}")
        check_attention_type(attention_type, attention_window, global_tokens, where=f"MultiHeadAttention {self.name!r}")
        if cross_attention and attention_type != "full":
            raise ValueError(
                f"MultiHeadAttention {self.name!r}: attention_type={attention_type!r} is invalid: "
                "cross-attention supports only 'full'"
            )
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_heads = int(num_heads)
        self.key_dim = key_dim
        self.dropout = float(dropout)
        self.use_bias = use_bias
        self.cross_attention = cross_attention
        self.context_dim = context_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.lora_rank = lora_rank
        self.lora_alpha = float(lora_alpha)
        self.lora_dropout = float(lora_dropout)
        self.lora_targets = normalize_lora_targets(
            lora_targets, ATTENTION_TARGETS, where=f"MultiHeadAttention {self.name!r}"
        )
        self.attention_type = attention_type
        self.attention_window = int(attention_window)
        self.global_tokens = int(global_tokens)
        self._dropout_layer = Dropout(self.dropout)

    @property
    def has_lora(self):
        return self.lora_rank > 0 and bool(self.lora_targets)

    def build(self, input_shape):
        hidden = int(input_shape[-1])
        if self.key_dim is None:
            if hidden % self.num_heads:
                raise ValueError(
                    f"hidden size {hidden} is not divisible by num_heads={self.num_heads}; "
                    "set key_dim or change num_heads"
                )
            self.head_dim = hidden // self.num_heads
        else:
            self.head_dim = int(self.key_dim)
        inner = self.num_heads * self.head_dim
        self.hidden_size = hidden

        def weight(name, shape, init):
            # With LoRA the base projections are frozen; only the low-rank factors train.
            return self.add_weight(
                name=name, shape=shape, initializer=clone_initializer(init), trainable=not self.has_lora
            )

        def bias(name, size):
            return weight(name, [size], self.bias_initializer) if self.use_bias else None

        ctx = int(self.context_dim or hidden) if self.cross_attention else hidden
        if self.cross_attention:
            self.query_kernel = weight("query_kernel", [hidden, inner], self.kernel_initializer)
            self.query_bias = bias("query_bias", inner)
            self.kv_kernel = weight("kv_kernel", [ctx, 2 * inner], self.kernel_initializer)
            self.kv_bias = bias("kv_bias", 2 * inner)
        else:
            self.qkv_kernel = weight("qkv_kernel", [hidden, 3 * inner], self.kernel_initializer)
            self.qkv_bias = bias("qkv_bias", 3 * inner)
        self.output_kernel = weight("output_kernel", [inner, hidden], self.kernel_initializer)
        self.output_bias = bias("output_bias", hidden)
        if self.has_lora:
            # (input width, output width) of each projection.
            widths = {"query": (hidden, inner), "key": (ctx, inner), "value": (ctx, inner), "output": (inner, hidden)}
            for target in self.lora_targets:
                lora = LoRA(
                    self.lora_rank,
                    output_dim=widths[target][1],
                    alpha=self.lora_alpha,
                    dropout=self.lora_dropout,
                    name=f"{target}_lora",
                    dtype=self.dtype_policy,
                )
                build_sublayer(lora, [None, None, widths[target][0]])
                setattr(self, f"{target}_lora", lora)
        super().build(input_shape)

    def _plus_lora(self, target, x, y, training, heads_first=False):
        """``y`` plus the ``target`` projection's LoRA update of ``x`` (``y`` itself without one).

        ``y`` is ``[b, t, hidden]`` (output) or split into heads, ``[b, t, h, d]``
        or (``heads_first``) ``[b, h, t, d]``.
        """
        lora = getattr(self, f"{target}_lora", None) if self.has_lora else None
        if lora is None:
            return y
        delta = lora(x, training=training)
        if y.shape.rank == 4:
            (delta,) = self._split_heads(delta, 1, heads_first=heads_first)
        return y + delta

    def _kernel_slices(self):
        """``{target: (kernel variable, part, parts)}``: which column block of which kernel a target adapts."""
        if self.cross_attention:
            slices = {"query": (self.query_kernel, 0, 1), "key": (self.kv_kernel, 0, 2), "value": (self.kv_kernel, 1, 2)}
        else:
            slices = {name: (self.qkv_kernel, i, 3) for i, name in enumerate(("query", "key", "value"))}
        slices["output"] = (self.output_kernel, 0, 1)
        return slices

    def merged_lora_kernels(self):
        """``{variable name: kernel + LoRA update}`` for every kernel this layer's LoRA adapts.

        Each update ``alpha / rank * lora_a @ lora_b`` is added to its column block of
        the fused kernel (``[Q | K | V]`` for self-attention, ``[K | V]`` for
        cross-attention). Empty without LoRA.
        """
        merged = {}
        if not self.has_lora:
            return merged
        slices = self._kernel_slices()
        for target in self.lora_targets:
            kernel, part, parts = slices[target]
            value = merged.get(kernel.name)
            if value is None:
                value = np.array(kernel.numpy(), dtype=np.float32, copy=True)
            width = value.shape[1] // parts
            value[:, part * width : (part + 1) * width] += getattr(self, f"{target}_lora").delta_kernel().numpy()
            merged[kernel.name] = value
        return merged

    def _split_heads(self, x, parts, heads_first=False):
        """``[b, t, parts*h*d]`` -> ``parts`` tensors of ``[b, t, h, d]`` (``heads_first``: ``[b, h, t, d]``).

        Heads-first takes one transpose for all parts, where the matmuls of the
        attention want them.
        """
        shape = tf.shape(x)
        x = tf.reshape(x, [shape[0], shape[1], parts, self.num_heads, self.head_dim])
        if not heads_first:
            return tf.unstack(x, num=parts, axis=2)
        return tf.unstack(tf.transpose(x, [2, 0, 3, 1, 4]), num=parts, axis=0)

    def compute_kv(self, context, training=None):
        """Keys and values of a cross-attention context, stacked as a cache ``[b, 2, k, h, d]``."""
        context = tf.cast(context, self.compute_dtype)
        k, v = self._split_heads(self.quant_point("kv", _project(context, self.kv_kernel, self.kv_bias)), 2)
        k = self._plus_lora("key", context, k, training)
        v = self._plus_lora("value", context, v, training)
        return tf.stack([k, v], axis=1)

    def call(
        self,
        query,
        context=None,
        attention_mask=None,
        attention_bias=None,
        use_causal_mask=False,
        cache=None,
        cache_index=None,
        return_attention_scores=False,
        training=None,
    ):
        new_cache = None
        if self.cross_attention:
            if cache is not None:
                new_cache = tf.cast(cache, self.compute_dtype)
                k, v = new_cache[:, 0], new_cache[:, 1]
            else:
                if context is None:
                    raise ValueError("cross-attention needs `context` (the encoder outputs)")
                k, v = tf.unstack(self.compute_kv(context, training=training), num=2, axis=1)
            (q,) = self._split_heads(self.quant_point("projection", _project(query, self.query_kernel, self.query_bias)), 1)
            q = self._plus_lora("query", query, q, training)
            q, k, v = _heads_first(q), _heads_first(k), _heads_first(v)
        else:
            if context is not None:
                raise ValueError("`context` is only for cross_attention=True layers")
            if self._chunked_window(cache, attention_mask, attention_bias, return_attention_scores, training):
                return self._chunked_window_call(query, attention_mask, use_causal_mask, training)
            qkv = self.quant_point("projection", _project(query, self.qkv_kernel, self.qkv_bias))
            heads_first = cache is None
            q, k, v = (
                self._plus_lora(target, query, y, training, heads_first)
                for target, y in zip(("query", "key", "value"), self._split_heads(qkv, 3, heads_first))
            )
            if cache is not None:
                cache = tf.cast(cache, self.compute_dtype)
                kv = tf.stack([k, v], axis=1)
                if cache_index is None:
                    new_cache = tf.concat([cache, kv], axis=2)
                else:
                    new_cache = update_cache(cache, kv, cache_index)
                q, k, v = _heads_first(q), _heads_first(new_cache[:, 0]), _heads_first(new_cache[:, 1])

        # q, k, v: [batch, heads, length, head_dim]
        scale = 1.0 / math.sqrt(self.head_dim)
        if self.attention_type != "full" and cache is None:
            q = self.quant_point("scaled_query", q * tf.cast(scale, q.dtype))
            context_out = self._local_attention(
                q, k, v, attention_mask, attention_bias, use_causal_mask, return_attention_scores, training
            )
            probs = None
        elif is_inference(training) and self.runtime_fast_path():  # training keeps its measured graph (speed note 5)
            mask = self._mask(q, k, attention_mask, use_causal_mask, cache, cache_index)
            probs = _biased_softmax(q, k, scale, mask, attention_bias)
            context_out = tf.matmul(self._dropout_layer(tf.cast(probs, self.compute_dtype), training=training), v)
        else:
            q = self.quant_point("scaled_query", q * tf.cast(scale, q.dtype))
            mask = self._mask(q, k, attention_mask, use_causal_mask, cache, cache_index)
            scores = tf.cast(self.quant_point("scores", tf.matmul(q, k, transpose_b=True)), tf.float32)
            if attention_bias is not None:
                scores = scores + tf.cast(attention_bias, tf.float32)
            probs, v, total = _masked_softmax(scores, mask, v)
            dropped = self._dropout_layer(tf.cast(probs, self.compute_dtype), training=training)
            context_out = self.quant_point("weighted_values", tf.matmul(dropped, v))
            if total is not None:
                context_out = self.quant_point("context", context_out / tf.cast(total, context_out.dtype))
        shape = tf.shape(context_out)
        context_out = tf.reshape(
            _heads_first(context_out), [shape[0], shape[2], self.num_heads * self.head_dim]
        )
        output = self.quant_point("output", _project(context_out, self.output_kernel, self.output_bias))
        output = self._plus_lora("output", context_out, output, training)

        results = [output]
        if return_attention_scores:
            results.append(probs)
        if new_cache is not None:
            results.append(new_cache)
        return results[0] if len(results) == 1 else tuple(results)

    def _chunked_window(self, cache, attention_mask, attention_bias, return_scores, training):
        """True when sliding-window self-attention runs as :func:`chunked_local_attention`.

        That is TensorFlow's CPU runtime form for inference (outside ``portable_graph``,
        not quantization-aware, not XLA-compiled, float32); every other call, and every
        call the local path rejects (a bias, scores, a non-padding mask), keeps
        :func:`local_attention`.
        """
        return (
            self.attention_type == "sliding_window"
            and cache is None
            and attention_bias is None
            and not return_scores
            and (attention_mask is None or tf.convert_to_tensor(attention_mask).shape.rank == 2)
            and self.compute_dtype == "float32"
            and is_inference(training)
            and self.runtime_fast_path()
            and not in_xla_context()
        )

    def _chunked_window_call(self, query, attention_mask, use_causal_mask, training):
        """Sliding-window self-attention as :func:`chunked_local_attention` of the fused projection.

        Without LoRA the ``1/sqrt(head_dim)`` query scale is folded into the query
        columns of the projection kernel and bias (a ``[hidden, hidden]`` product per
        call, not one over every query); with LoRA the queries are scaled.
        """
        scale = 1.0 / math.sqrt(self.head_dim)
        width = self.num_heads * self.head_dim
        if self.has_lora:
            qkv = _project(query, self.qkv_kernel, self.qkv_bias)
            parts = self._split_heads(qkv, 3)
            qkv = tf.stack(
                [self._plus_lora(t, query, y, training) for t, y in zip(("query", "key", "value"), parts)], axis=2
            )
        else:
            columns = tf.concat([tf.fill([width], tf.constant(scale, self.compute_dtype)),
                                 tf.ones([2 * width], self.compute_dtype)], axis=0)
            bias = None if self.qkv_bias is None else self.qkv_bias * columns
            qkv = _project(query, self.qkv_kernel * columns, bias)
            shape = tf.shape(qkv)
            qkv = tf.reshape(qkv, [shape[0], shape[1], 3, self.num_heads, self.head_dim])
            scale = 1.0
        key_mask = None if attention_mask is None else expand_attention_mask(attention_mask)[:, 0, 0]
        context_out = chunked_local_attention(
            qkv, self.attention_window, key_mask, causal=use_causal_mask, scale=scale
        )
        shape = tf.shape(context_out)
        context_out = tf.reshape(context_out, [shape[0], shape[1], width])
        output = self.quant_point("output", _project(context_out, self.output_kernel, self.output_bias))
        return self._plus_lora("output", context_out, output, training)

    def _mask(self, q, k, attention_mask, use_causal_mask, cache, cache_index):
        """The boolean mask of full attention (padding, causal and, with a cache, the local band)."""
        q_len, k_len = tf.shape(q)[2], tf.shape(k)[2]
        offset = cache_index if (cache is not None and cache_index is not None) else None
        causal = causal_mask(q_len, k_len, query_offset=offset) if use_causal_mask else None
        if self.attention_type != "full":  # decoding with a cache: the band as a dense mask
            if offset is None:
                offset = k_len - q_len
            band = local_attention_mask(q_len, k_len, self.attention_window, self.global_tokens, offset)
            causal = band if causal is None else causal & band
        return combine_masks(attention_mask, causal)

    def _local_attention(self, q, k, v, attention_mask, attention_bias, causal, return_scores, training):
        """Sliding-window / global+local self-attention ``[b, h, n, d]`` of scaled ``q`` (no cache)."""
        where = f"MultiHeadAttention {self.name!r} (attention_type={self.attention_type!r})"
        if attention_bias is not None:
            raise ValueError(f"{where}: attention_bias needs attention_type='full' (a bias is [n, n])")
        if return_scores:
            raise ValueError(f"{where}: return_attention_scores needs attention_type='full'")
        key_mask = None
        if attention_mask is not None:
            attention_mask = tf.convert_to_tensor(attention_mask)
            if attention_mask.shape.rank != 2:
                raise ValueError(
                    f"{where}: attention_mask must be a [batch, length] padding mask, got shape "
                    f"{attention_mask.shape}; give the pattern through attention_type instead"
                )
            key_mask = expand_attention_mask(attention_mask)[:, 0, 0]

        def dropout(probs):
            return self._dropout_layer(tf.cast(probs, self.compute_dtype), training=training)

        return local_attention(
            q, k, v, self.attention_window, key_mask, self.global_tokens, causal=causal, dropout=dropout
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "cross_attention": self.cross_attention,
                "context_dim": self.context_dim,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "lora_rank": self.lora_rank,
                "lora_alpha": self.lora_alpha,
                "lora_dropout": self.lora_dropout,
                "lora_targets": list(self.lora_targets),
                "attention_type": self.attention_type,
                "attention_window": self.attention_window,
                "global_tokens": self.global_tokens,
            }
        )
        return config
