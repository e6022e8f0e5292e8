"""Shared pieces of the exporters: serving signatures, atomic writes, assets, reports.

Every exporter serves a Keras model through the same signature: one named input per
model input (``input_ids``, ``attention_mask``, ``token_type_ids`` for BERT models),
batch always dynamic, sequence dynamic unless ``max_length`` fixes it, and a dict of
named outputs (``{"logits": ...}`` for single-output models, the model's own output
names for dict-output models such as ``bert_encoder``).
"""
import dataclasses
import json
import os
import shutil

import numpy as np
import tensorflow as tf

from kerasllm._io import atomic_write_bytes, atomic_write_with
from kerasllm.layers._utils import portable_graph

DEFAULT_OUTPUT = "logits"


class ExportError(ValueError):
    """A conversion failed; the message says why and what to try instead.

    A ``ValueError`` because the cause is in the model given (an op without a
    kernel, a bad quantization choice), so the CLI reports it as one line.

    Attributes:
        ops: names of the operations that could not be converted (may be empty).
        details: the converter's own message, kept for debugging.
    """

    def __init__(self, message, ops=(), details=""):
        super().__init__(message)
        self.ops = list(ops)
        self.details = details


@dataclasses.dataclass
class ExportReport:
    """What an exporter wrote.

    Attributes:
        path: the model file (or SavedModel folder).
        format: ``"tflite"``, ``"onnx"`` or ``"savedmodel"``.
        size_bytes: size on disk (folder total for a SavedModel).
        quantize: the quantization mode used.
        fallback: ``None``, or a sentence saying which fallback was taken; for
            ``int8``, the ops left computing in float because they have no int8
            kernel (e.g. ``"... run in float: SIN x1"``).
        assets: asset name -> path of the file written beside the model.
        signatures: signature name -> {"inputs": [...], "outputs": [...]}.
        notes: anything else the exporter changed on the way (e.g. a float32
            copy of a mixed-precision model).
    """

    path: str
    format: str
    size_bytes: int
    quantize: str = "none"
    fallback: str = None
    assets: dict = dataclasses.field(default_factory=dict)
    signatures: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)


def input_specs(model, max_length=None):
    """Named ``TensorSpec`` per model input: ``[None, max_length or None, ...]``."""
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length must be a positive integer or None, got {max_length!r}")
    specs = {}
    for name, tensor in zip(model.input_names, model.inputs):
        dims = list(tensor.shape)
        dims[0] = None
        if max_length is not None and len(dims) >= 2:
            dims[1] = max_length
        specs[name] = tf.TensorSpec(dims, tensor.dtype, name=name)
    return specs


def output_names(model):
    """Names of the serving outputs: the model's dict keys, or ``["logits"]``."""
    if isinstance(model.output, dict):
        return sorted(model.output)
    if isinstance(model.output, (list, tuple)):
        return list(model.output_names)
    return [DEFAULT_OUTPUT]


def outputs_as_dict(model, outputs):
    """Map a model call's outputs onto :func:`output_names`."""
    if isinstance(outputs, dict):
        return dict(outputs)
    if isinstance(outputs, (list, tuple)):
        return dict(zip(model.output_names, outputs))
    return {DEFAULT_OUTPUT: outputs}


def serving_function(model, max_length=None):
    """A ``tf.function`` taking one dict of named inputs and returning a dict of outputs."""
    specs = input_specs(model, max_length)

    @tf.function(input_signature=[specs])
    def serve(inputs):
        with portable_graph():  # the forms every converter takes (kerasllm.layers._utils)
            return outputs_as_dict(model, model(inputs, training=False))

    return serve, specs


def check_max_length(model, max_length):
    """Refuse a fixed ``max_length`` beyond a learned position table."""
    config = getattr(model, "kerasllm_config", None)
    if max_length is None or config is None:
        return
    if config.position_embedding == "learned" and max_length > config.max_position:
        raise ValueError(
            f"max_length={max_length} exceeds the model's max_position={config.max_position}; "
            f"pass max_length <= {config.max_position}"
        )


def _low_precision_layers(model):
    """``[(layer name, compute dtype)]`` of layers computing in float16/bfloat16."""
    found = []
    for layer in model.layers:
        dtype = getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32")
        if dtype in ("float16", "bfloat16"):
            found.append((layer.name, dtype))
    return found


