"""TFLite export of kerasllm models, with post-training quantization, and a runner.

File layout written by :func:`export_tflite` (``out_path = "out/ner.tflite"``)::

    out/ner.tflite            the model, signature ``serving_default``
    out/ner.labels.json       each asset as <stem>.<asset name>, when ``assets`` is given
    out/ner.vocab.txt

The model has one signature, ``serving_default``, whose inputs are the Keras
model's named inputs (``input_ids``, ``attention_mask``, ``token_type_ids`` for
BERT models; int32, ``[batch, seq]``, both dynamic unless ``max_length`` fixes the
sequence) and whose outputs are ``logits`` (single-output models) or the model's
output names.

Quantization modes:

- ``"none"``: float32.
- ``"float16"``: float16 weights, float32 compute (about half the size).
- ``"dynamic"``: int8 weights, float activations quantized on the fly (about a
  quarter of the size); no data needed.
- ``"int8"``: int8 weights and activations, calibrated on ``representative_data``;
  the int32 token inputs and float32 logits stay as they are. By default
  (``float_layer_norm=True``) the ops inside each kerasllm
  :class:`~kerasllm.layers.LayerNorm` (mean, centring, variance, reciprocal square
  root, scale and shift: ``kerasllm.layers.layer_norm.FLOAT_SCOPE``) compute in
  float between DEQUANTIZE/QUANTIZE; every weight and every other activation is
  int8. On MiniLM fine-tuned on WNUT-17 with QAT, int8 statistics gave test entity
  F1 38.72 and float ones 39.98 (Keras QAT model 40.39), at the same size (22.9 MB)
  and latency; on the same model without QAT, 33.46 against 34.36 (bench/README.md).
  ``float_layer_norm=False`` gives a full-integer model (for integer-only
  accelerators). Ops without an int8 kernel also stay in float;
  :attr:`ExportReport.fallback` lists them, :attr:`ExportReport.notes` the
  layer-norm ops.
- ``"int16x8"``: full integer with int16 activations and int8 weights (TFLite's
  16x8 mode), calibrated like ``"int8"``; far closer to float where int8 activations lose accuracy (MiniLM below).
  Needs kerasllm's :class:`~kerasllm.layers.LayerNorm` (no
  SQUARED_DIFFERENCE, which has no int16 kernel). Converted with the 16x8 op set
  plus ``TFLITE_BUILTINS``; in a kerasllm BERT only the SELECT_V2 of the attention
  mask (one per layer) computes in float, and the position RANGE stays int32;
  :attr:`ExportReport.fallback` lists the float ops. MiniLM-L6 (WNUT-17 NER):
  35.2 MB, 1.5x the int8 file (the token embedding table, a GATHER input, is
  stored as an int16 activation), float32 weights 90.3 MB; entity F1 38.27
  against 38.40 in Keras and 31.07 in int8 (bench/README.md).
  Much slower than int8 on CPU (XNNPACK does not take the int16 ops, so they run
  on LiteRT's own kernels): a 1-layer ``bert-tiny`` at length 128 took 33 ms
  against 1.4 ms in int8 (contended 2-core machine).
"""
import os
import re
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from kerasllm._io import atomic_write_bytes
from kerasllm.export._common import (
    ExportError,
    ExportReport,
    check_assets,
    check_max_length,
    file_size,
    float32_model,
    prepare_inputs,
    serving_function,
    sidecar_path,
    write_assets,
)
from kerasllm.export._graph import convertible_function
from kerasllm.layers.layer_norm import FLOAT_SCOPE

QUANTIZE_MODES = ("none", "float16", "dynamic", "int8", "int16x8")
# The calibrated, full-integer modes and their converter op sets. Every kerasllm model
# has ops outside the 16x8 set (the SELECT_V2 of the attention mask, the int32 RANGE of
# the positions), so int16x8 lists TFLITE_BUILTINS from the start rather than
# calibrating twice; export_tflite reports the ops left in float.
FULL_INTEGER = {
    "int8": (tf.lite.OpsSet.TFLITE_BUILTINS_INT8,),
    "int16x8": (
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ),
}
SERVING = "serving_default"
# TFLite tensor names of the layer-norm ops an int8 export keeps in float.
FLOAT_LAYER_NORM = re.compile(r"(^|/)" + re.escape(FLOAT_SCOPE) + r"/")


