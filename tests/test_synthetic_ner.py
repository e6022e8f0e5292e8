"""The built-in synthetic NER corpus: deterministic, valid BIO, honest train/test split."""
import hashlib

import pytest

from kerasllm.data import generate_ner_corpus, read_conll, write_ner_corpus
from kerasllm.data import synthetic_ner
from kerasllm.evaluation import extract_entities

# sha256 of train.conll + dev.conll + test.conll (concatenated bytes) written by
# write_ner_corpus(out_dir) with the defaults (seed=0, 2000/300/300). Recorded once;
# it must not change between runs, machines or PYTHONHASHSEED values. If the word
# lists or templates are edited on purpose, record the new value.
DEFAULT_CORPUS_SHA256 = "3abc14583b2ef5c2764fbc3d6d625ef754a4d1e4faba631b48542d97434444de"
VALID_TAGS = {"O"} | {f"{p}-{t}" for p in "BI" for t in ("PER", "LOC", "ORG", "MISC")}


@pytest.fixture(scope="module")
def corpus():
    return generate_ner_corpus()


def _mentions(sentences):
    return [(t, " ".join(s.tokens[a:b])) for s in sentences for t, a, b in extract_entities(s.tags)]


def test_deterministic(corpus):
    assert generate_ner_corpus() == corpus
    assert generate_ner_corpus(seed=1) != corpus
    # Split streams are independent: a smaller train set leaves dev and test unchanged.
    small = generate_ner_corpus(num_train=10)
    assert small["dev"] == corpus["dev"] and small["test"] == corpus["test"]
    assert small["train"] == corpus["train"][:10]


def test_written_files_hash(tmp_path):
    paths = write_ner_corpus(tmp_path)
    assert sorted(paths) == ["dev", "test", "train"]
    digest = hashlib.sha256()
    for split in ("train", "dev", "test"):
        digest.update(open(paths[split], "rb").read())
    assert digest.hexdigest() == DEFAULT_CORPUS_SHA256


def test_sizes_and_valid_bio(corpus):
    assert {k: len(v) for k, v in corpus.items()} == {"train": 2000, "dev": 300, "test": 300}
    for split, sentences in corpus.items():
        lengths = [len(s) for s in sentences]
        assert min(lengths) <= 10 and max(lengths) >= 25, split  # varied lengths
        for s in sentences:
            assert len(s.tokens) == len(s.tags) and s.line == 0
            assert set(s.tags) <= VALID_TAGS
            for i, tag in enumerate(s.tags):  # strict BIO: I-X only after B-X / I-X
                if tag.startswith("I-"):
                    assert i > 0 and s.tags[i - 1][2:] == tag[2:]
            assert all(tok and not any(c.isspace() for c in tok) for tok in s.tokens)
        types = {t for t, _ in _mentions(sentences)}
        assert types == {"PER", "LOC", "ORG", "MISC"}, split
        per_sentence = [len(extract_entities(s.tags)) for s in sentences]
        assert 0 in per_sentence and max(per_sentence) >= 3, split
        # Multi-word entities occur.
        assert any(a - b > 1 for s in sentences for _, b, a in extract_entities(s.tags)), split


def test_dev_and_test_entities_mostly_unseen_in_train(corpus):
    train = set(_mentions(corpus["train"]))
    for split in ("dev", "test"):
        mentions = _mentions(corpus[split])
        unseen = sum(m not in train for m in mentions) / len(mentions)
        # Designed: each dev/test slot draws a held-out name with probability 0.8
        # (measured 0.83 for dev and 0.84 for test with seed 0).
        assert unseen >= 0.75, (split, unseen)
    # Held-out names are never a training mention.
    resources = synthetic_ner._load_resources()
    train_names = {name for _, name in train}
    for slot in ("LOC", "ORG", "NAT", "EVENT", "PRODUCT"):
        for name in resources.pools[slot][1]:
            assert name not in train_names, name
    held_first, held_last = resources.pools["FIRST"][1], resources.pools["LAST"][1]
    for name in train_names:
        assert name.split()[0] not in held_first and name not in held_last


def test_test_split_uses_held_out_templates(corpus):
    resources = synthetic_ner._load_resources()
    assert len(resources.train_templates) + len(resources.test_templates) >= 40
    assert len(resources.test_templates) >= 8

    # A held-out template is recognised by its literal (non-slot) words.
    def literal(template):
        return tuple(t for t in template if not t.startswith("{"))

    held = {literal(t) for t in resources.test_templates}

    def uses_held(sentence):
        words = set(sentence.tokens)
        return any(set(lit) <= words and len(lit) >= 4 for lit in held)

    assert not any(uses_held(s) for s in corpus["train"])
    assert sum(uses_held(s) for s in corpus["test"]) >= 100  # about half of 300


def test_resource_lists_are_disjoint_and_clean():
    resources = synthetic_ner._load_resources()
    everything = []
    for slot, (seen, held) in resources.pools.items():
        assert len(held) * 3 <= len(seen) + 3 and held, slot  # about 25 % held out
        everything += seen + held
    assert len(everything) == len(set(everything)), "an entry appears in two lists or twice"
    assert len(everything) >= 300


def test_read_back_equals_generated(tmp_path):
    small = generate_ner_corpus(seed=3, num_train=200, num_dev=50, num_test=50)
    paths = write_ner_corpus(tmp_path, seed=3, num_train=200, num_dev=50, num_test=50)
    for split, path in paths.items():
        data = read_conll(path)
        assert data.scheme == "BIO"
        assert list(data) == small[split]
        assert [s.tokens for s in data] == [s.tokens for s in small[split]]
        assert [s.tags for s in data] == [s.tags for s in small[split]]
        first = open(path, encoding="utf-8").readline()
        assert first.count("\t") == 1  # 2-column, tab-separated


def test_bad_size():
    with pytest.raises(ValueError, match="num_dev must be a non-negative int"):
        generate_ner_corpus(num_dev=-1)
