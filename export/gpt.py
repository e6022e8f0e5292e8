"""GPT decoders for on-device generation: TFLite ``prefill``/``decode``, ONNX ``step``.

:func:`export_gpt_tflite` writes one ``.tflite`` file with two signatures that
share one copy of the weights and a fixed-size key/value cache
``[layers, 1, 2, max_length, heads, head_dim]`` (float32), written with
:func:`kerasllm.models.call_with_cache`'s one-hot placement so every shape stays
static apart from the prompt length:

- ``prefill(input_ids [1, n])`` -> ``logits [1, n, vocab]``, ``cache``: runs the
  prompt at positions ``0..n-1`` on an empty cache.
- ``decode(input_ids [1, 1], cache, cache_index [])`` -> ``logits [1, 1, vocab]``,
  ``cache``: one new token at position ``cache_index``.

Batch size is 1 (one conversation on a device); prompts are not padded.
:func:`export_gpt_onnx` writes a single ONNX graph that serves both steps.
"""
import os
import tempfile

import numpy as np
import tensorflow as tf

from kerasllm._io import atomic_write_bytes
from kerasllm.export._common import ExportError, ExportReport, file_size, float32_model
from kerasllm.export.tflite import _check_signatures, _interpreter_class, convert_saved_model
from kerasllm.layers._utils import portable_graph
from kerasllm.models import call_with_cache

PREFILL = "prefill"
DECODE = "decode"
_GPT_QUANTIZE = ("none", "float16", "dynamic")


def _decoder_config(model, max_length):
    config = getattr(model, "kerasllm_config", None)
    if config is None or getattr(config, "model_type", None) != "gpt":
        raise ValueError(
            "export_gpt_tflite needs a GPT model from kerasllm.models.gpt_decoder "
            "(or load_pretrained of one); it reads the cache shape from model.kerasllm_config"
        )
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer (prompt + new tokens), got {max_length!r}")
    if config.position_embedding == "learned" and max_length > config.max_position:
        raise ValueError(
            f"max_length={max_length} exceeds the model's max_position={config.max_position}; "
            f"pass max_length <= {config.max_position}"
        )
    return config


class _Generator(tf.Module):
    """The two cached-forward functions over one model's variables."""

    def __init__(self, model, config, max_length):
        super().__init__(name="gpt_generator")
        self.model_variables = list(model.variables)
        cache_shape = [config.num_layers, 1, 2, max_length, config.num_heads, config.head_dim]
        cache_spec = tf.TensorSpec(cache_shape, tf.float32, name="cache")

        def run(input_ids, cache, cache_index):
            with portable_graph():
                logits, new_cache = call_with_cache(model, input_ids, cache, cache_index)
            return {"logits": tf.cast(logits, tf.float32), "cache": tf.cast(new_cache, tf.float32)}

        @tf.function(input_signature=[tf.TensorSpec([1, None], tf.int32, name="input_ids")])
        def prefill(input_ids):
            return run(input_ids, tf.zeros(cache_shape, tf.float32), tf.constant(0, tf.int32))

        @tf.function(
            input_signature=[
                tf.TensorSpec([1, 1], tf.int32, name="input_ids"),
                cache_spec,
                tf.TensorSpec([], tf.int32, name="cache_index"),
            ]
        )
        def decode(input_ids, cache, cache_index):
            return run(input_ids, cache, cache_index)

        self.prefill = prefill
        self.decode = decode


