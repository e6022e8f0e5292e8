"""kerasllm.export: TFLite, ONNX and SavedModel artefacts measured against the Keras model.

The Keras model is the reference for every artefact; the GPT test's reference is a
greedy loop that recomputes the whole sequence with the plain (cache-free) model.
"""
import json
import os

import numpy as np
import onnx
import pytest
import tensorflow as tf
import tf_keras as keras

from kerasllm.export import (
    ExportError,
    OnnxRunner,
    SavedModelRunner,
    TFLiteRunner,
    convert_onnx_float16,
    export_gpt_onnx,
    export_gpt_tflite,
    export_onnx,
    export_savedmodel,
    export_tflite,
    format_table,
    greedy_generate_onnx,
    greedy_generate_tflite,
    latency,
    quantize_onnx_dynamic,
    verify,
)
from kerasllm.models import get_preset, gpt_decoder, sequence_classifier, token_classifier

VOCAB = 300
NUM_LABELS = 5
BERT_INPUTS = ["attention_mask", "input_ids", "token_type_ids"]


def _batch(rng, batch, length, pad_from=None):
    ids = rng.integers(1, VOCAB, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    if pad_from is not None:
        mask[0, pad_from:] = 0
        ids[0, pad_from:] = 0
    types = np.zeros((batch, length), np.int32)
    types[:, length // 2 :] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.fixture(scope="module")
def classifier():
    tf.keras.utils.set_random_seed(0)
    config = get_preset("bert-tiny", vocab_size=VOCAB, num_layers=2)
    assert config.activation == "gelu"  # exact, erf-based GELU
    return token_classifier(config, num_labels=NUM_LABELS)


@pytest.fixture(scope="module")
def batches():
    rng = np.random.default_rng(1)
    # Two shapes on one file: dynamic batch and sequence.
    return [_batch(rng, 2, 9, pad_from=5), _batch(rng, 3, 16, pad_from=11), _batch(rng, 1, 4)]


@pytest.fixture(scope="module")
def quant_batches():
    # More tokens than `batches`, so agreement rates of quantized models are stable estimates.
    rng = np.random.default_rng(6)
    return [_batch(rng, 4, 24, pad_from=int(n)) for n in rng.integers(8, 20, size=4)]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def float_tflite(classifier, export_dir):
    return export_tflite(
        classifier,
        export_dir / "ner.tflite",
        assets={"labels.json": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]},
    )


@pytest.fixture(scope="module")
def float_onnx(classifier, export_dir):
    return export_onnx(classifier, export_dir / "ner.onnx")


def _assert_exact(result):
    assert result["argmax_agreement"] == 1.0, result
    assert result["max_abs_diff"] < 1e-4, result
    # Non-padding tokens of the three batches: 2*9-4 + 3*16-5 + 1*4.
    assert result["n_tokens"] == 14 + 43 + 4


# ------------------------------------------------------------------ float exports


def test_tflite_float32_matches_keras_on_dynamic_shapes(classifier, batches, float_tflite, export_dir):
    runner = TFLiteRunner(float_tflite.path, num_threads=1)
    assert runner.input_names == BERT_INPUTS
    assert runner.output_names == ["logits"]
    assert float_tflite.signatures["serving_default"]["outputs"] == ["logits"]
    _assert_exact(verify(classifier, runner, batches))
    # Same runner, shapes back and forth.
    assert runner(batches[0])["logits"].shape == (2, 9, NUM_LABELS)
    assert runner(batches[1])["logits"].shape == (3, 16, NUM_LABELS)
    # Labels beside the model as <stem>.labels.json.
    labels_path = export_dir / "ner.labels.json"
    assert float_tflite.assets == {"labels.json": str(labels_path)}
    assert json.loads(labels_path.read_text())[1] == "B-PER"


def test_onnx_matches_keras_with_exact_gelu_and_no_erfc(classifier, batches, float_onnx):
    model = onnx.load(float_onnx.path)
    ops = {node.op_type for node in model.graph.node}
    assert "Erfc" not in ops and "Erf" in ops  # exact GELU survives as Erf
    assert sorted(i.name for i in model.graph.input) == BERT_INPUTS
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    runner = OnnxRunner(float_onnx.path, num_threads=1)
    assert runner.output_names == ["logits"]
    _assert_exact(verify(classifier, runner, batches))


def test_savedmodel_matches_keras(classifier, batches, export_dir):
    report = export_savedmodel(classifier, export_dir / "ner_savedmodel", assets={"labels.json": ["O"]})
    runner = SavedModelRunner(report.path)
    assert runner.input_names == BERT_INPUTS and runner.output_names == ["logits"]
    _assert_exact(verify(classifier, runner, batches))
    assert os.path.isfile(os.path.join(report.path, "assets.extra", "labels.json"))
    # Re-export over the existing folder replaces it; no temporary folders remain.
    export_savedmodel(classifier, report.path)
    assert sorted(os.listdir(export_dir)).count("ner_savedmodel") == 1
    assert not [n for n in os.listdir(export_dir) if n.startswith(".ner_savedmodel")]


def test_fixed_max_length_and_input_errors(classifier, export_dir):
    report = export_tflite(classifier, export_dir / "ner16.tflite", max_length=16)
    runner = TFLiteRunner(report.path)
    rng = np.random.default_rng(2)
    for batch in (1, 3):  # batch stays dynamic
        result = verify(classifier, runner, [_batch(rng, batch, 16, pad_from=10)])
        assert result["argmax_agreement"] == 1.0 and result["max_abs_diff"] < 1e-4
    with pytest.raises(ValueError, match="fixed size 16"):
        runner(_batch(rng, 1, 12))
    with pytest.raises(ValueError, match="missing \\['token_type_ids'\\]"):
        runner({k: v for k, v in _batch(rng, 1, 16).items() if k != "token_type_ids"})
    with pytest.raises(ValueError, match="max_position=512"):
        export_tflite(classifier, export_dir / "too_long.tflite", max_length=513)


def test_axis_insertion_rewrite_converts_fully_dynamic_masks(tmp_path):
    """``mask[:, None, None, :]`` on a [batch, seq] tensor (kerasllm/layers/masks.py) is
    rejected by the TFLite converter when both dims are dynamic; the export rewrites it."""
    from ai_edge_litert.interpreter import Interpreter

    from kerasllm.export._graph import convertible_function

    spec = {"mask": tf.TensorSpec([None, None], tf.int32, name="mask")}

    @tf.function(input_signature=[spec])
    def expand(inputs):
        mask = tf.not_equal(inputs["mask"], 0)
        return {"out": tf.cast(mask[:, None, None, :], tf.float32) * tf.ones([1, 2, 3, 1])}

    module = tf.Module()
    module.f = convertible_function(expand, spec)
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.f.get_concrete_function()})
    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path)).convert()
    runner = Interpreter(model_content=flatbuffer).get_signature_runner()
    mask = np.array([[1, 0, 1, 1, 0], [0, 1, 1, 1, 1]], np.int32)
    want = np.broadcast_to(mask[:, None, None, :].astype(np.float32), (2, 2, 3, 5))
    np.testing.assert_array_equal(runner(mask=mask)["out"], want)


