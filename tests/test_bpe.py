"""BytePairTokenizer (GPT-2 byte-level BPE) and train_bpe_vocab, checked against Hugging Face.

Reference ids were recorded once with Transformers' ``GPT2Tokenizer`` (the
pure-Python one) by ``tests/fixtures/record_bpe_fixtures.py``; no transformers
at test time.
"""
from __future__ import annotations

import doctest
import gzip
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("keras_hub")

from kerasllm.tokenizers import BytePairTokenizer, train_bpe_vocab  # noqa: E402

HERE = Path(__file__).resolve().parent
BPE_DIR = HERE / "fixtures" / "tokenizers" / "bpe"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

sys.path.insert(0, str(HERE / "fixtures"))
import record_tokenizer_fixtures as corpus  # noqa: E402


@pytest.fixture(scope="module")
def fixture():
    with gzip.open(BPE_DIR / "hf_gpt2_ids.json.gz", "rt", encoding="utf-8") as f:
        data = json.load(f)
    for name, digest in data["meta"]["vocab_sha256"].items():
        assert hashlib.sha256((BPE_DIR / name).read_bytes()).hexdigest() == digest, f"{name} changed since recording"
    return data


@pytest.fixture(scope="module")
def tok():
    return BytePairTokenizer.from_folder(BPE_DIR)


@pytest.fixture(scope="module")
def corpora(fixture):
    missing = [p for p in (DATA / "wnut17" / "test.conll", DATA / "tinyshakespeare" / "input.txt") if not p.is_file()]
    if missing:
        pytest.skip(f"shared data missing: {', '.join(map(str, missing))}")
    lines = corpus.corpus_lines(DATA)
    for name, info in fixture["meta"]["corpora"].items():
        assert len(lines[name]) == info["lines"], f"{name}: line count changed since recording"
        assert corpus.lines_sha256(lines[name]) == info["sha256"], f"{name}: text changed since recording"
    return lines


# ----------------------------------------------------------- ids vs Hugging Face
@pytest.mark.parametrize("name", ["wnut17_test", "tinyshakespeare"])
def test_ids_equal_hf_gpt2_on_corpus(tok, fixture, corpora, name):
    batch = tok.encode_batch(corpora[name])
    got = [row[mask == 1].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
    want = fixture["ids"][name]
    wrong = [i for i, (a, b) in enumerate(zip(got, want)) if a != b]
    assert len(got) == len(want)
    assert not wrong, f"{len(wrong)} of {len(want)} lines differ, first: {corpora[name][wrong[0]]!r}"


def test_ids_equal_hf_gpt2_on_edge_cases(tok, fixture):
    for case in fixture["edge_cases"]:
        assert tok.encode(case["text"]).input_ids == case["ids"], repr(case["text"])


def test_decode_inverts_encode(tok, fixture):
    texts = [c["text"] for c in fixture["edge_cases"]] + ["e\u0301 combining, \U0001F9D1\u200D\U0001F4BB zwj", "\r\n\t x"]
    for text in texts:
        assert tok.decode(tok.encode(text).input_ids) == text, repr(text)
    batch = tok.encode_batch(texts)
    for row, mask, text in zip(batch["input_ids"], batch["attention_mask"], texts):
        assert tok.decode(row[mask == 1]) == text


def test_inside_tf_data_map_gives_same_ids(tok, fixture):
    texts = [c["text"] for c in fixture["edge_cases"]]
    ds = tf.data.Dataset.from_tensor_slices(texts).map(tok.tf_tokenize)
    got = [row.tolist() for row in ds.as_numpy_iterator()]
    assert got == [c["ids"] for c in fixture["edge_cases"]]
    batched = tf.data.Dataset.from_tensor_slices(texts).batch(5).map(tok.tf_tokenize)
    rows = [r for b in batched for r in b.to_list()]
    assert rows == [c["ids"] for c in fixture["edge_cases"]]


# --------------------------------------------------------------- hand-worked
def test_offsets_and_word_ids_hand_worked(tok):
    # "Café 😀!": é is two UTF-8 bytes (Ã ©), 😀 four (ð Ł ĺ Ģ); each byte token
    # points at its whole character. Pieces: "Café", " 😀!" (GPT-2 keeps the
    # space with the symbol run).
    enc = tok.encode("Café 😀!")
    assert enc.tokens == ["C", "a", "f", "Ã", "©", "Ġ", "ð", "Ł", "ĺ", "Ģ", "!"]
    assert enc.offsets == [(0, 1), (1, 2), (2, 3), (3, 4), (3, 4), (4, 5), (5, 6), (5, 6), (5, 6), (5, 6), (6, 7)]
    assert enc.word_ids == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]

    text = "the king"
    enc = tok.encode(text)
    assert enc.tokens == ["the", "Ġking"]
    assert [text[s:e] for s, e in enc.offsets] == ["the", " king"]
    assert enc.word_ids == [0, 1]

    text = "naïve<|endoftext|> hi"
    enc = tok.encode(text)
    assert enc.tokens == ["n", "a", "Ã", "¯", "ve", "<|endoftext|>", "Ġh", "i"]
    assert [text[s:e] for s, e in enc.offsets] == ["n", "a", "ï", "ï", "ve", "<|endoftext|>", " h", "i"]
    assert enc.word_ids == [0, 0, 0, 0, 0, 1, 2, 2]
    assert enc.input_ids[5] == tok.eos_id == 0

    # Spaces: " " | " a" | "  " (GPT-2's \s+(?!\S) leaves the last space to the word).
    enc = tok.encode("  a  ")
    assert enc.tokens == ["Ġ", "Ġa", "Ġ", "Ġ"]
    assert enc.offsets == [(0, 1), (1, 3), (3, 4), (4, 5)]
    assert enc.word_ids == [0, 1, 2, 2]


