"""``kerasllm export tflite|onnx|savedmodel``: export a model folder, then measure the artefact against Keras."""
import os
import tempfile
from typing import Optional

import typer
from rich.table import Table

from ._common import console, model_inputs, require_file, run_user_errors

QUANTIZE = {
    "tflite": ("none", "float16", "dynamic", "int8"),
    "onnx": ("none", "dynamic"),
    "savedmodel": ("none",),
}
CALIBRATION_WINDOWS = 200
VERIFY_WINDOWS = 256
OUT_HELP = {
    "tflite": "The .tflite file to write; labels.json and vocab.txt go beside it as <stem>.labels.json, <stem>.vocab.txt.",
    "onnx": "The .onnx file to write; labels.json and vocab.txt go beside it as <stem>.labels.json, <stem>.vocab.txt.",
    "savedmodel": "The SavedModel folder to write; labels.json and vocab.txt go to <out>/assets.extra/.",
}
DOCS = {
    "tflite": "Export to TFLite (float32, float16, dynamic-range or full int8) and verify it against Keras.",
    "onnx": "Export to ONNX (float32, or onnxruntime dynamic int8) and verify it against Keras.",
    "savedmodel": "Export to a TensorFlow SavedModel (serving_default) and verify it against Keras.",
}


def register(app):
    export_app = typer.Typer(
        help="Export a kerasllm model folder and print how the artefact compares with Keras "
        "(logit difference, argmax agreement, entity F1, size, latency).",
        no_args_is_help=True,
    )
    for fmt in QUANTIZE:
        export_app.command(fmt)(_make_command(fmt))
    app.add_typer(export_app, name="export")


def _make_command(fmt):
    modes = QUANTIZE[fmt]

    def command(
        model: str = typer.Option(..., help="A kerasllm model folder (e.g. OUT/model written by `kerasllm finetune ner`)."),
        out: str = typer.Option(..., help=OUT_HELP[fmt]),
        quantize: str = typer.Option("none", help=f"Quantization: {', '.join(modes)}."),
        calibration: Optional[str] = typer.Option(
            None,
            help=f"CoNLL file: its first {CALIBRATION_WINDOWS} windows calibrate int8 activations (needed by "
            "--quantize int8) and, without --test, are the verification inputs. \\[default: none]",
        ),
        max_length: Optional[int] = typer.Option(
            None, help="Fix the artefact's sequence length (at most the model's max_position). \\[default: dynamic]"
        ),
        test: Optional[str] = typer.Option(
            None,
            help="CoNLL file: verify on its windows and compare entity F1 of Keras and the artefact. "
            "\\[default: none; verify on --calibration windows or synthetic inputs, no F1]",
        ),
        threads: Optional[int] = typer.Option(None, help="CPU threads of the runtime. \\[default: the runtime's own]"),
        length: int = typer.Option(128, help="Sequence length of the batch-1 latency measurement (capped at the model's max_position)."),
        runs: int = typer.Option(20, help="Timed runs of the latency measurement (after 3 warm-up runs)."),
        json_path: Optional[str] = typer.Option(None, "--json", help="Also write the verification summary to this JSON file. \\[default: none]"),
    ):
        run_user_errors(
            export_and_verify,
            fmt,
            model_dir=model, out=out, quantize=quantize, calibration=calibration, max_length=max_length,
            test=test, threads=threads, length=length, runs=runs, json_path=json_path,
        )

    command.__doc__ = DOCS[fmt]
    command.__name__ = f"export_{fmt}"
    return command


class _FixedLength:
    """Feeds a fixed-sequence-length artefact: pads (or crops trailing padding) to ``length``
    and returns outputs at the caller's length."""

    def __init__(self, runner, length):
        self.runner, self.length = runner, length

    def __call__(self, inputs):
        import numpy as np

        n = np.asarray(inputs["input_ids"]).shape[1]
        if n == self.length:
            return self.runner(inputs)
        if n > self.length:
            mask = inputs.get("attention_mask")
            if mask is not None and np.asarray(mask)[:, self.length:].any():
                raise ValueError(f"an input of {n} tokens does not fit the artefact's fixed length {self.length}")
            fed = {k: np.asarray(v)[:, : self.length] for k, v in inputs.items()}
        else:
            fed = {k: np.pad(np.asarray(v), [(0, 0), (0, self.length - n)]) for k, v in inputs.items()}
        outputs = {}
        for name, value in self.runner(fed).items():
            value = np.asarray(value)
            if value.ndim >= 2 and value.shape[1] == self.length:
                if n < self.length:
                    value = value[:, :n]
                else:
                    value = np.pad(value, [(0, 0), (0, n - self.length)] + [(0, 0)] * (value.ndim - 2))
            outputs[name] = value
        return outputs


