"""Export to TFLite, ONNX and SavedModel (installed as kerasllm.export), and verification.

Every exporter writes atomically, serves the model's named inputs (``input_ids``,
``attention_mask``, ``token_type_ids``) and names its outputs (``logits``); every
runner is a callable ``dict of numpy arrays -> dict of numpy arrays``, so
:func:`verify` and :func:`latency` measure any of them against the Keras model.
:func:`convert_onnx_float16` and :func:`quantize_onnx_dynamic` derive half-precision
and int8 ONNX files. :func:`export_text_tflite` / :func:`export_text_savedmodel`
write string-in models (the WordPiece tokenizer and the entity decoding inside the
graph), run with :class:`TextRunner` and checked with :func:`verify_text`.

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
from kerasllm.export.onnx import OnnxRunner, convert_onnx_float16, export_onnx, quantize_onnx_dynamic
from kerasllm.export.savedmodel import SavedModelRunner, export_savedmodel
from kerasllm.export.text import (
    TextRunner,
    export_text_savedmodel,
    export_text_tflite,
    text_serving_function,
    tflite_ops,
    verify_text,
)
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
    "TextRunner",
    "convert_onnx_float16",
    "export_gpt_onnx",
    "export_gpt_tflite",
    "export_onnx",
    "export_savedmodel",
    "export_text_savedmodel",
    "export_text_tflite",
    "export_tflite",
    "format_table",
    "greedy_generate_onnx",
    "greedy_generate_tflite",
    "latency",
    "quantize_onnx_dynamic",
    "text_serving_function",
    "tflite_ops",
    "verify",
    "verify_text",
]