# ------------------------------------------------------------------- quantization


def test_float16_and_dynamic_int8_tflite(classifier, quant_batches, float_tflite, export_dir):
    rows = [{"artefact": "float32", "size": float_tflite.size_bytes}]
    for mode, max_ratio in (("float16", 0.6), ("dynamic", 0.4)):
        report = export_tflite(classifier, export_dir / f"ner_{mode}.tflite", quantize=mode)
        result = verify(classifier, TFLiteRunner(report.path), quant_batches)
        ratio = report.size_bytes / float_tflite.size_bytes
        rows.append({"artefact": mode, "size": report.size_bytes, "ratio": ratio, **result})
        assert result["argmax_agreement"] >= 0.95, (mode, result)
        assert ratio < max_ratio, (mode, ratio)
    print("\n" + format_table(rows))


def test_onnx_dynamic_quantization(classifier, quant_batches, float_onnx, export_dir):
    report = quantize_onnx_dynamic(float_onnx.path, export_dir / "ner.int8.onnx")
    result = verify(classifier, OnnxRunner(report.path), quant_batches)
    ratio = report.size_bytes / float_onnx.size_bytes
    print(f"\nonnx dynamic int8: ratio {ratio:.3f}, {result}")
    assert result["argmax_agreement"] >= 0.95
    assert ratio < 0.4


