"""Import and export of pretrained checkpoints: Hugging Face BERT/GPT-2 and Google's BERT.

Everything reads local files only. Name mappings live in one table per format
(:mod:`kerasllm.checkpoints.tables`).
"""
# kerasllm.models re-exports from_pretrained from here; importing it first makes either
# import order (models first or checkpoints first) finish without a circular-import error.
import kerasllm.models  # noqa: F401  isort: skip
from kerasllm.checkpoints.auto import detect_format, from_pretrained
from kerasllm.checkpoints.google import load_google, save_google_checkpoint
from kerasllm.checkpoints.hf import config_from_hf, config_to_hf, hf_tensors, load_hf, save_hf
from kerasllm.checkpoints.tables import BERT_GOOGLE_TABLE, BERT_HF_TABLE, GPT2_HF_TABLE

__all__ = [
    "BERT_GOOGLE_TABLE",
    "BERT_HF_TABLE",
    "GPT2_HF_TABLE",
    "config_from_hf",
    "config_to_hf",
    "detect_format",
    "from_pretrained",
    "hf_tensors",
    "load_google",
    "load_hf",
    "save_google_checkpoint",
    "save_hf",
]
