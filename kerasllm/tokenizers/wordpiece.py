"""BERT WordPiece tokenizer that runs eagerly, in ``tf.data`` and in exported graphs.

One TensorFlow graph does all of the work, so ``encode`` (NumPy results for
Python code), ``tf_tokenize`` (ragged ids inside ``tf.data`` or a model) and an
exported SavedModel all give the same ids:

1. NFC composition (``tensorflow_text.normalize_utf8_with_offsets_map``), only
   when accents are kept (cased vocabularies).
2. BERT basic normalisation as one table lookup per character (see
   ``_normalization.py``): control characters dropped, whitespace unified,
   lower-casing and accent stripping for uncased vocabularies, and a space put
   on each side of punctuation and CJK ideographs.
3. Split on the spaces step 2 left (core ``tf.strings.split``).
4. WordPiece (``tensorflow_text.FastWordpieceTokenizer`` on single words), and
   one ``[UNK]`` for any word longer than ``max_chars_per_word`` characters.

The ids equal Hugging Face's ``BertTokenizer`` (the pure-Python one) on the
recorded fixtures in ``tests/fixtures/tokenizers``.

Exporting
---------
A SavedModel of the exact graph serves anywhere ``tensorflow_text`` is
imported. Converted to TFLite (``SELECT_TF_OPS`` + ``allow_custom_ops``) it
needs the TF Text custom op ``FastWordpieceTokenizeWithOffsets`` plus these
core ops from the Flex delegate: ``UnicodeDecodeWithOffsets``,
``UnicodeEncode``, ``StringJoin``, ``UnsortedSegmentJoin``, ``StringSplitV2``,
``StringLength``, ``UpperBound``, ``SelectV2`` (on strings), ``DenseBincount``
and ``RaggedTensorToTensor``. Cased vocabularies also use TF Text's
``NormalizeUTF8WithOffsetsMap``/``FindSourceOffsets`` (NFC), which have no
TFLite kernel.

``tf_tokenize(..., tflite_compatible=True)`` (and
:meth:`WordPieceTokenizer.tflite_tokenize_with_offsets`) is built only from ops
with TFLite kernels: the TF Text custom ops ``FastBertNormalize`` and
``FastWordpieceTokenize``/``FastWordpieceTokenizeWithOffsets`` (and
``RaggedTensorToTensor`` when the ids are padded), registered in a TFLite
interpreter with ``tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS``, plus
builtins. ``FastBertNormalize`` runs a normaliser model built from the same
BERT character table as step 2 (``_normalization.fast_bert_normalizer_model``;
TF Text's stock model would fold ``…`` to ``...`` and ``ß`` to ``ss``), and
FastWordpiece's own pre-tokenization splits punctuation and CJK as BERT does.
On the recorded corpus lines (WNUT-17 test, tinyshakespeare, the edge cases) it
gives Hugging Face's ids everywhere, with both vocabularies, except one cased
edge case: it does not compose a character and a following combining mark (NFC,
step 1; only cased vocabularies keep accents). Other known differences: words
are limited by ``max_chars_per_word`` UTF-8 bytes rather than characters, and
unassigned or private-use code points beyond plane 1 are kept (BERT drops them).
``pytest tests/test_tokenizers_tflite.py -s -k corpora`` prints the counts.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.core.pybinds import pywrap_fast_wordpiece_tokenizer_model_builder

from kerasllm._io import atomic_write_text
from kerasllm.tokenizers import _normalization

SUFFIX_INDICATOR = "##"
VOCAB_FILENAME = "vocab.txt"
CONFIG_FILENAME = "tokenizer_config.json"

_SURROGATE = re.compile("[\ud800-\udfff]")
_SPECIAL_ARGS = ("unk_token", "cls_token", "sep_token", "pad_token", "mask_token")


@dataclasses.dataclass
class Encoding:
    """The model inputs for one text (or text pair).

    Attributes:
        input_ids: vocabulary ids, ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]``,
            then any padding.
        token_type_ids: segment ids, 0 for ``[CLS] a [SEP]`` and 1 for ``b [SEP]``.
        attention_mask: 1 for real tokens, 0 for padding.
        offsets: ``(start, end)`` character offsets of each token in the string
            it came from (``text`` or ``text_pair``; for ``encode_words`` the
            word itself); ``(0, 0)`` for special and padding tokens.
        word_ids: index of the word each token came from (basic words for
            ``encode``, the given words for ``encode_words``; counted per
            sequence), ``None`` for special and padding tokens.
        tokens: the token strings.
    """

    input_ids: list
    token_type_ids: list
    attention_mask: list
    offsets: list
    word_ids: list
    tokens: list

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclasses.dataclass
class _Pieces:
    """Wordpieces of one string, before special tokens (NumPy arrays)."""

    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    words: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> "_Pieces":
        return _Pieces(self.ids[:n], self.starts[:n], self.ends[:n], self.words[:n])


def _read_vocab(path: Path) -> list:
    if path.is_dir():
        path = path / VOCAB_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"WordPiece vocabulary file not found: {path} "
            f"(expected a {VOCAB_FILENAME} with one token per line)"
        )
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


@dataclasses.dataclass
class _Normalized:
    """What :class:`BasicNormalizer` returns (graph tensors)."""

    normalized: tf.Tensor  # [batch] text with words separated by spaces
    work: tf.Tensor  # [batch] the input after NFC (the input itself if no NFC)
    nfc_map: Optional[tf.Tensor]  # offsets map from ``work`` back to the input, or None
    # offsets map from ``normalized`` back to the concatenated pieces, or None
    final_nfc_map: Optional[tf.Tensor]
    codepoints: tf.RaggedTensor  # [batch, (chars)] code points of ``work``
    char_byte_starts: tf.RaggedTensor  # [batch, (chars)] byte offset of each char in ``work``
    chars: tf.Tensor  # [total_chars] each char of ``work`` as a string
    pieces: tf.Tensor  # [total_chars] what each char became in ``normalized``


def _normalize(texts, run_starts, run_classes, mapped, needs_nfc: bool) -> _Normalized:
    """BERT basic normalisation of a rank-1 string tensor (see BasicNormalizer)."""
    texts = tf.convert_to_tensor(texts, dtype=tf.string)
    nfc_map = None
    work = texts
    if needs_nfc:
        # The one step that is not per character: composing a letter and a
        # following combining accent. Only matters when accents are kept.
        work, nfc_map = tf_text.normalize_utf8_with_offsets_map(texts, "NFC")
    codepoints, char_byte_starts = tf.strings.unicode_decode_with_offsets(
        work, "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    flat_cps = codepoints.flat_values
    cls = tf.gather(run_classes, tf.searchsorted(run_starts, flat_cps, side="right") - 1)
    chars = tf.strings.unicode_encode(tf.expand_dims(flat_cps, -1), "UTF-8")
    pieces = tf.where(
        cls == _normalization.KEEP,
        chars,
        tf.where(cls == _normalization.SPACED, tf.strings.join([" ", chars, " "]), tf.gather(mapped, cls)),
    )
    normalized = tf.strings.reduce_join(codepoints.with_flat_values(pieces), axis=-1)
    final_nfc_map = None
    if needs_nfc:
        # Dropping a control character can bring a letter and an accent
        # together ("e", soft hyphen, U+0301); BERT composes those too.
        normalized, final_nfc_map = tf_text.normalize_utf8_with_offsets_map(normalized, "NFC")
    return _Normalized(normalized, work, nfc_map, final_nfc_map, codepoints, char_byte_starts, chars, pieces)


class BasicNormalizer:
    """BERT basic normalisation as graph ops: a table lookup per character.

    The output text has every word (punctuation marks and CJK ideographs are
    words of their own) separated by ASCII spaces, lower-cased and without
    accents when asked, exactly as Hugging Face's ``BasicTokenizer`` would
    split it.
    """

    def __init__(self, lowercase: bool, strip_accents: bool):
        self.table = _normalization.build_char_table(bool(lowercase), bool(strip_accents))
        with tf.init_scope():  # constants of every graph that uses them
            self.run_starts = tf.constant(self.table.starts, dtype=tf.int32)
            self.run_classes = tf.constant(self.table.classes, dtype=tf.int32)
            self.mapped = tf.constant(list(self.table.mapped), dtype=tf.string)

    def __call__(self, texts: tf.Tensor) -> _Normalized:
        return _normalize(texts, self.run_starts, self.run_classes, self.mapped, self.table.needs_nfc)

    def words(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """The basic words of each text, ``[batch, (words)]`` strings."""
        return split_on_spaces(self(texts).normalized)[0]


def split_on_spaces(texts: tf.Tensor):
    """Split on ASCII spaces, dropping empty words; also the byte offset of each word.

    After :class:`BasicNormalizer` the space is the only separator left, so
    this needs no Unicode whitespace rules (and, unlike TF Text's
    ``WhitespaceTokenizer`` with offsets, uses only core TensorFlow ops).
    Returns ``(words, starts)``, both ``[batch, (words)]``.
    """
    parts = tf.strings.split(texts, sep=" ")
    flat = parts.flat_values
    size = tf.cast(tf.strings.length(flat), tf.int64)
    begin = tf.cumsum(size + 1, exclusive=True)  # global: each part plus its space
    begin_padded = tf.concat([begin, [tf.reduce_sum(size + 1)]], axis=0)
    part_row = parts.value_rowids()
    start = begin - tf.gather(tf.gather(begin_padded, parts.row_splits[:-1]), part_row)
    keep = size > 0
    nrows = parts.nrows()
    row = tf.boolean_mask(part_row, keep)
    words = tf.RaggedTensor.from_value_rowids(tf.boolean_mask(flat, keep), row, nrows=nrows)
    starts = tf.RaggedTensor.from_value_rowids(tf.boolean_mask(start, keep), row, nrows=nrows)
    return words, starts


def stack_encodings(encodings, length, pad_id):
    """Stack :class:`Encoding` s into int32 arrays ``[n, length]`` (``offsets``: ``[n, length, 2]``).

    Positions past an encoding are padding: ``pad_id``, mask 0, word id -1, offsets (0, 0).
    Shared by the WordPiece and byte-level BPE tokenizers.
    """
    n = len(encodings)
    out = {
        "input_ids": np.full([n, length], pad_id, np.int32),
        "token_type_ids": np.zeros([n, length], np.int32),
        "attention_mask": np.zeros([n, length], np.int32),
        "word_ids": np.full([n, length], -1, np.int32),
        "offsets": np.zeros([n, length, 2], np.int32),
    }
    for i, e in enumerate(encodings):
        k = len(e)
        out["input_ids"][i, :k] = e.input_ids
        out["token_type_ids"][i, :k] = e.token_type_ids
        out["attention_mask"][i, :k] = e.attention_mask
        out["word_ids"][i, :k] = [-1 if w is None else w for w in e.word_ids]
        if k:
            out["offsets"][i, :k] = np.asarray(e.offsets, np.int32).reshape(k, 2)
    return out


class WordPieceTokenizer:
    """BERT WordPiece tokenizer on TensorFlow Text, equal to Hugging Face's.

    Args:
        vocab: path to a ``vocab.txt`` (one token per line, the line number is
            the id), a folder holding one, or a list of tokens.
        lowercase: lower-case the text (uncased vocabularies).
        strip_accents: drop combining accents after NFD. ``None`` follows
            ``lowercase``, as in the original BERT.
        unk_token, cls_token, sep_token, pad_token, mask_token: the special
            tokens; each must be in the vocabulary (``mask_token`` may be
            ``None`` for a vocabulary without one).
        max_chars_per_word: a word with more characters becomes one
            ``[UNK]``.

    Example:

    >>> tok = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    ...                           "un", "##aff", "##able", "!"])
    >>> enc = tok.encode("Unaffable!")
    >>> enc.tokens
    ['[CLS]', 'un', '##aff', '##able', '!', '[SEP]']
    >>> enc.offsets
    [(0, 0), (0, 2), (2, 5), (5, 9), (9, 10), (0, 0)]
    >>> enc.word_ids
    [None, 0, 0, 0, 1, None]
    """

    def __init__(
        self,
        vocab: Union[str, os.PathLike, Sequence[str]],
        lowercase: bool = True,
        strip_accents: Optional[bool] = None,
        unk_token: str = "[UNK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        mask_token: Optional[str] = "[MASK]",
        max_chars_per_word: int = 100,
    ):
        if isinstance(vocab, (str, os.PathLike)):
            self._vocab_source = str(vocab)
            tokens = _read_vocab(Path(vocab))
        else:
            tokens = [str(t) for t in vocab]
            self._vocab_source = f"<in-memory vocabulary of {len(tokens)} tokens>"
        if not tokens:
            raise ValueError(f"WordPiece vocabulary {self._vocab_source} is empty")
        index = {}
        for i, token in enumerate(tokens):
            if token in index:
                raise ValueError(
                    f"WordPiece vocabulary {self._vocab_source} lists {token!r} twice "
                    f"(ids {index[token]} and {i}); every token must be unique"
                )
            index[token] = i
        if max_chars_per_word < 1:
            raise ValueError(f"max_chars_per_word must be >= 1, got {max_chars_per_word}")

        self._vocab = tokens
        self._index = index
        self.lowercase = bool(lowercase)
        self.strip_accents = self.lowercase if strip_accents is None else bool(strip_accents)
        self._strip_accents_arg = strip_accents
        self.max_chars_per_word = int(max_chars_per_word)
        self.unk_token = unk_token
        self.cls_token = cls_token
        self.sep_token = sep_token
        self.pad_token = pad_token
        self.mask_token = mask_token
        for arg in _SPECIAL_ARGS:
            token = getattr(self, arg)
            if token is None and arg == "mask_token":
                continue
            if token not in index:
                raise ValueError(
                    f"Special token {token!r} ({arg}) is not in the WordPiece vocabulary "
                    f"{self._vocab_source}; add it to the vocabulary or pass "
                    f"{arg}= with a token the vocabulary has"
                )
        self._special_ids = {
            index[getattr(self, a)] for a in _SPECIAL_ARGS if getattr(self, a) is not None
        }

        self._normalizer = BasicNormalizer(self.lowercase, self.strip_accents)
        with tf.init_scope():  # constants of every graph that uses them
            # Any word longer than max_chars_per_word characters is replaced by
            # [UNK] after the fact; the byte limit here only has to let every
            # shorter word through (a character is at most 4 UTF-8 bytes).
            self._wordpiece_model = tf.constant(
                list(
                    pywrap_fast_wordpiece_tokenizer_model_builder.build_fast_wordpiece_model(
                        tokens, 4 * self.max_chars_per_word, SUFFIX_INDICATOR, unk_token, True, False
                    )
                ),
                dtype=tf.uint8,
            )
            self._unk_id_tensor = tf.constant(self.unk_id, tf.int32)
            self._max_chars_tensor = tf.constant(self.max_chars_per_word, tf.int32)
        self._tflite_tokenizer = None
        self._encode_fn = _encode_function(self._normalizer.table.needs_nfc)

    # ------------------------------------------------------------------ vocab
    @classmethod
    def from_file(cls, path: Union[str, os.PathLike], **kwargs) -> "WordPieceTokenizer":
        """Tokenizer from a ``vocab.txt`` (or a folder holding one)."""
        return cls(Path(path), **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def get_vocabulary(self) -> list:
        return list(self._vocab)

    def token_to_id(self, token: str) -> int:
        try:
            return self._index[token]
        except KeyError:
            raise ValueError(f"token {token!r} is not in the vocabulary {self._vocab_source}") from None

    def id_to_token(self, id: int) -> str:  # noqa: A002 - mirrors the usual API name
        if not 0 <= int(id) < len(self._vocab):
            raise ValueError(f"id {id} is outside the vocabulary (0..{len(self._vocab) - 1})")
        return self._vocab[int(id)]

    @property
    def unk_id(self) -> int:
        return self._index[self.unk_token]

    @property
    def cls_id(self) -> int:
        return self._index[self.cls_token]

    @property
    def sep_id(self) -> int:
        return self._index[self.sep_token]

    @property
    def pad_id(self) -> int:
        return self._index[self.pad_token]

    @property
    def mask_id(self) -> Optional[int]:
        return None if self.mask_token is None else self._index[self.mask_token]

    def get_config(self) -> dict:
        return {
            "lowercase": self.lowercase,
            "strip_accents": self._strip_accents_arg,
            "unk_token": self.unk_token,
            "cls_token": self.cls_token,
            "sep_token": self.sep_token,
            "pad_token": self.pad_token,
            "mask_token": self.mask_token,
            "max_chars_per_word": self.max_chars_per_word,
        }

    def save(self, directory: Union[str, os.PathLike]) -> Path:
        """Write ``vocab.txt`` and ``tokenizer_config.json`` into ``directory``."""
        directory = Path(directory)
        atomic_write_text(directory / VOCAB_FILENAME, "".join(t + "\n" for t in self._vocab))
        config = {"tokenizer_class": type(self).__name__, **self.get_config()}
        atomic_write_text(directory / CONFIG_FILENAME, json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: Union[str, os.PathLike], **overrides) -> "WordPieceTokenizer":
        """Tokenizer saved by :meth:`save`, or a Hugging Face BERT model folder.

        Hugging Face's ``tokenizer_config.json`` keys (``do_lower_case``,
        ``strip_accents``, ``unk_token``, ...) are understood as well; keyword
        arguments override the file.
        """
        directory = Path(directory)
        vocab_path = directory / VOCAB_FILENAME
        if not vocab_path.is_file():
            raise FileNotFoundError(f"No {VOCAB_FILENAME} in {directory}: not a saved WordPiece tokenizer")
        config = {}
        config_path = directory / CONFIG_FILENAME
        if config_path.is_file():
            try:
                raw = json.loads(config_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{config_path} is not valid JSON: {err}") from None
            config = cls._config_from_json(raw)
        config.update(overrides)
        return cls(vocab_path, **config)

    @staticmethod
    def _config_from_json(raw: dict) -> dict:
        config = {}
        if "lowercase" in raw:
            config["lowercase"] = raw["lowercase"]
        elif "do_lower_case" in raw:  # Hugging Face
            config["lowercase"] = raw["do_lower_case"]
        if "strip_accents" in raw:
            config["strip_accents"] = raw["strip_accents"]
        for arg in _SPECIAL_ARGS:
            value = raw.get(arg)
            if isinstance(value, dict):  # Hugging Face AddedToken
                value = value.get("content")
            if value is not None or (arg == "mask_token" and arg in raw):
                config[arg] = value
        if "max_chars_per_word" in raw:
            config["max_chars_per_word"] = raw["max_chars_per_word"]
        return config

    # ------------------------------------------------------------ graph core
    def _graph_args(self) -> tuple:
        """The tensors the graph needs (see ``_tokenize``), in argument order."""
        return (
            self._normalizer.run_starts,
            self._normalizer.run_classes,
            self._normalizer.mapped,
            self._wordpiece_model,
            self._unk_id_tensor,
            self._max_chars_tensor,
        )

    def _pieces(self, texts: Sequence[str]) -> list:
        """Run the graph on a list of Python strings; one _Pieces per string."""
        if not texts:
            return []
        encoded = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"expected text as str, got {type(text).__name__} at position {i}")
            try:
                encoded.append(text.encode("utf-8"))
            except UnicodeEncodeError:
                # Lone surrogates have no UTF-8 form. BERT drops them (category
                # Cs) like U+FFFD, so swapping one for the other keeps ids and
                # character offsets right.
                encoded.append(_SURROGATE.sub("\ufffd", text).encode("utf-8"))
        outputs = self._encode_fn(tf.constant(encoded), *self._graph_args())
        ids, starts, ends, words, splits = (t.numpy() for t in outputs)
        out = []
        for i in range(len(texts)):
            a, b = splits[i], splits[i + 1]
            out.append(_Pieces(ids[a:b], starts[a:b], ends[a:b], words[a:b]))
        return out

    # --------------------------------------------------------- graph public
    def tf_tokenize(
        self,
        strings: tf.Tensor,
        add_special_tokens: bool = False,
        tflite_compatible: bool = False,
    ):
        """Wordpiece ids of a string tensor, as graph ops.

        Works eagerly, inside ``tf.function``, ``tf.data.Dataset.map`` and
        exported SavedModels.

        Args:
            strings: a scalar or rank-1 string tensor.
            add_special_tokens: wrap each sequence as ``[CLS] ... [SEP]``.
            tflite_compatible: use only ops with TFLite kernels
                (``FastBertNormalize`` with kerasllm's BERT normaliser model,
                ``FastWordpieceTokenize``). Same ids as the exact path except
                for the rare cases in the module doc (no NFC composition of
                cased text, words limited by bytes not characters). Only plain
                uncased (lowercase and strip accents) or plain cased settings
                are supported.

        Returns:
            ``tf.RaggedTensor`` of int32 ids ``[batch, (tokens)]`` for rank-1
            input, a 1-D int32 ``tf.Tensor`` for a scalar.
        """
        strings = tf.convert_to_tensor(strings, dtype=tf.string)
        rank = strings.shape.rank
        if rank not in (0, 1):
            raise ValueError(f"tf_tokenize expects a scalar or rank-1 string tensor, got shape {strings.shape}")
        batch = tf.reshape(strings, [-1])
        if tflite_compatible:
            ids = self._tflite_tokenize(batch)
        else:
            needs_nfc = self._normalizer.table.needs_nfc
            ids = _tokenize(batch, *self._graph_args(), needs_nfc=needs_nfc, with_offsets=False)["ids"]
        if add_special_tokens:
            ids = self._wrap_specials(ids)
        if rank == 0:
            return ids[0]
        return ids

    def _wrap_specials(self, ids: tf.RaggedTensor) -> tf.RaggedTensor:
        """``[CLS] ids [SEP]`` per row, by scattering into a longer flat tensor
        (a ragged ``tf.concat`` would not convert to TFLite)."""
        splits = tf.cast(ids.row_splits, tf.int32)
        rows = tf.shape(splits)[0] - 1
        new_splits = splits + 2 * tf.range(rows + 1)
        n = tf.shape(ids.flat_values)[0]
        row_of_value = tf.cast(ids.value_rowids(), tf.int32)
        at_values = tf.range(n) + 2 * row_of_value + 1
        at = tf.concat([at_values, new_splits[:-1], new_splits[1:] - 1], axis=0)
        updates = tf.concat(
            [
                ids.flat_values,
                tf.fill([rows], tf.constant(self.cls_id, tf.int32)),
                tf.fill([rows], tf.constant(self.sep_id, tf.int32)),
            ],
            axis=0,
        )
        values = tf.scatter_nd(tf.expand_dims(at, 1), updates, tf.expand_dims(n + 2 * rows, 0))
        return tf.RaggedTensor.from_row_splits(values, tf.cast(new_splits, tf.int64), validate=False)

    def _tflite_tokenize(self, batch: tf.Tensor) -> tf.RaggedTensor:
        normalizer, wordpiece = self._tflite_parts()
        return wordpiece.tokenize(normalizer.normalize(batch))

    def _tflite_parts(self):
        """TF Text's ``FastBertNormalizer`` (with kerasllm's BERT normaliser model) and
        ``FastWordpieceTokenizer`` (int32 ids), built once on first use (a few seconds:
        the trie of replacements, see ``_normalization.fast_bert_normalizer_model``)."""
        if self._tflite_tokenizer is None:
            if self.lowercase != self.strip_accents:
                raise ValueError(
                    "tflite_compatible=True supports lowercase with strip_accents, or neither "
                    f"(the settings of BERT's uncased and cased vocabularies); got lowercase={self.lowercase}, "
                    f"strip_accents={self.strip_accents}"
                )
            with tf.init_scope():  # may be first called while tracing; keep the model eager
                normalizer = tf_text.FastBertNormalizer(
                    model_buffer=_normalization.fast_bert_normalizer_model(self.lowercase, self.strip_accents)
                )
                wordpiece = tf_text.FastWordpieceTokenizer(
                    vocab=self._vocab,
                    suffix_indicator=SUFFIX_INDICATOR,
                    max_bytes_per_word=self.max_chars_per_word,
                    token_out_type=tf.int32,
                    unknown_token=self.unk_token,
                )
            self._tflite_tokenizer = (normalizer, wordpiece)
        return self._tflite_tokenizer

    def tflite_tokenize_with_offsets(self, strings: tf.Tensor) -> dict:
        """Wordpieces of a rank-1 string tensor with byte offsets, from ops with TFLite kernels.

        The ``tflite_compatible`` path of :meth:`tf_tokenize` (TF Text's
        ``FastBertNormalize`` and ``FastWordpieceTokenizeWithOffsets`` custom ops,
        everything else TFLite builtins), flat rather than ragged so that it
        converts without ragged kernels.

        Returns:
            a dict of flat tensors over all pieces of the batch, in order:
            ``ids`` (int32), ``rows`` (which string, int32), ``starts``/``ends``
            (int32 UTF-8 byte offsets into that string), and ``row_splits``
            (``[batch + 1]`` int32: the pieces of string ``i`` are
            ``row_splits[i]:row_splits[i + 1]``).

        Example:

        >>> tok = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "!"])
        >>> out = tok.tflite_tokenize_with_offsets(tf.constant(["Unaffable!"]))  # doctest: +SKIP
        >>> out["ids"].numpy().tolist(), out["starts"].numpy().tolist(), out["ends"].numpy().tolist()  # doctest: +SKIP
        ([5, 6, 7, 8], [0, 2, 5, 9], [2, 5, 9, 10])
        """
        normalizer, wordpiece = self._tflite_parts()
        normalized, offsets = normalizer.normalize_with_offsets(strings)
        ids, starts, ends = wordpiece.tokenize_with_offsets(normalized)
        splits = tf.cast(ids.row_splits, tf.int32)
        flat_ids = ids.flat_values
        count = tf.shape(flat_ids)[0]
        # Row of each piece: the number of row ends at or before it (no RaggedRange).
        rows = tf.cumsum(
            tf.math.unsorted_segment_sum(tf.ones_like(splits[1:-1]), splits[1:-1], count + 1)
        )[:count]
        # Offsets into the normalised text -> bytes of the input, through the
        # normaliser's map (one entry per normalised byte, plus the end).
        base = tf.gather(tf.cast(offsets.row_splits, tf.int32), rows)
        mapping = tf.cast(offsets.flat_values, tf.int32)

        def to_input(values):
            return tf.gather(mapping, tf.cast(values.flat_values, tf.int32) + base)

        return {"ids": flat_ids, "rows": rows, "starts": to_input(starts), "ends": to_input(ends), "row_splits": splits}

    # ------------------------------------------------------------ encoding
    def encode(
        self,
        text: str,
        text_pair: Optional[str] = None,
        max_length: Optional[int] = None,
        truncation: Union[bool, str] = True,
        padding: Union[bool, str] = False,
    ) -> Encoding:
        """Encode one text (or a pair) as ``[CLS] a [SEP]`` (``b [SEP]``).

        Args:
            text: the first (or only) sequence.
            text_pair: optional second sequence.
            max_length: the longest allowed result, special tokens included.
            truncation: with ``max_length``, cut over-long input (longest
                sequence first for pairs); ``False`` raises instead.
            padding: ``"max_length"`` pads with ``[PAD]`` up to ``max_length``;
                ``False``/``"longest"`` does not pad a single encoding.
        """
        texts = [text] if text_pair is None else [text, text_pair]
        pieces = self._pieces(texts)
        return self._assemble(
            pieces[0], pieces[1] if text_pair is not None else None, max_length, truncation, padding
        )

    def encode_batch(
        self,
        texts: Sequence[str],
        text_pairs: Optional[Sequence[str]] = None,
        max_length: Optional[int] = None,
        truncation: Union[bool, str] = True,
        padding: Union[bool, str] = "longest",
    ) -> dict:
        """Encode many texts at once, padded to a common length.

        Returns a dict of NumPy arrays: ``input_ids``, ``token_type_ids``,
        ``attention_mask``, ``word_ids`` (``-1`` for special and padding
        tokens) as int32 ``[batch, length]``, and ``offsets`` as int32
        ``[batch, length, 2]``. ``padding="max_length"`` pads to ``max_length``,
        anything else to the longest encoding in the batch.
        """
        if isinstance(texts, str):
            raise TypeError("encode_batch expects a list of strings; use encode() for one text")
        texts = list(texts)
        if text_pairs is not None:
            text_pairs = list(text_pairs)
            if len(text_pairs) != len(texts):
                raise ValueError(f"got {len(texts)} texts but {len(text_pairs)} text_pairs")
        pieces = self._pieces(texts + (text_pairs or []))
        firsts, seconds = pieces[: len(texts)], pieces[len(texts):]
        encodings = [
            self._assemble(a, seconds[i] if text_pairs is not None else None, max_length, truncation, False)
            for i, a in enumerate(firsts)
        ]
        return self._stack(encodings, max_length if padding == "max_length" else None, padding)

    def encode_words(
        self,
        words: Sequence[str],
        max_length: Optional[int] = None,
        truncation: Union[bool, str] = True,
        padding: Union[bool, str] = False,
    ) -> Encoding:
        """Encode pre-tokenized words (e.g. the tokens of a CoNLL sentence).

        Each word is tokenized on its own; every piece it yields, even across
        the punctuation splits inside it (``"U.S."`` is ``u . s .``), gets that
        word's index in ``word_ids``. Offsets are relative to each word. A word
        that normalises to nothing (e.g. a lone zero-width joiner) yields no
        tokens, so its index is absent from ``word_ids``.
        """
        merged = self._merge_words(words)
        return self._assemble(merged, None, max_length, truncation, padding)

    def encode_words_batch(
        self,
        sentences: Sequence[Sequence[str]],
        max_length: Optional[int] = None,
        truncation: Union[bool, str] = True,
        padding: Union[bool, str] = "longest",
    ) -> dict:
        """:meth:`encode_words` for many sentences, stacked like :meth:`encode_batch`."""
        flat = [w for words in sentences for w in self._check_words(words)]
        pieces = self._pieces(flat)
        encodings, at = [], 0
        for words in sentences:
            merged = self._join_word_pieces(pieces[at: at + len(words)])
            at += len(words)
            encodings.append(self._assemble(merged, None, max_length, truncation, False))
        return self._stack(encodings, max_length if padding == "max_length" else None, padding)

    def subword_counts(self, words: Sequence[str]) -> list:
        """Number of wordpieces each word becomes (0 for a word that normalises away)."""
        return [len(p) for p in self._pieces(self._check_words(words))]

    @staticmethod
    def _check_words(words: Sequence[str]) -> list:
        if isinstance(words, str):
            raise TypeError("expected a list of words, got a single string")
        return list(words)

    def _merge_words(self, words: Sequence[str]) -> _Pieces:
        return self._join_word_pieces(self._pieces(self._check_words(words)))

    @staticmethod
    def _join_word_pieces(per_word: list) -> _Pieces:
        if not per_word:
            empty = np.zeros([0], np.int32)
            return _Pieces(empty, empty, empty, empty)
        return _Pieces(
            np.concatenate([p.ids for p in per_word]),
            np.concatenate([p.starts for p in per_word]),
            np.concatenate([p.ends for p in per_word]),
            np.concatenate([np.full(len(p), i, np.int32) for i, p in enumerate(per_word)]),
        )

    def _assemble(
        self,
        first: _Pieces,
        second: Optional[_Pieces],
        max_length: Optional[int],
        truncation: Union[bool, str],
        padding: Union[bool, str],
    ) -> Encoding:
        n_special = 2 if second is None else 3
        if truncation not in (True, False, "longest_first"):
            raise ValueError(f"truncation must be True, False or 'longest_first', got {truncation!r}")
        if padding not in (True, False, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be False, 'longest' or 'max_length', got {padding!r}")
        if max_length is not None:
            if max_length < n_special:
                raise ValueError(
                    f"max_length={max_length} leaves no room for the {n_special} special tokens"
                )
            total = len(first) + n_special + (len(second) if second is not None else 0)
            if total > max_length:
                if not truncation:
                    raise ValueError(
                        f"input is {total} tokens long (special tokens included), more than "
                        f"max_length={max_length}; pass truncation=True or a larger max_length"
                    )
                first, second = _truncate_longest_first(first, second, total - max_length)
        elif padding == "max_length":
            raise ValueError("padding='max_length' needs max_length")

        cls, sep = self.cls_id, self.sep_id
        ids = [cls, *first.ids.tolist(), sep]
        types = [0] * len(ids)
        offsets = [(0, 0), *zip(first.starts.tolist(), first.ends.tolist()), (0, 0)]
        word_ids = [None, *first.words.tolist(), None]
        if second is not None:
            ids += [*second.ids.tolist(), sep]
            types += [1] * (len(second) + 1)
            offsets += [*zip(second.starts.tolist(), second.ends.tolist()), (0, 0)]
            word_ids += [*second.words.tolist(), None]
        mask = [1] * len(ids)
        if padding == "max_length" and len(ids) < max_length:
            extra = max_length - len(ids)
            ids += [self.pad_id] * extra
            types += [0] * extra
            mask += [0] * extra
            offsets += [(0, 0)] * extra
            word_ids += [None] * extra
        return Encoding(
            input_ids=ids,
            token_type_ids=types,
            attention_mask=mask,
            offsets=[tuple(o) for o in offsets],
            word_ids=word_ids,
            tokens=[self._vocab[i] for i in ids],
        )

    def _stack(self, encodings: list, pad_to: Optional[int], padding) -> dict:
        if padding not in (True, False, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        length = max([len(e) for e in encodings], default=0)
        if pad_to is not None:
            length = max(length, pad_to)
        return stack_encodings(encodings, length, self.pad_id)

    # ---------------------------------------------------------- decoding
    def detokenize(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text from ids: ``##`` pieces join the previous piece, words are
        separated by single spaces. Lower-casing, accents and the original
        spacing around punctuation are not restored."""
        if isinstance(ids, (tf.Tensor, tf.RaggedTensor)):
            ids = ids.numpy()
        words = []
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if skip_special_tokens and i in self._special_ids and i != self.unk_id:
                continue
            token = self.id_to_token(i)
            if token.startswith(SUFFIX_INDICATOR) and words:
                words[-1] += token[len(SUFFIX_INDICATOR):]
            else:
                words.append(token)
        return " ".join(words)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab={self._vocab_source!r}, vocab_size={self.vocab_size}, "
            f"lowercase={self.lowercase}, strip_accents={self.strip_accents})"
        )


