"""Attention mask helpers.

Convention everywhere in kerasllm: a mask value of 1 / True means "may attend",
0 / False means "masked". Masks are combined into one boolean tensor of shape
``[batch, 1 or heads, query_length, key_length]`` before the softmax.
"""
import tensorflow as tf

# Added to masked scores before the softmax. exp(-1e9 - max) underflows to exactly
# 0.0 in float32, so masked keys get exactly zero probability.
MASK_VALUE = -1e9


def causal_mask(query_length, key_length, query_offset=None):
    """Boolean ``[query_length, key_length]`` mask: query ``i`` sees keys ``<= offset + i``.

    Args:
        query_length: number of query positions (int or scalar tensor).
        key_length: number of key positions (int or scalar tensor).
        query_offset: absolute position of the first query (the number of keys
            already in a cache). Defaults to ``key_length - query_length``, so that
            the last query sees every key.
    """
    if query_offset is None:
        query_offset = key_length - query_length
    q_pos = tf.range(query_length)[:, None] + tf.cast(query_offset, tf.int32)
    k_pos = tf.range(key_length)[None, :]
    return k_pos <= q_pos


def _nonzero(mask):
    """``mask != 0`` as a boolean tensor, without NOT_EQUAL or CAST on integer masks.

    TFLite's 16x8 quantizer (int16 activations) finds no range for an int32 graph
    input that reaches NOT_EQUAL or CAST and stops ("Empty min/max for tensor
    serving_default_attention_mask"). For integer masks the boolean is therefore
    looked up instead: ``[False, True][min(|max(mask, -1)|, 1)]`` (the ``max``
    keeps the most negative integer, whose ``abs`` overflows, at index 1).
    """
    if not mask.dtype.is_integer:
        return tf.not_equal(mask, tf.zeros([], mask.dtype))
    if mask.dtype not in (tf.int32, tf.int64):
        mask = tf.cast(mask, tf.int32)  # gather takes int32/int64 indices only
    index = tf.minimum(tf.abs(tf.maximum(mask, -1)), 1)
    return tf.gather(tf.constant([False, True]), index)


def expand_attention_mask(mask):
    """Return a boolean mask of rank 4 ``[batch, 1|heads, q|1, k]``.

    Accepts ``[batch, k]`` (key padding), ``[batch, q, k]`` or ``[batch, h, q, k]``.
    """
    mask = tf.convert_to_tensor(mask)
    if mask.dtype != tf.bool:
        mask = _nonzero(mask)
    rank = mask.shape.rank
    # expand_dims rather than mask[:, None, ...]: the TFLite converter rejects that
    # strided slice when batch and length are both dynamic.
    if rank == 2:
        return tf.expand_dims(tf.expand_dims(mask, 1), 1)
    if rank == 3:
        return tf.expand_dims(mask, 1)
    if rank == 4:
        return mask
    raise ValueError(
        "attention_mask must have rank 2 [batch, key_len], 3 [batch, query_len, key_len] "
        f"or 4 [batch, heads, query_len, key_len]; got shape {mask.shape}"
    )


def combine_masks(attention_mask=None, causal=None):
    """AND together an optional padding/attention mask and an optional causal mask."""
    combined = None
    if attention_mask is not None:
        combined = expand_attention_mask(attention_mask)
    if causal is not None:
        # (a slice, not expand_dims: tf2onnx mis-optimises the expand_dims chain in the
        # cached GPT graph; this mask has no batch axis, so TFLite converts it as is)
        causal = causal[None, None, :, :]
        combined = causal if combined is None else tf.logical_and(combined, causal)
    return combined


def local_attention_mask(query_length, key_length, window, global_tokens=0, query_offset=0):
    """Boolean ``[query_length, key_length]`` mask of sliding-window (and global+local) attention.

    Query ``i`` (absolute position ``query_offset + i``) may attend key ``j`` when
    ``|i - j| <= window``, or when either position is one of the first
    ``global_tokens`` (Longformer-style global tokens). This dense mask is what
    :func:`kerasllm.layers.local_attention.local_attention` computes without
    materialising it; it serves decoding with a cache and as the reference.

    Args:
        query_length: number of query positions (int or scalar tensor).
        key_length: number of key positions (int or scalar tensor).
        window: keys seen on each side of a query.
        global_tokens: number of leading global positions (0 = none).
        query_offset: absolute position of the first query (cache index).

    Example:

    >>> local_attention_mask(4, 4, window=1).numpy().astype(int)
    array([[1, 1, 0, 0],
           [1, 1, 1, 0],
           [0, 1, 1, 1],
           [0, 0, 1, 1]])
    """
    q_pos = tf.range(query_length)[:, None] + tf.cast(query_offset, tf.int32)
    k_pos = tf.range(key_length)[None, :]
    allowed = tf.abs(q_pos - k_pos) <= window
    if global_tokens:
        allowed = allowed | (k_pos < global_tokens) | (q_pos < global_tokens)
    return allowed


def local_band(window, causal=False):
    """The static ``[window, 3 * window]`` band of one block of queries against its 3 neighbouring blocks.

    Row ``r`` is the query at offset ``r`` of its block; column ``s`` the key at offset
    ``s - window`` from the block's start. ``True`` where ``|key - query| <= window``
    (and ``key <= query`` with ``causal``).
    """
    relative = tf.range(3 * window)[None, :] - window - tf.range(window)[:, None]  # key - query
    band = tf.abs(relative) <= window
    return band & (relative <= 0) if causal else band
