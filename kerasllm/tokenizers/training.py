"""WordPiece vocabulary training from a text corpus.

Words are cut exactly as :class:`~kerasllm.tokenizers.WordPieceTokenizer` cuts
them (BERT basic tokenization, same lower-casing and accent rules), counted,
and handed to TensorFlow Text's WordPiece learner
(``tensorflow_text.tools.wordpiece_vocab.wordpiece_tokenizer_learner_lib``, the
engine behind ``bert_vocab_from_dataset``), which picks the pieces.
"""
from __future__ import annotations

import bisect
import collections
import os
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

DEFAULT_RESERVED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_BATCH = 1024


def _iter_texts(texts_or_files) -> Iterator[str]:
    """Lines of the given files, or the given texts themselves.

    An item is read as a file when it is a ``pathlib.Path``/``os.PathLike``,
    or a one-line ``str`` naming an existing file; any other string is text.
    """
    if isinstance(texts_or_files, (str, os.PathLike)):
        texts_or_files = [texts_or_files]
    try:
        import tensorflow as tf

        if isinstance(texts_or_files, tf.data.Dataset):
            texts_or_files = (t.decode("utf-8") for t in texts_or_files.as_numpy_iterator())
    except ImportError:  # pragma: no cover - TensorFlow is a hard dependency
        pass
    for item in texts_or_files:
        if isinstance(item, bytes):
            item = item.decode("utf-8")
        is_file = isinstance(item, os.PathLike) or (
            isinstance(item, str) and "\n" not in item and len(item) < 4096 and os.path.isfile(item)
        )
        if is_file:
            path = Path(item)
            if not path.is_file():
                raise FileNotFoundError(f"corpus file not found: {path}")
            with open(path, encoding="utf-8") as f:
                for line in f:
                    yield line
        elif isinstance(item, str):
            yield item
        else:
            raise TypeError(f"expected texts (str) or file paths, got {type(item).__name__}")


def count_words(
    texts_or_files,
    lowercase: bool = True,
    strip_accents: Optional[bool] = None,
) -> collections.Counter:
    """Count the basic (pre-WordPiece) words of a corpus."""
    import tensorflow as tf

    from kerasllm.tokenizers.wordpiece import BasicNormalizer

    normalizer = BasicNormalizer(lowercase, lowercase if strip_accents is None else strip_accents)
    words_of = tf.function(
        lambda t: normalizer.words(t).flat_values,
        input_signature=[tf.TensorSpec([None], tf.string)],
        autograph=False,
    )
    counts = collections.Counter()
    batch = []

    def flush():
        counts.update(words_of(tf.constant(batch)).numpy().tolist())
        batch.clear()

    for text in _iter_texts(texts_or_files):
        batch.append(text)
        if len(batch) == _BATCH:
            flush()
    if batch:
        flush()
    return collections.Counter({w.decode("utf-8"): c for w, c in counts.items()})


def _write_vocab(path: Path, vocab: Sequence[str]) -> None:
    from kerasllm._io import atomic_write_text

    atomic_write_text(path, "".join(t + "\n" for t in vocab))


def _learn(counts, vocab_size, reserved, max_token_length, max_unique_chars) -> list:
    """Run TF Text's WordPiece learner with few passes over the corpus.

    The learner keeps every piece seen at least ``thresh`` times; its own
    ``learn()`` binary-searches ``thresh`` over ``[1, max count]``, about a
    dozen full passes. The vocabulary it learns is typically 1.1-2.2 times the
    number of distinct words seen ``thresh`` times or more, which is cheap to
    count, so the threshold is guessed from that and lowered only if the
    vocabulary comes out short. Pieces beyond ``vocab_size`` are the rarest
    ones (the learner orders them by count) and are cut.
    """
    from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner

    # Most frequent first, ties alphabetical: a deterministic input order.
    word_counts = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))
    params = learner.Params(
        upper_thresh=None,
        lower_thresh=1,
        num_iterations=4,
        max_input_tokens=-1,
        max_token_length=max_token_length,
        max_unique_chars=max_unique_chars,
        vocab_size=vocab_size,
        slack_ratio=0.0,
        include_joiner_token=True,
        joiner="##",
        reserved_tokens=list(reserved),
    )
    words = learner.get_input_words(word_counts, params.reserved_tokens, max_token_length)
    words = learner.filter_input_words(words, learner.get_allowed_chars(words, max_unique_chars), -1)
    if not words:
        raise ValueError("the corpus has no words short enough to learn a vocabulary from")
    neg_freqs = sorted(-c for _, c in words)  # ascending, so bisect works

    def distinct_at_least(thresh: int) -> int:
        return bisect.bisect_right(neg_freqs, -thresh)

    def highest_thresh(wanted: float, below: int) -> int:
        lo, hi = 1, max(1, below)
        while lo < hi:  # largest t in [1, below] with distinct_at_least(t) >= wanted
            mid = (lo + hi + 1) // 2
            if distinct_at_least(mid) >= wanted:
                lo = mid
            else:
                hi = mid - 1
        return lo

    ratio = 1.5
    thresh = highest_thresh(vocab_size / ratio, -neg_freqs[0])
    while True:
        vocab = learner.learn_with_thresh(words, thresh, params)
        if len(vocab) >= vocab_size or thresh == 1:
            break
        ratio = 0.9 * len(vocab) / max(1, distinct_at_least(thresh))
        thresh = min(thresh - 1, highest_thresh(vocab_size / ratio, thresh - 1))
    return _cut(vocab, vocab_size, set(reserved))