def test_onnx_float16_keeps_io_types_and_agrees(classifier, quant_batches, float_onnx, export_dir):
    report = convert_onnx_float16(float_onnx.path, export_dir / "ner.fp16.onnx")
    model = onnx.load(report.path)
    elem = onnx.TensorProto
    weights = [t for t in model.graph.initializer if t.data_type in (elem.FLOAT, elem.FLOAT16) and t.dims]
    assert sum(t.data_type == elem.FLOAT16 for t in weights) > 0.9 * len(weights)  # weights really are half
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {elem.INT32}
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [elem.FLOAT]  # logits stay float32
    result = verify(classifier, OnnxRunner(report.path), quant_batches)
    ratio = report.size_bytes / float_onnx.size_bytes
    print(f"\nonnx float16: ratio {ratio:.3f}, {result}")
    assert result["argmax_agreement"] >= 0.99 and result["max_abs_diff"] < 1e-2
    assert ratio < 0.6
    with pytest.raises(ValueError, match="must differ"):
        convert_onnx_float16(report.path, report.path)


def test_int8_full_integer_with_representative_data(classifier, batches, quant_batches, export_dir):
    rng = np.random.default_rng(3)
    data = (_batch(rng, 1, int(n), pad_from=int(n) - 2) for n in rng.integers(6, 20, size=200))
    report = export_tflite(
        classifier, export_dir / "ner_int8.tflite", quantize="int8", representative_data=data, num_calibration_steps=16
    )
    runner = TFLiteRunner(report.path)
    out = runner(batches[1])["logits"]
    assert out.dtype == np.float32 and out.shape == (3, 16, NUM_LABELS)
    assert np.all(np.isfinite(out))
    dtypes = {d["dtype"] for d in runner.interpreter.get_tensor_details()}
    assert np.int8 in dtypes  # activations/weights really are int8
    print(f"\nint8: fallback={report.fallback!r}, {verify(classifier, runner, quant_batches)}")


def test_int8_keeps_layer_norms_in_float_and_is_closer_to_keras_with_outlier_channels(tmp_path):
    """Trained BERTs carry a few outlier channels in the residual stream; planted here as
    layer-norm scales of 20 on two channels. Int8 statistics (mean, variance, rsqrt) over
    such a stream lose most of the other channels; float ones do not."""
    from kerasllm.export.tflite import FLOAT_LAYER_NORM, float_ops

    tf.keras.utils.set_random_seed(0)
    model = token_classifier(get_preset("bert-tiny", vocab_size=VOCAB), num_labels=NUM_LABELS)
    for weight in model.weights:
        if "norm/gamma" in weight.name:
            value = weight.numpy()
            value[:2] = 20.0
            weight.assign(value)
    rng = np.random.default_rng(0)
    calibration = [_batch(rng, 1, 16) for _ in range(32)]
    test = _batch(rng, 16, 16)
    reference = model(test, training=False).numpy()
    errors, agreement, reports = {}, {}, {}
    for float_norm in (True, False):
        report = export_tflite(model, tmp_path / f"m{float_norm}.tflite", quantize="int8",
                               representative_data=calibration, num_calibration_steps=32,
                               float_layer_norm=float_norm)
        out = TFLiteRunner(report.path)(test)["logits"]
        errors[float_norm] = float(np.sqrt(np.mean((out - reference) ** 2)))
        agreement[float_norm] = float(np.mean(out.argmax(-1) == reference.argmax(-1)))
        reports[float_norm] = report
    print(f"\nint8 logits rms error: float layer norms {errors[True]:.3f}, int8 {errors[False]:.3f}; "
          f"argmax agreement {agreement[True]:.3f} / {agreement[False]:.3f}")
    assert errors[True] < 0.6 * errors[False]
    assert agreement[True] >= agreement[False]

    flat = reports[True].path
    with open(flat, "rb") as f:
        default = f.read()
    with open(reports[False].path, "rb") as f:
        strict = f.read()
    norm_ops = float_ops(default, names=FLOAT_LAYER_NORM)
    # Each layer norm (the embeddings' and two per post-LN block): mean and variance, rsqrt in float ...
    norms = 1 + 2 * model.kerasllm_config.num_layers
    assert norm_ops["MEAN"] == 2 * norms and norm_ops["RSQRT"] == norms
    assert any("layer norms kept in float" in note and f"RSQRT x{norms}" in note for note in reports[True].notes)
    # ... and nothing else: every other op, and every weight, is int8.
    assert float_ops(default, exclude=FLOAT_LAYER_NORM) == {} and reports[True].fallback is None
    assert float_ops(strict) == {} and not reports[False].notes  # full integer
    interpreter = TFLiteRunner(flat).interpreter
    kernels = [d for d in interpreter.get_tensor_details() if len(d["shape"]) == 2 and d["shape"][0] >= 64]
    assert kernels and all(np.dtype(d["dtype"]) == np.int8 for d in kernels)
    assert abs(reports[True].size_bytes - reports[False].size_bytes) < 0.02 * reports[False].size_bytes

    with pytest.raises(ValueError, match="float_layer_norm must be True or False"):
        export_tflite(model, tmp_path / "bad.tflite", quantize="int8", representative_data=calibration,
                      float_layer_norm="yes")


