"""Sliding-window and global+local attention, the attention bias, and the dense embedding gradient.

References are independent of the blocked computation: the float64 NumPy attention of
tests/numpy_reference.py with an explicit dense mask built here in NumPy, or (for the
cache path and models) full attention with that mask.
"""
import contextlib
import doctest
import importlib

import numpy as np
import pytest
import tensorflow as tf

from kerasllm.layers import MultiHeadAttention, TransformerDecoderBlock, TransformerEmbedding, TransformerEncoderBlock
from kerasllm.layers._utils import portable_graph
from kerasllm.layers.embeddings import gather_dense_grad
from kerasllm.layers.local_attention import chunked_local_attention
from kerasllm.models import TransformerConfig, bert_encoder, get_preset
from tests import numpy_reference as ref

D, H = 16, 4


def _band(n, window, global_tokens=0, causal=False):
    """NumPy ``[n, n]`` mask: |i - j| <= window, or i or j global; j <= i if causal."""
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    allowed = (np.abs(i - j) <= window) | (i < global_tokens) | (j < global_tokens)
    return allowed & (j <= i) if causal else allowed


def _padding(n, lengths):
    return (np.arange(n)[None, :] < np.array(lengths)[:, None]).astype(np.int32)


def _layer(x, seed=1, **kwargs):
    layer = MultiHeadAttention(H, **kwargs)
    layer(x)
    ref.randomize(layer, seed=seed)
    return layer


@pytest.mark.parametrize(
    "n, window, global_tokens, causal",
    [
        (12, 4, 0, False),  # a multiple of the window
        (11, 3, 0, False),  # not a multiple
        (5, 8, 0, False),  # shorter than one window
        (13, 3, 2, False),  # global + local
        (10, 4, 0, True),  # causal sliding window
        (11, 3, 1, True),  # causal global + local
    ],
)
def test_local_attention_equals_reference_with_banded_mask(n, window, global_tokens, causal):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(2, n, D)).astype(np.float32)
    padding = _padding(n, [n, n - 3])
    kind = "global_local" if global_tokens else "sliding_window"
    layer = _layer(x, attention_type=kind, attention_window=window, global_tokens=global_tokens)
    out = layer(x, attention_mask=padding, use_causal_mask=causal).numpy()
    mask = _band(n, window, global_tokens, causal)[None, None] & padding.astype(bool)[:, None, None, :]
    x64 = x.astype(np.float64)
    expected, _ = ref.attention(x64, x64, ref.attention_weights(layer), H, mask=mask)
    real = padding.astype(bool)  # padded query rows are not defined by either side
    np.testing.assert_allclose(out[real], expected[real], atol=1e-5)


def _banded_reference(qkv, window, key_mask, causal, scale):
    """Float64 NumPy sliding-window attention of stacked heads-last ``qkv`` [b, n, 3, h, d]."""
    q, k, v = (qkv[:, :, i].astype(np.float64).transpose(0, 2, 1, 3) for i in range(3))
    scores = q @ k.transpose(0, 1, 3, 2) * scale
    allowed = _band(q.shape[2], window, causal=causal)[None, None] & key_mask.astype(bool)[:, None, None, :]
    with np.errstate(invalid="ignore"):  # padded query rows that see no key: NaN, not compared
        probs = ref.softmax(np.where(allowed, scores, -np.inf))
    return (probs @ v).transpose(0, 2, 1, 3)


