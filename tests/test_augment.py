"""NER augmentation (kerasllm.data.augment): tags stay right, words come from the training set."""
import collections
import random

import pytest

from kerasllm.data.augment import augmented_copies, replace_tokens, swap_mentions
from kerasllm.data.conll import Sentence
from kerasllm.evaluation.ner import extract_entities


def corpus(n=400, seed=0):
    """Sentences of O filler words with PER/LOC mentions of 1-3 words each."""
    rng = random.Random(seed)
    sentences = []
    for i in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(1, 3)):
            tokens += [f"w{rng.randrange(500)}" for _ in range(rng.randint(0, 3))]
            tags += ["O"] * (len(tokens) - len(tags))
            type_ = rng.choice(["PER", "LOC"])
            length = rng.randint(1, 3)
            tokens += [f"{type_.lower()}{i}_{k}" for k in range(length)]
            tags += [f"B-{type_}"] + [f"I-{type_}"] * (length - 1)
        sentences.append(Sentence(tokens, tags))
    sentences.append(Sentence(["just", "words"], ["O", "O"]))
    return sentences


def mentions(sentence):
    return [(t, tuple(sentence.tokens[s:e])) for t, s, e in extract_entities(sentence.tags)]


def outside(sentence):
    return [tok for tok, tag in zip(sentence.tokens, sentence.tags) if tag == "O"]


def test_swap_mentions_keeps_types_and_context_and_draws_real_mentions():
    source = corpus()
    pool = collections.defaultdict(set)
    for s in source:
        for type_, words in mentions(s):
            pool[type_].add(words)
    with_entities = [s for s in source if extract_entities(s.tags)]
    out = swap_mentions(source, probability=0.5, copies=2, seed=4)
    assert len(out) == 2 * len(with_entities)
    swapped = total = 0
    for original, new in zip(with_entities * 2, out):
        before, after = mentions(original), mentions(new)
        assert [t for t, _ in after] == [t for t, _ in before]
        assert outside(new) == outside(original)
        for (type_, old), (_, words) in zip(before, after):
            assert words in pool[type_]
            swapped += words != old
            total += 1
    # every mention is unique here, so a swap almost always changes it: about half change
    assert 0.45 < swapped / total < 0.55
    assert swap_mentions(source, probability=0.0, seed=1) == with_entities
    assert swap_mentions(source, seed=7) == swap_mentions(source, seed=7) != swap_mentions(source, seed=8)


def test_replace_tokens_keeps_tags_at_the_given_rate():
    source = corpus()
    tagged = collections.defaultdict(set)
    for s in source:
        for tok, tag in zip(s.tokens, s.tags):
            tagged[tag].add(tok)
    out = replace_tokens(source, probability=0.3, seed=2)
    changed = total = 0
    for original, new in zip(source, out):
        assert new.tags == original.tags
        for tok, old, tag in zip(new.tokens, original.tokens, original.tags):
            assert tok in tagged[tag]
            changed += tok != old
            total += 1
    # a replacement draws the same word back with probability ~1/|tag's words| (small here)
    assert 0.26 < changed / total < 0.31
    assert replace_tokens(source, probability=0.0) == source
    with pytest.raises(ValueError, match="probability must be in"):
        replace_tokens(source, probability=1.2)


def test_augmented_copies_are_valid_new_sentences():
    source = corpus(100)
    out = augmented_copies(source, copies=3, mention_probability=0.5, token_probability=0.15, seed=0)
    assert len(out) == 3 * len(source)
    assert sum(new != old for new, old in zip(out, source * 3)) > 0.8 * len(out)
    for new, old in zip(out, source * 3):
        assert [t for t, _ in mentions(new)] == [t for t, _ in mentions(old)]
    assert augmented_copies(source, copies=0) == []
    assert augmented_copies(source, copies=2, seed=5) == augmented_copies(source, copies=2, seed=5)


def test_invented_names_keep_the_tags_and_the_context():
    source = corpus(100)
    out = augmented_copies(source, copies=1, mention_probability=1.0, token_probability=0.0, names="invented", seed=3)
    seen = {tok for s in source for tok in s.tokens}
    for new, old in zip(out, source):
        assert new.tags == old.tags and outside(new) == outside(old)
        for _type, words in mentions(new):
            assert not set(words) & seen  # invented words, not training words
    with pytest.raises(ValueError, match="names must be"):
        augmented_copies(source, names="random")
