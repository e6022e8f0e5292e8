"""GPT-2 byte-level BPE on KerasHub, and BPE vocabulary training.

Ids come from ``keras_hub.tokenizers.BytePairTokenizer`` run on its TensorFlow
path (the graph-compatible one that also runs inside ``tf.data``), which
follows OpenAI's GPT-2 encoder. Character offsets and word ids are worked out
afterwards in Python: every byte-level token stands for a known run of UTF-8
bytes, so the tokens' byte lengths walk through the text; word ids come from
GPT-2's pre-tokenizer regex. Vocabulary training hands the corpus to the
Hugging Face ``tokenizers`` BPE trainer (a KerasHub dependency).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import regex
import tensorflow as tf

from kerasllm._io import atomic_write_text
from kerasllm.tokenizers.wordpiece import Encoding, stack_encodings

VOCAB_FILENAME = "vocab.json"
MERGES_FILENAME = "merges.txt"
CONFIG_FILENAME = "tokenizer_config.json"
ENDOFTEXT = "<|endoftext|>"

# The pre-tokenizer of OpenAI's GPT-2 encoder.py (contractions, letters,
# numbers, other symbols, each with at most one leading space; then spaces).
_GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def _byte_alphabet() -> dict:
    """GPT-2's reversible byte -> printable character table (byte value -> char)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_BYTE_TO_CHAR = _byte_alphabet()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def _read_vocab(vocab) -> tuple:
    if isinstance(vocab, dict):
        return dict(vocab), f"<in-memory vocabulary of {len(vocab)} tokens>"
    path = Path(vocab)
    if path.is_dir():
        path = path / VOCAB_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"BPE vocabulary not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object mapping tokens to ids")
    return raw, str(path)


def _read_merges(merges) -> list:
    if isinstance(merges, (str, os.PathLike)):
        path = Path(merges)
        if path.is_dir():
            path = path / MERGES_FILENAME
        if not path.is_file():
            raise FileNotFoundError(f"BPE merges file not found: {path}")
        lines = path.read_text(encoding="utf-8").split("\n")
        source = str(path)
    else:
        lines, source = list(merges), "<in-memory merges>"
    out = []
    for number, line in enumerate(lines, 1):
        if isinstance(line, (tuple, list)):
            line = " ".join(line)
        line = line.rstrip("\r")
        if not line.strip() or line.startswith("#version"):
            continue
        if len(line.split(" ")) != 2:
            raise ValueError(f"{source} line {number}: a merge is two tokens separated by one space, got {line!r}")
        out.append(line)
    return out


