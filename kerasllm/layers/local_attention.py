"""Sliding-window and global+local attention computed block by block (memory O(n * w), not O(n^2)).

The sequence is cut into blocks of ``window`` positions; each block of queries is scored
against the keys of its own block and of its two neighbours (``3 * window`` keys), and a
band mask keeps exactly the keys with ``|i - j| <= window``. No tensor ever has an
``n x n`` shape: the scores are ``[batch, heads, n / window, window, 3 * window]``.

With ``global_tokens = g > 0`` (Longformer-style global+local attention) the first ``g``
positions are global: every query also sees them, and their own queries see every key.
Those ``g`` extra key columns and ``g`` query rows add ``O(n * g)``.

These functions take heads-first tensors ``[batch, heads, n, head_dim]`` with the queries
already scaled; :class:`~kerasllm.layers.MultiHeadAttention` calls them when its
``attention_type`` is ``"sliding_window"`` or ``"global_local"``.
"""
import tensorflow as tf

from kerasllm.layers.masks import MASK_VALUE, local_band


def _to_blocks(x, num_blocks, window):
    """``[b, h, n, ...]`` padded at the end to ``num_blocks * window`` and cut into ``[b, h, nb, w, ...]``."""
    shape = tf.shape(x)
    pad = num_blocks * window - shape[2]
    rank = x.shape.rank
    x = tf.pad(x, [[0, 0], [0, 0], [0, pad]] + [[0, 0]] * (rank - 3))
    return tf.reshape(x, tf.concat([shape[:2], [num_blocks, window], shape[3:]], axis=0))


def _with_neighbours(blocks):
    """``[b, h, nb, w, ...]`` -> ``[b, h, nb, 3w, ...]``: each block's previous, own and next block.

    The blocks before the first and after the last are zeros (their keys are masked).
    """
    rank = blocks.shape.rank
    padded = tf.pad(blocks, [[0, 0], [0, 0], [1, 1]] + [[0, 0]] * (rank - 3))
    return tf.concat([padded[:, :, :-2], padded[:, :, 1:-1], padded[:, :, 2:]], axis=3)


def _softmax_dropout(scores, mask, dropout):
    """Masked softmax over the last axis (float32), then ``dropout`` (a callable or None)."""
    scores = tf.where(mask, scores, tf.constant(MASK_VALUE, scores.dtype))
    probs = tf.nn.softmax(scores, axis=-1)
    return dropout(probs) if dropout is not None else probs


def local_attention(q, k, v, window, key_mask=None, global_tokens=0, causal=False, dropout=None):
    """Attention of every query to the keys within ``window`` positions (plus global tokens).

    Query ``i`` attends key ``j`` when ``|i - j| <= window`` (``0 <= i - j <= window``
    with ``causal``), or when ``j < global_tokens`` or ``i < global_tokens`` (``j <= i``
    still holds with ``causal``), and ``key_mask[j]`` is set. The result equals full
    attention with :func:`kerasllm.layers.masks.local_attention_mask` AND the padding
    mask, for every query that sees at least one key (rows with every key masked are
    undefined, as in full attention).

    Args:
        q: queries ``[batch, heads, n, head_dim]``, already scaled by ``1/sqrt(head_dim)``.
        k, v: keys and values ``[batch, heads, n, head_dim]`` (self-attention: same ``n``).
        window: positions seen on each side; also the block size.
        key_mask: optional ``[batch, n]`` padding mask (1/True = real token).
        global_tokens: number of leading global positions (0 = pure sliding window).
        causal: restrict query ``i`` to keys ``j <= i``.
        dropout: optional callable applied to the float32 probabilities.

    Returns:
        ``[batch, heads, n, head_dim]`` in the dtype of ``v``.

    Example:

    >>> import numpy as np
    >>> q = k = v = tf.constant(np.random.rand(1, 2, 10, 4), tf.float32)
    >>> local_attention(q, k, v, window=3).shape
    TensorShape([1, 2, 10, 4])
    """
    window = int(window)
    global_tokens = int(global_tokens)
    n = tf.shape(q)[2]
    num_blocks = (n + window - 1) // window
    if key_mask is None:
        key_valid = tf.ones([tf.shape(q)[0], n], tf.bool)
    else:
        key_valid = tf.cast(key_mask, tf.bool)
    positions = tf.range(n)

    # Window part: [b, h, nb, w, d] queries against [b, h, nb, 3w, d] keys.
    q_blocks = _to_blocks(q, num_blocks, window)
    k_window = _with_neighbours(_to_blocks(k, num_blocks, window))
    v_window = _with_neighbours(_to_blocks(v, num_blocks, window))
    scores = tf.cast(tf.matmul(q_blocks, k_window, transpose_b=True), tf.float32)
    # Keys a window may use: real tokens, not padding added here, not global (counted apart).
    window_keys = key_valid & (positions >= global_tokens)[None, :]
    window_keys = _with_neighbours(_to_blocks(window_keys[:, None], num_blocks, window))[:, 0]  # [b, nb, 3w]
    mask = local_band(window, causal)[None, None, None] & window_keys[:, None, :, None, :]

    if not global_tokens:
        probs = _softmax_dropout(scores, mask, dropout)
        out = tf.matmul(tf.cast(probs, v.dtype), v_window)
    else:
        # Every query also sees the global keys: g extra score columns per query.
        k_global, v_global = k[:, :, None, :global_tokens], v[:, :, None, :global_tokens]
        global_scores = tf.cast(tf.matmul(q_blocks, k_global, transpose_b=True), tf.float32)
        global_keys = key_valid[:, :global_tokens][:, None, None, None, :]  # [b, 1, 1, 1, g]
        if causal:
            query_pos = tf.reshape(tf.range(num_blocks * window), [num_blocks, window])
            global_keys = global_keys & (tf.range(global_tokens)[None, None, :] <= query_pos[:, :, None])
        width = tf.shape(global_scores)[-1]
        probs = _softmax_dropout(
            tf.concat([global_scores, scores], axis=-1),
            tf.concat([tf.broadcast_to(global_keys, tf.shape(global_scores)), tf.broadcast_to(mask, tf.shape(scores))], -1),
            dropout,
        )
        probs = tf.cast(probs, v.dtype)
        out = tf.matmul(probs[..., :width], v_global) + tf.matmul(probs[..., width:], v_window)
    shape = tf.shape(q)
    out = tf.reshape(out, [shape[0], shape[1], num_blocks * window, shape[3]])[:, :, :n]
    if not global_tokens:
        return out

    # The global queries see every key: g rows of full attention.
    q_global = q[:, :, :global_tokens]
    row_scores = tf.cast(tf.matmul(q_global, k, transpose_b=True), tf.float32)  # [b, h, g, n]
    row_mask = key_valid[:, None, None, :]
    if causal:
        row_mask = row_mask & (positions[None, :] <= tf.range(tf.shape(q_global)[2])[:, None])
    row_probs = _softmax_dropout(row_scores, tf.broadcast_to(row_mask, tf.shape(row_scores)), dropout)
    global_out = tf.matmul(tf.cast(row_probs, v.dtype), v)
    return tf.concat([global_out, out[:, :, global_tokens:]], axis=2)
