"""`kerasllm compress ...` and the compression report: merged table, JSON, plot, user errors."""
import json

import pytest
from typer.testing import CliRunner

from kerasllm.cli.main import app
from kerasllm.compression import report

runner = CliRunner()


def row(name, method, f1, gzip_bytes, **extra):
    values = {
        "name": name, "method": method, "metric": "entity_f1", "keras_score": f1, "tflite_score": f1,
        "params": 1000, "nonzero_params": 1000, "tflite_bytes": 4_000_000, "tflite_gzip_bytes": gzip_bytes,
        "latency_p50_ms": 2.0, "latency_length": 64, "latency_threads": 1,
    }
    values.update(extra)
    return values


@pytest.fixture
def row_dirs(tmp_path):
    rows = [
        row("float32", "base", 0.50, 3_000_000),
        row("prune 50%", "prune", 0.4912, 1_500_000, nonzero_params=520),
        row("QAT int8", "qat", 0.47, 800_000, keras_score=0.49, tflite_bytes=1_000_000),
    ]
    dirs = []
    for i, r in enumerate(rows):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        report.write_row(str(folder), r)
        dirs.append(str(folder))
    return dirs


def test_markdown_table_compares_each_row_with_the_float_baseline(row_dirs):
    rows = report.read_rows(row_dirs)
    cells = {c[0]: c for c in report.table_rows(rows)}
    header = list(report.COLUMNS)
    col = {name: header.index(name) for name in header}
    assert cells["prune 50%"][col["Δ vs base"]] == "-0.88"  # (0.4912 - 0.50) * 100
    assert cells["prune 50%"][col["gzip × base"]] == "0.50"  # 1.5 MB / 3.0 MB
    assert cells["prune 50%"][col["non-zero"]] == "520"
    assert cells["QAT int8"][col["score (Keras)"]] == "49.00"
    assert cells["QAT int8"][col["score (TFLite)"]] == "47.00"
    assert cells["QAT int8"][col["TFLite MB"]] == "1.00"
    # another baseline by name
    other = {c[0]: c for c in report.table_rows(rows, baseline="prune 50%")}
    assert other["float32"][col["Δ vs base"]] == "+0.88"
    with pytest.raises(ValueError, match="no row has that name"):
        report.table_rows(rows, baseline="nope")


