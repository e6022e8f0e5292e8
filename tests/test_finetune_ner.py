"""`kerasllm finetune ner` end to end on small files, and its user-facing errors."""
import json

import pytest
from typer.testing import CliRunner

from kerasllm.cli.main import app
from kerasllm.data import write_conll
from kerasllm.data.synthetic_ner import generate_ner_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    corpus = generate_ner_corpus(seed=3, num_train=200, num_dev=40, num_test=40)
    paths = {}
    for split, sentences in corpus.items():
        paths[split] = str(folder / f"{split}.conll")
        write_conll(paths[split], sentences)
    return paths


def test_finetune_writes_model_metrics_and_verified_tflite(small_corpus, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["finetune", "ner", "--train", small_corpus["train"], "--dev", small_corpus["dev"], "--test",
         small_corpus["test"], "--epochs", "2", "--max-length", "32", "--vocab-size", "300", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["f1"] <= 1.0 and metrics["epochs_run"] == 2
    for name in ("config.json", "kerasllm.json", "model.weights.h5", "vocab.txt", "labels.json"):
        assert (out / "model" / name).exists(), name
    assert (out / "model.tflite").exists() and (out / "model.labels.json").exists()
    export = metrics["export"]
    # the dynamic-range TFLite model is checked against Keras on the test set in the same run
    assert export["token_argmax_agreement"] >= 0.97
    assert abs(export["tflite_entity_f1"] - export["keras_entity_f1"]) <= 0.05
    assert f"test entity F1: {metrics['test']['f1'] * 100:.2f}" in result.output
    assert not (out / "backup").exists()  # removed once training completed
    settings = json.loads((out / "finetune_config.json").read_text())
    assert settings["task"] == "ner" and settings["epochs"] == 2 and settings["vocab_size"] == 300
    assert metrics["replicas"] == 1 and metrics["best_epoch"] in (1, 2)


def test_freeze_flags_train_the_expected_parameters(small_corpus, tmp_path):
    from kerasllm.training.ner_finetune import load_ner_folder

    out = tmp_path / "frozen"
    result = runner.invoke(
        app,
        ["finetune", "ner", "--train", small_corpus["train"], "--epochs", "1", "--max-length", "32", "--vocab-size",
         "300", "--freeze-embeddings", "--freeze-layers", "1", "--no-export", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    model, _, _ = load_ner_folder(out / "model")
    frozen = model.get_layer("embeddings").count_params() + model.get_layer("encoder_layer_0").count_params()
    total = model.count_params()
    assert f"parameters: {total - frozen:,} trainable of {total:,}" in result.output
    assert "embeddings frozen, lowest 1 of 2 layers frozen" in result.output


def test_malformed_line_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("Paris\tB-LOC\nis\tO\tEXTRA\n")
    result = runner.invoke(app, ["finetune", "ner", "--train", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "bad.conll" in result.output and "line 2" in result.output
    assert "Traceback" not in result.output


def test_missing_file_and_resume_without_backup(small_corpus, tmp_path):
    result = runner.invoke(app, ["finetune", "ner", "--train", str(tmp_path / "nope.conll")])
    assert result.exit_code == 2 and "nope.conll" in result.output
    result = runner.invoke(
        app, ["finetune", "ner", "--train", small_corpus["train"], "--resume", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "no backup to resume from" in result.output
