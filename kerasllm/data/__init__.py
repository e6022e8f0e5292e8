"""kerasllm.data: CoNLL and classification readers, sub-word alignment, the built-in NER and topic corpora.

Everything here is pure Python / NumPy; importing it does not import TensorFlow.
"""
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