class BytePairTokenizer:
    """GPT-2 byte-level BPE tokenizer (ids from KerasHub, equal to GPT-2's).

    Args:
        vocab: a ``vocab.json`` path (or a folder holding one), or a dict
            mapping token to id.
        merges: a ``merges.txt`` path (or a folder holding one), or a list of
            merge rules (``"a b"`` strings or ``(a, b)`` pairs), highest
            priority first.
        special_tokens: tokens never split by the pre-tokenizer (each must be
            in the vocabulary); ``<|endoftext|>`` by default.
        eos_token: end-of-text token (GPT-2 uses it as BOS and padding too).
        pad_token: padding token; ``None`` pads with ``eos_token``.
        add_prefix_space: put a space before the text, so the first word is
            tokenized like every later one.

    Example:

    >>> vocab = {"<|endoftext|>": 0, "h": 1, "i": 2, "Ġ": 3, "hi": 4, "Ġhi": 5}
    >>> tok = BytePairTokenizer(vocab, ["h i", "Ġ hi"])
    >>> enc = tok.encode("hi hi")
    >>> enc.tokens, enc.input_ids, enc.offsets, enc.word_ids
    (['hi', 'Ġhi'], [4, 5], [(0, 2), (2, 5)], [0, 1])
    >>> tok.decode(enc.input_ids)
    'hi hi'
    """

    def __init__(
        self,
        vocab: Union[str, os.PathLike, dict],
        merges: Union[str, os.PathLike, Sequence],
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        eos_token: Optional[str] = ENDOFTEXT,
        pad_token: Optional[str] = None,
        add_prefix_space: bool = False,
    ):
        vocab, self._vocab_source = _read_vocab(vocab)
        if not vocab:
            raise ValueError(f"BPE vocabulary {self._vocab_source} is empty")
        merges = _read_merges(merges)
        if not merges:
            raise ValueError(f"BPE merges for {self._vocab_source} are empty; a BPE tokenizer needs at least one merge rule")
        ids = {}
        for token, i in vocab.items():
            if not isinstance(i, int) or i < 0:
                raise ValueError(f"BPE vocabulary {self._vocab_source}: id of {token!r} must be a non-negative int, got {i!r}")
            if i in ids:
                raise ValueError(f"BPE vocabulary {self._vocab_source}: id {i} is used by {ids[i]!r} and {token!r}")
            ids[i] = token
        for rule in merges:
            a, b = rule.split(" ")
            for part in (a, b, a + b):
                if part not in vocab:
                    raise ValueError(
                        f"merge rule {rule!r} needs {part!r}, which is not in the vocabulary {self._vocab_source}"
                    )
        self.special_tokens = [str(t) for t in special_tokens]
        self.eos_token = eos_token
        self.pad_token = pad_token if pad_token is not None else eos_token
        for name, token in [("special_tokens", t) for t in self.special_tokens] + [
            ("eos_token", self.eos_token),
            ("pad_token", self.pad_token),
        ]:
            if token is not None and token not in vocab:
                raise ValueError(
                    f"{name} {token!r} is not in the BPE vocabulary {self._vocab_source}; "
                    f"add it or pass {name}= with a token the vocabulary has"
                )
        self.add_prefix_space = bool(add_prefix_space)
        self._vocab = vocab
        self._merges = merges
        self._id_to_token = ids
        self._special_ids = {vocab[t] for t in self.special_tokens}
        # UTF-8 bytes behind each token: one per character of a byte-level
        # token, the literal text of a special token.
        self._byte_len = {
            i: len(t.encode("utf-8")) if i in self._special_ids else len(t) for i, t in ids.items()
        }
        self._special_split = (
            regex.compile("(" + "|".join(regex.escape(t) for t in sorted(self.special_tokens, key=len, reverse=True)) + ")")
            if self.special_tokens
            else None
        )
        self._layer = None
        self._batch_fn = None

    # ------------------------------------------------------------------ library
    @property
    def keras_hub_tokenizer(self):
        """The wrapped ``keras_hub.tokenizers.BytePairTokenizer`` (built on first use)."""
        if self._layer is None:
            import keras_hub

            with tf.init_scope():
                self._layer = keras_hub.tokenizers.BytePairTokenizer(
                    vocabulary=self._vocab,
                    merges=self._merges,
                    add_prefix_space=self.add_prefix_space,
                    unsplittable_tokens=self.special_tokens or None,
                    dtype="int32",
                )
        return self._layer

    def tf_tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Ids of a string tensor in the graph (works inside ``tf.data.Dataset.map``).

        A scalar string gives a 1-D int32 tensor, a vector of strings a
        ``tf.RaggedTensor`` ``[batch, None]``.
        """
        layer = self.keras_hub_tokenizer
        if tf.executing_eagerly():
            # KerasHub's eager Python path pre-splits differently from GPT-2;
            # its TensorFlow path is the faithful one, so always trace.
            return self._graph_batch(texts)
        return layer.tokenize(texts)

    def _graph_batch(self, texts):
        if self._batch_fn is None:
            layer = self.keras_hub_tokenizer
            self._batch_fn = tf.function(layer.tokenize, reduce_retracing=True)
        return self._batch_fn(tf.convert_to_tensor(texts, tf.string))

    def _ids(self, texts: Sequence[str]) -> list:
        if not texts:
            return []
        ragged = self._graph_batch(list(texts))
        if ragged.flat_values.shape[0] and int(tf.reduce_min(ragged.flat_values)) < 0:
            row = int(np.argmax([min(r, default=0) < 0 for r in ragged.to_list()]))
            raise ValueError(
                f"text {row} has a byte the BPE vocabulary {self._vocab_source} cannot spell "
                "(a GPT-2 vocabulary holds all 256 byte tokens)"
            )
        return [row.tolist() for row in np.split(ragged.flat_values.numpy(), ragged.row_splits.numpy()[1:-1])]

    # ------------------------------------------------------------------ vocab
    @classmethod
    def from_folder(cls, directory: Union[str, os.PathLike], **overrides) -> "BytePairTokenizer":
        """Tokenizer from a folder with ``vocab.json`` + ``merges.txt``.

        Reads a Hugging Face GPT-2 folder (its ``tokenizer_config.json`` /
        ``special_tokens_map.json`` for ``eos_token``, ``pad_token``,
        ``add_prefix_space``) or one written by :meth:`save`; keyword
        arguments override the files.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"no such tokenizer folder: {directory}")
        for name in (VOCAB_FILENAME, MERGES_FILENAME):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"No {name} in {directory}: not a BPE tokenizer folder")
        config = {}
        for name in ("special_tokens_map.json", CONFIG_FILENAME):
            path = directory / name
            if path.is_file():
                try:
                    raw = json.loads(path.read_text(encoding="utf-8"))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} is not valid JSON: {err}") from None
                config.update(_config_from_json(raw))
        config.update(overrides)
        return cls(directory / VOCAB_FILENAME, directory / MERGES_FILENAME, **config)

    load = from_folder

    def save(self, directory: Union[str, os.PathLike]) -> Path:
        """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` (Hugging Face layout)."""
        directory = Path(directory)
        vocab = dict(sorted(self._vocab.items(), key=lambda kv: kv[1]))
        atomic_write_text(directory / VOCAB_FILENAME, json.dumps(vocab, ensure_ascii=False) + "\n")
        atomic_write_text(directory / MERGES_FILENAME, "#version: 0.2\n" + "".join(m + "\n" for m in self._merges))
        config = {
            "tokenizer_class": "GPT2Tokenizer",
            "kerasllm_tokenizer_class": type(self).__name__,
            **self.get_config(),
            "bos_token": self.eos_token,
            "unk_token": self.eos_token,
        }
        atomic_write_text(directory / CONFIG_FILENAME, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        return directory

    def get_config(self) -> dict:
        return {
            "special_tokens": list(self.special_tokens),
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "add_prefix_space": self.add_prefix_space,
        }

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def get_vocabulary(self) -> dict:
        """Token -> id mapping (a copy)."""
        return dict(self._vocab)

    @property
    def merges(self) -> list:
        return list(self._merges)

    def token_to_id(self, token: str) -> int:
        if token not in self._vocab:
            raise KeyError(f"{token!r} is not in the BPE vocabulary")
        return self._vocab[token]

    def id_to_token(self, id: int) -> str:  # noqa: A002 - mirrors the usual API name
        if id not in self._id_to_token:
            raise KeyError(f"id {id} is not in the BPE vocabulary (size {self.vocab_size})")
        return self._id_to_token[id]

    @property
    def eos_id(self) -> Optional[int]:
        return None if self.eos_token is None else self._vocab[self.eos_token]

    @property
    def pad_id(self) -> Optional[int]:
        return None if self.pad_token is None else self._vocab[self.pad_token]

    # ------------------------------------------------------------------ encoding
    def _words(self, text: str) -> list:
        """``(start, end)`` character spans of the pre-tokenizer's pieces."""
        if self.add_prefix_space:
            text = " " + text
        parts = self._special_split.split(text) if self._special_split else [text]
        spans, at = [], 0
        for part in parts:
            if part in self.special_tokens:
                spans.append((at, at + len(part)))
            else:
                spans.extend((at + m.start(), at + m.end()) for m in _GPT2_SPLIT.finditer(part))
            at += len(part)
        shift = 1 if self.add_prefix_space else 0
        return [(max(s - shift, 0), e - shift) for s, e in spans]

    def _align(self, text: str, ids: list) -> tuple:
        """Character offsets and word ids of ``ids`` in ``text``."""
        widths = [len(c.encode("utf-8")) for c in text]
        byte_to_char = np.repeat(np.arange(len(text), dtype=np.int64), widths)
        prefix = 1 if self.add_prefix_space else 0
        ends = np.cumsum([self._byte_len[i] for i in ids], dtype=np.int64) - prefix
        starts = np.concatenate([[-prefix], ends[:-1]]) if len(ids) else ends
        if len(ids) and ends[-1] != len(byte_to_char):
            hint = " (KerasHub's pre-tokenizer drops U+096C '\u096c', which it uses as a marker)" if "\u096c" in text else ""
            raise ValueError(
                f"BPE tokens cover {ends[-1]} of the {len(byte_to_char)} UTF-8 bytes of {text[:40]!r}: "
                f"the tokenizer lost part of the text{hint}"
            )
        offsets = []
        for s, e in zip(starts.tolist(), ends.tolist()):
            s = max(s, 0)
            if e <= s:  # only the added prefix space
                offsets.append((0, 0))
            else:
                offsets.append((int(byte_to_char[s]), int(byte_to_char[e - 1]) + 1))
        spans = self._words(text)
        word_starts = np.asarray([s for s, _ in spans], np.int64)
        word_ids = []
        for s, e in offsets:
            word_ids.append(int(np.searchsorted(word_starts, s, side="right") - 1) if e > s else 0)
        return offsets, word_ids

    def _encoding(self, text, ids, max_length, truncation, padding) -> Encoding:
        if padding not in (True, False, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be False, 'longest' or 'max_length', got {padding!r}")
        if truncation not in (True, False):
            raise ValueError(f"truncation must be True or False, got {truncation!r}")
        offsets, word_ids = self._align(text, ids)
        if max_length is not None:
            if max_length < 1:
                raise ValueError(f"max_length must be positive, got {max_length}")
            if len(ids) > max_length:
                if not truncation:
                    raise ValueError(
                        f"input is {len(ids)} tokens long, more than max_length={max_length}; "
                        "pass truncation=True or a larger max_length"
                    )
                ids, offsets, word_ids = ids[:max_length], offsets[:max_length], word_ids[:max_length]
        elif padding == "max_length":
            raise ValueError("padding='max_length' needs max_length")
        n = len(ids)
        enc = Encoding(
            input_ids=list(ids),
            token_type_ids=[0] * n,
            attention_mask=[1] * n,
            offsets=[tuple(o) for o in offsets],
            word_ids=list(word_ids),
            tokens=[self._id_to_token[i] for i in ids],
        )
        if padding == "max_length" and n < max_length:
            if self.pad_id is None:
                raise ValueError("padding needs a pad_token (or eos_token)")
            extra = max_length - n
            enc.input_ids += [self.pad_id] * extra
            enc.token_type_ids += [0] * extra
            enc.attention_mask += [0] * extra
            enc.offsets += [(0, 0)] * extra
            enc.word_ids += [None] * extra
            enc.tokens += [self.pad_token] * extra
        return enc

    def encode(
        self,
        text: str,
        max_length: Optional[int] = None,
        truncation: bool = True,
        padding: Union[bool, str] = False,
    ) -> Encoding:
        """Encode one text; no special tokens are added (as GPT-2's tokenizer).

        Returns an :class:`~kerasllm.tokenizers.Encoding`: ``input_ids``,
        ``attention_mask``, ``offsets`` (character ``(start, end)``; a token
        holding part of a multi-byte character covers the whole character),
        ``word_ids`` (index of the pre-tokenizer piece, e.g. ``" world"``),
        ``tokens``; ``token_type_ids`` are all 0.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a string, got {type(text).__name__}; use encode_batch for a list")
        return self._encoding(text, self._ids([text])[0], max_length, truncation, padding)

    def encode_batch(
        self,
        texts: Sequence[str],
        padding: Union[bool, str] = "longest",
        max_length: Optional[int] = None,
        truncation: bool = True,
    ) -> dict:
        """Encode many texts in one library call, padded to a common length.

        Returns NumPy int32 arrays ``input_ids``, ``attention_mask``, ``token_type_ids`` (zeros),
        ``word_ids`` (``-1`` on padding) ``[batch, length]`` and ``offsets``
        ``[batch, length, 2]``. ``padding="max_length"`` pads to
        ``max_length``, anything else to the longest row.
        """
        if isinstance(texts, str):
            raise TypeError("encode_batch expects a list of strings; use encode() for one text")
        texts = list(texts)
        encodings = [
            self._encoding(t, ids, max_length, truncation, False) for t, ids in zip(texts, self._ids(texts))
        ]
        length = max([len(e) for e in encodings], default=0)
        if padding == "max_length":
            if max_length is None:
                raise ValueError("padding='max_length' needs max_length")
            length = max(length, max_length)
        elif padding not in (True, False, "longest", "do_not_pad"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        return stack_encodings(encodings, length, self.pad_id if self.pad_id is not None else 0)

    # ------------------------------------------------------------------ decoding
    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text from ids; exact inverse of :meth:`encode` (invalid UTF-8 becomes U+FFFD)."""
        if isinstance(ids, (tf.Tensor, tf.RaggedTensor)):
            ids = ids.numpy()
        data = bytearray()
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            token = self.id_to_token(i)
            if i in self._special_ids:
                if not skip_special_tokens:
                    data += token.encode("utf-8")
                continue
            data += bytes(_CHAR_TO_BYTE[c] for c in token)
        text = data.decode("utf-8", errors="replace")
        if self.add_prefix_space and text.startswith(" "):
            text = text[1:]
        return text

    detokenize = decode

    def __repr__(self) -> str:
        return f"BytePairTokenizer(vocab={self._vocab_source!r}, vocab_size={self.vocab_size}, merges={len(self._merges)})"


def _config_from_json(raw: dict) -> dict:
    def token(value):
        return value.get("content") if isinstance(value, dict) else value

    config = {}
    if "eos_token" in raw:
        config["eos_token"] = token(raw["eos_token"])
    if "pad_token" in raw:
        config["pad_token"] = token(raw["pad_token"])
    if "add_prefix_space" in raw:
        config["add_prefix_space"] = bool(raw["add_prefix_space"])
    if "special_tokens" in raw:
        config["special_tokens"] = list(raw["special_tokens"])
    elif config.get("eos_token"):
        config["special_tokens"] = [config["eos_token"]]
    return config


def train_bpe_vocab(
    texts_or_files,
    vocab_size: int,
    out_dir: Optional[Union[str, os.PathLike]] = None,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = (ENDOFTEXT,),
) -> BytePairTokenizer:
    """Learn a GPT-2 byte-level BPE vocabulary of ``vocab_size`` tokens.

    The Hugging Face ``tokenizers`` BPE trainer does the learning, after the
    same byte-level pre-tokenization GPT-2 uses.

    Args:
        texts_or_files: texts, file paths (read line by line), a mix, or a
            ``tf.data.Dataset`` of strings (as ``train_wordpiece_vocab``).
        vocab_size: target size, special tokens and the 256 byte tokens
            included; a small corpus may give fewer.
        out_dir: if given, ``vocab.json`` + ``merges.txt`` (+
            ``tokenizer_config.json``) are written there atomically.
        min_frequency: a pair must occur this often to be merged.
        special_tokens: placed first (ids 0, 1, ...).

    Returns:
        A :class:`BytePairTokenizer` with the new vocabulary.
    """
    try:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    except ImportError:  # pragma: no cover - a keras-hub dependency on recent versions
        raise ImportError("train_bpe_vocab needs the Hugging Face tokenizers package: pip install tokenizers") from None

    from kerasllm.tokenizers.training import _iter_texts

    special_tokens = [str(t) for t in special_tokens]
    if vocab_size < 256 + len(special_tokens) + 1:
        raise ValueError(
            f"vocab_size={vocab_size} leaves no room for merges beside the 256 byte tokens "
            f"and {len(special_tokens)} special tokens; use at least {256 + len(special_tokens) + 1}"
        )
    model = Tokenizer(models.BPE())
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = [0]

    def lines():
        for text in _iter_texts(texts_or_files):
            seen[0] += 1
            yield text

    model.train_from_iterator(lines(), trainer=trainer)
    if not seen[0]:
        raise ValueError("the corpus has no text to learn a BPE vocabulary from")
    state = json.loads(model.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["merges"]]
    tokenizer = BytePairTokenizer(
        state["vocab"], merges, special_tokens=special_tokens, eos_token=special_tokens[0] if special_tokens else None
    )
    if out_dir is not None:
        tokenizer.save(out_dir)
    return tokenizer