def _cut(vocab: list, size: int, reserved: set) -> list:
    """Drop the rarest multi-character pieces until ``size`` tokens remain.

    Reserved tokens and single characters (with and without ``##``) always
    stay: without them some words could not be spelled at all and would
    become ``[UNK]``.
    """
    def essential(token: str) -> bool:
        return token in reserved or len(token) == 1 or (token.startswith("##") and len(token) == 3)

    extra = len(vocab) - size
    if extra <= 0:
        return vocab
    dropped = set()
    for i in range(len(vocab) - 1, -1, -1):  # the learner lists pieces by falling count
        if len(dropped) == extra:
            break
        if not essential(vocab[i]):
            dropped.add(i)
    return [t for i, t in enumerate(vocab) if i not in dropped]


def train_wordpiece_vocab(
    texts_or_files: Union[str, os.PathLike, Iterable],
    vocab_size: int,
    lowercase: bool = True,
    reserved_tokens: Sequence[str] = DEFAULT_RESERVED_TOKENS,
    out_path: Optional[Union[str, os.PathLike]] = None,
    strip_accents: Optional[bool] = None,
    max_token_length: int = 50,
    max_unique_chars: int = 1000,
) -> list:
    """Learn a WordPiece vocabulary of about ``vocab_size`` tokens.

    Args:
        texts_or_files: texts (``str``), file paths (``pathlib.Path``, or a
            one-line ``str`` naming an existing file: read line by line), a
            mix of both, or a ``tf.data.Dataset`` of strings.
        vocab_size: size of the vocabulary. A corpus too small to have that
            many distinct pieces gives fewer; the reserved tokens and every
            character of the corpus (alone and as a ``##`` suffix) are kept
            even if they alone exceed it.
        lowercase: lower-case (and strip accents, see ``strip_accents``) as an
            uncased :class:`WordPieceTokenizer` will.
        reserved_tokens: special tokens placed first, in this order. ``[PAD]``
            is always id 0 (moved or added to the front if needed).
        out_path: if given, the vocabulary is written there (one token per
            line), atomically: a temporary file renamed over the target.
        strip_accents: ``None`` follows ``lowercase``.
        max_token_length: words longer than this are not used for learning.
        max_unique_chars: the alphabet is capped at this many characters;
            words with rarer characters are not used for learning.

    Returns:
        The vocabulary, id order.
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    reserved = ["[PAD]"] + [t for t in reserved_tokens if t != "[PAD]"]
    if len(set(reserved)) != len(reserved):
        raise ValueError(f"reserved_tokens has duplicates: {list(reserved_tokens)}")
    if vocab_size <= len(reserved):
        raise ValueError(f"vocab_size={vocab_size} leaves no room beside {len(reserved)} reserved tokens")

    counts = count_words(texts_or_files, lowercase=lowercase, strip_accents=strip_accents)
    if not counts:
        raise ValueError("the corpus has no words to learn a vocabulary from")
    vocab = _learn(counts, vocab_size, reserved, max_token_length, max_unique_chars)
    vocab = [t for t in vocab if t]  # an empty line would not survive a vocab.txt round trip
    if out_path is not None:
        _write_vocab(Path(out_path), vocab)
    return vocab