def export_gpt_tflite(model, out_path, max_length, quantize="none"):
    """Write a GPT model as one ``.tflite`` file with ``prefill`` and ``decode`` signatures.

    Args:
        model: a model from :func:`kerasllm.models.gpt_decoder`.
        out_path: the ``.tflite`` file (written atomically).
        max_length: cache size = the longest prompt + generated tokens.
        quantize: ``"none"``, ``"float16"`` or ``"dynamic"`` (weights only; the
            cache stays float32).

    Returns:
        :class:`ExportReport`.
    """
    if quantize not in _GPT_QUANTIZE:
        raise ValueError(
            f"quantize={quantize!r} is not supported for GPT export; allowed values: {list(_GPT_QUANTIZE)}"
        )
    config = _decoder_config(model, max_length)
    out_path = os.fspath(out_path)
    model, note = float32_model(model, "TFLite")
    module = _Generator(model, config, max_length)
    signatures = {
        PREFILL: module.prefill.get_concrete_function(),
        DECODE: module.decode.get_concrete_function(),
    }
    with tempfile.TemporaryDirectory(prefix="kerasllm-gpt-tflite-") as tmp:
        tf.saved_model.save(module, tmp, signatures=signatures)
        flatbuffer, _ = convert_saved_model(
            tmp, [PREFILL, DECODE], repr(model.name), quantize, max_length=max_length
        )
    found = _check_signatures(flatbuffer, [PREFILL, DECODE])
    atomic_write_bytes(out_path, flatbuffer)
    return ExportReport(
        path=out_path,
        format="tflite",
        size_bytes=file_size(out_path),
        quantize=quantize,
        signatures=found,
        notes=[note] if note else [],
    )


class GPTTFLiteSession:
    """The ``prefill``/``decode`` runners of a file from :func:`export_gpt_tflite`.

    Attributes:
        max_length: the cache size (prompt + generated tokens).
    """

    def __init__(self, path, num_threads=None):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"TFLite model not found: {path}")
        self.path = path
        self.interpreter = _interpreter_class(None)(model_path=path, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if PREFILL not in signatures or DECODE not in signatures:
            raise ValueError(
                f"{path} has signatures {sorted(signatures)}; expected 'prefill' and 'decode' "
                "(write it with export_gpt_tflite)"
            )
        self._prefill = self.interpreter.get_signature_runner(PREFILL)
        self._decode = self.interpreter.get_signature_runner(DECODE)
        self.max_length = int(self._decode.get_input_details()["cache"]["shape"][3])

    def prefill(self, prompt_ids):
        """``(logits [n, vocab], cache)`` of a prompt (list or 1-D array of ids)."""
        ids = np.asarray(prompt_ids, np.int32).reshape(1, -1)
        if ids.shape[1] < 1:
            raise ValueError("prompt_ids is empty; pass at least one token id")
        if ids.shape[1] > self.max_length:
            raise ValueError(
                f"prompt has {ids.shape[1]} tokens but the model was exported with "
                f"max_length={self.max_length}; truncate the prompt or re-export"
            )
        out = self._prefill(input_ids=ids)
        return out["logits"][0], out["cache"]

    def decode(self, token_id, cache, position):
        """``(logits [vocab], cache)`` of one token placed at ``position``."""
        if not 0 <= position < self.max_length:
            raise ValueError(f"position {position} is outside the cache (max_length={self.max_length})")
        out = self._decode(
            input_ids=np.array([[token_id]], np.int32),
            cache=cache,
            cache_index=np.array(position, np.int32),
        )
        return out["logits"][0, -1], out["cache"]


def _greedy(session, prompt_ids, max_new_tokens, eos_token_id):
    prompt = np.asarray(prompt_ids, np.int32).reshape(-1)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    # The last generated token is never fed back, so it needs no cache slot.
    if len(prompt) + max_new_tokens - 1 > session.max_length:
        raise ValueError(
            f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) does not fit the "
            f"cache of {session.max_length} positions; export with a larger max_length"
        )
    if max_new_tokens == 0:
        return []
    logits, cache = session.prefill(prompt)
    token = int(np.argmax(logits[-1]))
    generated = [token]
    position = len(prompt)
    while len(generated) < max_new_tokens and token != eos_token_id:
        logits, cache = session.decode(token, cache, position)
        token = int(np.argmax(logits))
        generated.append(token)
        position += 1
    return generated


def greedy_generate_tflite(path, prompt_ids, max_new_tokens, eos_token_id=None, num_threads=None):
    """Greedy decoding with a file from :func:`export_gpt_tflite`.

    Args:
        path: the ``.tflite`` file.
        prompt_ids: the prompt's token ids (list or 1-D array).
        max_new_tokens: how many tokens to generate.
        eos_token_id: stop after generating this id (it is included).
        num_threads: interpreter threads.

    Returns:
        the generated token ids (a list of int, the prompt not included).
    """
    return _greedy(GPTTFLiteSession(path, num_threads=num_threads), prompt_ids, max_new_tokens, eos_token_id)