def _tokenize(
    texts, run_starts, run_classes, mapped, wordpiece_model, unk_id, max_chars, *, needs_nfc, with_offsets
):
    """Wordpieces of a batch of strings (rank-1 string tensor).

    Every table comes in as a tensor argument, so one traced function
    serves every tokenizer with the same NFC setting.

    Returns a dict of RaggedTensors ``[batch, (pieces)]``: ``ids`` and, with
    offsets, ``starts``/``ends`` (character offsets into each input) and
    ``words`` (index of the basic word of each piece).
    """
    texts = tf.convert_to_tensor(texts, dtype=tf.string)
    batch = tf.shape(texts, out_type=tf.int64)[0]

    # 1. BERT basic normalisation, then words, then wordpieces of each word.
    norm = _normalize(texts, run_starts, run_classes, mapped, needs_nfc)
    codepoints = norm.codepoints
    words, word_starts = split_on_spaces(norm.normalized)
    wordpiece = tf_text.FastWordpieceTokenizer(model_buffer=wordpiece_model, token_out_type=tf.int32)
    piece_ids, piece_starts, piece_ends = wordpiece.tokenize_with_offsets(words)
    per_word = piece_ids.values  # [total_words, (pieces)]
    piece_word = per_word.value_rowids()  # global word index of each piece
    piece_row = tf.gather(words.value_rowids(), piece_word)

    # 2. One [UNK] per over-long word (BERT counts characters, FastWordpiece bytes).
    flat_words = words.flat_values
    too_long_word = tf.strings.length(flat_words, unit="UTF8_CHAR") > max_chars
    too_long = tf.gather(too_long_word, piece_word)
    first_in_word = tf.range(tf.shape(piece_word, out_type=tf.int64)[0]) == tf.gather(
        per_word.row_splits, piece_word
    )
    keep = tf.logical_or(tf.logical_not(too_long), first_in_word)
    ids = tf.where(too_long, tf.fill(tf.shape(too_long), unk_id), per_word.flat_values)
    ids = tf.boolean_mask(ids, keep)
    piece_word = tf.boolean_mask(piece_word, keep)
    piece_row = tf.boolean_mask(piece_row, keep)
    result = {"ids": tf.RaggedTensor.from_value_rowids(ids, piece_row, nrows=batch)}
    if not with_offsets:
        return result

    too_long = tf.boolean_mask(too_long, keep)
    word_bytes = tf.gather(tf.strings.length(flat_words), piece_word)
    start_in_word = tf.cast(tf.boolean_mask(piece_starts.flat_values, keep), tf.int64)
    start_in_word = tf.where(too_long, tf.zeros_like(start_in_word), start_in_word)
    end_in_word = tf.cast(tf.boolean_mask(piece_ends.flat_values, keep), tf.int64)
    end_in_word = tf.where(too_long, tf.cast(word_bytes, tf.int64), end_in_word)
    word_start = tf.cast(tf.gather(word_starts.flat_values, piece_word), tf.int64)

    # 3. Byte offsets in the normalised text -> characters of `norm.work`
    # (each input character became one "piece" of the normalised text).
    if norm.final_nfc_map is not None:
        post = tf.RaggedTensor.from_value_rowids(
            tf.stack([word_start + start_in_word, word_start + end_in_word], axis=1), piece_row, nrows=batch
        )
        src = _source_offsets(norm.final_nfc_map, post)
        word_start = tf.zeros_like(word_start)
        start_in_word, end_in_word = src[:, 0], src[:, 1]
    piece_len = tf.cast(tf.strings.length(norm.pieces), tf.int64)
    char_pos = tf.concat([[0], tf.cumsum(piece_len)], axis=0)  # global byte start of each char
    row_base = tf.gather(char_pos, codepoints.row_splits[:-1])
    global_start = tf.gather(row_base, piece_row) + word_start + start_in_word
    global_last = tf.gather(row_base, piece_row) + word_start + end_in_word - 1
    first_char = tf.searchsorted(char_pos[:-1], global_start, side="right", out_type=tf.int64) - 1
    last_char = tf.searchsorted(char_pos[:-1], global_last, side="right", out_type=tf.int64) - 1
    row_chars = tf.gather(codepoints.row_splits, piece_row)
    starts = first_char - row_chars
    ends = last_char + 1 - row_chars

    if norm.nfc_map is not None:
        # 4. Characters of the NFC text -> its bytes -> bytes of the input
        # -> characters of the input.
        char_bytes = tf.cast(tf.strings.length(norm.chars), tf.int64)
        flat_byte_starts = norm.char_byte_starts.flat_values
        nfc_start = tf.gather(flat_byte_starts, first_char)
        nfc_end = tf.gather(flat_byte_starts, last_char) + tf.gather(char_bytes, last_char)
        post = tf.RaggedTensor.from_value_rowids(
            tf.stack([nfc_start, nfc_end], axis=1), piece_row, nrows=batch
        )
        src = _source_offsets(norm.nfc_map, post)
        _, orig_byte_starts = tf.strings.unicode_decode_with_offsets(
            texts, "UTF-8", errors="replace", replacement_char=0xFFFD
        )
        text_bytes = tf.cast(tf.strings.length(texts), tf.int64)
        byte_base = tf.concat([[0], tf.cumsum(text_bytes)], axis=0)
        orig_pos = orig_byte_starts.flat_values + tf.gather(byte_base, orig_byte_starts.value_rowids())
        piece_base = tf.gather(byte_base, piece_row)
        orig_row_chars = tf.gather(orig_byte_starts.row_splits, piece_row)
        first = tf.searchsorted(orig_pos, src[:, 0] + piece_base, side="right", out_type=tf.int64) - 1
        after = tf.searchsorted(orig_pos, src[:, 1] + piece_base, side="left", out_type=tf.int64)
        starts = first - orig_row_chars
        ends = after - orig_row_chars

    word_index = piece_word - tf.gather(words.row_splits, piece_row)
    for name, values in (("starts", starts), ("ends", ends), ("words", word_index)):
        result[name] = tf.RaggedTensor.from_value_rowids(tf.cast(values, tf.int32), piece_row, nrows=batch)
    return result


