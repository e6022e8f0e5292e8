"""A small English NER corpus that kerasllm generates itself (no download).

Sentences come from hand-written templates (news, travel, business, sport;
``resources/templates.txt``) whose slots are filled from kerasllm's own lists
of people, locations, organisations and MISC names (``resources/*.txt``).
Tags are BIO with the four CoNLL-2003 types PER, LOC, ORG and MISC.

To make the dev/test F1 measure generalisation rather than memorisation:

* every 4th entry of each name list (25 %) is held out of the training split;
  each entity slot in a dev or test sentence takes a held-out name with
  probability 0.8 (so about 80 % of dev/test mentions never occur in train);
* every 5th template (20 %) is held out of train and dev; half of the test
  sentences use one of them.

Generation is deterministic: each split has its own ``random.Random`` seeded
from a string built from ``seed`` (string seeds are hashed with SHA-512, not
with Python's randomised ``hash``), and the lists are read in file order.
"""
import dataclasses
import importlib.resources
import os
import random

from kerasllm.data.conll import Sentence, write_conll

ENTITY_SLOTS = {"PER": "PER", "LOC": "LOC", "ORG": "ORG", "NAT": "MISC", "EVENT": "MISC", "PRODUCT": "MISC"}
FILLER_SLOTS = ("NUM", "YEAR", "DAY", "MONTH", "PCT")
ENTITY_HOLDOUT_EVERY = 4  # entries i with i % 4 == 3 are never used in train
TEMPLATE_HOLDOUT_EVERY = 5  # templates i with i % 5 == 4 are used only in test
UNSEEN_PROBABILITY = 0.8  # dev/test: chance that an entity slot draws a held-out name
HELD_OUT_TEMPLATE_PROBABILITY = 0.5  # test: chance that a sentence uses a held-out template
SINGLE_NAME_PROBABILITY = 0.2  # a person is sometimes mentioned by surname alone

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)


def _read_resource(name):
    """Non-empty, non-comment lines of ``kerasllm/data/resources/<name>``."""
    text = importlib.resources.files("kerasllm.data").joinpath("resources", name).read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _read_sections(name):
    """``{section: [lines]}`` of a resource file with ``[section]`` headers."""
    sections, current = {}, None
    for line in _read_resource(name):
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections[current] = []
        elif current is None:
            raise ValueError(f"kerasllm/data/resources/{name}: entry {line!r} comes before any [section] header")
        else:
            sections[current].append(line)
    return sections


def _split(items):
    """(seen, held_out): every ENTITY_HOLDOUT_EVERY-th item is held out."""
    seen = [x for i, x in enumerate(items) if i % ENTITY_HOLDOUT_EVERY != ENTITY_HOLDOUT_EVERY - 1]
    held = [x for i, x in enumerate(items) if i % ENTITY_HOLDOUT_EVERY == ENTITY_HOLDOUT_EVERY - 1]
    return seen, held


@dataclasses.dataclass
class _Resources:
    pools: dict  # slot -> (seen, held_out); "FIRST" and "LAST" for person names
    train_templates: list
    test_templates: list


def _load_resources():
    misc = _read_sections("misc.txt")
    lists = {
        "FIRST": _read_resource("persons_first.txt"),
        "LAST": _read_resource("persons_last.txt"),
        "LOC": _read_resource("locations.txt"),
        "ORG": _read_resource("organizations.txt"),
        "NAT": misc["nationality"],
        "EVENT": misc["event"],
        "PRODUCT": misc["product"],
    }
    templates = [line.split() for line in _read_resource("templates.txt")]
    for number, template in enumerate(templates, start=1):
        for token in template:
            if token.startswith("{") and token.endswith("}"):
                slot = token[1:-1]
                if slot not in ENTITY_SLOTS and slot not in FILLER_SLOTS:
                    raise ValueError(f"kerasllm/data/resources/templates.txt: template {number} has unknown slot {token}")
    return _Resources(
        pools={slot: _split(items) for slot, items in lists.items()},
        train_templates=[t for i, t in enumerate(templates) if i % TEMPLATE_HOLDOUT_EVERY != TEMPLATE_HOLDOUT_EVERY - 1],
        test_templates=[t for i, t in enumerate(templates) if i % TEMPLATE_HOLDOUT_EVERY == TEMPLATE_HOLDOUT_EVERY - 1],
    )