def float32_model(model, target):
    """``(model, note)``: the model itself, or a float32 copy of a mixed-precision kerasllm model.

    TFLite has no float16/bfloat16 kernels for most ops (conversion stops at the
    first ``AddV2``), so a model trained under ``mixed_float16`` is rebuilt with
    the float32 policy and given the same weights (mixed-precision variables are
    float32 already). Use ``quantize="float16"`` for half-size weights.
    """
    low = _low_precision_layers(model)
    if not low:
        return model, None
    import tf_keras as keras

    from kerasllm.models import build_model

    config = getattr(model, "kerasllm_config", None)
    task = dict(getattr(model, "kerasllm_task", None) or {})
    advice = (
        f"{model.name!r} computes in {low[0][1]} (mixed precision, e.g. layer {low[0][0]!r}); "
        f"{target} needs float32 compute: rebuild the model under the 'float32' policy, copy the "
        "weights with set_weights, and export that (quantize='float16' gives half-size weights)"
    )
    if config is None or "task" not in task:
        raise ValueError(advice)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = build_model(config, task.pop("task"), **task)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    try:
        copy.set_weights(model.get_weights())
    except ValueError as err:
        raise ValueError(f"{advice} (an automatic float32 rebuild did not fit: {err})") from None
    copy.kerasllm_config = config
    copy.kerasllm_task = dict(model.kerasllm_task)
    return copy, f"exported a float32 copy of the mixed-precision model (it computed in {low[0][1]})"


def prepare_inputs(inputs, expected, where):
    """Check names and cast values of ``inputs`` against ``expected`` {name: (dtype, shape)}.

    ``shape`` uses ``-1``/``None`` for dynamic dims. Raises a ValueError naming the input.
    """
    if not isinstance(inputs, dict):
        raise TypeError(f"{where}: inputs must be a dict of arrays keyed by {sorted(expected)}")
    missing = sorted(set(expected) - set(inputs))
    unknown = sorted(set(inputs) - set(expected))
    if missing or unknown:
        raise ValueError(
            f"{where}: expected inputs {sorted(expected)}; missing {missing}, unexpected {unknown}"
        )
    prepared = {}
    for name, (dtype, shape) in expected.items():
        value = np.asarray(inputs[name])
        if shape is not None:
            if value.ndim != len(shape):
                raise ValueError(
                    f"{where}: input {name!r} must have rank {len(shape)}, got shape {value.shape}"
                )
            for axis, (want, got) in enumerate(zip(shape, value.shape)):
                if want not in (None, -1) and want != got:
                    raise ValueError(
                        f"{where}: input {name!r} has size {got} on axis {axis} but the model "
                        f"was exported with a fixed size {want} (pad or truncate to {want})"
                    )
        prepared[name] = np.ascontiguousarray(value.astype(dtype, copy=False))
    return prepared


# ---------------------------------------------------------------------------- files
# (the atomic writers live in kerasllm._io, shared with the rest of kerasllm)



def file_size(path):
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(path)
            for name in names
        )
    return os.path.getsize(path)


# --------------------------------------------------------------------------- assets


def check_assets(assets):
    """Validate ``assets`` before any conversion starts (so a bad path costs nothing).

    ``assets`` maps a plain file name (``"labels.json"``, ``"vocab.txt"``) to either a
    path of an existing file (copied), a list/dict (written as JSON) or bytes
    (written as is).
    """
    if not assets:
        return {}
    if not isinstance(assets, dict):
        raise TypeError("assets must be a dict of {file name: path, list/dict or bytes}")
    checked = {}
    for name, value in assets.items():
        if not isinstance(name, str) or not name or os.path.basename(name) != name or name.startswith("."):
            raise ValueError(f"asset name {name!r} must be a plain file name such as 'labels.json'")
        if isinstance(value, (str, os.PathLike)):
            if not os.path.isfile(value):
                raise ValueError(f"asset {name!r}: file not found: {os.fspath(value)}")
            checked[name] = ("copy", os.fspath(value))
        elif isinstance(value, (bytes, bytearray)):
            checked[name] = ("bytes", bytes(value))
        elif isinstance(value, (list, tuple, dict)):
            text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
            checked[name] = ("bytes", text.encode("utf-8"))
        else:
            raise TypeError(
                f"asset {name!r}: expected a file path, bytes, or a list/dict (JSON); "
                f"got {type(value).__name__}"
            )
    return checked


def write_assets(checked, destination):
    """Write validated assets; ``destination(name)`` gives each file's path. Returns name -> path."""
    written = {}
    for name, (kind, value) in checked.items():
        path = destination(name)
        if kind == "copy":
            atomic_write_with(path, lambda tmp, src=value: shutil.copyfile(src, tmp))
        else:
            atomic_write_bytes(path, value)
        written[name] = path
    return written


def sidecar_path(model_path, asset_name):
    """``<folder>/<stem>.<asset_name>``: e.g. ``ner.tflite`` -> ``ner.labels.json``."""
    folder = os.path.dirname(os.path.abspath(model_path))
    stem = os.path.splitext(os.path.basename(model_path))[0]
    return os.path.join(folder, f"{stem}.{asset_name}")
