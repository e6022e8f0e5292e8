"""Character table that reproduces BERT's "basic tokenization" normalisation.

The reference behaviour is the original BERT / Hugging Face ``BasicTokenizer``:
drop NUL, U+FFFD and control characters (Unicode category ``C*`` except tab,
newline and carriage return), turn whitespace into a space, put spaces around
CJK ideographs, lower-case and strip accents (NFD, drop ``Mn``) for uncased
vocabularies, and split punctuation (ASCII symbols plus Unicode ``P*``) into
tokens of their own.

All of these steps act on one character at a time, so they collapse into a
single table ``code point -> replacement string``.  The table is computed here
with Python's own ``unicodedata`` (the module the reference uses) and stored as
sorted runs of code points, which a graph looks up with ``tf.searchsorted``.
That is what lets :class:`~kerasllm.tokenizers.WordPieceTokenizer` match the
reference exactly while running inside ``tf.data`` and exported graphs, and it
is why TensorFlow Text's ``FastBertNormalizer`` (NFKC case folding: ``…`` becomes
``...``, ``ß`` becomes ``ss``) is not used on the exact path.

The only step that is not per character is NFC composition (a base letter and
a combining accent becoming one code point); the graph runs it on the whole
string first when accents are kept (see ``needs_nfc``).
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import unicodedata

import numpy as np

# Ranges that BERT treats as CJK ideographs (each is split into its own word).
# Hangul, Hiragana and Katakana are deliberately absent, as in the original.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)

# Run classes. Values >= _FIRST_MAPPED index into ``CharTable.mapped``.
KEEP = 0  # the character is copied unchanged
SPACED = 1  # the character is kept, with a space on each side
_FIRST_MAPPED = 2


def is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def is_bert_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_bert_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def is_bert_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # Every printable non-alphanumeric ASCII character counts, even the ones
    # Unicode files under symbols ($, +, <, =, >, ^, `, |, ~).
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _strip_marks(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def normalize_char(ch: str, lowercase: bool, strip_accents: bool) -> str:
    """What BERT's basic tokenization turns one character into.

    Word boundaries are spaces in the result: a punctuation mark or CJK
    ideograph comes back as ``" x "``, whitespace as ``" "`` and removed
    characters as ``""``.
    """
    cp = ord(ch)
    # Uncased Hugging Face tokenizers lower-case the raw text one character at
    # a time before anything else (so there is no final-sigma context).
    text = ch.lower() if lowercase else ch
    cleaned = []
    for c in text:
        if ord(c) in (0, 0xFFFD) or is_bert_control(c):
            continue
        cleaned.append(" " if is_bert_whitespace(c) else c)
    text = "".join(cleaned)
    if text in ("", " "):
        return text
    text = unicodedata.normalize("NFC", text)
    # Python's str.split() also breaks on the line/paragraph separators.
    text = "".join(" " if c.isspace() else c for c in text)
    if lowercase:
        text = text.lower()
    if strip_accents:
        text = _strip_marks(text)
    if is_cjk(cp):
        return " " + text + " "
    return "".join(" " + c + " " if is_bert_punctuation(c) else c for c in text)


@dataclasses.dataclass(frozen=True)
class CharTable:
    """Runs of code points that share one rule.

    ``starts[i]`` is the first code point of run ``i`` (sorted, ``starts[0]
    == 0``); ``classes[i]`` is ``KEEP``, ``SPACED`` or an index into
    ``mapped`` (whose first two entries are unused placeholders).
    """

    starts: np.ndarray  # int32 [num_runs]
    classes: np.ndarray  # int32 [num_runs]
    mapped: tuple  # replacement strings, indexed by class
    needs_nfc: bool

    def lookup(self, cp: int) -> str:
        """The replacement for one code point (Python-side, for checks)."""
        cls = int(self.classes[np.searchsorted(self.starts, cp, side="right") - 1])
        ch = chr(cp)
        if cls == KEEP:
            return ch
        if cls == SPACED:
            return " " + ch + " "
        return self.mapped[cls]


@functools.lru_cache(maxsize=None)
def build_char_table(lowercase: bool, strip_accents: bool) -> CharTable:
    """Build (once per setting and process) the table for all of Unicode."""
    mapped = ["", ""]  # placeholders for KEEP and SPACED
    index_of = {}
    starts, classes = [], []

    def class_for(cp: int) -> int:
        ch = chr(cp)
        category = unicodedata.category(ch)
        if category in ("Cn", "Co", "Cs"):
            # Unassigned, private-use and surrogate code points: all dropped.
            out = ""
        else:
            out = normalize_char(ch, lowercase, strip_accents)
        if out == ch:
            return KEEP
        if out == " " + ch + " ":
            return SPACED
        if out not in index_of:
            index_of[out] = len(mapped)
            mapped.append(out)
        return index_of[out]

    previous = None
    for cp in range(sys.maxunicode + 1):
        cls = class_for(cp)
        # A run of mapped characters only continues while the mapping is the
        # same string, so ``A..Z -> a..z`` stays one run per letter.
        if cls != previous:
            starts.append(cp)
            classes.append(cls)
            previous = cls
    return CharTable(
        starts=np.asarray(starts, dtype=np.int32),
        classes=np.asarray(classes, dtype=np.int32),
        mapped=tuple(mapped),
        needs_nfc=not strip_accents,
    )
