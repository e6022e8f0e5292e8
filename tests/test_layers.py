"""Layers against the float64 NumPy reference in tests/numpy_reference.py."""
import numpy as np
import pytest
import tensorflow as tf

from kerasllm.layers import (
    MultiHeadAttention,
    TransformerDecoderBlock,
    TransformerEmbedding,
    TransformerEncoderBlock,
    get_activation,
)
from tests import numpy_reference as ref

B, T, D, H = 2, 6, 16, 4
TOL = 1e-5


def _inputs(seed=0, t=T, d=D):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, t, d)).astype(np.float32)


def _padding_mask():
    mask = np.ones((B, T), np.int32)
    mask[0, 4:] = 0  # right padding in the first example
    return mask


def _max_err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max())


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "relu"])
def test_activations_match_reference(name):
    x = np.linspace(-6, 6, 1001).astype(np.float32)
    assert _max_err(get_activation(name)(x), ref.ACTIVATIONS[name](x.astype(np.float64))) < 1e-6


def test_exact_gelu_has_no_erfc_op():
    graph = tf.function(get_activation("gelu")).get_concrete_function(tf.TensorSpec([None], tf.float32)).graph
    ops = {op.type for op in graph.get_operations()}
    assert "Erf" in ops and "Erfc" not in ops


def test_unknown_activation_names_allowed_values():
    with pytest.raises(ValueError, match=r"activation='swish'.*allowed values"):
        get_activation("swish")


@pytest.mark.parametrize("training", [False, True])  # both call paths
@pytest.mark.parametrize("masking", ["none", "padding", "causal", "padding+causal", "bias", "full3d"])
def test_self_attention_matches_reference(masking, training):
    x = _inputs()
    layer = MultiHeadAttention(H)
    layer(x)
    ref.randomize(layer, seed=1)
    kwargs, mask, bias, causal = {}, None, None, False
    if "padding" in masking:
        kwargs["attention_mask"] = _padding_mask()
        mask = _padding_mask().astype(bool)[:, None, None, :]
    if "causal" in masking:
        kwargs["use_causal_mask"] = causal = True
    if masking == "bias":
        bias = np.random.default_rng(2).normal(size=(B, 1, T, T)).astype(np.float32)
        kwargs["attention_bias"] = bias
    if masking == "full3d":
        full = np.random.default_rng(3).random((B, T, T)) > 0.4
        full[:, np.arange(T), np.arange(T)] = True  # every query keeps at least itself
        kwargs["attention_mask"] = full
        mask = full[:, None]
    out, probs = layer(x, return_attention_scores=True, training=training, **kwargs)
    want, want_probs = ref.attention(x.astype(np.float64), x.astype(np.float64), ref.attention_weights(layer), H, mask, bias, causal)
    assert _max_err(out, want) < TOL
    assert _max_err(probs, want_probs) < TOL
    # masked keys get exactly zero probability
    masked = want_probs == 0.0
    assert np.all(probs.numpy()[masked] == 0.0)
    if masking != "none" and masking != "bias":
        assert masked.any()


def test_cross_attention_matches_reference():
    x, ctx = _inputs(0), _inputs(1, t=9)
    enc_mask = np.ones((B, 9), np.int32)
    enc_mask[1, 7:] = 0
    layer = MultiHeadAttention(H, cross_attention=True)
    layer(x, context=ctx)
    ref.randomize(layer, seed=4)
    out = layer(x, context=ctx, attention_mask=enc_mask)
    want, _ = ref.attention(
        x.astype(np.float64), ctx.astype(np.float64), ref.attention_weights(layer), H, enc_mask.astype(bool)[:, None, None, :]
    )
    assert _max_err(out, want) < TOL


def test_attention_bias_per_head():
    x = _inputs()
    layer = MultiHeadAttention(H)
    layer(x)
    bias = np.random.default_rng(5).normal(size=(B, H, T, T)).astype(np.float32)
    out = layer(x, attention_bias=bias)
    want, _ = ref.attention(x.astype(np.float64), x.astype(np.float64), ref.attention_weights(layer), H, bias=bias)
    assert _max_err(out, want) < TOL


@pytest.mark.parametrize("fixed_size", [True, False])
def test_attention_cache_matches_full_sequence(fixed_size):
    x = _inputs(7)
    layer = MultiHeadAttention(H)
    full = layer(x, use_causal_mask=True).numpy()
    hd = D // H
    cache = np.zeros((B, 2, T if fixed_size else 0, H, hd), np.float32)
    # prefill three tokens, then decode the rest one at a time
    steps = [(0, 3)] + [(i, i + 1) for i in range(3, T)]
    outs = []
    for start, end in steps:
        kwargs = {"cache_index": start} if fixed_size else {}
        out, cache = layer(x[:, start:end], use_causal_mask=True, cache=cache, **kwargs)
        outs.append(out.numpy())
    assert np.abs(np.concatenate(outs, 1) - full).max() < TOL
    assert cache.shape[2] == T


