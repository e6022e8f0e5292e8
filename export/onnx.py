"""ONNX export of kerasllm models through tf2onnx, dynamic int8 quantization, and a runner.

The ONNX graph has the Keras model's named inputs (int32 ``[batch, sequence]``,
both axes dynamic unless ``max_length`` fixes the sequence) and the outputs of
the serving signature (``logits`` for single-output models). Assets given to
:func:`export_onnx` are written beside the file as ``<stem>.<asset name>``, as
for TFLite.

tf2onnx's ``reshape_optimizer`` pass is switched off: on kerasllm's attention
(``_project`` reshapes to ``[b, t, 3*h*d]`` and ``_split_heads`` reads the shape
back) tf2onnx 1.17 rewires a ``Shape`` onto the pre-reshape tensor and the graph
fails at run time in ``Reshape`` ("input tensor cannot be reshaped"). All other
tf2onnx optimizers run.
"""
import os

import numpy as np
import tensorflow as tf

from kerasllm._io import atomic_write_with
from kerasllm.export._common import (
    ExportError,
    ExportReport,
    check_assets,
    check_max_length,
    file_size,
    input_specs,
    outputs_as_dict,
    prepare_inputs,
    sidecar_path,
    write_assets,
)
from kerasllm.layers._utils import portable_graph

DEFAULT_OPSET = 17
_SKIPPED_OPTIMIZERS = ("reshape_optimizer",)
_ONNX_DTYPES = {
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(bool)": np.bool_,
}


def _optimizers():
    from tf2onnx import optimizer

    return {k: v for k, v in optimizer._get_optimizers().items() if k not in _SKIPPED_OPTIMIZERS}


def function_to_onnx(function, input_signature, opset, name):
    """Convert a flat-argument ``tf.function`` with dict outputs to an ONNX ``ModelProto``.

    This is ``tf2onnx.convert.from_function`` with a chosen optimizer list (which
    ``from_function`` does not expose).
    """
    from tf2onnx import tf_loader
    from tf2onnx.convert import _convert_common, tensor_names_from_structed

    concrete = function.get_concrete_function(*input_signature)
    inputs = [t.name for t in concrete.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in concrete.outputs if t.dtype != tf.resource]
    renames = tensor_names_from_structed(concrete, inputs, outputs)
    with tf.device("/cpu:0"):
        frozen = tf_loader.from_function(concrete, inputs, outputs)
        proto, _ = _convert_common(
            frozen,
            name=name,
            continue_on_error=True,
            opset=opset,
            input_names=inputs,
            output_names=outputs,
            tensors_to_rename=renames,
            optimizers=_optimizers(),
        )
    return proto


def check_onnx(proto, what):
    """Fail with the names of ops tf2onnx left unconverted; run the ONNX checker."""
    import onnx

    unknown = sorted(
        {
            node.op_type
            for node in proto.graph.node
            if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type)
        }
    )
    if unknown:
        from kerasllm.export.tflite import layer_of_node

        where = {}
        for node in proto.graph.node:
            if node.op_type in unknown and node.name:
                where.setdefault(node.op_type, []).append(repr(layer_of_node(node.name)))
        named = ", ".join(f"{op} (layer {', '.join(where[op])})" if op in where else op for op in unknown)
        hint = ""
        if "Erfc" in unknown:
            hint = (
                " (Erfc comes from tf.nn.gelu(approximate=False) / tf.math.erfc; write exact "
                "GELU with tf.math.erf as kerasllm.layers.activations.gelu does)"
            )
        raise ExportError(
            f"ONNX conversion of {what} left TensorFlow op(s) {named} "
            f"without an ONNX equivalent{hint}; replace them with supported ops",
            ops=unknown,
        )
    try:
        onnx.checker.check_model(proto)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"ONNX model of {what} does not pass onnx.checker: {err}") from None