def test_int8_calibration_rows_have_one_length_and_no_padding():
    from kerasllm.export.tflite import _common_length_rows

    rng = np.random.default_rng(7)
    real = [5, 9, 12, 7, 20, 3, 9, 15]
    rows = [{k: v[:1] for k, v in _batch(rng, 1, 24, pad_from=n).items()} for n in real]
    cut = _common_length_rows(rows, steps=100, fixed_length=None, pad_token_id=0)
    median = int(np.median(real))  # 9
    assert len(cut) == sum(n >= median for n in real)
    for row in cut:
        assert {v.shape for v in row.values()} == {(1, median)}
        assert row["attention_mask"].all()  # no masked position reaches the calibrator
    # The rows keep their own first tokens.
    assert cut[0]["input_ids"].tolist() == rows[1]["input_ids"][:, :median].tolist()
    # A fixed length that (almost) no row reaches: padded, with a warning.
    with pytest.warns(UserWarning, match="calibration rows have 24 real tokens"):
        padded = _common_length_rows(rows, steps=100, fixed_length=24, pad_token_id=0)
    assert len(padded) == len(rows) and not padded[0]["attention_mask"].all()


def test_int8_reports_ops_left_in_float(tmp_path):
    inputs = keras.Input(shape=(None,), dtype=tf.int32, name="input_ids")
    x = keras.layers.Dense(8)(keras.layers.Embedding(10, 8)(inputs))
    x = keras.layers.Lambda(tf.math.sin)(x)  # TFLite has no int8 SIN kernel
    model = keras.Model({"input_ids": inputs}, keras.layers.Dense(3)(x))
    data = [{"input_ids": np.arange(n).reshape(1, n) % 10} for n in range(3, 9)]
    report = export_tflite(model, tmp_path / "sin.tflite", quantize="int8", representative_data=data)
    assert "SIN x1" in report.fallback
    out = TFLiteRunner(report.path)({"input_ids": np.ones((2, 5))})["logits"]
    assert out.shape == (2, 5, 3) and np.all(np.isfinite(out))


def test_int8_without_representative_data_is_a_clear_error(classifier, export_dir):
    path = export_dir / "no_data.tflite"
    with pytest.raises(ValueError, match="needs representative_data"):
        export_tflite(classifier, path, quantize="int8")
    with pytest.raises(ValueError, match="quantize='int4' is not supported"):
        export_tflite(classifier, path, quantize="int4")
    assert not path.exists()


# --------------------------------------------------------------------- atomicity


def test_failed_conversion_leaves_no_file(classifier, tmp_path):
    rng = np.random.default_rng(4)

    def bad_data():
        yield _batch(rng, 1, 8)
        raise RuntimeError("corrupt calibration shard")

    path = tmp_path / "model.tflite"
    with pytest.raises(RuntimeError, match="corrupt calibration shard"):
        export_tflite(classifier, path, quantize="int8", representative_data=bad_data())
    assert os.listdir(tmp_path) == []

    # A bad item (missing input) fails the same way, and an older file survives intact.
    path.write_bytes(b"previous model")
    with pytest.raises(ValueError, match=r"representative_data\[1\].*missing \['attention_mask'\]"):
        items = [_batch(rng, 1, 8), {"input_ids": np.ones((1, 8)), "token_type_ids": np.ones((1, 8))}]
        export_tflite(classifier, path, quantize="int8", representative_data=items)
    assert path.read_bytes() == b"previous model"
    assert os.listdir(tmp_path) == ["model.tflite"]

    # A missing asset is caught before any conversion.
    with pytest.raises(ValueError, match="vocab.txt.*file not found"):
        export_tflite(classifier, tmp_path / "other.tflite", assets={"vocab.txt": tmp_path / "nope.txt"})
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_unsupported_op_is_named(tmp_path):
    inputs = keras.Input(shape=(None,), dtype=tf.int32, name="input_ids")
    x = keras.layers.Embedding(10, 4)(inputs)
    outputs = keras.layers.Lambda(tf.math.erfc, name="odd_gelu")(x)  # TF's own exact GELU lowers to Erfc
    model = keras.Model({"input_ids": inputs}, outputs)
    with pytest.raises(ExportError, match="Erfc") as err:
        export_tflite(model, tmp_path / "erfc.tflite")
    assert "Erfc (layer 'odd_gelu')" in str(err.value) and err.value.ops == ["Erfc"]
    assert "allow_custom_ops=True" in str(err.value)
    with pytest.raises(ExportError, match=r"Erfc \(layer 'odd_gelu'\).*tf.math.erf"):
        export_onnx(model, tmp_path / "erfc.onnx")
    assert os.listdir(tmp_path) == []


