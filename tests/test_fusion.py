"""Fused element-wise training (kerasllm.training.fusion): same updates as the graph-mode step, really fused."""
import doctest

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kerasllm.training import create_optimizer, fusion, install_train_step, masked_sparse_categorical_crossentropy
from tests.test_training_helpers import assert_weights_close, as_dataset, tiny_classifier, token_batch, weights_of

PRODUCTS = ("MatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum")


def _trained(initial, features, labels, fuse, steps=3):
    model = tiny_classifier()
    model.set_weights(initial)
    model.compile(
        optimizer=create_optimizer(1e-2, num_train_steps=10, warmup_steps=1, weight_decay=0.01),
        loss=masked_sparse_categorical_crossentropy(),
    )
    install_train_step(model, fuse_elementwise=fuse)
    history = model.fit(as_dataset(features, labels, 4).repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
    return model, history.history["loss"][0]


@pytest.fixture(scope="module")
def pair():
    features, labels = token_batch(n=8, seed=5)
    initial = tiny_classifier().get_weights()
    graph, graph_loss = _trained(initial, features, labels, fuse=False)
    fused, fused_loss = _trained(initial, features, labels, fuse=True)
    return graph, graph_loss, fused, fused_loss, initial, (features, labels)


def test_fused_step_makes_the_graph_steps_updates(pair):
    graph, graph_loss, fused, fused_loss, initial, _ = pair
    assert fused_loss == pytest.approx(graph_loss, rel=1e-5)
    assert_weights_close(weights_of(fused), weights_of(graph), atol=2e-5)
    moved = max(float(np.abs(w - w0).max()) for w, w0 in zip(fused.get_weights(), initial))
    assert moved > 1e-2  # three steps at lr 1e-2 moved the weights: the comparison is not of two idle models


def _traced_step_ops(model, data):
    """Every op of the train step as traced for ``fit`` (forward, backward, optimizer)."""
    spec = tf.nest.map_structure(lambda a: tf.TensorSpec(a.shape, tf.as_dtype(a.dtype)), data)
    graph = tf.function(model.train_step).get_concrete_function(spec).graph
    return graph.get_operations()


def _xla_mark(op):
    try:
        return op.get_attr("_XlaCompile")
    except ValueError:
        return None


def test_fused_step_marks_element_wise_ops_for_xla_and_leaves_products_to_tensorflow(pair):
    _, _, fused, _, _, (features, labels) = pair
    ops = _traced_step_ops(fused, ({k: v[:4] for k, v in features.items()}, labels[:4]))
    marks = {}
    for op in ops:
        marks.setdefault(op.type, set()).add(_xla_mark(op))
    products = [t for t in marks if t in PRODUCTS]
    assert products, sorted(marks)
    for kind in products:
        assert marks[kind] == {False}, (kind, marks[kind])
    for kind in ("Erf", "Softmax", "Rsqrt", "AddV2", "Mul"):  # GELU, attention, layer norm, residuals, Adam
        if kind in marks:
            assert True in marks[kind], (kind, marks[kind])
    assert any(True in marks.get(k, ()) for k in ("Erf", "Softmax"))
    for kind, seen in marks.items():
        if "Random" in kind or "Variable" in kind or kind.startswith("Assert"):
            assert True not in seen, kind
    # and the optimizer updates each variable in one XLA function
    assert fused.optimizer.jit_compile is True


def test_graph_step_marks_nothing(pair):
    graph, _, _, _, _, (features, labels) = pair
    ops = _traced_step_ops(graph, ({k: v[:4] for k, v in features.items()}, labels[:4]))
    assert not any(_xla_mark(op) for op in ops)
    assert graph.optimizer.jit_compile is False  # tf_keras's own choice without a GPU


@pytest.mark.parametrize(
    "op, fusible",
    [("Mul", True), ("AddV2", True), ("Erf", True), ("Softmax", True), ("Rsqrt", True), ("Transpose", True),
     ("MatMul", False), ("BatchMatMulV2", False), ("StatelessRandomUniformV2", False), ("ReadVariableOp", False),
     ("ResourceGather", False), ("UnsortedSegmentSum", False), ("AssignAddVariableOp", False), ("Assert", False),
     ("StatefulPartitionedCall", False), ("StatelessIf", False), ("CollectiveReduceV2", False)],
)
def test_xla_fusible_keeps_products_randomness_variables_and_control_flow_out(op, fusible):
    from tensorflow.core.framework import node_def_pb2

    assert fusion.xla_fusible(node_def_pb2.NodeDef(op=op)) is fusible


def test_cpu_has_amx_bf16_reads_the_override_and_proc_cpuinfo(monkeypatch):
    for forced, expected in (("1", True), ("0", False)):
        monkeypatch.setenv("KERASLLM_AMX", forced)
        fusion.cpu_has_amx_bf16.cache_clear()
        assert fusion.cpu_has_amx_bf16() is expected
    monkeypatch.delenv("KERASLLM_AMX")
    fusion.cpu_has_amx_bf16.cache_clear()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    assert fusion.cpu_has_amx_bf16() is ("amx_bf16" in flags)
    fusion.cpu_has_amx_bf16.cache_clear()


def test_fusion_docstring_examples():
    result = doctest.testmod(fusion, extraglobs=vars(fusion).copy())
    assert result.attempted > 0 and result.failed == 0


def test_bfloat16_fused_training_learns(monkeypatch):
    """bfloat16 with fusion trains a tiny classifier as far as float32 does in the same steps."""
    features, labels = token_batch(n=16, seed=9, ignore_fraction=0.0)
    labels = np.where(labels == -100, -100, features["input_ids"] % 3)  # a learnable rule: the label is id mod 3
    initial = tiny_classifier().get_weights()
    losses = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = tiny_classifier()
            model.set_weights(initial)
            model.compile(optimizer=create_optimizer(1e-2, num_train_steps=60, warmup_steps=1),
                          loss=masked_sparse_categorical_crossentropy())
            install_train_step(model, fuse_elementwise=policy != "float32")
            history = model.fit(as_dataset(features, labels, 8).repeat(), steps_per_epoch=60, epochs=1, verbose=0)
            logits = tf.cast(model(features), tf.float32).numpy()
        finally:
            keras.mixed_precision.set_global_policy("float32")
        kept = labels != -100
        losses[policy] = (history.history["loss"][0], float((logits.argmax(-1) == labels)[kept].mean()))
    assert losses["mixed_bfloat16"][1] >= losses["float32"][1] - 0.1, losses
    assert losses["mixed_bfloat16"][1] > 0.6, losses


def test_model_width_reads_presets_and_model_folders(tmp_path):
    import json

    from kerasllm.training.finetune import model_width

    assert model_width("bert-tiny") == 128
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"hidden_size": 384}))
    (tmp_path / "google").mkdir()
    (tmp_path / "google" / "bert_config.json").write_text(json.dumps({"hidden_size": 768}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert model_width(str(tmp_path / "hf")) == 384
    assert model_width(str(tmp_path / "google")) == 768
    assert model_width(str(tmp_path / "broken")) is None
    assert model_width(str(tmp_path / "missing")) is None