def _entity_text(slot, rng, pools, unseen_probability):
    held = 1 if unseen_probability and rng.random() < unseen_probability else 0
    if slot == "PER":
        last = rng.choice(pools["LAST"][held])
        if rng.random() < SINGLE_NAME_PROBABILITY:
            return last
        return f"{rng.choice(pools['FIRST'][held])} {last}"
    return rng.choice(pools[slot][held])


def _filler(slot, rng):
    if slot == "NUM":
        return str(rng.choice((rng.randint(2, 20), rng.randint(21, 999))))
    if slot == "YEAR":
        return str(rng.randint(1985, 2030))
    if slot == "DAY":
        return rng.choice(_DAYS)
    if slot == "MONTH":
        return rng.choice(_MONTHS)
    return f"{rng.randint(1, 150) / 10:.1f}"  # PCT


def _make_sentence(template, rng, pools, unseen_probability):
    tokens, tags = [], []
    for token in template:
        slot = token[1:-1] if token.startswith("{") and token.endswith("}") else None
        if slot in ENTITY_SLOTS:
            words = _entity_text(slot, rng, pools, unseen_probability).split()
            entity_type = ENTITY_SLOTS[slot]
            tokens.extend(words)
            tags.extend([f"B-{entity_type}"] + [f"I-{entity_type}"] * (len(words) - 1))
        elif slot in FILLER_SLOTS:
            tokens.append(_filler(slot, rng))
            tags.append("O")
        else:
            tokens.append(token)
            tags.append("O")
    return Sentence(tokens, tags, line=0)


def generate_ner_corpus(seed=0, num_train=2000, num_dev=300, num_test=300):
    """Generate the built-in NER corpus.

    Args:
        seed: integer seed; the same seed gives the same corpus on any machine.
        num_train: number of training sentences.
        num_dev: number of development sentences.
        num_test: number of test sentences.

    Returns:
        ``{"train": [...], "dev": [...], "test": [...]}``, lists of
        :class:`~kerasllm.data.conll.Sentence` with BIO tags (types PER, LOC,
        ORG, MISC) and ``line=0``. Each split has its own random stream, so
        changing ``num_train`` does not change dev or test.

    Raises:
        ValueError: if a size is negative.

    Example:
        >>> corpus = generate_ner_corpus(seed=0, num_train=5, num_dev=2, num_test=2)
        >>> [len(corpus[k]) for k in ("train", "dev", "test")]
        [5, 2, 2]
    """
    sizes = {"train": num_train, "dev": num_dev, "test": num_test}
    for split, size in sizes.items():
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"generate_ner_corpus: num_{split} must be a non-negative int, got {size!r}")
    resources = _load_resources()
    corpus = {}
    for split, size in sizes.items():
        rng = random.Random(f"kerasllm-synthetic-ner:{int(seed)}:{split}")
        unseen = 0.0 if split == "train" else UNSEEN_PROBABILITY
        sentences = []
        for _ in range(size):
            if split == "test" and rng.random() < HELD_OUT_TEMPLATE_PROBABILITY:
                template = rng.choice(resources.test_templates)
            else:
                template = rng.choice(resources.train_templates)
            sentences.append(_make_sentence(template, rng, resources.pools, unseen))
        corpus[split] = sentences
    return corpus


def write_ner_corpus(out_dir, seed=0, num_train=2000, num_dev=300, num_test=300):
    """Generate the built-in corpus and write it as CoNLL files.

    Writes ``train.conll``, ``dev.conll`` and ``test.conll`` (``token TAB tag``,
    a blank line after each sentence, UTF-8, ``\\n`` line ends) into
    ``out_dir``, each atomically. The bytes depend only on the arguments.

    Args:
        out_dir: output folder (created if missing).
        seed, num_train, num_dev, num_test: as in :func:`generate_ner_corpus`.

    Returns:
        ``{"train": path, "dev": path, "test": path}``.

    Example:
        >>> import tempfile
        >>> paths = write_ner_corpus(tempfile.mkdtemp(), num_train=10, num_dev=5, num_test=5)
        >>> sorted(paths)
        ['dev', 'test', 'train']
    """
    corpus = generate_ner_corpus(seed=seed, num_train=num_train, num_dev=num_dev, num_test=num_test)
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for split, sentences in corpus.items():
        paths[split] = write_conll(os.path.join(out_dir, f"{split}.conll"), sentences, sep="\t")
    return paths