def _check_options(fmt, model_dir, quantize, calibration, test, max_length, threads, length, runs):
    modes = QUANTIZE[fmt]
    if quantize not in modes:
        raise ValueError(f"--quantize {quantize!r} is not available for {fmt}; choose one of: {', '.join(modes)}")
    if quantize == "int8" and calibration is None:
        raise ValueError(
            "--quantize int8 needs --calibration FILE: a CoNLL file whose sentences calibrate the int8 "
            f"activation ranges (its first {CALIBRATION_WINDOWS} windows are used)"
        )
    for option, value in (("--max-length", max_length), ("--threads", threads), ("--length", length), ("--runs", runs)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    require_file(calibration, "--calibration")
    require_file(test, "--test")
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"--model {model_dir}: no such folder")
    config_path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"--model {model_dir} is not a kerasllm model folder: config.json is missing")
    from kerasllm.models.config import TransformerConfig

    config = TransformerConfig.load(config_path)
    if max_length is not None and max_length > config.max_position:
        raise ValueError(
            f"--max-length {max_length} exceeds the model's max_position {config.max_position} "
            f"({config_path}); pass --max-length {config.max_position} or less"
        )
    return config


def _load(model_dir):
    from kerasllm.data import LabelMap
    from kerasllm.models import load_pretrained
    from kerasllm.tokenizers import WordPieceTokenizer

    model = load_pretrained(model_dir)
    tokenizer = WordPieceTokenizer.load(model_dir) if os.path.isfile(os.path.join(model_dir, "vocab.txt")) else None
    labels_path = os.path.join(model_dir, "labels.json")
    label_map = LabelMap.from_json(labels_path) if os.path.isfile(labels_path) else None
    return model, tokenizer, label_map


