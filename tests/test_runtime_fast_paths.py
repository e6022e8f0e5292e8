"""TensorFlow-runtime fast paths of the layers against the portable (export) forms and NumPy.

Outside ``portable_graph()`` the layers compute attention as ``softmax(q k^T * scale +
additive mask)`` without renormalisation, and the feed-forward network as 2-D
``MatMul + BiasAdd + activation``; inside it (the exporters) they keep the forms TFLite,
tf2onnx and quantization-aware training take. Both must give the NumPy reference.
"""
import collections
import contextlib

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kerasllm.layers import FeedForward, MultiHeadAttention, TransformerEncoderBlock
from kerasllm.layers._utils import portable_graph
from kerasllm.models import get_preset, token_classifier
from kerasllm.models.batch_calls import predict_on_batch
from tests import numpy_reference as ref

B, T, D, H = 2, 6, 16, 4
TOL = 1e-5
MODES = {"fast": contextlib.nullcontext, "portable": portable_graph}


def _x(seed=0):
    return np.random.default_rng(seed).normal(size=(B, T, D)).astype(np.float32)


def _padding():
    mask = np.ones((B, T), np.int32)
    mask[0, 4:] = 0
    return mask


def _err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max())


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("masking", ["none", "padding", "padding+causal", "padding+bias"])
def test_attention_paths_match_reference(mode, masking):
    x = _x()
    layer = MultiHeadAttention(H)
    layer(x)
    ref.randomize(layer, seed=1)
    kwargs, mask, bias = {}, None, None
    if "padding" in masking:
        kwargs["attention_mask"] = _padding()
        mask = _padding().astype(bool)[:, None, None, :]
    causal = "causal" in masking
    if causal:
        kwargs["use_causal_mask"] = True
    if "bias" in masking:
        bias = np.random.default_rng(2).normal(size=(B, H, T, T)).astype(np.float32)
        kwargs["attention_bias"] = bias
    with MODES[mode]():
        out, probs = tf.function(lambda x: layer(x, return_attention_scores=True, **kwargs))(x)
    want, want_probs = ref.attention(x.astype(np.float64), x.astype(np.float64), ref.attention_weights(layer), H,
                                     mask, bias, causal)
    assert _err(out, want) < TOL
    assert _err(probs, want_probs) < TOL
    assert np.all(probs.numpy()[want_probs == 0.0] == 0.0)  # masked keys: exactly 0


def test_fast_attention_with_every_key_masked_is_finite():
    layer = MultiHeadAttention(H)
    x = _x()
    out = layer(x, attention_mask=np.zeros((B, T), np.int32))
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu"])
def test_encoder_block_paths_match_reference(mode, activation):
    x = _x(3)
    block = TransformerEncoderBlock(H, 32, activation=activation)
    block(x)
    ref.randomize(block, seed=4)
    with MODES[mode]():
        out = tf.function(lambda x: block(x, attention_mask=_padding()))(x)
    want = ref.encoder_block(block, x.astype(np.float64), mask=_padding().astype(bool)[:, None, None, :])
    assert _err(out, want) < TOL


def _traced_ops(fn, *args):
    """``Counter`` of the op types of ``fn`` traced (before any graph optimization)."""
    return collections.Counter(op.type for op in tf.function(fn).get_concrete_function(*args).graph.get_operations())


def test_fast_paths_are_what_the_graph_holds_and_portable_keeps_the_export_forms():
    x = tf.constant(_x())
    block = TransformerEncoderBlock(H, 32)
    block(x)
    call = lambda x: block(x, attention_mask=tf.constant(_padding()))  # noqa: E731
    fast = _traced_ops(call, x)
    with portable_graph():
        portable = _traced_ops(call, x)
    # the renormalisation (a division by the kept weight) and its batched matmul are gone
    assert "RealDiv" in portable and "RealDiv" not in fast
    assert portable["BatchMatMulV2"] == 3 and fast["BatchMatMulV2"] == 2
    # the scores are masked by one select on the small mask, not selects on scores and values
    assert fast["SelectV2"] == 1 and portable["SelectV2"] > 1


def _grappler_ops(build):
    """Op types TensorFlow runs after its graph optimizer (grappler) for ``build(x)``."""
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [B, T, D])
        y = build(x) * 2.0
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            meta = tf1.RunMetadata()
            session.run(y, {x: _x()}, options=tf1.RunOptions(output_partition_graphs=True), run_metadata=meta)
    return [(n.op, [f.decode() for f in n.attr["fused_ops"].list.s]) for g in meta.partition_graphs for n in g.node]


