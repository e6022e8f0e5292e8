"""Export to TFLite, ONNX and SavedModel (installed as kerasllm.export), and verification.

Every exporter writes atomically, serves the model's named inputs (``input_ids``,
``attention_mask``, ``token_type_ids``) and names its outputs (``logits``); every
runner is a callable ``dict of numpy arrays -> dict of numpy arrays``, so
:func:`verify` and :func:`latency` measure any of them against the Keras model.

Example:

>>> from kerasllm.export import export_tflite, TFLiteRunner, verify
>>> report = export_tflite(model, "out/ner.tflite", quantize="dynamic")  # doctest: +SKIP
>>> verify(model, TFLiteRunner(report.path), batches)  # doctest: +SKIP
{'max_abs_diff': ..., 'argmax_agreement': ..., 'n_tokens': ..., 'n_examples': ...}
"""
from kerasllm.export._common import ExportError, ExportReport
from kerasllm.export.gpt import (
    GPTOnnxSession,
    GPTTFLiteSession,
    export_gpt_onnx,
    export_gpt_tflite,
    greedy_generate_onnx,
    greedy_generate_tflite,
)
from kerasllm.export.onnx import OnnxRunner, export_onnx, quantize_onnx_dynamic
from kerasllm.export.savedmodel import SavedModelRunner, export_savedmodel
from kerasllm.export.tflite import QUANTIZE_MODES, TFLiteRunner, export_tflite
from kerasllm.export.verify import format_table, latency, verify

__all__ = [
    "QUANTIZE_MODES",
    "ExportError",
    "ExportReport",
    "GPTOnnxSession",
    "GPTTFLiteSession",
    "OnnxRunner",
    "SavedModelRunner",
    "TFLiteRunner",
    "export_gpt_onnx",
    "export_gpt_tflite",
    "export_onnx",
    "export_savedmodel",
    "export_tflite",
    "format_table",
    "greedy_generate_onnx",
    "greedy_generate_tflite",
    "latency",
    "quantize_onnx_dynamic",
    "verify",
]