def _name_dynamic_axes(proto, input_names):
    """Give the dynamic axes readable names: ``batch`` and ``sequence``."""
    for value in proto.graph.input:
        if value.name in input_names:
            dims = value.type.tensor_type.shape.dim
            for axis, label in zip(range(len(dims)), ("batch", "sequence")):
                if not dims[axis].HasField("dim_value"):
                    dims[axis].dim_param = label
    for value in proto.graph.output:
        dims = value.type.tensor_type.shape.dim
        labels = ("batch", "sequence") if len(dims) >= 3 else ("batch",)
        for axis, label in zip(range(len(dims)), labels):
            if not dims[axis].HasField("dim_value"):
                dims[axis].dim_param = label


def _session(path_or_bytes, num_threads=None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(path_or_bytes, sess_options=options, providers=["CPUExecutionProvider"])


def smoke_run(proto, what):
    """Run the model once on a tiny input so run-time shape bugs fail the export, not the user."""
    try:
        session = _session(proto.SerializeToString())
        feed = {}
        for value in session.get_inputs():
            shape = [d if isinstance(d, int) else (1 if i == 0 else 2) for i, d in enumerate(value.shape)]
            fill = 1 if "mask" in value.name else 0  # token id / segment 0 exist in any vocab
            feed[value.name] = np.full(shape, fill, _ONNX_DTYPES.get(value.type, np.float32))
        outputs = session.run(None, feed)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"the ONNX model of {what} fails to run in onnxruntime: {err}") from None
    for out in outputs:
        if not np.all(np.isfinite(np.asarray(out, np.float64))):
            raise ExportError(f"the ONNX model of {what} produced non-finite outputs on a smoke input")


def save_onnx(proto, path):
    import onnx

    if proto.ByteSize() > 2_000_000_000:
        raise ExportError(
            f"the ONNX model is {proto.ByteSize() / 1e9:.1f} GB, over protobuf's 2 GB limit; "
            "external-data export is not supported here"
        )
    atomic_write_with(path, lambda tmp: onnx.save(proto, tmp), suffix=".onnx")


def export_onnx(model, out_path, opset=DEFAULT_OPSET, max_length=None, assets=None):
    """Convert a Keras model to ONNX with named inputs and dynamic batch/sequence axes.

    Args:
        model: a ``tf_keras`` functional model with named inputs.
        out_path: the ``.onnx`` file, written atomically (nothing is left on failure).
        opset: ONNX opset (17 by default; ``LayerNormalization`` needs >= 17 to fuse).
        max_length: fix the sequence length; ``None`` keeps it dynamic.
        assets: as in :func:`kerasllm.export.export_tflite`; written as ``<stem>.<name>``.

    Returns:
        :class:`ExportReport`.

    Raises:
        ExportError: an op has no ONNX equivalent (named), or the result fails
            the ONNX checker or a one-batch smoke run in onnxruntime.
    """
    checked_assets = check_assets(assets)
    check_max_length(model, max_length)
    out_path = os.fspath(out_path)
    specs = input_specs(model, max_length)
    names = list(specs)
    signature = [specs[n] for n in names]

    @tf.function(input_signature=signature)
    def serve(*args):
        with portable_graph():
            return outputs_as_dict(model, model(dict(zip(names, args)), training=False))

    what = repr(model.name)
    try:
        proto = function_to_onnx(serve, signature, opset, model.name)
    except ExportError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"tf2onnx could not convert {what}: {err}") from None
    check_onnx(proto, what)
    _name_dynamic_axes(proto, names)
    smoke_run(proto, what)
    save_onnx(proto, out_path)
    written = write_assets(checked_assets, lambda name: sidecar_path(out_path, name))
    return ExportReport(
        path=out_path,
        format="onnx",
        size_bytes=file_size(out_path),
        assets=written,
        signatures={
            "main": {"inputs": names, "outputs": [o.name for o in proto.graph.output]}
        },
    )


