"""Attention mask helpers.

Convention everywhere in kerasllm: a mask value of 1 / True means "may attend",
0 / False means "masked". Masks are combined into one boolean tensor of shape
``[batch, 1 or heads, query_length, key_length]`` before the softmax.
"""
import tensorflow as tf


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


def expand_attention_mask(mask):
    """Return a boolean mask of rank 4 ``[batch, 1|heads, q|1, k]``.

    Accepts ``[batch, k]`` (key padding), ``[batch, q, k]`` or ``[batch, h, q, k]``.
    """
    mask = tf.convert_to_tensor(mask)
    if mask.dtype != tf.bool:
        mask = tf.not_equal(mask, tf.zeros([], mask.dtype))
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
