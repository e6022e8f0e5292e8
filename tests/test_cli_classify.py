"""`kerasllm finetune classify`, `predict classify`, `evaluate classify`: options, runs, errors."""
import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from kerasllm.cli.main import app
from kerasllm.data import read_classification
from kerasllm.data import synthetic_classification as synth
from kerasllm.evaluation import classification_scores
from kerasllm.training.finetune_config import ClassifyFinetuneConfig, NerFinetuneConfig

runner = CliRunner()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--epochs", "1", "--max-length", "32", "--vocab-size", "200", "--no-export"]


def _option_blocks(help_text):
    """``{"--name": "text of its help row(s)"}`` from Typer's rich help table."""
    blocks, current = {}, None
    for line in help_text.splitlines():
        cell = line.strip().strip("│").strip()
        match = re.match(r"(--[a-z0-9-]+)", cell)
        if match:
            current = match.group(1)
            blocks[current] = cell
        elif current and cell and not line.strip().startswith("╰"):
            blocks[current] += " " + cell
    return {k: " ".join(v.split()) for k, v in blocks.items()}


def _shown_default(value):
    if value is None:
        return "none"
    return str(value)


@pytest.mark.parametrize("task, config_class", [("classify", ClassifyFinetuneConfig), ("ner", NerFinetuneConfig)])
def test_help_lists_every_option_with_its_default(task, config_class):
    result = runner.invoke(app, ["finetune", task, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    blocks = _option_blocks(result.output)
    for field in dataclasses.fields(config_class):
        option = "--" + field.name.replace("_", "-")
        assert option in blocks, option
        if field.type is bool:
            shown = option[2:] if field.default else "no-" + option[2:]
        else:
            shown = _shown_default(field.default)
        assert f"[default: {shown}]" in blocks[option], (option, blocks[option])
    for option in ("--strategy", "--devices", "--tpu", "--lora-rank", "--lora-alpha", "--lora-targets",
                   "--adapter-size", "--freeze-embeddings", "--freeze-layers"):
        assert option in blocks


# ------------------------------------------------------------------ a tiny trained model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_classify")
    paths = synth.write_classification_corpus(folder / "data", seed=2, num_train=64, num_dev=16, num_test=24)
    out = folder / "run"
    result = runner.invoke(
        app,
        ["finetune", "classify", "--train", paths["train"], "--dev", paths["dev"], "--test", paths["test"],
         "--lr", "2e-3", "--out", str(out), *TINY],
    )
    assert result.exit_code == 0, result.output
    return {**paths, "out": str(out), "model": str(out / "model"), "output": result.output}


def _jsonl(result):
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


def test_finetune_prints_strategy_scores_and_writes_the_config(files):
    assert "kerasllm: strategy default -> _DefaultDistributionStrategy with 1 replica(s)" in files["output"]
    assert "parameters: " in files["output"] and "test accuracy " in files["output"]
    with open(os.path.join(files["out"], "finetune_config.json")) as f:
        settings = json.load(f)
    assert settings["task"] == "classify" and settings["epochs"] == 1 and settings["lr"] == 2e-3


def test_predict_jsonl_and_evaluate_agree(files, tmp_path):
    examples, _ = read_classification(files["test"])
    text_file = tmp_path / "texts.txt"
    text_file.write_text("\n".join(examples.texts) + "\n")
    records = _jsonl(runner.invoke(app, ["predict", "classify", "--model", files["model"], "--input", str(text_file),
                                         "--format", "jsonl"]))
    assert [r["text"] for r in records] == examples.texts
    for r in records:
        probabilities = r["probabilities"]
        assert sorted(probabilities) == list(synth.LABELS)
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert r["label"] == max(probabilities, key=probabilities.get) and r["score"] == probabilities[r["label"]]
    expected = classification_scores(examples.labels, [r["label"] for r in records], labels=list(synth.LABELS))

    out = tmp_path / "scores.json"
    result = runner.invoke(app, ["evaluate", "classify", "--model", files["model"], "--test", files["test"],
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"accuracy {expected['accuracy'] * 100:.2f}, macro-F1 {expected['macro_f1'] * 100:.2f}" in result.output
    saved = json.loads(out.read_text())
    assert saved["accuracy"] == pytest.approx(expected["accuracy"]) and saved["confusion"] == expected["confusion"]
    for label in synth.LABELS:
        assert label in result.output


def test_predict_table_and_user_errors(files, tmp_path):
    result = runner.invoke(app, ["predict", "classify", "--model", files["model"], "Forecasters predicted snow."],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "predictions (1 texts)" in result.output and "Forecasters predicted snow." in result.output
    result = runner.invoke(app, ["predict", "classify", "--model", files["model"]])
    assert result.exit_code == 2 and "no text to classify" in result.output
    result = runner.invoke(app, ["predict", "classify", "--model", str(tmp_path), "x"])
    assert result.exit_code == 2 and "labels.json is missing" in result.output


def test_evaluate_unknown_label_names_file_and_line(files, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Forecasters predicted snow.", "label": "weather"}\n\n{"text": "x", "label": "cooking"}\n')
    result = runner.invoke(app, ["evaluate", "classify", "--model", files["model"], "--test", str(bad)])
    assert result.exit_code == 2
    assert "bad.jsonl, line 3: unknown label 'cooking'" in result.output and "Traceback" not in result.output


def test_bad_training_files_end_in_one_clear_message(tmp_path):
    wrong = tmp_path / "reviews.csv"
    wrong.write_text("sentence,label\ngood,pos\n")
    result = runner.invoke(app, ["finetune", "classify", "--train", str(wrong), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "reviews.csv" in result.output and "no column 'text'" in result.output and "--text-column" in result.output
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    result = runner.invoke(app, ["finetune", "classify", "--train", str(empty), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "empty.tsv: the file is empty" in result.output
    result = runner.invoke(app, ["finetune", "classify", "--dev", str(wrong)])
    assert result.exit_code == 2 and "--dev/--test need --train" in result.output
    result = runner.invoke(app, ["finetune", "classify", "--train", str(wrong), "--strategy", "gpu"])
    assert result.exit_code == 2 and "--strategy 'gpu': choose one of auto, default" in result.output


def test_text_pairs_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    corpus = synth.generate_classification_corpus(seed=4, num_train=48, num_dev=0, num_test=0)["train"]
    rows = []
    for i in range(len(corpus)):
        j = int(rng.integers(len(corpus)))
        label = "same" if corpus.labels[i] == corpus.labels[j] else "different"
        rows.append({"premise": corpus.texts[i], "hypothesis": corpus.texts[j], "gold": label})
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["finetune", "classify", "--train", str(data), "--text-column", "premise", "--text-pair-column", "hypothesis",
         "--label-column", "gold", "--out", str(out), *TINY],
    )
    assert result.exit_code == 0, result.output
    assert "train: 48 text pairs" in result.output
    model = str(out / "model")
    records = _jsonl(runner.invoke(app, ["predict", "classify", "--model", model, "--format", "jsonl",
                                         f"{rows[0]['premise']}\t{rows[0]['hypothesis']}"]))
    assert records[0]["text_pair"] == rows[0]["hypothesis"] and records[0]["label"] in ("same", "different")
    result = runner.invoke(app, ["predict", "classify", "--model", model, "no tab here"])
    assert result.exit_code == 2 and "has no TAB" in result.output
    # evaluate reads the columns the model was trained with
    result = runner.invoke(app, ["evaluate", "classify", "--model", model, "--test", str(data)])
    assert result.exit_code == 0 and "48 examples" in result.output


def test_lora_trains_the_expected_fraction_and_saves_a_plain_model(files, tmp_path):
    from kerasllm.models import get_preset, sequence_classifier
    from kerasllm.training.classify_finetune import load_classify_folder

    out = tmp_path / "lora"
    result = runner.invoke(
        app, ["finetune", "classify", "--train", files["train"], "--lora-rank", "4", "--out", str(out), *TINY]
    )
    assert result.exit_code == 0, result.output
    model, tokenizer, _ = load_classify_folder(out / "model")
    hidden, layers, rank, classes = 128, 2, 4, 4
    config = get_preset("bert-tiny", vocab_size=tokenizer.vocab_size, max_position=128)  # 128: the run's minimum
    plain = sequence_classifier(config, classes).count_params()
    lora = layers * 2 * (hidden * rank + rank * hidden)  # query and value: A [h, r] and B [r, h]
    head = (hidden * hidden + hidden) + (hidden * classes + classes)  # pooler + classifier stay trainable
    assert f"parameters: {lora + head:,} trainable of {plain + lora:,}" in result.output
    # the saved model has LoRA folded in: a plain classifier of the same size
    assert model.kerasllm_config.lora_rank == 0 and model.count_params() == plain
    assert not [w.name for w in model.weights if "lora" in w.name]


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(files, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from kerasllm.cli.main import app
        sys.argv = ["kerasllm", "finetune", "classify", "--train", {files['train']!r}, "--dev", {files['dev']!r},
                    "--strategy", "mirrored", "--devices", "/cpu:0,/cpu:1", "--out", {str(tmp_path / 'm')!r},
                    "--epochs", "1", "--max-length", "32", "--vocab-size", "200", "--no-export"]
        app()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "kerasllm: strategy mirrored -> MirroredStrategy with 2 replica(s)" in done.stdout
    assert "batch: 32 examples per step (global), 16 per replica" in done.stdout
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["strategy"] == "mirrored" and 0 <= metrics["dev"]["accuracy"] <= 1
