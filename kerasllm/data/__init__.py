"""kerasllm.data: CoNLL and classification readers, sub-word alignment, the built-in NER and topic corpora,
and the pretraining inputs (text corpora streamed with tf.data, causal-LM blocks, masked-LM batches).

Importing this package does not import TensorFlow: the tf.data pieces (``corpus.py``,
``pretraining.py``) are imported on first use of their names.
"""
import importlib as _importlib

from kerasllm.data.alignment import align_labels, make_windows, merge_window_predictions
from kerasllm.data.classification import ClassificationExamples, read_classification
from kerasllm.data.conll import (
    ConllDataset,
    ConllFormatError,
    LabelMap,
    Sentence,
    convert_tags,
    detect_scheme,
    read_conll,
    write_conll,
)
from kerasllm.data.synthetic_classification import generate_classification_corpus, write_classification_corpus
from kerasllm.data.synthetic_ner import generate_ner_corpus, write_ner_corpus

__all__ = [
    "ClassificationExamples",
    "ConllDataset",
    "ConllFormatError",
    "LabelMap",
    "Sentence",
    "align_labels",
    "convert_tags",
    "detect_scheme",
    "generate_classification_corpus",
    "generate_ner_corpus",
    "make_windows",
    "merge_window_predictions",
    "read_classification",
    "read_conll",
    "write_classification_corpus",
    "write_conll",
    "write_ner_corpus",
]

# tf.data pieces, imported on first use (they import TensorFlow).
_LAZY = {
    "TextCorpus": "corpus",
    "resolve_files": "corpus",
    "tokenize_documents": "pretraining",
    "causal_lm_blocks": "pretraining",
    "causal_lm_dataset": "pretraining",
    "sentence_chunks": "pretraining",
    "packed_segments": "pretraining",
    "next_sentence_pairs": "pretraining",
    "mask_tokens": "pretraining",
    "masked_lm_dataset": "pretraining",
}
__all__ += sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_importlib.import_module(f"kerasllm.data.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