def _interpreter_class(custom_op_registerers):
    from ai_edge_litert import interpreter as litert

    if custom_op_registerers:
        return lambda **kw: litert.InterpreterWithCustomOps(
            custom_op_registerers=list(custom_op_registerers), **kw
        )
    return litert.Interpreter


# ------------------------------------------------------------------ error messages


def _split_ops(text):
    return [op.strip() for op in text.split(",") if op.strip()]


def unsupported_ops(message):
    """``(flex_ops, custom_ops, quantization_ops)`` named in a TFLite converter error message."""
    flex, custom = [], []
    for found in re.findall(r"TF Select ops: ([^\n]+)", message):
        flex += _split_ops(found)
    for found in re.findall(r"Custom ops: ([^\n]+)", message):
        custom += _split_ops(found)
    for op in re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message):
        if op not in flex and op not in custom:
            flex.append(op)
    quantization = re.findall(r"(?:[Qq]uantiz\w*)[^\n]*?\bop[: ]+'?(?:tfl\.)?(\w+)'?", message)
    return list(dict.fromkeys(flex)), list(dict.fromkeys(custom)), list(dict.fromkeys(quantization))


def _first_error_line(message):
    """The converter's first error, without MLIR's ``loc(callsite(...))`` prefix."""
    op_error = re.search(r"'tf\.\w+' op [^\n]*", message)
    if op_error:
        return op_error.group(0)
    for line in message.splitlines():
        if "error:" in line:
            line = line[line.index("error:") + len("error:") :].strip()
            return line if len(line) <= 300 else line[:300] + " ..."
    lines = [line for line in message.splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "unknown converter error"


def layer_of_node(node_name):
    """The Keras layer path of a traced node: ``"model/encoder_0/attention/Erfc"`` -> ``"encoder_0/attention"``."""
    parts = node_name.split("/")
    return "/".join(parts[1:-1]) or parts[0]


def _layers(message, ops):
    """``{op: [layer paths]}`` from the ``fused["Op:", "model/layer/Op@..."]`` locations of a converter error."""
    found = {}
    for op in ops:
        for node in re.findall(r'fused\["' + re.escape(op) + r':", "([^"@]+)@', message):
            layer = layer_of_node(node)
            if layer not in found.setdefault(op, []):
                found[op].append(layer)
    return found


def _named(ops, layers):
    return ", ".join(
        f"{op} (layer {', '.join(repr(x) for x in layers[op])})" if layers.get(op) else op for op in ops
    )


def conversion_error(err, what, quantize="none", allow_custom_ops=False, select_tf_ops=False, max_length=None):
    """Turn a converter exception into an :class:`ExportError` naming ops, their layers and remedies."""
    message = str(err)
    flex, custom, quant_ops = unsupported_ops(message)
    layers = _layers(message, flex + custom)
    hints = []
    if flex:
        hints.append(
            f"op(s) {_named(flex, layers)} have no TFLite builtin kernel: rewrite them with supported "
            "ops, or pass select_tf_ops=True (the app must then link the TF Select/Flex delegate)"
        )
    if custom:
        hints.append(
            f"op(s) {_named(custom, layers)} have no TFLite or TF Select kernel: rewrite them with "
            "supported ops, or pass allow_custom_ops=True and register your own kernels in the "
            "interpreter (custom_op_registerers=...)"
            if not allow_custom_ops
            else f"op(s) {_named(custom, layers)} are custom ops: register their kernels when running"
        )
    if "StridedSlice" in flex and max_length is None:
        hints.append(
            "a StridedSlice over a tensor with several dynamic dims often converts once the "
            "sequence length is fixed: pass max_length=... (--max-length)"
        )
    if quantize != "none" and (quant_ops or not (flex or custom)):
        named = f" (op {', '.join(quant_ops)})" if quant_ops else ""
        instead = {"int16x8": "'int8' (--quantize int8)", "int8": "'dynamic' (--quantize dynamic)", "dynamic": "'float16' or 'none'"}
        hints.append(
            f"quantize={quantize!r} failed{named}: try quantize="
            + instead.get(quantize, "'none'")
        )
    ops = flex + custom + [op for op in quant_ops if op not in flex + custom]
    text = f"TFLite conversion of {what} failed: {_first_error_line(message)}"
    if hints:
        text += "\n  - " + "\n  - ".join(hints)
    return ExportError(text, ops=ops, details=message)


# ------------------------------------------------------------ representative data


def _pad_axis1(value, length, fill):
    if value.ndim < 2 or value.shape[1] == length:
        return value
    pad = [(0, 0)] * value.ndim
    pad[1] = (0, length - value.shape[1])
    return np.pad(value, pad, constant_values=fill)


def _real_length(row):
    """Tokens of a batch-1 row that are not padding (its attention mask's sum, right padding)."""
    mask = row.get("attention_mask")
    if mask is not None and mask.ndim == 2:
        return int(np.sum(mask != 0))
    return max(v.shape[1] for v in row.values() if v.ndim >= 2)


def _common_length_rows(rows, steps, fixed_length, pad_token_id):
    """At most ``steps`` rows of one length, without padding where possible.

    Padded positions would put the attention's masked scores (about -1e9) into the
    calibrated range of the attention logits, leaving no int8 steps for the real
    scores (every attention turns uniform). So the rows are those at least ``L``
    real tokens long, cut to their first ``L`` (``L``: the fixed ``max_length``, or
    the median real length). Only when fewer than ``min(steps, 16)`` rows reach a
    fixed length are the rows padded to it instead (with a warning).
    """
    lengths = [_real_length(row) for row in rows]
    length = fixed_length or int(np.median(lengths))
    long_enough = [row for row, n in zip(rows, lengths) if n >= length]
    if fixed_length is None or len(long_enough) >= min(steps, 16, len(rows)):
        return [{k: v[:, :length] if v.ndim >= 2 else v for k, v in row.items()} for row in long_enough[:steps]]
    warnings.warn(
        f"only {len(long_enough)} calibration rows have {length} real tokens; the others are padded, which "
        "widens the int8 range of the attention scores (calibrate on longer texts for better int8 accuracy)",
        stacklevel=4,
    )
    return [
        {k: _pad_axis1(v, length, pad_token_id if k == "input_ids" else 0) for k, v in row.items()}
        for row in rows[:steps]
    ]


def _representative_dataset(data, specs, steps, problems, pad_token_id=0):
    """A generator function over at most ``steps`` calibration rows.

    TF's calibrator does not re-plan tensor shapes between samples of different
    sizes ("shapes [1,9,128] and [1,8,128] are not broadcastable"), so every
    item is split into batch-1 rows brought to one common length without padding
    (:func:`_common_length_rows`; up to ``2 * steps`` rows are read, as rows
    shorter than the common length are left out). Rows are collected on the
    first call and replayed on later ones (the int8 fallback calibrates again), so
    ``data`` may be a one-shot generator. A bad item stops calibration with an
    error naming it; the error is also kept in ``problems`` because the converter
    may wrap it.
    """
    expected = {name: (spec.dtype.as_numpy_dtype, list(spec.shape)) for name, spec in specs.items()}
    fixed = {spec.shape[1] for spec in specs.values() if spec.shape.rank and spec.shape.rank >= 2}
    fixed_length = next(iter(fixed)) if len(fixed) == 1 else None
    rows = []

    def collect():
        for index, item in enumerate(iter(data)):
            prepared = prepare_inputs(item, expected, f"representative_data[{index}]")
            batch = {v.shape[0] for v in prepared.values() if v.ndim}
            if len(batch) != 1:
                raise ValueError(f"representative_data[{index}]: inputs disagree on the batch size {sorted(batch)}")
            for i in range(batch.pop()):
                rows.append({k: v[i : i + 1] for k, v in prepared.items()})
                if len(rows) >= 2 * steps:
                    return
        if not rows:
            raise ValueError("representative_data is empty; pass at least one input dict")

    def generate():
        if not rows:
            try:
                collect()
            except Exception as err:  # noqa: BLE001 - reported after the converter returns
                rows.clear()
                problems.append(err)
                raise
            rows[:] = _common_length_rows(rows, steps, fixed_length, pad_token_id)
        yield from rows

    return generate


# ------------------------------------------------------------------------ export


def _configure(converter, quantize, representative, allow_custom_ops, select_tf_ops, int8_ops):
    """Set a converter's options; ``int8_ops`` are the op sets of a full-integer mode."""
    converter.allow_custom_ops = bool(allow_custom_ops)
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize in FULL_INTEGER:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        ops = list(int8_ops)
    if select_tf_ops:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops


def _tensor_names(flatbuffer):
    interpreter = _interpreter_class(None)(model_content=flatbuffer)
    return [detail["name"] for detail in interpreter.get_tensor_details()]


def _quantize_keeping_float(converter, keep_float):
    """Calibrate, then quantize with the tensors whose names match ``keep_float`` left in float.

    The two steps of ``converter.convert()`` for a calibrated mode, run apart so that
    the quantizer gets a list of nodes to leave alone (its ``denylisted_nodes``, the
    same mechanism as ``tf.lite.experimental.QuantizationDebugger``'s selective
    quantization, which TensorFlow exposes only through these two private entry points).
    """
    from tensorflow.lite.python import convert

    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    nodes = [name for name in _tensor_names(calibrated) if keep_float.search(name)]
    return convert.mlir_quantize(
        calibrated,
        disable_per_channel=converter._experimental_disable_per_channel,
        input_data_type=tf.float32,
        output_data_type=tf.float32,
        denylisted_nodes=nodes or None,
        disable_per_channel_for_dense_layers=converter._experimental_disable_per_channel_quantization_for_dense_layers,
    )


def _convert_saved_model(saved_model_dir, signature_keys, configure, keep_float=None):
    """Convert; ``keep_float`` (a compiled regex of tensor names) only with a representative dataset."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=signature_keys)
    configure(converter)
    with warnings.catch_warnings():
        # TF's int8 calibrator still builds a tf.lite.Interpreter internally.
        warnings.filterwarnings("ignore", message=r"[\s\S]*tf\.lite\.Interpreter is deprecated")
        if keep_float is not None and converter.representative_dataset is not None:
            return _quantize_keeping_float(converter, keep_float)
        return converter.convert()


def _check_signatures(flatbuffer, wanted, custom_op_registerers=None):
    """Load the converted model and return its signature list; fail if one is missing."""
    interpreter = _interpreter_class(custom_op_registerers)(model_content=flatbuffer)
    signatures = interpreter.get_signature_list()
    missing = sorted(set(wanted) - set(signatures))
    if missing:
        raise ExportError(
            f"the converted TFLite model lacks signature(s) {missing} (has {sorted(signatures)})"
        )
    return signatures


def float_ops(flatbuffer, names=None, exclude=None):
    """``{op name: count}`` of ops computing in float in a quantized model (``None`` if unknown).

    The int8 converter keeps ops without an int8 kernel in float, wrapped in
    DEQUANTIZE/QUANTIZE, even with ``TFLITE_BUILTINS_INT8`` only; this lists them.
    ``names`` / ``exclude``: count only the ops whose first output's tensor name
    matches / does not match this compiled regex.
    """
    try:
        interpreter = _interpreter_class(None)(model_content=flatbuffer)
        details = {t["index"]: t for t in interpreter.get_tensor_details()}
        ops = interpreter._get_ops_details()  # no public per-op listing in ai_edge_litert
    except Exception:  # noqa: BLE001
        return None
    counts = {}
    for op in ops:
        if op["op_name"] in ("DEQUANTIZE", "QUANTIZE"):
            continue
        outputs = [details[i] for i in op["outputs"] if i >= 0 and i in details]
        if not any(np.dtype(t["dtype"]) == np.float32 for t in outputs):
            continue
        name = outputs[0]["name"] if outputs else ""
        if (names is not None and not names.search(name)) or (exclude is not None and exclude.search(name)):
            continue
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts


def _listed(counts):
    return ", ".join(f"{name} x{count}" for name, count in sorted(counts.items()))


def convert_saved_model(
    saved_model_dir,
    signature_keys,
    what,
    quantize="none",
    representative=None,
    problems=None,
    allow_custom_ops=False,
    select_tf_ops=False,
    max_length=None,
    float_layer_norm=True,
):
    """Convert a SavedModel's signatures; returns ``(flatbuffer, fallback_note)``.

    ``float_layer_norm``: with ``quantize="int8"``, keep the layer-norm ops in float
    (see the module doc).
    """
    fallback = None
    int8_only = list(FULL_INTEGER.get(quantize, ()))
    problems = problems if problems is not None else []
    keep_float = FLOAT_LAYER_NORM if quantize == "int8" and float_layer_norm else None

    def configure(ops):
        return lambda c: _configure(c, quantize, representative, allow_custom_ops, select_tf_ops, ops)

    try:
        try:
            flatbuffer = _convert_saved_model(saved_model_dir, signature_keys, configure(int8_only), keep_float)
        except Exception as err:  # noqa: BLE001
            if quantize not in FULL_INTEGER or tf.lite.OpsSet.TFLITE_BUILTINS in int8_only or problems:
                raise
            # Some op has no int8 kernel: keep int8 where possible, float elsewhere.
            flatbuffer = _convert_saved_model(
                saved_model_dir,
                signature_keys,
                configure(int8_only + [tf.lite.OpsSet.TFLITE_BUILTINS]),
                keep_float,
            )
            flex, custom, quant_ops = unsupported_ops(str(err))
            named = ", ".join(flex + custom + quant_ops) or _first_error_line(str(err))
            fallback = (
                f"full-{quantize} conversion failed (" + named + "); built with "
                f"{int8_only[0].name} + TFLITE_BUILTINS, so those ops run in float"
            )
            warnings.warn(fallback, stacklevel=3)
    except Exception as err:  # noqa: BLE001
        if problems:
            bad = problems[0]
            raise type(bad)(f"TFLite {quantize} calibration of {what} stopped: {bad}") from None
        raise conversion_error(err, what, quantize, allow_custom_ops, select_tf_ops, max_length) from None
    return flatbuffer, fallback


def function_to_tflite(serve, specs, what, quantize="none", representative=None, problems=None,
                       allow_custom_ops=False, select_tf_ops=False, max_length=None, float_layer_norm=True):
    """Convert a dict-in/dict-out ``tf.function`` over ``specs`` to a TFLite flatbuffer.

    The function is frozen and rewritten (:func:`kerasllm.export._graph.convertible_function`),
    saved as a temporary SavedModel with one ``serving_default`` signature and
    converted. Returns ``(flatbuffer, fallback_note)``; raises :class:`ExportError`.
    """
    try:
        serve = convertible_function(serve, specs)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"could not trace {what} for TFLite: {err}") from None
    with tempfile.TemporaryDirectory(prefix="kerasllm-tflite-") as tmp:
        holder = tf.Module()
        holder.serve = serve
        # No gradients in a TFLite model: custom gradients (e.g. of an embedding gather)
        # whose closures capture the inputs would otherwise stop the save.
        tf.saved_model.save(
            holder,
            tmp,
            signatures={SERVING: serve.get_concrete_function()},
            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
        )
        return convert_saved_model(
            tmp, [SERVING], what, quantize, representative, problems, allow_custom_ops, select_tf_ops, max_length,
            float_layer_norm,
        )


def export_tflite(
    model,
    out_path,
    quantize="none",
    representative_data=None,
    max_length=None,
    num_calibration_steps=100,
    assets=None,
    allow_custom_ops=False,
    select_tf_ops=False,
    float_layer_norm=True,
):
    """Convert a Keras model to a ``.tflite`` file with a named ``serving_default`` signature.

    Args:
        model: a ``tf_keras`` functional model with named inputs (any kerasllm model
            except generation with a cache; see :func:`export_gpt_tflite` for that).
        out_path: the ``.tflite`` file to write. Written atomically: on failure
            nothing is left at ``out_path`` (an existing file stays untouched).
        quantize: ``"none"``, ``"float16"``, ``"dynamic"``, ``"int8"`` or ``"int16x8"``
            (see module doc).
        representative_data: for ``"int8"`` and ``"int16x8"``: an iterable of input dicts
            (``{"input_ids": [b, t], ...}``) drawn from real data.
        max_length: fix the sequence length (batch stays dynamic); ``None`` keeps
            it dynamic.
        num_calibration_steps: calibrate on at most this many examples (rows of the
            items of ``representative_data``, cut to one common length without
            padding; up to twice as many are read).
        assets: ``{"labels.json": ["O", "B-PER", ...], "vocab.txt": "path/vocab.txt"}``:
            written beside the model as ``<stem>.<name>`` (paths are copied,
            lists/dicts written as JSON, bytes as is).
        allow_custom_ops: keep ops without a TFLite kernel as custom ops.
        select_tf_ops: allow TF Select (Flex) ops; the runtime then needs the Flex delegate.
        float_layer_norm: with ``quantize="int8"``, keep the ops inside each kerasllm
            ``LayerNorm`` in float (default; more accurate at the same size). ``False``
            makes them int8 too, a full-integer model. Ignored by the other modes.

    Returns:
        :class:`ExportReport` (path, size, quantize, fallback note, assets, signatures).

    Raises:
        ValueError: bad ``quantize``, ``int8``/``int16x8`` without ``representative_data``, bad
            representative items, missing asset files.
        ExportError: the converter failed; names the op(s) and what to try.

    Example:

    >>> from kerasllm.models import get_preset, token_classifier
    >>> model = token_classifier(get_preset("bert-tiny", vocab_size=300), num_labels=5)
    >>> report = export_tflite(model, "/tmp/ner.tflite", quantize="dynamic")  # doctest: +SKIP
    >>> TFLiteRunner(report.path)({"input_ids": ids, "attention_mask": mask,
    ...                            "token_type_ids": types})["logits"]  # doctest: +SKIP
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize={quantize!r} is not supported; allowed values: {list(QUANTIZE_MODES)}")
    if quantize in FULL_INTEGER and representative_data is None:
        raise ValueError(
            f"quantize={quantize!r} needs representative_data: an iterable of input dicts drawn from "
            "your data (about 100 examples); use quantize='dynamic' to quantize without data"
        )
    if quantize not in FULL_INTEGER and representative_data is not None:
        warnings.warn(
            f"representative_data is only used with quantize='int8' or 'int16x8' (got {quantize!r})", stacklevel=2
        )
    if not isinstance(num_calibration_steps, int) or num_calibration_steps < 1:
        raise ValueError(f"num_calibration_steps must be a positive integer, got {num_calibration_steps!r}")
    if not isinstance(float_layer_norm, bool):
        raise ValueError(f"float_layer_norm must be True or False, got {float_layer_norm!r}")
    checked_assets = check_assets(assets)
    check_max_length(model, max_length)
    out_path = os.fspath(out_path)
    model, note = float32_model(model, "TFLite")
    notes = [note] if note else []

    serve, specs = serving_function(model, max_length)
    problems = []
    representative = None
    if quantize in FULL_INTEGER:
        pad_token_id = getattr(getattr(model, "kerasllm_config", None), "pad_token_id", 0)
        representative = _representative_dataset(
            representative_data, specs, num_calibration_steps, problems, pad_token_id
        )
    flatbuffer, fallback = function_to_tflite(
        serve,
        specs,
        repr(model.name),
        quantize,
        representative,
        problems,
        allow_custom_ops,
        select_tf_ops,
        max_length,
        float_layer_norm,
    )
    signatures = _check_signatures(flatbuffer, [SERVING]) if not (allow_custom_ops or select_tf_ops) else {}
    if quantize in FULL_INTEGER:
        kept = quantize == "int8" and float_layer_norm
        in_float = float_ops(flatbuffer, exclude=FLOAT_LAYER_NORM if kept else None)
        if in_float:
            listed = f"ops without an {quantize} kernel run in float: {_listed(in_float)}"
            fallback = listed if fallback is None else f"{fallback}; {listed}"
        norm_ops = float_ops(flatbuffer, names=FLOAT_LAYER_NORM) if kept else None
        if norm_ops:
            notes.append(f"layer norms kept in float (float_layer_norm=True): {_listed(norm_ops)}")
    return write_tflite(out_path, flatbuffer, checked_assets, quantize, signatures, notes, fallback)


def write_tflite(out_path, flatbuffer, checked_assets, quantize, signatures, notes, fallback=None):
    """Write the model atomically and its assets beside it; returns the :class:`ExportReport`."""
    atomic_write_bytes(out_path, flatbuffer)
    written = write_assets(checked_assets, lambda name: sidecar_path(out_path, name))
    return ExportReport(
        path=out_path,
        format="tflite",
        size_bytes=file_size(out_path),
        quantize=quantize,
        fallback=fallback,
        assets=written,
        signatures=signatures,
        notes=notes,
    )


# ------------------------------------------------------------------------ runner


class TFLiteRunner:
    """Run one signature of a ``.tflite`` file with numpy inputs.

    The interpreter is ai_edge_litert's, which runs float ops through its default
    XNNPACK delegate on CPU.

    Args:
        path: the ``.tflite`` file.
        num_threads: CPU threads for the interpreter and XNNPACK (``None``: runtime default).
        signature_key: which signature to run; default ``serving_default`` (or
            the only one).
        custom_op_registerers: kernels for custom ops (e.g.
            ``tensorflow_text.tflite_registrar.AddFastWordpieceTokenize``).

    ``runner(inputs)`` takes a dict of arrays keyed by the signature's input names
    (values are cast to the model's dtypes; any batch and sequence size the model
    allows, resized per call) and returns a dict of numpy arrays.
    """

    def __init__(self, path, num_threads=None, signature_key=None, custom_op_registerers=None):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"TFLite model not found: {path}")
        self.path = path
        self.interpreter = _interpreter_class(custom_op_registerers)(model_path=path, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if signature_key is None:
            if SERVING in signatures or len(signatures) != 1:
                signature_key = SERVING
            else:
                signature_key = next(iter(signatures))
        if signature_key not in signatures:
            raise ValueError(f"{path}: no signature {signature_key!r}; signatures: {sorted(signatures)}")
        self.signature_key = signature_key
        self._runner = self.interpreter.get_signature_runner(signature_key)
        details = self._runner.get_input_details()
        self._expected = {
            name: (d["dtype"], [int(x) for x in d["shape_signature"]]) for name, d in details.items()
        }
        self.output_names = list(signatures[signature_key]["outputs"])

    @property
    def input_names(self):
        return sorted(self._expected)

    def __call__(self, inputs):
        feed = prepare_inputs(inputs, self._expected, self.path)
        outputs = self._runner(**feed)
        return {name: np.asarray(value) for name, value in outputs.items()}
