"""Data augmentation for NER training sets.

Mention replacement (Dai & Adel, "An Analysis of Simple Data Augmentation for
Named Entity Recognition", COLING 2020): some entity mentions of the training
set are swapped for invented names of the same length, so a small model learns
to find entities from their context and their shape rather than memorising
the names it was trained on.
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
