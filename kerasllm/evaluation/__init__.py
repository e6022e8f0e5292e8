"""kerasllm.evaluation: metrics computed outside the model graph (pure Python)."""
from kerasllm.evaluation.classification import classification_scores, format_classification_report
from kerasllm.evaluation.ner import extract_entities, format_report, ner_scores

__all__ = [
    "classification_scores",
    "extract_entities",
    "format_classification_report",
    "format_report",
    "ner_scores",
]
