"""`kerasllm vocab` and `kerasllm pretrain mlm|clm` on a tiny corpus; the folders load where they are used next.

The clm folder is read by `kerasllm generate`, the mlm folder by `kerasllm finetune ner --model`. Bad input
(no matching file, empty corpus, too little text, incomplete vocabulary folder) ends in one error line and
exit code 2, with nothing written.
"""
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from kerasllm.cli.main import app

runner = CliRunner()
WORDS = (
    "the king queen speaks to his her lord lady and of a my good night day sweet love death time "
    "come go now here there what why how shall will must say tell fair noble"
).split()


def _write_corpus(folder, documents=40, seed=0):
    """Blank-line separated documents of 2-5 lines of 4-9 words."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(documents):
        lines = [" ".join(rng.choice(WORDS, rng.integers(4, 10))) for _ in range(rng.integers(2, 6))]
        docs.append("\n".join(lines))
    path = os.path.join(folder, "corpus.txt")
    with open(path, "w") as f:
        f.write("\n\n".join(docs) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _write_corpus(tmp_path_factory.mktemp("pretrain_corpus"))


def _hand_vocab(folder):
    """A WordPiece vocab.txt of the corpus words (no training needed)."""
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return folder


def _ok(result):
    assert result.exit_code == 0, result.output
    return result.output


TINY = ["--steps", "2", "--eval-every", "1", "--batch-size", "4", "--validation-every", "5", "--dropout", "0"]


@pytest.mark.slow
def test_vocab_bpe_pretrain_clm_then_generate(corpus, tmp_path):
    vocab = tmp_path / "bpe"
    _ok(runner.invoke(app, ["vocab", "bpe", "--corpus", corpus, "--size", "300", "--out", str(vocab)]))
    assert sorted(os.listdir(vocab)) == ["merges.txt", "tokenizer_config.json", "vocab.json"]
    out = tmp_path / "clm"
    output = _ok(runner.invoke(app, ["pretrain", "clm", "--corpus", corpus, "--vocab", str(vocab), "--seq-length", "16",
                                     "--out", str(out), *TINY]))
    assert "held-out perplexity" in output and "unigram" in output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["stopped_by"] == "steps"
    scores = metrics["validation"]
    assert scores["perplexity_ratio"] == pytest.approx(scores["perplexity"] / scores["unigram_perplexity"])
    assert json.loads((out / "pretrain_config.json").read_text())["objective"] == "clm"
    assert not (out / "backup").exists()  # removed once training completed
    generated = _ok(runner.invoke(app, ["generate", "--model", str(out / "model"), "--prompt", "the king",
                                        "--max-new-tokens", "3", "--no-xla"]))
    assert generated.startswith("the king")


@pytest.mark.slow
def test_vocab_wordpiece_pretrain_mlm_then_finetune_ner(corpus, tmp_path):
    from kerasllm.data import write_ner_corpus

    vocab = tmp_path / "wordpiece"
    _ok(runner.invoke(app, ["vocab", "wordpiece", "--corpus", corpus, "--size", "120", "--lowercase", "--out", str(vocab)]))
    assert sorted(os.listdir(vocab)) == ["tokenizer_config.json", "vocab.txt"]
    out = tmp_path / "mlm"
    output = _ok(runner.invoke(app, ["pretrain", "mlm", "--corpus", corpus, "--vocab", str(vocab), "--seq-length", "32",
                                     "--whole-word", "--out", str(out), *TINY]))
    assert "held-out masked-token accuracy" in output and "next-sentence accuracy" in output
    assert json.loads((out / "metrics.json").read_text())["validation"]["masked_tokens"] > 0

    from kerasllm.models import load_pretrained

    pretrained = load_pretrained(str(out / "model"))
    assert pretrained.kerasllm_task == {"task": "pretraining", "next_sentence": True}
    paths = write_ner_corpus(str(tmp_path / "ner"), seed=0, num_train=12, num_dev=4, num_test=4)
    ner = tmp_path / "ner_run"
    output = _ok(runner.invoke(app, ["finetune", "ner", "--model", str(out / "model"), "--train", paths["train"],
                                     "--dev", paths["dev"], "--epochs", "1", "--max-length", "32", "--no-export",
                                     "--out", str(ner)]))
    assert "layers loaded" in output
    tuned = load_pretrained(str(ner / "model"))
    assert tuned.kerasllm_task["task"] == "token_classification"


@pytest.mark.slow
def test_pretrain_mlm_without_next_sentence_packs_full_sequences(corpus, tmp_path):
    from kerasllm.models import load_pretrained

    vocab = _hand_vocab(tmp_path / "wordpiece")
    out = tmp_path / "mlm"
    output = _ok(runner.invoke(app, ["pretrain", "mlm", "--corpus", corpus, "--vocab", str(vocab), "--no-nsp",
                                     "--seq-length", "32", "--out", str(out), *TINY]))
    assert "held-out masked-token accuracy" in output and "next-sentence" not in output
    scores = json.loads((out / "metrics.json").read_text())["validation"]
    assert scores["masked_tokens"] > 0 and "next_sentence_accuracy" not in scores
    assert load_pretrained(str(out / "model")).kerasllm_task == {"task": "pretraining", "next_sentence": False}


def _error_line(result):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_bad_input_errors(corpus, tmp_path):
    vocab = _hand_vocab(tmp_path / "wordpiece")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("\n\n".join("the king speaks" for _ in range(10)) + "\n")  # 9 training documents: 27 words + 9 [SEP]
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "vocab.json").write_text("{}")
    out = tmp_path / "out"
    cases = [
        (["pretrain", "mlm", "--corpus", str(tmp_path / "none*.txt"), "--vocab", str(vocab)], "no file matches"),
        (["pretrain", "mlm", "--corpus", str(tmp_path / "missing.txt"), "--vocab", str(vocab)], "missing.txt: no such file"),
        (["pretrain", "mlm", "--corpus", str(empty), "--vocab", str(vocab)], "empty.txt: no text"),
        (["pretrain", "mlm", "--corpus", str(tiny), "--vocab", str(vocab), "--no-nsp", "--seq-length", "64"],
         "tiny.txt: the training documents hold fewer than 62 tokens"),
        (["pretrain", "clm", "--corpus", corpus, "--vocab", str(incomplete)], "incomplete: merges.txt missing"),
        (["pretrain", "clm", "--corpus", corpus, "--vocab", str(vocab)], "wordpiece: vocab.json and merges.txt missing"),
        (["pretrain", "mlm", "--corpus", corpus, "--vocab", str(incomplete)], "incomplete: vocab.txt missing"),
        (["pretrain", "mlm", "--corpus", corpus, "--vocab", str(tmp_path / "novocab")], "novocab: no such folder"),
        (["pretrain", "clm", "--corpus", corpus], "--vocab is required"),
        (["vocab", "bpe", "--corpus", str(tmp_path / "none*.txt"), "--out", str(out)], "no file matches"),
        (["vocab", "wordpiece", "--corpus", str(empty), "--out", str(out)], "empty.txt: no text"),
    ]
    for args, message in cases:
        extra = ["--out", str(out)] if args[0] == "pretrain" else []
        line = _error_line(runner.invoke(app, args + extra))
        assert message in line, (args, line)
        assert not out.exists(), args  # nothing half-written
