"""Logit processors with Hugging Face's semantics, as TensorFlow ops on ``[batch, vocab]`` scores.

Each runs inside the compiled decoding step (static shapes, XLA-friendly). The
order of application is Hugging Face's: repetition penalty, then (sampling
only) temperature, top-k, top-p.
"""
import tensorflow as tf

NEG_INF = float("-inf")


def repetition_penalty(scores, seen, penalty):
    """Penalise the tokens already seen: divide their positive scores by ``penalty``, multiply the negative ones.

    Args:
        scores: ``[batch, vocab]`` float logits (or log-probabilities in beam search).
        seen: ``[batch, vocab]`` bool, True for tokens in the prompt or the output so far.
        penalty: scalar > 0; 1.0 changes nothing.

    Example:

    >>> import numpy as np
    >>> repetition_penalty(np.array([[2.0, -2.0, 2.0]]), np.array([[True, True, False]]), 2.0).numpy()
    array([[ 1., -4.,  2.]])
    """
    scores = tf.convert_to_tensor(scores)
    penalty = tf.cast(penalty, scores.dtype)
    penalised = tf.where(scores < 0, scores * penalty, scores / penalty)
    return tf.where(tf.cast(seen, tf.bool), penalised, scores)


def top_k_filter(scores, k):
    """Set every score below the ``k``-th largest of its row to -inf (ties with it are kept).

    Example:

    >>> top_k_filter([[1.0, 3.0, 2.0]], 2).numpy()
    array([[-inf,   3.,   2.]], dtype=float32)
    """
    scores = tf.convert_to_tensor(scores)
    k = tf.minimum(tf.cast(k, tf.int32), tf.shape(scores)[-1])
    kth = tf.math.top_k(scores, k=k, sorted=True).values[:, -1:]
    return tf.where(scores < kth, tf.constant(NEG_INF, scores.dtype), scores)


def top_p_filter(scores, p):
    """Nucleus filtering: keep the most likely tokens until their probability reaches ``p``, set the rest to -inf.

    As Hugging Face: sorted ascending, a token is dropped when the cumulative
    probability up to and including it is ``<= 1 - p``; the most likely token
    always stays.

    Example:

    >>> import numpy as np
    >>> top_p_filter(np.log([[0.5, 0.3, 0.2]]).astype("float32"), 0.75).numpy().round(3)
    array([[-0.693, -1.204,   -inf]], dtype=float32)
    """
    scores = tf.convert_to_tensor(scores)
    ascending = tf.sort(scores, axis=-1, direction="ASCENDING")
    cumulative = tf.cumsum(tf.nn.softmax(ascending, axis=-1), axis=-1)
    dropped = tf.cast(cumulative <= 1 - tf.cast(p, cumulative.dtype), tf.int32)
    # The dropped tokens are a prefix of the ascending order; never drop the last (most likely) one.
    count = tf.minimum(tf.reduce_sum(dropped, axis=-1), tf.shape(scores)[-1] - 1)
    threshold = tf.gather(ascending, count, axis=-1, batch_dims=1)[:, None]
    return tf.where(scores < threshold, tf.constant(NEG_INF, scores.dtype), scores)


_MASK32 = 0xFFFFFFFF


def _mix32(x):
    """MurmurHash3's 32-bit finaliser on int64 tensors holding uint32 values (a bijection)."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = tf.bitwise.bitwise_and(x * 0x85EBCA6B, _MASK32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13))
    x = tf.bitwise.bitwise_and(x * 0xC2B2AE35, _MASK32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def hash_uniform(shape, seed):
    """Uniform floats in (0, 1) of a 2-D ``shape`` from a ``[2]`` int seed, by hashing each element's index.

    Plain integer ops, so TensorFlow and XLA give the same numbers (their
    built-in stateless generators differ).
    """
    seed = tf.bitwise.bitwise_and(tf.cast(seed, tf.int64), _MASK32)
    key = _mix32(tf.bitwise.bitwise_xor(_mix32(seed[0] + 0x9E3779B9), seed[1]))
    count = tf.cast(shape[0], tf.int64) * tf.cast(shape[1], tf.int64)
    index = tf.reshape(tf.range(count, dtype=tf.int64), shape)
    bits = _mix32(tf.bitwise.bitwise_xor(_mix32(tf.bitwise.bitwise_xor(tf.bitwise.bitwise_and(index, _MASK32), key)), key))
    # 24 random bits, centred in their bucket: never exactly 0 or 1.
    return (tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) + 0.5) / float(1 << 24)


def sample_tokens(scores, seed):
    """One token per row drawn from ``softmax(scores)`` (Gumbel-max; ``seed`` ``[2]`` int32, stateless).

    Tokens whose score is -inf are never drawn. The same seed gives the same
    tokens with and without XLA.
    """
    uniform = hash_uniform(tf.shape(scores), seed)
    gumbel = -tf.math.log(-tf.math.log(uniform))
    return tf.argmax(tf.cast(scores, tf.float32) + gumbel, axis=-1, output_type=tf.int32)