@pytest.mark.parametrize(
    "n, window, causal, chunk_bytes",
    [
        (300, 200, False, 1),  # blocks of 100 (2 per side), one block per loop step
        (300, 200, True, None),  # causal: keys of the block and the 2 before it
        (130, 64, False, 3 * 4 * 64 * 192 * 4),  # 3 blocks per step, a shorter last step, n % 64 != 0
        (77, 6, True, None),  # a window under 32: blocks of the window
        (90, 37, False, 1),  # a prime window: blocks of 37
        (40, 60, False, None),  # a sequence shorter than one block
    ],
)
def test_chunked_local_attention_equals_reference(n, window, causal, chunk_bytes):
    rng = np.random.default_rng(n + window)
    qkv = rng.normal(size=(2, n, 3, 4, 8)).astype(np.float32)
    key_mask = _padding(n, [n, n - n // 3])
    scale = 0.35
    got = chunked_local_attention(tf.constant(qkv), window, key_mask, causal=causal, scale=scale,
                                  chunk_bytes=chunk_bytes).numpy()
    want = _banded_reference(qkv, window, key_mask, causal, scale)
    real = key_mask.astype(bool)  # every real query sees itself; padded query rows are undefined
    assert np.abs(got[real] - want[real]).max() < 1e-5
    assert np.isfinite(got).all()


@pytest.mark.parametrize("lora", [False, True])
def test_sliding_window_layer_runtime_form_matches_reference_and_portable_form(lora):
    """Traced inference runs chunked_local_attention (scale folded into the projection without LoRA)."""
    rng = np.random.default_rng(5)
    n, window = 200, 48
    x = rng.normal(size=(2, n, D)).astype(np.float32)
    kwargs = {"lora_rank": 2, "lora_targets": ("query", "value", "output")} if lora else {}
    layer = _layer(x, attention_type="sliding_window", attention_window=window, **kwargs)
    padding = _padding(n, [n, 150])
    call = lambda: layer(x, attention_mask=padding, use_causal_mask=True, training=False)  # noqa: E731
    runtime = tf.function(call)
    assert {"While", "StatelessWhile"} & {op.type for op in runtime.get_concrete_function().graph.get_operations()}
    got = runtime().numpy()
    with portable_graph():
        portable = tf.function(call)().numpy()
    real = padding.astype(bool)
    assert np.abs(got[real] - portable[real]).max() < 1e-5
    if not lora:
        x64 = x.astype(np.float64)
        mask = _band(n, window, causal=True)[None, None] & real[:, None, None, :]
        with np.errstate(invalid="ignore"):  # padded query rows that see no key: NaN, not compared
            expected, _ = ref.attention(x64, x64, ref.attention_weights(layer), H, mask=mask)
        assert np.abs(got[real] - expected[real]).max() < 1e-5


def test_sliding_window_equals_full_layer_with_mask_at_1024():
    """The brief's check: max abs difference < 1e-5 at n = 1024 against full attention + banded mask."""
    rng = np.random.default_rng(0)
    n, window = 1024, 64
    x = rng.normal(size=(1, n, D)).astype(np.float32)
    full = _layer(x)
    local = MultiHeadAttention(H, attention_type="sliding_window", attention_window=window)
    local(x)
    local.set_weights(full.get_weights())
    padding = _padding(n, [n - 100])
    dense = _band(n, window)[None] & padding.astype(bool)[:, None, :]
    a = full(x, attention_mask=dense).numpy()[padding.astype(bool)]
    b = local(x, attention_mask=padding).numpy()[padding.astype(bool)]
    assert np.abs(a - b).max() < 1e-5


def _graph_shapes(graph):
    """Static output shapes of every op in ``graph`` and in the bodies of its while loops."""
    shapes = []
    for op in graph.get_operations():
        shapes += [o.shape for o in op.outputs if o.shape.rank]
        if op.type in ("While", "StatelessWhile"):
            shapes += _graph_shapes(graph._functions[op.get_attr("body").name].graph)
    return shapes


def _largest_tensors(fn, *specs):
    """The largest static tensor size (unknown dimensions counted as 1) and every shape."""
    shapes = _graph_shapes(tf.function(fn).get_concrete_function(*specs).graph)
    return max(int(np.prod([d or 1 for d in s.as_list()])) for s in shapes), shapes


@pytest.mark.parametrize("mode", ["runtime", "portable"])
@pytest.mark.parametrize("kind, global_tokens", [("sliding_window", 0), ("global_local", 2)])
def test_local_attention_graph_has_no_n_by_n_tensor(kind, global_tokens, mode):
    b, n, window = 2, 256, 16
    layer = MultiHeadAttention(H, attention_type=kind, attention_window=window, global_tokens=global_tokens)
    full = MultiHeadAttention(H)
    specs = (tf.TensorSpec([b, n, D]), tf.TensorSpec([b, n], tf.int32))
    for attention in (layer, full):
        attention(tf.zeros([b, n, D]))
    context = portable_graph() if mode == "portable" else contextlib.nullcontext()
    with context:
        largest, shapes = _largest_tensors(lambda x, m: layer(x, attention_mask=m), *specs)
        largest_full, _ = _largest_tensors(lambda x, m: full(x, attention_mask=m), *specs)
    # Every tensor is O(n * w): at most [b, heads, n, 3w + g] scores (plus a constant factor).
    assert largest <= b * H * n * (3 * window + global_tokens)
    assert not any(s.as_list().count(n) >= 2 for s in shapes)
    if kind == "sliding_window" and mode == "runtime":
        # chunked_local_attention: [heads, blocks in the chunk, block, 3 * block] scores per loop step.
        assert tf.TensorShape([H, None, window, 3 * window]) in shapes
    # The same check finds the n x n scores of full attention (it can fail).
    assert largest_full >= b * H * n * n


def test_attention_bias_is_added_to_scores():
    rng = np.random.default_rng(3)
    n = 7
    x = rng.normal(size=(2, n, D)).astype(np.float32)
    bias = rng.normal(scale=3.0, size=(2, 1, n, n)).astype(np.float32)
    padding = _padding(n, [n, 5])
    layer = _layer(x)
    out, probs = layer(x, attention_mask=padding, attention_bias=bias, return_attention_scores=True)
    x64 = x.astype(np.float64)
    mask = padding.astype(bool)[:, None, None, :]
    expected, expected_probs = ref.attention(
        x64, x64, ref.attention_weights(layer), H, mask=mask, bias=bias.astype(np.float64)
    )
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(probs.numpy(), expected_probs, atol=1e-6)
    # and the bias changes the result
    without, _ = ref.attention(x64, x64, ref.attention_weights(layer), H, mask=mask)
    assert np.abs(without - expected).max() > 1e-2


def test_sliding_window_decoding_with_cache_equals_no_cache():
    """With a cache the band is a dense mask; tokens fed one by one give the full-sequence outputs."""
    rng = np.random.default_rng(4)
    n, window = 9, 3
    x = rng.normal(size=(1, n, D)).astype(np.float32)
    block = TransformerDecoderBlock(
        H, 32, normalize_first=True, dropout=0.0, attention_dropout=0.0,
        attention_type="sliding_window", attention_window=window,
    )
    whole = block(x).numpy()
    cache = tf.zeros([1, 2, n, H, D // H])
    steps = []
    for t in range(n):
        out, cache = block(x[:, t : t + 1], cache=cache, cache_index=t)
        steps.append(out.numpy())
    np.testing.assert_allclose(np.concatenate(steps, axis=1), whole, atol=1e-5)


def test_model_from_config_uses_local_attention_and_loads_the_same_weights():
    config = get_preset("bert-tiny", vocab_size=50, num_layers=1, dropout=0.0, attention_dropout=0.0)
    local_config = config.replace(attention_type="global_local", attention_window=2, global_tokens=1)
    full, local = bert_encoder(config), bert_encoder(local_config)
    local.set_weights(full.get_weights())
    attention = local.get_layer("encoder_layer_0").attention
    assert (attention.attention_type, attention.attention_window, attention.global_tokens) == ("global_local", 2, 1)
    rng = np.random.default_rng(5)
    n = 9
    ids = rng.integers(1, 50, size=(2, n)).astype(np.int32)
    padding = _padding(n, [n, 6])
    inputs = {"input_ids": ids, "attention_mask": padding, "token_type_ids": np.zeros_like(ids)}
    out = local(inputs)["sequence_output"].numpy()
    dense = {**inputs, "attention_mask": (_band(n, 2, 1)[None] & padding.astype(bool)[:, None, :]).astype(np.int32)}
    expected = full(dense)["sequence_output"].numpy()
    real = padding.astype(bool)
    np.testing.assert_allclose(out[real], expected[real], atol=1e-5)


def test_config_fields_round_trip_and_validate(tmp_path):
    config = get_preset("bert-tiny", attention_type="global_local", attention_window=128, global_tokens=1)
    config.save(tmp_path / "config.json")
    assert TransformerConfig.load(tmp_path / "config.json") == config
    assert config.block_args()["attention_type"] == "global_local"
    block = TransformerEncoderBlock(H, 32, **{k: v for k, v in config.block_args().items() if k.startswith(("attention_", "global"))})
    clone = TransformerEncoderBlock.from_config(block.get_config())
    assert (clone.attention_type, clone.attention_window, clone.global_tokens) == ("global_local", 128, 1)
    layer = MultiHeadAttention(H, attention_type="sliding_window", attention_window=7)
    assert MultiHeadAttention.from_config(layer.get_config()).get_config() == layer.get_config()
    for changes, pattern in [
        ({"attention_type": "dilated"}, r"attention_type='dilated' .*allowed values"),
        ({"attention_type": "sliding_window", "attention_window": 0}, r"attention_window=0 .*positive integer"),
        ({"attention_type": "global_local"}, r"global_tokens=0 .*at least 1"),
        ({"attention_type": "sliding_window", "global_tokens": 2}, r"global_tokens=2 .*only attention_type='global_local'"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            get_preset("bert-tiny", **changes)


def test_local_attention_errors_name_the_argument():
    x = np.zeros((1, 6, D), np.float32)
    layer = MultiHeadAttention(H, attention_type="sliding_window", attention_window=2, name="local")
    with pytest.raises(ValueError, match=r"'local'.*attention_mask must be a \[batch, length\] padding mask"):
        layer(x, attention_mask=np.ones((1, 6, 6)))
    with pytest.raises(ValueError, match=r"attention_bias needs attention_type='full'"):
        layer(x, attention_bias=np.zeros((1, 1, 6, 6), np.float32))
    with pytest.raises(ValueError, match=r"cross-attention supports only 'full'"):
        MultiHeadAttention(H, cross_attention=True, attention_type="sliding_window")


@pytest.mark.parametrize("module", ["kerasllm.layers.local_attention", "kerasllm.layers.masks"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_dense_gradient_gather_matches_scatter_reference():
    rng = np.random.default_rng(6)
    table = tf.Variable(rng.normal(size=(11, 3)).astype(np.float32))
    ids = rng.integers(0, 11, size=(4, 5)).astype(np.int32)  # with repeated ids
    upstream = rng.normal(size=(4, 5, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        rows = gather_dense_grad(tf.convert_to_tensor(table), ids)
        loss = tf.reduce_sum(rows * upstream)
    grad = tape.gradient(loss, table)
    expected = np.zeros((11, 3))
    np.add.at(expected, ids.reshape(-1), upstream.reshape(-1, 3))
    assert isinstance(grad, tf.Tensor)
    np.testing.assert_allclose(rows.numpy(), table.numpy()[ids])
    np.testing.assert_allclose(grad.numpy(), expected, atol=1e-5)


def test_embedding_gradients_are_dense_and_equal_plain_gather_ones():
    """Untied (classifier) and tied (LM head) use of the table: same gradient as plain ``tf.gather``, dense.

    The dense gradient is opt-in (``_dense_token_gradient``): by default the lookup keeps
    TensorFlow's sparse ``IndexedSlices`` gradient, which SavedModel export can save.
    """
    rng = np.random.default_rng(7)
    emb = TransformerEmbedding(vocab_size=20, hidden_size=8, position_embedding="none", use_layer_norm=False)
    emb._dense_token_gradient = True
    ids = rng.integers(0, 20, size=(2, 6)).astype(np.int32)
    emb(ids)
    table = tf.Variable(emb.token_embeddings.numpy())
    w = tf.constant(rng.normal(size=(8, 3)).astype(np.float32))
    heads = {
        "untied": (lambda h, t: tf.matmul(h, w)),
        "tied": (lambda h, t: tf.matmul(h, t, transpose_b=True)),
    }
    for name, head in heads.items():
        with tf.GradientTape(persistent=True) as tape:
            loss = tf.reduce_sum(tf.nn.log_softmax(head(emb(ids, training=True), emb.token_embeddings))[..., 1])
            expected_loss = tf.reduce_sum(tf.nn.log_softmax(head(tf.gather(table, ids), table))[..., 1])
        grad, expected = tape.gradient(loss, emb.token_embeddings), tape.gradient(expected_loss, table)
        assert isinstance(grad, tf.Tensor), name
        np.testing.assert_allclose(grad.numpy(), tf.convert_to_tensor(expected).numpy(), atol=1e-6, err_msg=name)
