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


# ------------------------------------------------ TF Text FastBertNormalizer model
#
# TF Text's ``FastBertNormalize`` op (which has a TFLite kernel) maps each code
# point through a darts-clone trie keyed on its UTF-8 bytes to a replacement
# string; its stock model does TF Text's NFKC-style folding (``…`` -> ``...``).
# The functions below build that model from the BERT table above instead, so
# the TFLite-compatible tokenizer normalises as Hugging Face does. Two things a
# per-code-point trie cannot do are left to ``FastWordpieceTokenize``'s own
# pre-tokenization, which splits on whitespace, punctuation and CJK ideographs
# (the same CJK ranges and ASCII symbols as BERT, Unicode ``P*`` from ICU):
# the spaces around punctuation and CJK are dropped from the replacements, and
# NFC composition (cased vocabularies only) is not done. Unassigned and
# private-use code points outside planes 0 and 1 (about 900,000, none of them
# text) are left out to keep the trie small; BERT drops them.

_IS_DIFFERENT = 0x40000000  # FastBertNormalizer: "the replacement differs from the input"
_LENGTH_BITS = 6  # low bits of the encoded replacement: its UTF-8 length
_LEAF = 0x80000000  # darts-clone: a value unit (never matches a label)
_HAS_LEAF = 0x100  # darts-clone: the node has a value child at its base
_MAX_OFFSET = 1 << 21  # darts-clone: offsets below this are stored as they are
_KEPT_PLANES = 2  # planes whose unassigned/private-use code points are in the trie


def fast_normalizer_mapping(lowercase: bool, strip_accents: bool) -> dict:
    """``{code point: replacement}`` for every code point FastBertNormalize must change.

    The replacements are :func:`normalize_char`'s, without the spaces it puts
    around punctuation and CJK ideographs (FastWordpiece splits those itself).
    """
    table = build_char_table(bool(lowercase), bool(strip_accents))
    bounds = list(table.starts[1:]) + [sys.maxunicode + 1]
    mapping = {}
    for start, end, cls in zip(table.starts.tolist(), bounds, table.classes.tolist()):
        if cls in (KEEP, SPACED):
            continue
        out = table.mapped[cls]
        if out.strip(" "):
            out = out.strip(" ")
        for cp in range(start, int(end)):
            if 0xD800 <= cp <= 0xDFFF:
                continue
            if out == "" and cp >> 16 >= _KEPT_PLANES and unicodedata.category(chr(cp)) in ("Cn", "Co"):
                continue
            mapping[cp] = out
    return mapping


def double_array_trie(items: dict) -> np.ndarray:
    """A darts-clone double-array trie (``uint32`` units) of ``{key bytes: value}``.

    The layout is the one TF Text's ``DartsCloneTrieWrapper`` reads: unit ``i``
    holds its label (low 8 bits), a has-value flag (bit 8) and the offset to
    its children (bits 10+); the child with byte ``c`` sits at
    ``i ^ offset ^ c`` and the value at ``i ^ offset`` (with the top bit set).
    Keys must not contain zero bytes; values must be below ``2**31``.
    """
    root = {}
    for key, value in items.items():
        if not key or 0 in key or not 0 <= value < _LEAF:
            raise ValueError(f"trie key {key!r} / value {value!r} cannot be stored")
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[-1] = value
    units = [0] * 512
    used = bytearray(512)
    base_used = bytearray(512)
    used[0] = 1  # the root
    lows = np.arange(256)
    queue, head = [(root, 0)], 0
    free = 1  # every slot below this is used, for one-child nodes
    top = 1  # blocks of 256 slots in use
    while head < len(queue):
        node, index = queue[head]
        head += 1
        labels = sorted(k for k in node if k >= 0)
        has_leaf = -1 in node
        slots = ([0] if has_leaf else []) + labels
        if (top + 1) * 256 > len(units):
            extra = len(units)
            units += [0] * extra
            used += bytearray(extra)
            base_used += bytearray(extra)
        if len(slots) == 1:
            while used[free] or base_used[free ^ slots[0]]:
                free += 1
            base = free ^ slots[0]
        else:
            # Children share the 256-slot block of their base: try the last
            # few blocks (as darts-clone does), else open a new one.
            wanted = np.asarray(slots)
            base = None
            for block in range(max(0, top - 16), top + 1):
                start = block * 256
                taken = np.frombuffer(used, np.uint8, 256, start).astype(bool)
                bases = np.frombuffer(base_used, np.uint8, 256, start).astype(bool)
                ok = np.flatnonzero(~(taken[lows[:, None] ^ wanted[None, :]].any(axis=1) | bases))
                if len(ok):
                    base = start + int(ok[0])
                    break
        top = max(top, base // 256 + 1)
        offset = index ^ base
        if offset >= _MAX_OFFSET:
            raise ValueError("the trie grew beyond darts-clone's directly stored offsets")
        units[index] |= (offset << 10) | (_HAS_LEAF if has_leaf else 0)
        base_used[base] = 1
        if has_leaf:
            units[base] = node[-1] | _LEAF
            used[base] = 1
        for byte in labels:
            units[base ^ byte] = byte
            used[base ^ byte] = 1
            queue.append((node[byte], base ^ byte))
    return np.asarray(units[: top * 256], dtype=np.uint32)


@functools.lru_cache(maxsize=None)
def fast_bert_normalizer_model(lowercase: bool, strip_accents: bool) -> bytes:
    """A ``FastBertNormalizerModel`` flatbuffer that normalises like BERT's basic tokenizer.

    Pass it as ``tensorflow_text.FastBertNormalizer(model_buffer=...)`` or
    ``FastBertTokenizer(fast_bert_normalizer_model_buffer=...)``. See the note
    above :data:`_IS_DIFFERENT` for what it leaves to FastWordpiece.
    """
    import flatbuffers

    mapping = fast_normalizer_mapping(lowercase, strip_accents)
    pool = bytearray()
    where = {}
    items = {}
    data_for_zero = 0
    for cp, out in mapping.items():
        encoded = out.encode("utf-8")
        if len(encoded) >= 1 << _LENGTH_BITS:
            raise ValueError(f"replacement of U+{cp:04X} is {len(encoded)} bytes, over the model's limit")
        if encoded not in where:
            where[encoded] = len(pool)
            pool += encoded
        data = _IS_DIFFERENT | (where[encoded] << _LENGTH_BITS) | len(encoded)
        if cp == 0:
            data_for_zero = data  # the trie cannot hold the empty key
        else:
            items[chr(cp).encode("utf-8")] = data
    trie = double_array_trie(items)
    builder = flatbuffers.Builder(len(pool) + 4 * len(trie) + 64)
    pool_vector = builder.CreateNumpyVector(np.frombuffer(bytes(pool) or b"\0", np.uint8))
    trie_vector = builder.CreateNumpyVector(trie)
    builder.StartObject(4)
    builder.PrependBoolSlot(0, bool(lowercase and strip_accents), False)
    builder.PrependUOffsetTRelativeSlot(1, trie_vector, 0)
    builder.PrependInt32Slot(2, data_for_zero, 0)
    builder.PrependUOffsetTRelativeSlot(3, pool_vector, 0)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())
