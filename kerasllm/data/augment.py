"""Data augmentation for NER training sets.

After Dai & Adel, "An Analysis of Simple Data Augmentation for Named Entity
Recognition" (COLING 2020):

- :func:`replace_mentions`: some entity mentions are swapped for invented names
  of the same length, so a small model learns to find entities from their
  context and their shape rather than memorising the names it was trained on.
- :func:`swap_mentions` (their mention replacement): a mention is swapped for
  another mention of the same type drawn from the training set, tags rebuilt.
- :func:`replace_tokens` (their label-wise token replacement): a token is
  swapped for another training token that carries the same tag.

:func:`augmented_copies` chains the last two; ``kerasllm compress distill
--augment`` uses it to give the teacher new sentences to label.
"""
import random

from kerasllm.data.conll import Sentence
from kerasllm.evaluation.ner import extract_entities

_ONSETS = ["b", "br", "c", "ch", "d", "dr", "f", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "r", "s", "st", "t", "tr", "v", "w", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
_CODAS = ["", "", "n", "r", "s", "l", "m", "nd", "rt", "x"]


def invented_word(rng):
    """A pronounceable capitalised non-word such as ``"Drelomand"``."""
    syllables = rng.randint(1, 3)
    word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
    return word.capitalize()


def replace_mentions(sentences, probability=0.5, copies=1, seed=0):
    """Return ``sentences`` plus ``copies`` augmented copies of each sentence that has entities.

    In a copy every mention is, with ``probability``, replaced by invented words
    (one per original word, tags unchanged). Deterministic for a given ``seed``.

    Example:

    >>> s = Sentence(["Ada", "Lovelace", "spoke"], ["B-PER", "I-PER", "O"])
    >>> out = replace_mentions([s], probability=1.0, seed=1)
    >>> len(out), out[1].tags, out[1].tokens[2]
    (2, ['B-PER', 'I-PER', 'O'], 'spoke')
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    rng = random.Random(seed)
    out = list(sentences)
    for _ in range(copies):
        for sentence in sentences:
            entities = extract_entities(sentence.tags)
            if not entities:
                continue
            tokens = list(sentence.tokens)
            for _type, start, end in entities:
                if rng.random() < probability:
                    for i in range(start, end):
                        tokens[i] = invented_word(rng)
            out.append(Sentence(tokens, list(sentence.tags), line=sentence.line))
    return out


def _bio(type_, length):
    return [f"B-{type_}"] + [f"I-{type_}"] * (length - 1)


def swap_mentions(sentences, probability=0.5, copies=1, seed=0):
    """Return ``copies`` augmented copies of each sentence that has entities (not the originals).

    In a copy every mention is, with ``probability``, replaced by a mention of the
    same type drawn uniformly from all the mentions in ``sentences`` (its words and
    length; the tags become ``B-type I-type ...``). Deterministic for a given ``seed``.

    Example:

    >>> a = Sentence(["Ada", "Lovelace", "spoke"], ["B-PER", "I-PER", "O"])
    >>> b = Sentence(["ask", "Bob"], ["O", "B-PER"])
    >>> out = swap_mentions([a, b], probability=1.0, seed=3)
    >>> all(s.tokens[s.tags.index("B-PER")] in ("Ada", "Bob") for s in out), len(out)
    (True, 2)
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    rng = random.Random(seed)
    pool = {}
    for sentence in sentences:
        for type_, start, end in extract_entities(sentence.tags):
            pool.setdefault(type_, []).append(sentence.tokens[start:end])
    out = []
    for _ in range(copies):
        for sentence in sentences:
            entities = extract_entities(sentence.tags)
            if not entities:
                continue
            tokens, tags, cursor = [], [], 0
            for type_, start, end in entities:
                tokens += sentence.tokens[cursor:start]
                tags += sentence.tags[cursor:start]
                words = rng.choice(pool[type_]) if rng.random() < probability else sentence.tokens[start:end]
                tokens += list(words)
                tags += _bio(type_, len(words))
                cursor = end
            tokens += sentence.tokens[cursor:]
            tags += sentence.tags[cursor:]
            out.append(Sentence(tokens, tags, line=sentence.line))
    return out


def replace_tokens(sentences, probability=0.15, seed=0, pool=None):
    """Return a copy of each sentence where every token is, with ``probability``, replaced.

    The replacement is drawn from ``pool`` (default: all tokens of ``sentences``)
    among the tokens with the same tag, with their frequencies, so tags stay as
    they were. Deterministic for a given ``seed``.

    Example:

    >>> s = [Sentence(["the", "red", "Ada"], ["O", "O", "B-PER"]), Sentence(["Bob"], ["B-PER"])]
    >>> out = replace_tokens(s, probability=1.0, seed=0)
    >>> [t.tags for t in out] == [x.tags for x in s], out[1].tokens[0] in ("Ada", "Bob")
    (True, True)
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    rng = random.Random(seed)
    by_tag = {}
    for sentence in sentences if pool is None else pool:
        for token, tag in zip(sentence.tokens, sentence.tags):
            by_tag.setdefault(tag, []).append(token)
    out = []
    for sentence in sentences:
        tokens = [
            rng.choice(by_tag[tag]) if tag in by_tag and rng.random() < probability else token
            for token, tag in zip(sentence.tokens, sentence.tags)
        ]
        out.append(Sentence(tokens, list(sentence.tags), line=sentence.line))
    return out


def augmented_copies(sentences, copies=1, mention_probability=0.5, token_probability=0.15, seed=0, names="train"):
    """``copies`` new versions of every sentence: mentions swapped, then tokens replaced.

    Every sentence gets ``copies`` versions (those without entities only the token
    replacement); the originals are not included. ``names``: ``"train"`` swaps a
    mention for another mention of its type in ``sentences`` (:func:`swap_mentions`),
    ``"invented"`` for invented words (:func:`replace_mentions`). The replacement
    tokens come from ``sentences``. Deterministic for a given ``seed``.

    Example:

    >>> s = [Sentence(["meet", "Ada", "today"], ["O", "B-PER", "O"]), Sentence(["hi", "all"], ["O", "O"])]
    >>> out = augmented_copies(s, copies=2, token_probability=0.5, seed=1)
    >>> len(out), sorted({t for x in out for t in x.tags})
    (4, ['B-PER', 'O'])
    """
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    if names not in ("train", "invented"):
        raise ValueError(f"names must be 'train' or 'invented', got {names!r}")
    out = []
    for copy in range(copies):
        rng = random.Random(f"{seed}/{copy}")
        if names == "train":
            swapped = swap_mentions(sentences, mention_probability, copies=1, seed=rng.random())
        else:
            swapped = replace_mentions(sentences, mention_probability, copies=1, seed=rng.random())[len(sentences):]
        with_entities = iter(swapped)
        versions = [next(with_entities) if extract_entities(s.tags) else s for s in sentences]
        out += replace_tokens(versions, token_probability, seed=rng.random(), pool=sentences)
    return out