@functools.lru_cache(maxsize=None)
def _encode_function(needs_nfc: bool):
    """``_tokenize`` with offsets as one traced function, shared by all tokenizers."""

    def encode(texts, *tables):
        result = _tokenize(texts, *tables, needs_nfc=needs_nfc, with_offsets=True)
        rt = result["ids"]
        return (
            rt.flat_values,
            result["starts"].flat_values,
            result["ends"].flat_values,
            result["words"].flat_values,
            rt.row_splits,
        )

    signature = [
        tf.TensorSpec([None], tf.string),  # texts
        tf.TensorSpec([None], tf.int32),  # run starts
        tf.TensorSpec([None], tf.int32),  # run classes
        tf.TensorSpec([None], tf.string),  # mapped strings
        tf.TensorSpec([None], tf.uint8),  # FastWordpiece model
        tf.TensorSpec([], tf.int32),  # unk id
        tf.TensorSpec([], tf.int32),  # max chars per word
    ]
    return tf.function(encode, input_signature=signature, autograph=False)


def _truncate_longest_first(first: _Pieces, second: Optional[_Pieces], remove: int):
    """Drop ``remove`` tokens from the ends, always from the longer sequence.

    Same split as Hugging Face's ``longest_first``: on a tie the second
    sequence loses the extra token.
    """
    if second is None:
        return first.head(len(first) - remove), None
    n1, n2 = len(first), len(second)
    from_gap = min(abs(n1 - n2), remove)
    rest = remove - from_gap
    if n1 > n2:
        cut1, cut2 = from_gap + rest // 2, rest - rest // 2
    else:
        cut1, cut2 = rest // 2, from_gap + rest - rest // 2
    return first.head(n1 - cut1), second.head(n2 - cut2)


def _source_offsets(nfc_map: tf.Tensor, post: tf.RaggedTensor) -> tf.Tensor:
    """Map ``[batch, (pieces), 2]`` byte offsets of NFC text back to the input.

    Returns ``[total_pieces, 2]``. ``find_source_offsets`` rejects a row with
    no offsets, so every row gets a leading 0 that is dropped afterwards.
    """
    flat = tf.RaggedTensor.from_row_splits(tf.reshape(post.values, [-1]), post.row_splits * 2)
    lead = tf.RaggedTensor.from_tensor(tf.zeros([flat.nrows(), 1], tf.int64))
    src = tf_text.find_source_offsets(nfc_map, tf.concat([lead, flat], axis=1))[:, 1:]
    return tf.reshape(src.flat_values, [-1, 2])
