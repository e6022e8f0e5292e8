"""Independent float64 NumPy re-implementations of kerasllm's layers, for the tests.

Written from the papers' equations, not from the layer code: weights are read
out of a layer by name and the forward pass is recomputed here.
"""
import math

import numpy as np

_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def relu(x):
    return np.maximum(x, 0.0)


ACTIVATIONS = {"gelu": gelu, "gelu_tanh": gelu_tanh, "relu": relu}


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def attention(q_in, kv_in, w, num_heads, mask=None, bias=None, causal=False):
    """Multi-head attention.

    ``w``: dict with ``wq, bq, wk, bk, wv, bv, wo, bo`` (float64). ``mask``: bool,
    broadcastable to ``[b, h, q, k]`` (True = attend). Returns ``(output, probs)``.
    """
    b, tq, _ = q_in.shape
    tk = kv_in.shape[1]
    inner = w["wq"].shape[1]
    d = inner // num_heads

    def heads(x, t):
        return x.reshape(b, t, num_heads, d).transpose(0, 2, 1, 3)

    q = heads(q_in @ w["wq"] + w["bq"], tq)
    k = heads(kv_in @ w["wk"] + w["bk"], tk)
    v = heads(kv_in @ w["wv"] + w["bv"], tk)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    if bias is not None:
        scores = scores + bias
    allowed = np.ones((b, num_heads, tq, tk), bool)
    if mask is not None:
        allowed &= np.broadcast_to(mask, allowed.shape)
    if causal:
        allowed &= np.tril(np.ones((tq, tk), bool), k=tk - tq)[None, None]
    scores = np.where(allowed, scores, -np.inf)
    probs = softmax(scores)
    ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, tq, inner)
    return ctx @ w["wo"] + w["bo"], probs


def attention_weights(layer):
    """Split a kerasllm ``MultiHeadAttention``'s weights into q/k/v/o float64 arrays."""
    g = lambda v: v.numpy().astype(np.float64)  # noqa: E731
    if layer.cross_attention:
        wq, bq = g(layer.query_kernel), g(layer.query_bias)
        wk, wv = np.split(g(layer.kv_kernel), 2, axis=1)
        bk, bv = np.split(g(layer.kv_bias), 2)
    else:
        wq, wk, wv = np.split(g(layer.qkv_kernel), 3, axis=1)
        bq, bk, bv = np.split(g(layer.qkv_bias), 3)
    return dict(wq=wq, bq=bq, wk=wk, bk=bk, wv=wv, bv=bv, wo=g(layer.output_kernel), bo=g(layer.output_bias))


def _norm(layer):
    return layer.gamma.numpy().astype(np.float64), layer.beta.numpy().astype(np.float64), layer.epsilon


def ffn(layer, x, activation):
    g = lambda v: v.numpy().astype(np.float64)  # noqa: E731
    h = ACTIVATIONS[activation](x @ g(layer.intermediate.kernel) + g(layer.intermediate.bias))
    return h @ g(layer.output_dense.kernel) + g(layer.output_dense.bias)


def residual(x, norm_layer, fn, normalize_first):
    gamma, beta, eps = _norm(norm_layer)
    if normalize_first:
        return x + fn(layer_norm(x, gamma, beta, eps))
    return layer_norm(x + fn(x), gamma, beta, eps)


def encoder_block(block, x, mask=None, bias=None, causal=False):
    w = attention_weights(block.attention)
    nf = block.normalize_first
    x = residual(x, block.attention_norm, lambda h: attention(h, h, w, block.num_heads, mask, bias, causal)[0], nf)
    return residual(x, block.ffn_norm, lambda h: ffn(block.ffn, h, block.activation), nf)


def decoder_block(block, x, encoder_outputs=None, mask=None, encoder_mask=None):
    nf = block.normalize_first
    w = attention_weights(block.attention)
    x = residual(x, block.attention_norm, lambda h: attention(h, h, w, block.num_heads, mask, causal=True)[0], nf)
    if block.cross_attention_enabled:
        wc = attention_weights(block.cross_attention)
        x = residual(
            x,
            block.cross_attention_norm,
            lambda h: attention(h, encoder_outputs, wc, block.num_heads, encoder_mask)[0],
            nf,
        )
    return residual(x, block.ffn_norm, lambda h: ffn(block.ffn, h, block.activation), nf)


def sinusoidal(positions, dim):
    i = np.arange(dim // 2)
    angles = positions[..., None] / np.power(10000.0, 2 * i / dim)
    return np.concatenate([np.sin(angles), np.cos(angles)], -1)


def randomize(layer, seed=0, scale=0.3):
    """Give every weight of ``layer`` random values (so biases and norms are exercised)."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(0, scale, w.shape).astype(np.float32) for w in layer.get_weights()])
