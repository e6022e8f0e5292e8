"""A small English topic-classification corpus that kerasllm generates itself (no download).

Four topics (``business``, ``science``, ``sports``, ``weather``). A sentence is
a topic clause (subject + verb phrase + object, each drawn from the topic's own
lists in ``resources/topics.txt``) between a topic-neutral prefix and suffix
("According to local media, ...", "... on Tuesday."); a fifth of the sentences
carry a second clause from another topic after "while", so the topic is that of
the main clause, not of every word.

So that the dev/test accuracy measures generalisation rather than memorisation:

* every 4th subject and object of each topic is held out of the training split;
  in half of the dev and test clauses the subject or the object (never both)
  is a held-out one;
* a fifth of the (prefix, suffix) combinations (prefix ``i`` and suffix ``j``
  with ``(i + j) % 5 == 4``) never occur in train or dev; half of the test
  sentences use one of them.

Generation is deterministic: each split has its own ``random.Random`` seeded
with a string made from ``seed`` and the split name (string seeds are hashed
with SHA-512, not with Python's randomised ``hash``).
"""
import json
import os
import random

from kerasllm._io import atomic_write_text
from kerasllm.data.classification import ClassificationExamples
from kerasllm.data.synthetic_ner import ENTITY_HOLDOUT_EVERY, _read_sections, _split

HOLDOUT_EVERY = ENTITY_HOLDOUT_EVERY  # subjects/objects i with i % 4 == 3 are never used in train (as NER names)
FRAME_HOLDOUT_EVERY = 5  # (prefix i, suffix j) with (i + j) % 5 == 4 are used only in test
UNSEEN_PROBABILITY = 0.5  # dev/test: chance that a clause's subject or object is a held-out one
HELD_OUT_FRAME_PROBABILITY = 0.5  # test: chance that a sentence uses a held-out (prefix, suffix) combination
SECOND_CLAUSE_PROBABILITY = 0.2  # "..., while <clause of another topic>"


def _load():
    """Topic word lists, prefixes, suffixes and fillers from ``resources/topics.txt``."""
    sections = _read_sections("topics.txt")
    topics = {}
    for name, lines in sections.items():
        if "." in name:
            topic, slot = name.split(".", 1)
            topics.setdefault(topic, {})[slot] = lines
    prefixes = ["" if p == "(none)" else p + " " for p in sections["prefix"]]
    suffixes = ["" if s == "(none)" else (s if s.startswith(",") else " " + s) for s in sections["suffix"]]
    fillers = {slot: sections[slot] for slot in ("DAY", "SOURCE", "PLACE", "PERIOD")}
    return topics, prefixes, suffixes, fillers


# TOPICS[topic] = {"subject": [...], "verb": [...], "object": [...]}; a sentence is
# PREFIX + clause + SUFFIX, the empty prefix and suffix first; _FILLERS fill their {SLOTS}.
TOPICS, PREFIXES, SUFFIXES, _FILLERS = _load()
LABELS = tuple(sorted(TOPICS))


def _clause(rng, topic, unseen_probability):
    """Subject, verb and object of ``topic``; with ``unseen_probability`` the subject or the object is held out."""
    words = TOPICS[topic]
    unseen = rng.choice(("subject", "object")) if rng.random() < unseen_probability else None
    subject, obj = (
        rng.choice(_split(words[slot])[1 if slot == unseen else 0]) for slot in ("subject", "object")
    )
    return f"{subject} {rng.choice(words['verb'])} {obj}"


def _frame(rng, held_out):
    """``(prefix, suffix)``: a combination of the training split, or (``held_out``) one it never uses."""
    while True:
        i, j = rng.randrange(len(PREFIXES)), rng.randrange(len(SUFFIXES))
        if ((i + j) % FRAME_HOLDOUT_EVERY == FRAME_HOLDOUT_EVERY - 1) == held_out:
            return PREFIXES[i], SUFFIXES[j]


def _sentence(rng, topic, held_out_frame, unseen_probability):
    clause = _clause(rng, topic, unseen_probability)
    if rng.random() < SECOND_CLAUSE_PROBABILITY:
        other = rng.choice([t for t in LABELS if t != topic])
        clause = f"{clause}, while {_clause(rng, other, unseen_probability)}"
    prefix, suffix = _frame(rng, held_out_frame)
    text = f"{prefix}{clause}{suffix}."
    for slot, values in _FILLERS.items():
        while "{" + slot + "}" in text:
            text = text.replace("{" + slot + "}", rng.choice(values), 1)
    return text[0].upper() + text[1:]


def generate_classification_corpus(seed=0, num_train=1200, num_dev=200, num_test=200):
    """Generate the train/dev/test splits of kerasllm's topic-classification corpus.

    Each split is balanced over the four topics (then shuffled). See the module
    docstring for what is held out of training.

    Args:
        seed: any integer; the same seed gives the same corpus.
        num_train, num_dev, num_test: examples per split.

    Returns:
        ``{"train": ClassificationExamples, "dev": ..., "test": ...}``.

    Example:
        >>> corpus = generate_classification_corpus(seed=1, num_train=8, num_dev=4, num_test=4)
        >>> len(corpus["train"]), sorted(set(corpus["train"].labels))
        (8, ['business', 'science', 'sports', 'weather'])
    """
    corpus = {}
    for split, size in (("train", num_train), ("dev", num_dev), ("test", num_test)):
        if size < 0:
            raise ValueError(f"num_{split} must be >= 0, got {size}")
        rng = random.Random(f"kerasllm-classification-{seed}-{split}")
        unseen = 0.0 if split == "train" else UNSEEN_PROBABILITY
        labels = [LABELS[i % len(LABELS)] for i in range(size)]
        rng.shuffle(labels)
        texts = []
        for topic in labels:
            held_out_frame = split == "test" and rng.random() < HELD_OUT_FRAME_PROBABILITY
            texts.append(_sentence(rng, topic, held_out_frame, unseen))
        corpus[split] = ClassificationExamples(texts, labels)
    return corpus


def write_classification_corpus(folder, seed=0, **sizes):
    """Write :func:`generate_classification_corpus` as ``train.jsonl``, ``dev.jsonl``, ``test.jsonl``.

    Each line is ``{"text": ..., "label": ...}`` (read it back with
    :func:`kerasllm.data.read_classification`). Files are written atomically.

    Returns:
        ``{"train": path, "dev": path, "test": path}``.
    """
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for split, examples in generate_classification_corpus(seed=seed, **sizes).items():
        lines = [
            json.dumps({"text": text, "label": label}, ensure_ascii=False)
            for text, label in zip(examples.texts, examples.labels)
        ]
        paths[split] = os.path.join(folder, f"{split}.jsonl")
        atomic_write_text(paths[split], "\n".join(lines) + "\n")
    return paths