def test_mixed_precision_model_exports_as_float32(batches, tmp_path):
    # TFLite has no float16 AddV2 kernel: the exporter rebuilds the model in float32.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = token_classifier(get_preset("bert-tiny", vocab_size=VOCAB, num_layers=1), num_labels=3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    report = export_tflite(model, tmp_path / "mixed.tflite")
    assert "float32 copy" in report.notes[0]
    result = verify(model, TFLiteRunner(report.path), batches)
    assert result["argmax_agreement"] == 1.0 and result["max_abs_diff"] < 5e-3  # Keras side is float16


# ------------------------------------------------------- sequence classification


def test_sequence_classifier_verify_per_example_and_latency(batches, tmp_path):
    model = sequence_classifier(get_preset("bert-tiny", vocab_size=VOCAB, num_layers=1), num_labels=3)
    report = export_tflite(model, tmp_path / "cls.tflite", quantize="dynamic")
    runner = TFLiteRunner(report.path)
    result = verify(model, runner, batches)
    assert result["n_tokens"] == result["n_examples"] == 6  # one decision per example
    assert result["argmax_agreement"] >= 0.8
    timing = latency(runner, batches[0], warmup=1, runs=5)
    assert 0 < timing["p50_ms"] <= timing["p95_ms"]
    table = format_table([{"format": "tflite-dynamic", **result, **timing}])
    header, rule, row = table.splitlines()
    assert header.split()[:3] == ["format", "max_abs_diff", "argmax_agreement"]
    assert row.startswith("tflite-dynamic") and len(rule) >= len(header.rstrip())


# ---------------------------------------------------------------------------- GPT


def _greedy_full_recompute(model, prompt, steps):
    ids = list(prompt)
    for _ in range(steps):
        x = np.array([ids], np.int32)
        logits = model({"input_ids": x, "attention_mask": np.ones_like(x)}, training=False)
        ids.append(int(np.argmax(logits[0, -1])))
    return ids[len(prompt) :]


def test_gpt_prefill_decode_matches_greedy_without_cache(tmp_path):
    tf.keras.utils.set_random_seed(5)
    # initializer_range=0.5: with 0.02 random weights greedy decoding settles into repeating
    # one token and top-2 logit gaps are ~0.002; here the gaps are > 0.1 and tokens vary.
    config = get_preset(
        "gpt-tiny", vocab_size=200, num_layers=2, hidden_size=64, num_heads=2, max_position=64, initializer_range=0.5
    )
    model = gpt_decoder(config)
    report = export_gpt_tflite(model, tmp_path / "gpt.tflite", max_length=32)
    assert set(report.signatures) == {"prefill", "decode"}
    assert report.signatures["decode"]["inputs"] == ["cache", "cache_index", "input_ids"]
    prompt = [11, 42, 7, 150, 3]
    expected = _greedy_full_recompute(model, prompt, 10)
    assert greedy_generate_tflite(report.path, prompt, max_new_tokens=10) == expected
    assert len(set(expected)) > 3  # not a degenerate repetition
    with pytest.raises(ValueError, match="does not fit the cache of 32"):
        greedy_generate_tflite(report.path, prompt, max_new_tokens=40)
    # ONNX: one step graph for prefill and decode.
    onnx_report = export_gpt_onnx(model, tmp_path / "gpt.onnx", max_length=32)
    assert greedy_generate_onnx(onnx_report.path, prompt, max_new_tokens=10) == expected