def test_attention_dropout_only_in_training():
    x = _inputs()
    layer = MultiHeadAttention(H, dropout=0.5)
    a = layer(x, training=False).numpy()
    assert np.array_equal(a, layer(x, training=False).numpy())
    assert not np.allclose(a, layer(x, training=True).numpy())


def test_attention_rejects_bad_heads():
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        MultiHeadAttention(3)(_inputs())


@pytest.mark.parametrize("normalize_first", [False, True])
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu"])
def test_encoder_block_matches_reference(normalize_first, activation):
    x = _inputs(8)
    block = TransformerEncoderBlock(
        H, 32, activation=activation, normalize_first=normalize_first, layer_norm_epsilon=1e-5, dropout=0.0
    )
    block(x)
    ref.randomize(block, seed=9)
    mask = _padding_mask()
    out = block(x, attention_mask=mask)
    want = ref.encoder_block(block, x.astype(np.float64), mask.astype(bool)[:, None, None, :])
    assert _max_err(out, want) < TOL


@pytest.mark.parametrize("normalize_first", [False, True])
def test_decoder_block_matches_reference(normalize_first):
    x, enc = _inputs(10), _inputs(11, t=5)
    enc_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    block = TransformerDecoderBlock(H, 32, cross_attention=True, normalize_first=normalize_first, layer_norm_epsilon=1e-6)
    block(x, encoder_outputs=enc)
    ref.randomize(block, seed=12)
    out = block(x, encoder_outputs=enc, encoder_attention_mask=enc_mask)
    want = ref.decoder_block(block, x.astype(np.float64), enc.astype(np.float64), None, enc_mask.astype(bool)[:, None, None, :])
    assert _max_err(out, want) < TOL


def test_decoder_block_cache_matches_full_sequence():
    x, enc = _inputs(13), _inputs(14, t=5)
    block = TransformerDecoderBlock(H, 32, cross_attention=True, normalize_first=True)
    full = block(x, encoder_outputs=enc).numpy()
    cross_cache = block.cross_attention.compute_kv(enc)
    cache = np.zeros((B, 2, T, H, D // H), np.float32)
    outs = []
    for i in range(T):
        out, cache = block(x[:, i : i + 1], cache=cache, cache_index=i, cross_attention_cache=cross_cache)
        outs.append(out.numpy())
    assert np.abs(np.concatenate(outs, 1) - full).max() < TOL


def test_embedding_matches_reference():
    emb = TransformerEmbedding(50, D, max_position=20, type_vocab_size=2, layer_norm_epsilon=1e-12)
    ids = np.array([[3, 4, 5, 0], [7, 8, 9, 10]])
    types = np.array([[0, 0, 1, 1], [0, 1, 1, 1]])
    emb(ids)
    ref.randomize(emb, seed=15)
    out = emb(ids, token_type_ids=types)
    tok, pos, typ, gamma, beta = [w.astype(np.float64) for w in emb.get_weights()]
    want = ref.layer_norm(tok[ids] + pos[np.arange(4)][None] + typ[types], gamma, beta, 1e-12)
    assert _max_err(out, want) < TOL
    hidden = np.random.default_rng(16).normal(size=(2, 4, D)).astype(np.float32)
    assert _max_err(emb(hidden, reverse=True), hidden.astype(np.float64) @ tok.T) < TOL


def test_embedding_position_offset_and_sinusoidal():
    emb = TransformerEmbedding(30, D, position_embedding="sinusoidal", use_layer_norm=False)
    ids = np.array([[1, 2, 3]])
    out = emb(ids, position_offset=4)
    tok = emb.token_embeddings.numpy().astype(np.float64)
    want = tok[ids] + ref.sinusoidal(np.arange(4, 7, dtype=np.float64), D)[None]
    assert _max_err(out, want) < TOL


def test_embedding_too_long_sequence_is_a_clear_error():
    emb = TransformerEmbedding(30, D, max_position=8)
    with pytest.raises(ValueError, match="sequence length 9 exceeds max_position=8"):
        emb(np.ones((1, 9), np.int32))


@pytest.mark.parametrize(
    "layer",
    [
        MultiHeadAttention(4, dropout=0.2, cross_attention=True, context_dim=12, name="a"),
        TransformerEncoderBlock(4, 64, activation="relu", normalize_first=True, layer_norm_epsilon=1e-6, name="e"),
        TransformerDecoderBlock(4, 64, cross_attention=True, dropout=0.2, name="d"),
        TransformerEmbedding(100, 16, max_position=64, type_vocab_size=3, position_embedding="sinusoidal", name="m"),
    ],
)
def test_get_config_round_trips(layer):
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
