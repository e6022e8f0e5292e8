"""Tokenizers: BERT WordPiece on TensorFlow Text, GPT-2 byte-level BPE on KerasHub, vocabulary training.

``WordPieceTokenizer`` and ``Encoding`` live in ``wordpiece.py``,
``train_wordpiece_vocab`` in ``training.py``, ``BytePairTokenizer`` and
``train_bpe_vocab`` in ``bpe.py``. They are imported on first use so
that ``import kerasllm.tokenizers`` stays cheap.
"""
import importlib

__all__ = ["WordPieceTokenizer", "Encoding", "train_wordpiece_vocab", "BytePairTokenizer", "train_bpe_vocab"]

_WHERE = {
    "WordPieceTokenizer": "kerasllm.tokenizers.wordpiece",
    "Encoding": "kerasllm.tokenizers.wordpiece",
    "train_wordpiece_vocab": "kerasllm.tokenizers.training",
    "BytePairTokenizer": "kerasllm.tokenizers.bpe",
    "train_bpe_vocab": "kerasllm.tokenizers.bpe",
}


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
