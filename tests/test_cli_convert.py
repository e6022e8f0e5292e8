"""`kerasllm convert` (HF -> kerasllm -> HF, bit-exact) and `kerasllm tokenize`."""
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kerasllm.cli.main import app

safetensors_numpy = pytest.importorskip("safetensors.numpy")

HERE = Path(__file__).resolve().parent
TINY_BERT = HERE / "fixtures" / "checkpoints" / "tiny_bert"
TINY_GPT2 = HERE / "fixtures" / "checkpoints" / "tiny_gpt2"
BPE_DIR = HERE / "fixtures" / "tokenizers" / "bpe"
WORDPIECE = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "!"]

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def bert_with_vocab(tmp_path_factory):
    """The tiny BERT folder plus a 99-token vocab.txt (the model's vocab_size)."""
    folder = tmp_path_factory.mktemp("src") / "tiny_bert"
    shutil.copytree(TINY_BERT, folder)
    tokens = WORDPIECE + [f"w{i}" for i in range(99 - len(WORDPIECE))]
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return folder


def test_hf_to_kerasllm_to_hf_is_bit_exact(bert_with_vocab, tmp_path):
    result = _run("convert", bert_with_vocab, "--out", tmp_path / "kl")
    assert result.exit_code == 0, result.output
    assert "format hf" in result.output and "model type bert" in result.output
    assert "task token_classification" in result.output and "33,423 parameters" in result.output
    assert {p.name for p in (tmp_path / "kl").iterdir()} >= {"config.json", "kerasllm.json", "model.weights.h5", "vocab.txt"}

    result = _run("convert", tmp_path / "kl", "--to", "hf", "--out", tmp_path / "hf")
    assert result.exit_code == 0, result.output
    assert "format kerasllm" in result.output
    before = safetensors_numpy.load_file(str(TINY_BERT / "model.safetensors"))
    after = safetensors_numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert sorted(after) == sorted(before)
    for name, value in before.items():
        assert after[name].dtype == value.dtype and after[name].shape == value.shape, name
        assert after[name].tobytes() == value.tobytes(), name
    assert (tmp_path / "hf" / "vocab.txt").read_text() == (bert_with_vocab / "vocab.txt").read_text()
    assert (tmp_path / "hf" / "tokenizer_config.json").is_file()


def test_tokenize_wordpiece_hand_worked(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in WORDPIECE), encoding="utf-8")
    result = _run("tokenize", "--vocab", vocab, "Unaffable!")
    assert result.exit_code == 0, result.output
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in result.output.splitlines() if line.startswith("│")]
    # #, token, id, start, end, text, word
    assert rows == [
        ["0", "[CLS]", "2", "0", "0", "", "-"],
        ["1", "un", "5", "0", "2", "'Un'", "0"],
        ["2", "##aff", "6", "2", "5", "'aff'", "0"],
        ["3", "##able", "7", "5", "9", "'able'", "0"],
        ["4", "!", "8", "9", "10", "'!'", "1"],
        ["5", "[SEP]", "3", "0", "0", "", "-"],
    ]
    cased = _run("tokenize", "--vocab", vocab, "--no-lowercase", "Unaffable!")
    assert cased.exit_code == 0 and "[UNK]" in cased.output and "##aff" not in cased.output


def test_tokenize_bpe_folder():
    result = _run("tokenize", "--vocab", BPE_DIR, "the king", "Café")
    assert result.exit_code == 0, result.output
    assert "BytePairTokenizer" in result.output
    assert "Ġking" in result.output and "' king'" in result.output and " 530 " in result.output
    assert result.output.count("'é'") == 2  # two byte tokens, one character


def test_user_errors_exit_2_with_one_line(tmp_path):
    assert "no such model folder" in _error_line(_run("convert", tmp_path / "missing", "--out", tmp_path / "o"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    assert "is not a model folder" in _error_line(_run("convert", tmp_path / "junk", "--out", tmp_path / "o"))
    assert "unknown output format" in _error_line(
        _run("convert", TINY_BERT, "--to", "onnx", "--out", tmp_path / "o")
    )
    assert "--vocab" in _error_line(_run("tokenize", "--vocab", tmp_path / "nope.txt", "hi"))
    assert "WordPiece vocabularies only" in _error_line(_run("tokenize", "--vocab", BPE_DIR, "--lowercase", "hi"))
    assert not (tmp_path / "o").exists()


def test_bpe_vocab_that_does_not_fit_the_model(tmp_path):
    folder = tmp_path / "gpt2"
    shutil.copytree(TINY_GPT2, folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(BPE_DIR / name, folder / name)
    line = _error_line(_run("convert", folder, "--out", tmp_path / "o"))
    assert "vocab.json has 1000 tokens" in line and "vocab_size=99" in line
    assert not (tmp_path / "o").exists()


def _broken_copy(tmp_path, case):
    """The tiny BERT folder broken in one way (see test_load_errors_exit_2_with_one_line)."""
    folder = tmp_path / case
    shutil.copytree(TINY_BERT, folder)
    config = json.loads((folder / "config.json").read_text())
    if case == "no_weights":
        (folder / "model.safetensors").unlink()
    elif case == "model_type":
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    elif case == "shape":
        (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 40}))
    elif case == "vocab":
        (folder / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(98)))
    return folder


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_weights", r"no weights file in .*no_weights: looked for model\.safetensors"),
        ("model_type", r"unknown model_type 't5'"),
        ("shape", r"shape mismatch for encoder_layer_0/ffn/intermediate/kernel \(from encoder\.layer\.0\."
                  r"intermediate\.dense\.weight\): the checkpoint gives \(32, 37\), the model expects \(32, 40\)"),
        ("vocab", r"vocab\.txt has 98 tokens but .*vocab_size=99"),
    ],
)
def test_load_errors_exit_2_with_one_line(tmp_path, case, message):
    line = _error_line(_run("convert", _broken_copy(tmp_path, case), "--out", tmp_path / "o"))
    assert re.search(message, line), line
    assert not (tmp_path / "o").exists()


def test_gpt2_with_bpe_vocab_to_hf_and_back(tmp_path):
    """A GPT-2 folder with vocab.json + merges.txt converts to kerasllm and back to HF with its tokenizer."""
    from kerasllm.tokenizers import BytePairTokenizer

    folder = tmp_path / "gpt2"
    shutil.copytree(TINY_GPT2, folder)
    tokens = ["<|endoftext|>", "a", "b", "c", "ab", "abc", "\u0120", "\u0120abc"]  # \u0120 is GPT-2's space byte
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\na b\nab c\n\u0120 abc\n", encoding="utf-8")
    assert _run("convert", folder, "--out", tmp_path / "kl").exit_code == 0
    result = _run("convert", tmp_path / "kl", "--to", "hf", "--out", tmp_path / "hf")
    assert result.exit_code == 0, result.output
    assert "tokenizer: BytePairTokenizer with 8 tokens" in result.output
    config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "GPT2Tokenizer" and config["model_max_length"] == 64
    tok = BytePairTokenizer.from_folder(tmp_path / "hf")
    assert tok.encode("abc abc").input_ids == [5, 7]
    before = safetensors_numpy.load_file(str(TINY_GPT2 / "model.safetensors"))
    after = safetensors_numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert sorted(after) == sorted(before)
    assert all(after[k].tobytes() == v.tobytes() for k, v in before.items())