def _synthetic_batches(names, vocab_size, max_len, count=8, seed=0):
    """``count`` single-example batches of random lengths ``[CLS] ids [SEP]``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    batches = []
    for i in range(count):
        n = int(rng.integers(4, max_len + 1))
        batches.append(model_inputs(names, 1, n, vocab_size, seed=seed + i))
    return batches


def _export(fmt, model, out, quantize, representative, max_length, assets):
    from kerasllm.export import export_onnx, export_savedmodel, export_tflite, quantize_onnx_dynamic
    from kerasllm.export._common import check_assets, sidecar_path, write_assets

    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    if fmt == "tflite":
        return export_tflite(
            model, out, quantize=quantize, representative_data=representative, max_length=max_length, assets=assets
        )
    if fmt == "savedmodel":
        return export_savedmodel(model, out, max_length=max_length, assets=assets)
    if quantize == "none":
        return export_onnx(model, out, max_length=max_length, assets=assets)
    checked = check_assets(assets)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".kerasllm-export-") as tmp:
        float_report = export_onnx(model, os.path.join(tmp, "float.onnx"), max_length=max_length)
        report = quantize_onnx_dynamic(float_report.path, out)
    report.assets = write_assets(checked, lambda name: sidecar_path(out, name))
    report.notes.append(f"float ONNX before quantization: {float_report.size_bytes / 1e6:.2f} MB")
    return report


def export_and_verify(fmt, model_dir, out, quantize="none", calibration=None, max_length=None, test=None,
                      threads=None, length=128, runs=20, json_path=None):
    """Export ``model_dir`` to ``out`` and return (and print) the verification summary dict."""
    config = _check_options(fmt, model_dir, quantize, calibration, test, max_length, threads, length, runs)
    if fmt in ("tflite", "onnx") and os.path.isdir(out):
        raise ValueError(f"--out {out} is a folder; give the {fmt} file to write")

    import numpy as np
    import tensorflow as tf

    from kerasllm._io import atomic_write_json
    from kerasllm.data import read_conll
    from kerasllm.data.ner_dataset import bucket_batches, encode_sentences, pad_batch
    from kerasllm.export import OnnxRunner, SavedModelRunner, TFLiteRunner, latency, verify
    from kerasllm.training.ner_finetune import _RunnerAsModel, evaluate_windows

    model, tokenizer, label_map = _load(model_dir)
    names = list(model.input_names)
    seq = max_length or min(config.max_position, 512)
    if (test or calibration) and tokenizer is None:
        raise FileNotFoundError(f"--model {model_dir}: vocab.txt is missing; --test/--calibration need the tokenizer")

    def windows_of(path):
        sentences = read_conll(path)
        return sentences, encode_sentences(sentences, tokenizer, None, seq)

    def padded(windows, indices):
        inputs = pad_batch(windows, indices, multiple=1)[0]
        return {k: v for k, v in inputs.items() if k in names}

    representative = None
    calib_windows = None
    if calibration:
        _, calib_windows = windows_of(calibration)
        if quantize == "int8":
            representative = [padded(calib_windows, [i]) for i in range(min(CALIBRATION_WINDOWS, len(calib_windows)))]
            if max_length:
                representative = [_FixedLength(lambda x: x, max_length)(r) for r in representative]

    test_sentences = test_windows = None
    if test:
        test_sentences, test_windows = windows_of(test)
        verify_windows, source = test_windows, f"{len(test_windows)} windows of {test}"
    elif calib_windows:
        verify_windows, source = calib_windows, f"windows of {calibration}"
    else:
        verify_windows, source = None, "8 synthetic inputs of random length"
    if verify_windows:
        rng = np.random.default_rng(0)
        if len(verify_windows) > VERIFY_WINDOWS:
            pick = sorted(rng.choice(len(verify_windows), VERIFY_WINDOWS, replace=False))
            verify_windows = [verify_windows[i] for i in pick]
            source = f"{VERIFY_WINDOWS} random {source}"
        lengths = [len(w.input_ids) for w in verify_windows]
        batches = [padded(verify_windows, idx) for idx in bucket_batches(lengths, 16)]
    else:
        batches = _synthetic_batches(names, config.vocab_size, seq)

    assets = {}
    if label_map is not None:
        assets["labels.json"] = label_map.labels
    if tokenizer is not None:
        assets["vocab.txt"] = os.path.join(model_dir, "vocab.txt")
    with console.status(f"exporting {model_dir} to {fmt} ({quantize}) ..."):
        report = _export(fmt, model, out, quantize, representative, max_length, assets)

    if fmt == "tflite":
        runner = TFLiteRunner(report.path, num_threads=threads)
    elif fmt == "onnx":
        runner = OnnxRunner(report.path, num_threads=threads)
    else:
        runner = SavedModelRunner(report.path)
    if max_length:
        runner = _FixedLength(runner, max_length)

    check = verify(model, runner, batches)
    keras_f1 = artefact_f1 = None
    if test and label_map is not None:
        keras_f1 = evaluate_windows(model, test_sentences, test_windows, label_map)["f1"]
        artefact_f1 = evaluate_windows(_RunnerAsModel(runner), test_sentences, test_windows, label_map)["f1"]

    lat_len = max_length or min(length, config.max_position)
    one = model_inputs(names, 1, lat_len, config.vocab_size)
    keras_fn = tf.function(lambda x: model(x, training=False))
    keras_time = latency(keras_fn, one, warmup=3, runs=runs)
    artefact_time = latency(runner, one, warmup=3, runs=runs)
    keras_bytes = 4 * model.count_params()  # float32 parameters (the .h5 may also hold optimizer slots)

    summary = {
        "format": fmt,
        "quantize": quantize,
        "path": report.path,
        "size_bytes": report.size_bytes,
        "keras_weights_bytes": keras_bytes,
        "max_length": max_length,
        "verified_on": source,
        "n_tokens": check["n_tokens"],
        "max_abs_logit_diff": check["max_abs_diff"],
        "token_argmax_agreement": check["argmax_agreement"],
        "keras_entity_f1": keras_f1,
        "artefact_entity_f1": artefact_f1,
        "latency_length": lat_len,
        "latency_p50_ms": artefact_time["p50_ms"],
        "latency_p95_ms": artefact_time["p95_ms"],
        "keras_latency_p50_ms": keras_time["p50_ms"],
        "keras_latency_p95_ms": keras_time["p95_ms"],
        "assets": dict(report.assets),
        "notes": [n for n in [report.fallback, *report.notes] if n],
    }
    _print_summary(summary, model_dir)
    if json_path:
        atomic_write_json(json_path, summary)
    return summary


def _f1(value):
    return "-" if value is None else f"{value * 100:.2f}"


def _print_summary(s, model_dir):
    title = f"{s['format']} ({s['quantize']}) vs Keras"
    table = Table(title=title)
    for column in ("model", "size MB", "max |dlogit|", "argmax agree %", "entity F1", "p50 ms", "p95 ms", "x Keras"):
        table.add_column(column, justify="left" if column == "model" else "right")
    table.add_row(
        "Keras", f"{s['keras_weights_bytes'] / 1e6:.2f}", "0", "100.00", _f1(s["keras_entity_f1"]),
        f"{s['keras_latency_p50_ms']:.2f}", f"{s['keras_latency_p95_ms']:.2f}", "1.00",
    )
    speedup = s["keras_latency_p50_ms"] / s["latency_p50_ms"] if s["latency_p50_ms"] > 0 else float("inf")
    table.add_row(
        s["format"], f"{s['size_bytes'] / 1e6:.2f}", f"{s['max_abs_logit_diff']:.2e}",
        f"{s['token_argmax_agreement'] * 100:.2f}", _f1(s["artefact_entity_f1"]),
        f"{s['latency_p50_ms']:.2f}", f"{s['latency_p95_ms']:.2f}", f"{speedup:.2f}",
    )
    console.print(table)
    console.print(
        f"verified on {s['verified_on']} ({s['n_tokens']} tokens); latency at batch 1, length {s['latency_length']}; "
        f"Keras = {model_dir} (size: float32 parameters)",
        highlight=False, soft_wrap=True,
    )
    for note in s["notes"]:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    console.print(f"wrote {s['path']}", highlight=False, soft_wrap=True)