def test_compress_report_writes_markdown_json_and_png(row_dirs, tmp_path):
    prefix = tmp_path / "out" / "summary"
    result = runner.invoke(app, ["compress", "report", *row_dirs, "--out", str(prefix)])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert markdown.count("\n|") >= 4 and "| prune 50% |" in markdown and "entity f1 (TFLite)" in markdown
    assert [r["name"] for r in json.loads((tmp_path / "out" / "summary.json").read_text())] == [
        "float32", "prune 50%", "QAT int8"
    ]
    assert (tmp_path / "out" / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compress_user_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["compress", "report", str(tmp_path)])
    assert result.exit_code == 2 and "no compression_row.json" in result.output
    (tmp_path / "bad.json").write_text("{not json")
    result = runner.invoke(app, ["compress", "report", str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and "not a JSON file" in result.output
    for sparsity in ("0", "1.5"):
        result = runner.invoke(app, ["compress", "prune", "--model", str(tmp_path), "--out", str(tmp_path / "o"),
                                     "--sparsity", sparsity])
        assert result.exit_code == 2 and "strictly between 0 and 1" in result.output, result.output
    result = runner.invoke(app, ["compress", "prune", "--model", str(tmp_path), "--out", str(tmp_path / "o"),
                                 "--m-by-n", "2x4"])
    assert result.exit_code == 2 and "M:N" in result.output
    result = runner.invoke(app, ["compress", "ptq", "--model", str(tmp_path), "--out", str(tmp_path / "o"),
                                 "--quantize", "int4"])
    assert result.exit_code == 2 and "--quantize 'int4'" in result.output
    result = runner.invoke(app, ["compress", "qat", "--model", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--train" in result.output
    distill = ["compress", "distill", "--model", str(tmp_path), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*distill, "--replace-epochs", "2", "--preset", "bert-tiny"])
    assert result.exit_code == 2 and "--replace-epochs needs a student taken from the teacher" in result.output
    result = runner.invoke(app, [*distill, "--replace-epochs", "2", "--replace-start-rate", "1.5"])
    assert result.exit_code == 2 and "--replace-start-rate must be in [0, 1]" in result.output
    result = runner.invoke(app, [*distill, "--replace-epochs", "-1"])
    assert result.exit_code == 2 and "--replace-epochs must be >= 0" in result.output
    result = runner.invoke(app, [*distill, "--replace-epochs", "2", "--replace-lr", "0"])
    assert result.exit_code == 2 and "--replace-lr must be > 0, got 0.0" in result.output
    result = runner.invoke(app, [*distill, "--replace-epochs", "2", "--replace-alpha", "1.5"])
    assert result.exit_code == 2 and "--replace-alpha must be in [0, 1]" in result.output
    result = runner.invoke(app, [*distill, "--augment", "-1"])
    assert result.exit_code == 2 and "--augment must be >= 0" in result.output
    result = runner.invoke(app, [*distill, "--augment", "1", "--augment-tokens", "1.5"])
    assert result.exit_code == 2 and "--augment-tokens must be in [0, 1], got 1.5" in result.output
    result = runner.invoke(app, [*distill, "--average-last", "1"])
    assert result.exit_code == 2 and "--average-last must be 0 (off) or >= 2" in result.output
    result = runner.invoke(app, [*distill, "--average-last", "3"])
    assert result.exit_code == 2 and "--average-last scores the averaged weights on dev: it needs --dev" in result.output
    result = runner.invoke(app, [*distill, "--augment", "1", "--augment-phase", "teacher"])
    assert result.exit_code == 2 and "--augment-phase must be one of both, replace, distill, got 'teacher'" in result.output
    result = runner.invoke(app, [*distill, "--augment", "1", "--augment-phase", "replace"])
    assert result.exit_code == 2 and "--augment-phase replace feeds the copies to the --replace-epochs only" in result.output
    result = runner.invoke(app, [*distill, "--augment", "1", "--augment-phase", "distill", "--replace-epochs", "2",
                                 "--epochs", "0"])
    assert result.exit_code == 2 and "--augment-phase distill feeds the copies to the --epochs of distillation" in result.output


@pytest.mark.slow
def test_compress_commands_on_a_tiny_ner_model(tmp_path_factory):
    from tests.test_cli_ner import tiny_ner_model

    files = tiny_ner_model(tmp_path_factory)
    out = tmp_path_factory.mktemp("compress")
    data = ["--train", files["train"], "--test", files["test"], "--max-length", "32", "--latency-length", "16"]
    runs = {
        "base": ["ptq", "--quantize", "none"],
        "prune": ["prune", "--sparsity", "0.5", "--epochs", "1", "--lr", "1e-4"],
        "lowrank": ["lowrank", "--param-fraction", "0.5", "--epochs", "0"],
    }
    for folder, args in runs.items():
        result = runner.invoke(app, ["compress", *args, "--model", files["model"], "--out", str(out / folder), *data])
        assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in report.read_rows([str(out / f) for f in runs])}
    assert rows["base"]["nonzero_params"] == rows["base"]["params"]
    assert rows["prune"]["params"] == rows["base"]["params"]
    assert rows["prune"]["nonzero_params"] < 0.8 * rows["base"]["params"]
    assert rows["lowrank"]["params"] < rows["base"]["params"]
    for r in rows.values():
        assert 0.0 <= r["keras_score"] <= 1.0 and r["tflite_bytes"] > 0 and r["latency_p50_ms"] > 0
    sparsity = json.loads((out / "prune" / "sparsity.json").read_text())
    assert all(abs(w["sparsity"] - 0.5) < 0.01 for w in sparsity["weights"])
    # the compressed folders load as NER folders again (low-rank included)
    from kerasllm.compression.pipeline import load_ner_folder

    for folder in ("prune", "lowrank"):
        model, _, labels = load_ner_folder(out / folder / "model")
        assert model.output_shape[-1] == labels.num_labels


def test_distill_repeats_with_its_seed_and_keeps_the_best_dev_epoch(tmp_path_factory):
    """Same --seed twice: bit-identical students; the saved student is the best dev epoch's."""
    import numpy as np

    from kerasllm.compression.pipeline import CompressOptions, NerData, load_ner_folder
    from tests.test_cli_ner import tiny_ner_model

    files = tiny_ner_model(tmp_path_factory)
    out = tmp_path_factory.mktemp("distill_seed")
    common = ["compress", "distill", "--model", files["model"], "--train", files["train"], "--dev", files["dev"],
              "--test", files["test"], "--layers", "0", "--replace-epochs", "1", "--epochs", "2", "--lr", "1e-3",
              "--replace-lr", "1e-3", "--max-length", "32", "--latency-length", "16", "--batch-size", "16"]
    weights, rows = {}, {}
    for folder, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        result = runner.invoke(app, [*common, "--seed", seed, "--out", str(out / folder)])
        assert result.exit_code == 0, result.output
        rows[folder] = report.read_rows([str(out / folder)])[0]
        model, tokenizer, labels = load_ner_folder(out / folder / "model")
        weights[folder] = model.get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(weights["a"], weights["b"]))
    assert not all(np.array_equal(x, y) for x, y in zip(weights["a"], weights["c"]))
    assert rows["a"]["keras_score"] == rows["b"]["keras_score"]
    settings = rows["a"]["settings"]
    history = settings["dev_f1_by_epoch"]
    assert [(h["phase"], h["epoch"]) for h in history] == [("replace", 1), ("distill", 1), ("distill", 2)]
    best = max(range(3), key=lambda i: (history[i]["dev_f1"], -i))
    assert settings["kept_epoch"] == [history[best]["phase"], history[best]["epoch"]]
    # the saved student scores the kept epoch's dev F1 when scored again from its folder
    options = CompressOptions(model=str(out / "a" / "model"), out=str(out / "rescore"), dev=files["dev"],
                              max_length=32, batch_size=16)
    data = NerData(tokenizer, labels, options)
    model, _, _ = load_ner_folder(out / "a" / "model")
    assert data.f1(model, "dev") == pytest.approx(settings["dev_f1_kept"], abs=1e-9)
    # --average-last 2: the mean of the two distillation epochs is scored on dev as a fourth candidate
    result = runner.invoke(app, [*common, "--seed", "7", "--average-last", "2", "--out", str(out / "avg")])
    assert result.exit_code == 0, result.output
    averaged = report.read_rows([str(out / "avg")])[0]["settings"]
    assert averaged["dev_f1_by_epoch"][:3] == history
    assert averaged["dev_f1_by_epoch"][3]["epoch"] == "average of the last 2 epochs"
    model, _, _ = load_ner_folder(out / "avg" / "model")
    assert data.f1(model, "dev") == pytest.approx(averaged["dev_f1_kept"], abs=1e-9)
    assert averaged["dev_f1_kept"] == max(h["dev_f1"] for h in averaged["dev_f1_by_epoch"])
    # --keep-last: no dev scoring, the last epoch is kept
    result = runner.invoke(app, [*common, "--seed", "7", "--keep-last", "--out", str(out / "last")])
    assert result.exit_code == 0, result.output
    last = report.read_rows([str(out / "last")])[0]["settings"]
    assert last["kept_epoch"] == "last" and last["dev_f1_by_epoch"] is None


def test_distill_augment_phase_feeds_the_copies_to_the_chosen_phase_only(tmp_path_factory):
    """--augment-phase distill: the replacing epoch runs on train alone, the distillation on train + copies."""
    import math
    import re

    from kerasllm.data import read_conll
    from kerasllm.data.augment import augmented_copies
    from kerasllm.data.ner_dataset import encode_sentences
    from kerasllm.compression.pipeline import load_ner_folder
    from tests.test_cli_ner import tiny_ner_model

    files = tiny_ner_model(tmp_path_factory)
    out = tmp_path_factory.mktemp("distill_phase")
    _, tokenizer, labels = load_ner_folder(files["model"])
    sentences = read_conll(files["train"])
    plain = len(encode_sentences(sentences, tokenizer, labels, 32))
    copies = augmented_copies(sentences, 2, 0.5, 0.15, seed=3, names="train")
    extra = len(encode_sentences(copies, tokenizer, labels, 32))
    assert math.ceil(plain / 16) < math.ceil((plain + extra) / 16)  # the two phases are told apart
    for phase, expected in (("distill", (plain, plain + extra)), ("replace", (plain + extra, plain))):
        result = runner.invoke(app, ["compress", "distill", "--model", files["model"], "--train", files["train"],
                                     "--test", files["test"], "--layers", "0", "--replace-epochs", "1", "--epochs", "1",
                                     "--augment", "2", "--augment-phase", phase, "--seed", "3", "--max-length", "32",
                                     "--latency-length", "16", "--batch-size", "16", "--out", str(out / phase)])
        assert result.exit_code == 0, result.output
        steps = [int(s) for s in re.findall(r"fine-tuning 1 epoch\(s\), (\d+) steps each", result.output)]
        assert steps == [math.ceil(n / 16) for n in expected], result.output
        assert report.read_rows([str(out / phase)])[0]["settings"]["augment"]["phase"] == phase



def test_distill_batches_carry_the_teachers_logits_computed_once(tmp_path_factory):
    """dataset(teacher=): each batch's third part is the teacher's logits on it; the loss terms match a teacher pass."""
    import numpy as np
    import tf_keras

    from kerasllm.compression.distillation import Distiller, ModuleReplacer, student_from_teacher
    from kerasllm.compression.pipeline import CompressOptions, NerData, load_ner_folder
    from tests.test_cli_ner import tiny_ner_model

    files = tiny_ner_model(tmp_path_factory)
    teacher, tokenizer, labels = load_ner_folder(files["model"])
    options = CompressOptions(model=files["model"], out=str(tmp_path_factory.mktemp("cached")), train=files["train"],
                              max_length=32, batch_size=16, seed=3, augment=1)
    data = NerData(tokenizer, labels, options)
    plain, cached = list(data.dataset()), list(data.dataset(teacher=teacher))
    assert data.teacher_logits(teacher) is data.teacher_logits(teacher)  # computed once
    assert len(cached) == len(plain) == data.steps_per_epoch()
    student = student_from_teacher(teacher, layers=[0])
    distiller = Distiller(teacher, student, alpha=0.3)
    for (x, y), (cx, cy, logits) in zip(plain, cached):
        np.testing.assert_array_equal(cx["input_ids"], x["input_ids"])
        np.testing.assert_array_equal(cy, y)
        real = x["attention_mask"].numpy().astype(bool)
        np.testing.assert_allclose(logits.numpy()[real], teacher(x, training=False).numpy()[real], atol=1e-4)
        assert not logits.numpy()[~real].any()
        ours = distiller.compute_losses(x, y, student(x), logits)
        reference = distiller.compute_losses(x, y, student(x), teacher(x))
        assert float(ours["soft_loss"]) == pytest.approx(float(reference["soft_loss"]), rel=1e-4, abs=1e-6)
    # the training steps take the carried logits instead of a teacher pass: the wrong logits change the loss
    batch = cached[0]
    distiller.compile(optimizer="sgd")

    def soft(model, data):
        model.reset_metrics()
        return float(model.test_step(data)["soft_loss"] if model is distiller else model.train_step(data)["soft_loss"])

    right = soft(distiller, batch)
    assert right == pytest.approx(soft(distiller, batch[:2]), rel=1e-4)  # (inputs, labels): a teacher pass
    assert soft(distiller, (batch[0], batch[1], -batch[2])) > right + 1e-3
    # the replacer (student block only, learning rate 0; its steps run with dropout): the
    # negated logits give a far larger KL, so the carried logits are the ones it uses
    replacer = ModuleReplacer(teacher, student, start_rate=1.0, alpha=0.5, seed=1, ramp_steps=10)
    replacer.compile(optimizer=tf_keras.optimizers.SGD(0.0))
    assert soft(replacer, (batch[0], batch[1], -batch[2])) > 2 * soft(replacer, batch)


def test_distill_freezes_the_teachers_embedding_tables_by_default(tmp_path_factory):
    """A student of teacher blocks keeps the teacher's embedding tables to the bit (--train-embeddings: they move)."""
    import numpy as np

    from kerasllm.compression.pipeline import load_ner_folder
    from tests.test_cli_ner import tiny_ner_model

    files = tiny_ner_model(tmp_path_factory)
    out = tmp_path_factory.mktemp("distill_freeze")
    teacher, _, _ = load_ner_folder(files["model"])
    for flags in ((), ("--train-embeddings",)):
        folder = out / ("trained" if flags else "default")
        result = runner.invoke(app, ["compress", "distill", "--model", files["model"], "--train", files["train"],
                                     "--test", files["test"], "--layers", "0", "--epochs", "1", "--lr", "1e-3",
                                     "--alpha", "0.5", *flags, "--max-length", "32", "--latency-length", "16",
                                     "--batch-size", "16", "--out", str(folder)])
        assert result.exit_code == 0, result.output
        student, _, _ = load_ner_folder(folder / "model")
        tables = zip(student.get_layer("embeddings").get_weights(), teacher.get_layer("embeddings").get_weights())
        kept = [np.array_equal(s, t) for s, t in tables]
        block = zip(student.get_layer("encoder_layer_0").get_weights(), teacher.get_layer("encoder_layer_0").get_weights())
        assert not all(np.array_equal(s, t) for s, t in block), flags
        frozen = report.read_rows([str(folder)])[0]["settings"]["freeze_embeddings"]
        # the freezing belongs to this run: the saved student loads with trainable tables
        assert student.get_layer("embeddings").trainable and not student.kerasllm_config.freeze_embeddings
        if flags:
            assert not all(kept) and frozen is False and "embeddings frozen" not in result.output
        else:
            assert all(kept) and frozen is True and "embeddings frozen" in result.output
