"""kerasllm.evaluation: metrics computed outside the model graph (pure Python)."""
from kerasllm.evaluation.ner import extract_entities, format_report, ner_scores

__all__ = ["extract_entities", "format_report", "ner_scores"]