def test_offsets_cover_every_character(tok, fixture):
    for case in fixture["edge_cases"]:
        text = case["text"]
        enc = tok.encode(text)
        covered = "".join(text[s:e] for i, (s, e) in enumerate(enc.offsets) if i == 0 or (s, e) != enc.offsets[i - 1])
        assert covered == text, repr(text)


def test_prefix_space(tok):
    spaced = BytePairTokenizer.from_folder(BPE_DIR, add_prefix_space=True)
    enc = spaced.encode("the king")
    assert enc.tokens == ["Ġthe", "Ġking"]
    assert enc.offsets == [(0, 3), (3, 8)]
    assert spaced.decode(enc.input_ids) == "the king"
    assert enc.input_ids == tok.encode(" the king").input_ids


def test_docstring_example():
    from kerasllm.tokenizers import bpe

    result = doctest.testmod(bpe, extraglobs=vars(bpe).copy())
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------- batches and limits
def test_encode_batch_padding_and_truncation(tok):
    out = tok.encode_batch(["the king", "a"], padding="max_length", max_length=4)
    assert {k: v.dtype for k, v in out.items()} == {k: np.int32 for k in out}
    np.testing.assert_array_equal(out["input_ids"], [[892, 530, 0, 0], [65, 0, 0, 0]])
    np.testing.assert_array_equal(out["attention_mask"], [[1, 1, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(out["word_ids"], [[0, 1, -1, -1], [0, -1, -1, -1]])
    assert out["offsets"].shape == (2, 4, 2)
    short = tok.encode_batch(["the king is here"], max_length=2)
    assert short["input_ids"].shape == (1, 2)
    with pytest.raises(ValueError, match="max_length=2"):
        tok.encode("the king is here", max_length=2, truncation=False)
    with pytest.raises(ValueError, match="needs max_length"):
        tok.encode_batch(["a"], padding="max_length")
    with pytest.raises(TypeError):
        tok.encode_batch("a string")


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        (tmp_path / "vocab.json").write_text("{}")
        BytePairTokenizer.from_folder(tmp_path)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        BytePairTokenizer({"a": 0, "b": 1}, ["a b"], special_tokens=[], eos_token=None)
    with pytest.raises(ValueError, match="eos_token"):
        BytePairTokenizer({"a": 0, "b": 1, "ab": 2}, ["a b"], special_tokens=[])
    with pytest.raises(ValueError, match="at least one merge"):
        BytePairTokenizer({"a": 0}, [], special_tokens=[], eos_token=None)
    tiny = BytePairTokenizer({"a": 0, "b": 1, "ab": 2}, ["a b"], special_tokens=[], eos_token=None)
    assert tiny.encode("abab").input_ids == [2, 2]
    with pytest.raises(ValueError, match="cannot spell"):
        tiny.encode("abc")


def test_keras_hub_marker_character_is_refused_not_mangled(tok):
    # KerasHub's graph pre-tokenizer uses U+096C (Devanagari six) as an internal
    # marker and drops it from the text; GPT-2 would encode it. Refuse loudly.
    with pytest.raises(ValueError, match="U\\+096C"):
        tok.encode("a \u096c b")
    assert tok.encode("a \u0966 b").input_ids  # other Devanagari digits are fine


# --------------------------------------------------------------- training
def test_train_and_save_round_trip(tmp_path, tok):
    texts = [f"line {i}: the quick brown fox jumps over the lazy dog {i * 7}" for i in range(200)]
    texts += ["Café naïve résumé 😀", "ÀÉÎÕÜ àéîõü"] * 20
    trained = train_bpe_vocab(texts, 300, out_dir=tmp_path / "tok")
    assert abs(trained.vocab_size - 300) <= 30
    assert trained.token_to_id("<|endoftext|>") == 0
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["merges.txt", "tokenizer_config.json", "vocab.json"]
    again = BytePairTokenizer.from_folder(tmp_path / "tok")
    assert again.get_vocabulary() == trained.get_vocabulary() and again.merges == trained.merges
    sample = texts[:3] + texts[-2:]
    batch = again.encode_batch(sample)
    for row, mask, text in zip(batch["input_ids"], batch["attention_mask"], sample):
        assert again.decode(row[mask == 1]) == text
    assert len(again.encode("the quick brown fox").input_ids) < len("the quick brown fox") // 2  # merges learnt
    # save() of a loaded Hugging Face folder reads back identically.
    tok.save(tmp_path / "copy")
    copy = BytePairTokenizer.from_folder(tmp_path / "copy")
    assert copy.get_vocabulary() == tok.get_vocabulary() and copy.merges == tok.merges


def test_trained_fixture_vocab_has_requested_size(tok):
    assert tok.vocab_size == 1000
    assert len(tok.merges) == 1000 - 256 - 1


def test_train_from_file_hits_size(tmp_path):
    path = DATA / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        pytest.skip(f"shared data missing: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()[:3000]
    (tmp_path / "c.txt").write_text("\n".join(lines), encoding="utf-8")
    trained = train_bpe_vocab(tmp_path / "c.txt", 600)
    assert 540 <= trained.vocab_size <= 660
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe_vocab(["x"], 100)
