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

:func:`chunked_local_attention` computes the same sliding window for TensorFlow's CPU
runtime (inference outside :func:`kerasllm.layers._utils.portable_graph`). Its blocks
are smaller than the window (:func:`local_block_size`, 128 for ``w = 256``: ``2w + 128``
keys per query instead of ``3w``), and it runs the blocks a few at a time in a
``tf.while_loop`` (two steps in flight), so each chunk's scores (about
:data:`CHUNK_SCORE_BYTES`) are written, normalised and multiplied by the values while
they are still in the cache. Written all at once, the scores of a 4096-token sequence
with 12 heads are 126 MB, and the ``q k^T`` product ran at 97 GFLOP/s on a 2-core
Xeon, against up to 286 GFLOP/s for the same product in pieces.
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


#: Bytes of float32 scores :func:`chunked_local_attention` computes per loop step. On a
#: 2-core Xeon, 8 MB chunks with two steps in flight were fastest for the attention of a
#: 4096-token sequence with 12 heads (47-49 ms, against 49-55 ms for 16 MB chunks one at
#: a time and about 60 ms for all 126 MB of scores at once).
CHUNK_SCORE_BYTES = 8 * 2**20


def local_block_size(window):
    """The query-block size of :func:`chunked_local_attention` for ``window``.

    The largest divisor of ``window`` from 32 to 128 (each query block then needs the
    keys of ``2 * window / size + 1`` whole blocks), else ``window`` itself.

    >>> local_block_size(256), local_block_size(200), local_block_size(64), local_block_size(257)
    (128, 100, 64, 257)
    """
    window = int(window)
    for size in range(min(window, 128), 31, -1):
        if window % size == 0:
            return size
    return window


def chunked_local_attention(qkv, window, key_mask=None, causal=False, scale=1.0, chunk_bytes=None):
    """Sliding-window self-attention of stacked heads-last ``qkv``, a few blocks per loop step.

    The same function as :func:`local_attention` without global tokens or dropout
    (query ``i`` attends key ``j`` when ``|i - j| <= window``, ``0 <= i - j <=
    window`` with ``causal``, and ``key_mask[j]`` is set), laid out for TensorFlow's
    CPU kernels: the sequence is cut into blocks of :func:`local_block_size` positions,
    heads outermost, so one gather gives a chunk's queries ``[heads, G, c, d]`` and one
    its keys or values ``[heads, G, L, d]`` (``L = c + window`` with ``causal``, else
    ``c + 2 * window``) without a transpose. The scores are ``q k^T * scale + mask``,
    which the CPU graph optimizer fuses into one oneDNN kernel, with the band and the
    padding as additive ``-1e9``. A chunk holds ``G`` blocks, about ``chunk_bytes``
    (default :data:`CHUNK_SCORE_BYTES`) of scores; memory stays ``O(n * window)``.

    For inference in float32 in a graph that is not XLA-compiled (the loop has a
    smaller last chunk); rows whose keys are all masked are finite but undefined, as
    in :func:`local_attention`.

    Args:
        qkv: ``[batch, n, 3, heads, head_dim]``: queries (not yet scaled), keys, values.
        window: positions seen on each side.
        key_mask: optional ``[batch, n]`` padding mask (1/True = real token).
        causal: restrict query ``i`` to keys ``j <= i``.
        scale: multiplies ``q k^T`` (``1/sqrt(head_dim)``).
        chunk_bytes: score bytes per loop step.

    Returns:
        ``[batch, n, heads, head_dim]``.

    Example:

    >>> import numpy as np
    >>> qkv = tf.constant(np.random.rand(1, 10, 3, 2, 4), tf.float32)
    >>> chunked_local_attention(qkv, window=3).shape
    TensorShape([1, 10, 2, 4])
    """
    window = int(window)
    block = local_block_size(window)
    left = window // block
    right = 0 if causal else left
    width = (left + 1 + right) * block  # keys per query block
    heads, head_dim = qkv.shape[3], qkv.shape[4]
    shape = tf.shape(qkv)
    batch, n = shape[0], shape[1]
    num_blocks = (n + block - 1) // block
    padded_blocks = num_blocks + left + right
    end_pad = num_blocks * block - n

    # [3, heads, batch * num_blocks, block, head_dim]: one transpose for q, k and v (the pad is
    # a no-op when n is a multiple of the block). The blocks before the first and after the
    # last are not materialised: their gathers read a real block and the mask drops it.
    x = tf.pad(qkv, [[0, 0], [0, end_pad], [0, 0], [0, 0], [0, 0]])
    x = tf.transpose(tf.reshape(x, [batch * num_blocks * block, 3, heads, head_dim]), [1, 2, 0, 3])
    q_blocks, k_blocks, v_blocks = tf.unstack(tf.reshape(x, [3, heads, -1, block, head_dim]))
    if scale != 1.0:
        q_blocks = q_blocks * tf.constant(scale, q_blocks.dtype)
    # Additive masks: padding per key, over blocks padded with `left` and `right` masked
    # blocks (positions outside the sequence), and the band.
    valid = tf.ones([batch, n], tf.bool) if key_mask is None else tf.cast(key_mask, tf.bool)
    valid = tf.reshape(tf.pad(valid, [[0, 0], [left * block, end_pad + right * block]]), [-1, block])
    key_add = tf.where(valid, tf.zeros([], tf.float32), tf.constant(MASK_VALUE, tf.float32))
    relative = tf.range(width)[None, :] - left * block - tf.range(block)[:, None]  # key - query
    band = (relative <= 0) & (relative >= -window) if causal else tf.abs(relative) <= window
    band_add = tf.where(band, tf.zeros([], tf.float32), tf.constant(MASK_VALUE, tf.float32))[None, None]

    total = batch * num_blocks
    per_block = int(heads) * block * width * 4
    group = max(1, int(chunk_bytes or CHUNK_SCORE_BYTES) // per_block)
    steps = (total + group - 1) // group
    offsets = tf.range(left + 1 + right)[None, :]

    def step(i, outputs):
        t = tf.range(i * group, tf.minimum(i * group + group, total))  # query blocks of this chunk
        sequence, index = (t // num_blocks)[:, None], (t % num_blocks)[:, None]
        window_blocks = index + offsets  # [G, blocks per window], counted in the masked padding
        keys = sequence * num_blocks + tf.clip_by_value(window_blocks - left, 0, num_blocks - 1)
        q = tf.gather(q_blocks, t, axis=1)  # [h, G, c, d]
        k = tf.reshape(tf.gather(k_blocks, keys, axis=1), [heads, -1, width, head_dim])
        v = tf.reshape(tf.gather(v_blocks, keys, axis=1), [heads, -1, width, head_dim])
        key_blocks = tf.gather(key_add, sequence * padded_blocks + window_blocks)
        addend = band_add + tf.reshape(key_blocks, [1, -1, 1, width])
        scores = tf.matmul(q, k, transpose_b=True) + addend
        out = tf.matmul(tf.nn.softmax(scores, axis=-1), v)  # [h, G, c, d]
        return i + 1, outputs.write(i, tf.transpose(out, [1, 2, 0, 3]))

    outputs = tf.TensorArray(qkv.dtype, size=steps, infer_shape=False)
    _, outputs = tf.while_loop(lambda i, _: i < steps, step, [tf.constant(0), outputs], parallel_iterations=2)
    out = tf.reshape(outputs.concat(), [batch, num_blocks * block, heads, head_dim])
    return out[:, :n]


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