# --------------------------------------------------------------------------- ONNX


def export_gpt_onnx(model, out_path, max_length, opset=17):
    """Write a GPT model as one ONNX graph that both prefills and decodes.

    ``step(input_ids [1, n], cache, cache_index []) -> logits [1, n, vocab], new_cache``:
    prefill is ``step(prompt, zeros, 0)``, decoding ``step([[token]], cache, position)``
    (ONNX needs no second signature, so the weights are stored once). The output is
    ``new_cache`` because tf2onnx cannot give an output the name of an input.

    Returns:
        :class:`ExportReport`.
    """
    from kerasllm.export.onnx import check_onnx, function_to_onnx, save_onnx, smoke_run

    config = _decoder_config(model, max_length)
    out_path = os.fspath(out_path)
    signature = [
        tf.TensorSpec([1, None], tf.int32, name="input_ids"),
        tf.TensorSpec(
            [config.num_layers, 1, 2, max_length, config.num_heads, config.head_dim], tf.float32, name="cache"
        ),
        tf.TensorSpec([], tf.int32, name="cache_index"),
    ]

    @tf.function(input_signature=signature)
    def step(input_ids, cache, cache_index):
        with portable_graph():
            logits, new_cache = call_with_cache(model, input_ids, cache, cache_index)
        return {"logits": tf.cast(logits, tf.float32), "new_cache": tf.cast(new_cache, tf.float32)}

    what = repr(model.name)
    try:
        proto = function_to_onnx(step, signature, opset, model.name)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"tf2onnx could not convert {what}: {err}") from None
    check_onnx(proto, what)
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.name in ("input_ids", "logits") and not dims[1].HasField("dim_value"):
            dims[1].dim_param = "sequence"
    smoke_run(proto, what)
    save_onnx(proto, out_path)
    return ExportReport(
        path=out_path,
        format="onnx",
        size_bytes=file_size(out_path),
        signatures={"step": {"inputs": ["input_ids", "cache", "cache_index"], "outputs": ["logits", "new_cache"]}},
    )


class GPTOnnxSession:
    """Prefill/decode over a file from :func:`export_gpt_onnx` (same interface as :class:`GPTTFLiteSession`)."""

    def __init__(self, path, num_threads=None):
        from kerasllm.export.onnx import OnnxRunner

        self._runner = OnnxRunner(path, num_threads=num_threads)
        self.path = self._runner.path
        shape = [i for i in self._runner.session.get_inputs() if i.name == "cache"]
        if not shape or set(self._runner.output_names) != {"logits", "new_cache"}:
            raise ValueError(f"{self.path} is not a GPT step graph from export_gpt_onnx")
        self._cache_shape = [int(d) for d in shape[0].shape]
        self.max_length = self._cache_shape[3]

    def _step(self, ids, cache, index):
        out = self._runner({"input_ids": ids, "cache": cache, "cache_index": np.array(index, np.int32)})
        return out["logits"][0], out["new_cache"]

    def prefill(self, prompt_ids):
        ids = np.asarray(prompt_ids, np.int32).reshape(1, -1)
        if not 1 <= ids.shape[1] <= self.max_length:
            raise ValueError(f"prompt length {ids.shape[1]} must be in [1, max_length={self.max_length}]")
        return self._step(ids, np.zeros(self._cache_shape, np.float32), 0)

    def decode(self, token_id, cache, position):
        if not 0 <= position < self.max_length:
            raise ValueError(f"position {position} is outside the cache (max_length={self.max_length})")
        logits, cache = self._step(np.array([[token_id]], np.int32), cache, position)
        return logits[-1], cache


def greedy_generate_onnx(path, prompt_ids, max_new_tokens, eos_token_id=None, num_threads=None):
    """Greedy decoding with a file from :func:`export_gpt_onnx`; as :func:`greedy_generate_tflite`."""
    return _greedy(GPTOnnxSession(path, num_threads=num_threads), prompt_ids, max_new_tokens, eos_token_id)
