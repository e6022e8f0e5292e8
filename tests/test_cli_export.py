"""`kerasllm export ...` and `kerasllm bench latency` on a tiny fine-tuned model."""
import json

import pytest
from typer.testing import CliRunner

from kerasllm.cli.main import app
from tests.test_cli_ner import tiny_ner_model

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_ner_model(tmp_path_factory)


@pytest.fixture(scope="module")
def tflite(files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    out, summary = folder / "ner.tflite", folder / "ner.json"
    result = runner.invoke(app, ["export", "tflite", "--model", files["model"], "--out", str(out), "--test",
                                 files["test"], "--json", str(summary), "--runs", "5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return out, json.loads(summary.read_text()), result.output


def test_float_tflite_matches_keras(tflite):
    out, summary, output = tflite
    assert "tflite (none) vs Keras" in output and "argmax agree" in output
    assert out.exists() and (out.parent / "ner.labels.json").exists() and (out.parent / "ner.vocab.txt").exists()
    assert summary["token_argmax_agreement"] == 1.0 and summary["n_tokens"] > 500
    assert summary["max_abs_logit_diff"] < 1e-4
    assert summary["artefact_entity_f1"] == pytest.approx(summary["keras_entity_f1"])
    assert summary["size_bytes"] == out.stat().st_size
    assert summary["latency_p50_ms"] > 0 and summary["latency_length"] == 128


def test_onnx_dynamic_and_fixed_length_savedmodel(files, tmp_path):
    summary = tmp_path / "onnx.json"
    result = runner.invoke(app, ["export", "onnx", "--model", files["model"], "--out", str(tmp_path / "ner.onnx"),
                                 "--quantize", "dynamic", "--json", str(summary), "--runs", "3"])
    assert result.exit_code == 0, result.output
    s = json.loads(summary.read_text())
    assert (tmp_path / "ner.onnx").exists() and (tmp_path / "ner.labels.json").exists()
    assert s["verified_on"].startswith("8 synthetic") and s["token_argmax_agreement"] >= 0.9
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the float temp file is gone
    summary = tmp_path / "sm.json"
    result = runner.invoke(app, ["export", "savedmodel", "--model", files["model"], "--out", str(tmp_path / "sm"),
                                 "--max-length", "32", "--calibration", files["dev"], "--json", str(summary),
                                 "--runs", "3"])
    assert result.exit_code == 0, result.output
    s = json.loads(summary.read_text())
    assert (tmp_path / "sm" / "saved_model.pb").exists() and (tmp_path / "sm" / "assets.extra" / "vocab.txt").exists()
    assert s["token_argmax_agreement"] == 1.0 and s["max_abs_logit_diff"] < 1e-4 and s["latency_length"] == 32


def test_export_user_errors(files, tmp_path):
    out = tmp_path / "int8.tflite"
    result = runner.invoke(app, ["export", "tflite", "--model", files["model"], "--out", str(out), "--quantize", "int8"])
    assert result.exit_code == 2 and "--quantize int8 needs --calibration" in result.output
    assert not out.exists()
    result = runner.invoke(app, ["export", "tflite", "--model", files["model"], "--out", str(out), "--quantize",
                                 "int8", "--calibration", str(tmp_path / "missing.conll")])
    assert result.exit_code == 2 and "missing.conll" in result.output
    result = runner.invoke(app, ["export", "onnx", "--model", files["model"], "--out", str(tmp_path / "m.onnx"),
                                 "--max-length", "4096"])
    assert result.exit_code == 2 and "max_position 128" in result.output
    result = runner.invoke(app, ["export", "onnx", "--model", files["model"], "--out", str(tmp_path / "m.onnx"),
                                 "--quantize", "int8"])
    assert result.exit_code == 2 and "not available for onnx" in result.output
    result = runner.invoke(app, ["export", "onnx", "--model", files["model"], "--out", str(tmp_path / "m.onnx"),
                                 "--text"])
    assert result.exit_code == 2 and "--text is available for tflite and savedmodel" in result.output
    result = runner.invoke(app, ["export", "tflite", "--model", files["model"], "--out", str(out), "--text",
                                 "--quantize", "int8", "--calibration", files["dev"]])
    assert result.exit_code == 2 and "not available for tflite --text" in result.output
    result = runner.invoke(app, ["export", "onnx", "--model", files["model"], "--out", str(tmp_path / "m.onnx"),
                                 "--int8-layer-norm"])
    assert result.exit_code == 2 and "--int8-layer-norm applies to `export tflite --quantize int8` only" in result.output
    assert list(tmp_path.iterdir()) == []


def test_int8_tflite_layer_norms_float_by_default_or_int8(files, tmp_path):
    notes = {}
    for flag in ([], ["--int8-layer-norm"]):
        summary = tmp_path / f"int8{len(flag)}.json"
        result = runner.invoke(app, ["export", "tflite", "--model", files["model"], "--out",
                                     str(tmp_path / f"int8{len(flag)}.tflite"), "--quantize", "int8", "--calibration",
                                     files["dev"], "--json", str(summary), "--runs", "3", *flag])
        assert result.exit_code == 0, result.output
        s = json.loads(summary.read_text())
        assert s["token_argmax_agreement"] >= 0.9
        notes[bool(flag)] = " ".join(s["notes"])
    assert "layer norms kept in float" in notes[False] and "RSQRT" in notes[False]
    assert "layer norms kept in float" not in notes[True] and "RSQRT" not in notes[True]


def test_string_in_savedmodel_agrees_with_predict(files, tmp_path):
    summary = tmp_path / "text.json"
    result = runner.invoke(app, ["export", "savedmodel", "--model", files["model"], "--out", str(tmp_path / "sm"),
                                 "--text", "--test", files["test"], "--text-sentences", "30", "--json", str(summary),
                                 "--runs", "3"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    s = json.loads(summary.read_text())
    assert s["text"] and s["n_texts"] == 30 and s["identical_texts"] == 30 and s["n_entities"] > 30
    assert s["max_score_diff"] < 1e-5 and s["latency_p50_ms"] > 0
    assert "vs kerasllm predict" in result.output
    assert (tmp_path / "sm" / "assets.extra" / "text_model.json").exists()
    result = runner.invoke(app, ["bench", "latency", "--model", str(tmp_path / "sm"), "--runs", "2", "--length", "16"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "savedmodel (text)" in result.output and "14 random whole-word" in result.output


def test_bench_latency_on_artefact_and_folder(files, tflite, tmp_path):
    for model in (str(tflite[0]), files["model"]):
        result = runner.invoke(app, ["bench", "latency", "--model", model, "--runs", "3", "--length", "64"],
                               env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "p50" in result.output and "tokens/s" in result.output
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"x")
    result = runner.invoke(app, ["bench", "latency", "--model", str(odd)])
    assert result.exit_code == 2 and "unknown model type" in result.output
    result = runner.invoke(app, ["bench", "latency", "--model", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_every_option_shows_its_default():
    for command in (["export", "tflite"], ["bench", "latency"], ["predict", "ner"], ["evaluate", "ner"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        assert "--max-length" in result.output or command[0] == "bench"
        assert "[default:" in result.output or "default:" in result.output