def quantize_onnx_dynamic(in_path, out_path, per_channel=True, reduce_range=True):
    """Dynamic int8 quantization of an ONNX model's weights (``onnxruntime.quantization``).

    MatMul/Gather weights become int8; activations are quantized at run time.
    Written atomically.

    Args:
        in_path: the float ``.onnx`` file.
        out_path: the quantized file (must differ from ``in_path``).
        per_channel: one scale per output column instead of per tensor.
        reduce_range: 7-bit weights. On x86 CPUs without VNNI, onnxruntime's
            uint8 x int8 kernels can saturate intermediate sums with full 8-bit
            weights; on this project's tiny BERT that raised the logit error
            about tenfold (0.1 vs 0.009), so 7 bits is the default.

    Returns:
        :class:`ExportReport`.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    in_path, out_path = os.fspath(in_path), os.fspath(out_path)
    if not os.path.isfile(in_path):
        raise FileNotFoundError(f"ONNX model not found: {in_path}")
    if os.path.abspath(in_path) == os.path.abspath(out_path):
        raise ValueError("quantize_onnx_dynamic: out_path must differ from in_path")

    def write(tmp):
        quantize_dynamic(
            in_path,
            tmp,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
        )

    atomic_write_with(out_path, write, suffix=".onnx")
    return ExportReport(path=out_path, format="onnx", size_bytes=file_size(out_path), quantize="dynamic")


def convert_onnx_float16(in_path, out_path, keep_io_types=True):
    """Float16 copy of an ONNX model (for GPUs), through onnxruntime's own converter.

    Weights and activations become float16 (halving the file); ops that lose
    accuracy in half precision stay float32 (``onnxruntime.transformers.float16``'s
    default block list), and with ``keep_io_types`` the int32 inputs and the
    float32 ``logits`` keep their types, so the file drops in where the float32
    one was. onnxruntime's CPU provider runs it too (slower than float32 there).
    Written atomically.

    Args:
        in_path: the float32 ``.onnx`` file.
        out_path: the float16 file (must differ from ``in_path``).
        keep_io_types: leave float inputs/outputs as float32.

    Returns:
        :class:`ExportReport` with ``quantize="float16"``.

    Example:

    >>> export_onnx(model, "ner.onnx")  # doctest: +SKIP
    >>> convert_onnx_float16("ner.onnx", "ner.fp16.onnx").size_bytes  # doctest: +SKIP
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    in_path, out_path = os.fspath(in_path), os.fspath(out_path)
    if not os.path.isfile(in_path):
        raise FileNotFoundError(f"ONNX model not found: {in_path}")
    if os.path.abspath(in_path) == os.path.abspath(out_path):
        raise ValueError("convert_onnx_float16: out_path must differ from in_path")
    proto = convert_float_to_float16(onnx.load(in_path), keep_io_types=keep_io_types)
    what = repr(os.path.basename(in_path))
    check_onnx(proto, what)
    smoke_run(proto, what)
    save_onnx(proto, out_path)
    return ExportReport(path=out_path, format="onnx", size_bytes=file_size(out_path), quantize="float16")


class OnnxRunner:
    """Run an ``.onnx`` file with onnxruntime on CPU.

    Args:
        path: the ``.onnx`` file.
        num_threads: intra-op threads (``None``: onnxruntime's default).

    ``runner(inputs)`` takes a dict of arrays keyed by the model's input names (cast
    to the model's dtypes) and returns a dict of numpy arrays keyed by output name.
    """

    def __init__(self, path, num_threads=None):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX model not found: {path}")
        self.path = path
        self.session = _session(path, num_threads)
        self._expected = {
            v.name: (
                _ONNX_DTYPES.get(v.type, np.float32),
                [d if isinstance(d, int) else None for d in v.shape],
            )
            for v in self.session.get_inputs()
        }
        self.output_names = [v.name for v in self.session.get_outputs()]

    @property
    def input_names(self):
        return sorted(self._expected)

    def __call__(self, inputs):
        feed = prepare_inputs(inputs, self._expected, self.path)
        outputs = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, outputs))