def _onednn_enabled():
    try:
        from tensorflow.python.util import _pywrap_util_port

        return _pywrap_util_port.IsMklEnabled()
    except (ImportError, AttributeError):
        return False


@pytest.mark.skipif(not _onednn_enabled(), reason="the fused CPU kernels are oneDNN's (x86 Linux TensorFlow)")
def test_tensorflow_fuses_the_fast_forms_into_onednn_kernels():
    def build(x):  # layers, variables and mask of the graph the session runs
        mask = tf.constant(_padding())
        return FeedForward(64, name="ffn")(x) + MultiHeadAttention(H, name="attention")(x, attention_mask=mask)

    ops = _grappler_ops(build)
    fused = {(op, tuple(f)) for op, f in ops}
    assert ("_MklNativeFusedMatMul", ("BiasAdd", "GeluExact")) in fused, sorted(fused)
    assert ("_MklFusedBatchMatMulV2", ("Mul", "Add")) in fused, sorted(fused)
    assert not any(op == "Erf" for op, _ in ops)


def test_feedforward_falls_back_to_its_dense_layers_when_they_are_changed():
    x = _x(5)
    ffn = FeedForward(32)
    ffn(x)
    assert ffn._plain_dense_path()
    plain = ffn(x).numpy()
    seen = []
    ffn.output_dense.activation = lambda y: seen.append(1) or y * 1.0  # e.g. a fake-quantizing activation
    assert not ffn._plain_dense_path()
    assert np.abs(ffn(x).numpy() - plain).max() < 1e-6 and seen
    lora = FeedForward(32, lora_rank=2)
    lora(x)
    assert not lora._plain_dense_path()


def test_quantization_aware_layers_keep_the_portable_forms():
    layer = MultiHeadAttention(H)
    layer(_x())
    assert layer.runtime_fast_path()
    layer.qp_context = keras.layers.Activation("linear")  # what a QAT copy does to a quant point
    assert layer.quantization_aware() and not layer.runtime_fast_path()
    ops = _traced_ops(lambda x: layer(x, attention_mask=tf.constant(_padding())), tf.constant(_x()))
    assert "RealDiv" in ops  # the renormalised context the quant point fake-quantizes


def test_predict_on_batch_matches_tf_keras_and_the_model():
    model = token_classifier(get_preset("bert-tiny", vocab_size=60), num_labels=4)
    ids = np.random.default_rng(0).integers(1, 60, size=(3, 7)).astype("int32")
    x = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    got = model.predict_on_batch(x)
    assert isinstance(got, np.ndarray) and got.shape == (3, 7, 4)
    np.testing.assert_allclose(got, keras.Model.predict_on_batch(model, x), atol=1e-6)
    np.testing.assert_allclose(got, model(x, training=False).numpy(), atol=1e-5)
    with pytest.raises(RuntimeError, match="inside a tf.function"):
        tf.function(lambda: predict_on_batch(model, x))()


@pytest.mark.parametrize("shape", [(B, T, D), (B * T, D)])
def test_layer_norm_uses_onednn_for_traced_inference_and_matches_reference(shape):
    from kerasllm.layers import LayerNorm

    x = (np.random.default_rng(6).normal(size=shape) * 3 + 1).astype(np.float32)
    norm = LayerNorm(epsilon=1e-12)
    norm(x)
    ref.randomize(norm, seed=7)
    want = ref.layer_norm(x.astype(np.float64), norm.gamma.numpy(), norm.beta.numpy(), 1e-12)
    fn = tf.function(lambda x: norm(x))
    ops = _traced_ops(lambda x: norm(x), tf.constant(x))
    if _onednn_enabled():
        assert ops["_MklLayerNorm"] == 1 and "Rsqrt" not in ops
    with portable_graph():
        assert "_MklLayerNorm" not in _traced_ops(lambda x: norm(x), tf.constant(x))
    assert "_MklLayerNorm" not in _traced_ops(lambda x: norm(x, training=True), tf.constant(x))
    xla = tf.function(lambda x: norm(x), jit_compile=True)
    for got in (fn(x), xla(x), norm(x)):
        assert _err(got, want) < TOL
    # gradients (TensorFlow registers none for the oneDNN op: kerasllm does) equal the plain form's
    xt = tf.constant(x)
    weights = tf.sin(tf.range(D, dtype=tf.float32))

    def grads(context):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            with context():
                y = tf.function(lambda x: norm(x))(xt)
            loss = tf.reduce_sum(y * weights)
        return tape.gradient(loss, [xt, norm.gamma, norm.beta])

    for a, b in zip(grads(contextlib.nullcontext), grads(portable_graph)):
        assert float(tf.reduce_max(tf.abs(a - b))) < 1e-5
