"""``kerasllm export tflite|onnx|savedmodel``: export a model folder, then measure the artefact against Keras.

The pieces are reusable (``bench/export_figures.py`` and ``bench/export_bench.py``
call them): :func:`prepare` loads a model folder and the verification data once,
:func:`export_artefact` writes one artefact, :func:`measure` compares it with Keras
(logit difference, token argmax agreement, entity F1, size, latency), and
:func:`export_text` / :func:`measure_text` do the same for string-in models.
"""
import dataclasses
import os
import tempfile
from typing import Optional

import typer
from rich.table import Table

from ._common import console, model_inputs, require_file, run_user_errors

QUANTIZE = {
    "tflite": ("none", "float16", "dynamic", "int8", "int16x8"),
    "onnx": ("none", "dynamic", "float16"),
    "savedmodel": ("none",),
}
TEXT_QUANTIZE = {"tflite": ("none", "float16", "dynamic"), "savedmodel": ("none",)}
CALIBRATION_WINDOWS = 200
VERIFY_WINDOWS = 256
OUT_HELP = {
    "tflite": "The .tflite file to write; labels.json and vocab.txt go beside it as <stem>.labels.json, <stem>.vocab.txt.",
    "onnx": "The .onnx file to write; labels.json and vocab.txt go beside it as <stem>.labels.json, <stem>.vocab.txt.",
    "savedmodel": "The SavedModel folder to write; labels.json and vocab.txt go to <out>/assets.extra/.",
}
DOCS = {
    "tflite": "Export to TFLite (float32, float16, dynamic-range, int8 (layer norms in float unless --int8-layer-norm) or int16x8; --text: raw strings in) and verify it "
    "against Keras.",
    "onnx": "Export to ONNX (float32, onnxruntime dynamic int8, or float16 for GPUs) and verify it against Keras.",
    "savedmodel": "Export to a TensorFlow SavedModel (serving_default; --text: raw strings in) and verify it "
    "against Keras.",
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
            help=f"CoNLL file: its first {CALIBRATION_WINDOWS} windows calibrate int8/int16 activations (needed by "
            "--quantize int8 and int16x8) and, without --test, are the verification inputs. \\[default: none]",
        ),
        max_length: Optional[int] = typer.Option(
            None,
            help="Fix the artefact's sequence length (at most the model's max_position); with --text, the "
            "sub-words kept per text (longer texts are truncated). \\[default: dynamic; --text: max_position]",
        ),
        test: Optional[str] = typer.Option(
            None,
            help="CoNLL file: verify on its windows and compare entity F1 of Keras and the artefact (--text: "
            "compare entities on its first --text-sentences sentences). "
            "\\[default: none; verify on --calibration windows or synthetic inputs, no F1]",
        ),
        threads: Optional[int] = typer.Option(None, help="CPU threads of the runtime. \\[default: the runtime's own]"),
        length: int = typer.Option(128, help="Sequence length of the batch-1 latency measurement (capped at the model's max_position)."),
        runs: int = typer.Option(20, help="Timed runs of the latency measurement (after 3 warm-up runs)."),
        json_path: Optional[str] = typer.Option(None, "--json", help="Also write the verification summary to this JSON file. \\[default: none]"),
        text: bool = typer.Option(
            False,
            "--text/--no-text",
            help="Export a string-in model (tflite, savedmodel): the WordPiece tokenizer (TF Text FastWordpiece) "
            "and the entity decoding inside the graph; raw UTF-8 text in, entities or class scores out.",
        ),
        text_sentences: int = typer.Option(
            50, help="With --text: how many sentences of --test (or --calibration) to compare with `kerasllm predict`."
        ),
        float_layer_norm: Optional[bool] = typer.Option(
            None,
            "--float-layer-norm/--int8-layer-norm",
            help="tflite --quantize int8: keep the ops inside each layer norm in float (mean, variance, rsqrt; "
            "more accurate, same size) or make them int8 too (a full-integer model, for integer-only "
            "accelerators). \\[default: float]",
        ),
    ):
        run_user_errors(
            export_and_verify,
            fmt,
            model_dir=model, out=out, quantize=quantize, calibration=calibration, max_length=max_length,
            test=test, threads=threads, length=length, runs=runs, json_path=json_path, text=text,
            text_sentences=text_sentences, float_layer_norm=float_layer_norm,
        )

    command.__doc__ = DOCS[fmt]
    command.__name__ = f"export_{fmt}"
    return command


class FixedLength:
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


def _check_options(fmt, model_dir, quantize, calibration, test, max_length, threads, length, runs, text=False):
    modes = TEXT_QUANTIZE.get(fmt, ()) if text else QUANTIZE[fmt]
    if text and fmt not in TEXT_QUANTIZE:
        raise ValueError(
            f"--text is available for {' and '.join(TEXT_QUANTIZE)}: {fmt} has no kernels for TF Text's tokenizer ops"
        )
    if quantize not in modes:
        what = f"{fmt} --text" if text else fmt
        raise ValueError(f"--quantize {quantize!r} is not available for {what}; choose one of: {', '.join(modes)}")
    if quantize in ("int8", "int16x8") and calibration is None:
        raise ValueError(
            f"--quantize {quantize} needs --calibration FILE: a CoNLL file whose sentences calibrate the "
            f"integer activation ranges (its first {CALIBRATION_WINDOWS} windows are used)"
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


def _synthetic_batches(names, vocab_size, max_len, count=8, seed=0):
    """``count`` single-example batches of random lengths ``[CLS] ids [SEP]``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    batches = []
    for i in range(count):
        n = int(rng.integers(4, max_len + 1))
        batches.append(model_inputs(names, 1, n, vocab_size, seed=seed + i))
    return batches


@dataclasses.dataclass
class ExportJob:
    """A loaded model folder and its verification data, shared by every artefact made from it."""

    model_dir: str
    config: object
    model: object
    tokenizer: object
    label_map: object
    batches: list  # verification input dicts
    source: str  # where ``batches`` came from
    test_sentences: list = None
    test_windows: list = None
    calibration_sentences: list = None
    representative: list = None  # int8 calibration input dicts
    keras_f1: float = None
    keras_latency: dict = None

    @property
    def assets(self):
        assets = {}
        if self.label_map is not None:
            assets["labels.json"] = self.label_map.labels
        if self.tokenizer is not None:
            assets["vocab.txt"] = os.path.join(self.model_dir, "vocab.txt")
        return assets

    @property
    def labels(self):
        return None if self.label_map is None else self.label_map.labels


def prepare(model_dir, calibration=None, test=None, max_length=None):
    """Load ``model_dir`` and the verification/calibration windows of ``test``/``calibration`` (CoNLL)."""
    import numpy as np

    from kerasllm.data import LabelMap, read_conll
    from kerasllm.data.ner_dataset import bucket_batches, encode_sentences, pad_batch
    from kerasllm.models import load_pretrained
    from kerasllm.models.config import TransformerConfig
    from kerasllm.tokenizers import WordPieceTokenizer

    config = TransformerConfig.load(os.path.join(model_dir, "config.json"))
    model = load_pretrained(model_dir)
    tokenizer = WordPieceTokenizer.load(model_dir) if os.path.isfile(os.path.join(model_dir, "vocab.txt")) else None
    labels_path = os.path.join(model_dir, "labels.json")
    label_map = LabelMap.from_json(labels_path) if os.path.isfile(labels_path) else None
    names = list(model.input_names)
    seq = max_length or min(config.max_position, 512)
    if (test or calibration) and tokenizer is None:
        raise FileNotFoundError(f"--model {model_dir}: vocab.txt is missing; --test/--calibration need the tokenizer")

    def padded(windows, indices):
        inputs = pad_batch(windows, indices, multiple=1)[0]
        return {k: v for k, v in inputs.items() if k in names}

    job = ExportJob(model_dir, config, model, tokenizer, label_map, [], "")
    calib_windows = None
    if calibration:
        job.calibration_sentences = read_conll(calibration)
        calib_windows = encode_sentences(job.calibration_sentences, tokenizer, None, seq)
        count = min(CALIBRATION_WINDOWS, len(calib_windows))
        job.representative = [padded(calib_windows, [i]) for i in range(count)]
        if max_length:
            job.representative = [FixedLength(lambda x: x, max_length)(r) for r in job.representative]
    if test:
        job.test_sentences = read_conll(test)
        job.test_windows = encode_sentences(job.test_sentences, tokenizer, None, seq)
        verify_windows, source = job.test_windows, f"{len(job.test_windows)} windows of {test}"
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
        job.batches = [padded(verify_windows, idx) for idx in bucket_batches(lengths, 16)]
    else:
        job.batches = _synthetic_batches(names, config.vocab_size, seq)
    job.source = source
    return job


def export_artefact(job, fmt, out, quantize="none", max_length=None, float_layer_norm=None):
    """Write one artefact of ``job.model``; returns the :class:`ExportReport`.

    ``float_layer_norm``: tflite int8 only (``None``: export_tflite's default, float).
    """
    from kerasllm.export import (
        convert_onnx_float16,
        export_onnx,
        export_savedmodel,
        export_tflite,
        quantize_onnx_dynamic,
    )
    from kerasllm.export._common import check_assets, sidecar_path, write_assets

    model, assets = job.model, job.assets
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    if fmt == "tflite":
        representative = job.representative if quantize in ("int8", "int16x8") else None
        extra = {} if float_layer_norm is None else {"float_layer_norm": float_layer_norm}
        return export_tflite(
            model, out, quantize=quantize, representative_data=representative, max_length=max_length, assets=assets,
            **extra,
        )
    if fmt == "savedmodel":
        return export_savedmodel(model, out, max_length=max_length, assets=assets)
    if quantize == "none":
        return export_onnx(model, out, max_length=max_length, assets=assets)
    checked = check_assets(assets)
    convert = quantize_onnx_dynamic if quantize == "dynamic" else convert_onnx_float16
    with tempfile.TemporaryDirectory(dir=parent, prefix=".kerasllm-export-") as tmp:
        float_report = export_onnx(model, os.path.join(tmp, "float.onnx"), max_length=max_length)
        report = convert(float_report.path, out)
    report.assets = write_assets(checked, lambda name: sidecar_path(out, name))
    report.notes.append(f"float ONNX before {quantize}: {float_report.size_bytes / 1e6:.2f} MB")
    return report


def open_runner(fmt, path, threads=None, max_length=None):
    """The runner of an artefact (padding to a fixed length when ``max_length`` is set)."""
    from kerasllm.export import OnnxRunner, SavedModelRunner, TFLiteRunner

    if fmt == "tflite":
        runner = TFLiteRunner(path, num_threads=threads)
    elif fmt == "onnx":
        runner = OnnxRunner(path, num_threads=threads)
    else:
        runner = SavedModelRunner(path)
    return FixedLength(runner, max_length) if max_length else runner


def keras_reference(job, length=128, runs=20):
    """Keras entity F1 on the test windows and batch-1 latency, computed once per job."""
    import tensorflow as tf

    from kerasllm.export import latency
    from kerasllm.training.ner_finetune import evaluate_windows

    if job.keras_f1 is None and job.test_sentences is not None and job.label_map is not None:
        job.keras_f1 = evaluate_windows(job.model, job.test_sentences, job.test_windows, job.label_map)["f1"]
    if job.keras_latency is None:
        one = model_inputs(list(job.model.input_names), 1, length, job.config.vocab_size)
        keras_fn = tf.function(lambda x: job.model(x, training=False))
        job.keras_latency = latency(keras_fn, one, warmup=3, runs=runs)
    return job.keras_f1, job.keras_latency


def measure(job, fmt, report, quantize="none", threads=None, length=128, runs=20, max_length=None, runner=None):
    """Compare the artefact of ``report`` with ``job.model``; returns the summary dict."""
    from kerasllm.export import latency, verify
    from kerasllm.training.ner_finetune import _RunnerAsModel, evaluate_windows

    runner = runner or open_runner(fmt, report.path, threads, max_length)
    check = verify(job.model, runner, job.batches)
    lat_len = max_length or min(length, job.config.max_position)
    keras_f1, keras_time = keras_reference(job, lat_len, runs)
    artefact_f1 = None
    if keras_f1 is not None:
        artefact_f1 = evaluate_windows(_RunnerAsModel(runner), job.test_sentences, job.test_windows, job.label_map)["f1"]
    one = model_inputs(list(job.model.input_names), 1, lat_len, job.config.vocab_size)
    artefact_time = latency(runner, one, warmup=3, runs=runs)
    return {
        "format": fmt,
        "quantize": quantize,
        "text": False,
        "path": report.path,
        "size_bytes": report.size_bytes,
        "keras_weights_bytes": 4 * job.model.count_params(),  # float32 parameters (the .h5 may hold optimizer slots)
        "max_length": max_length,
        "verified_on": job.source,
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


# ------------------------------------------------------------ every artefact of a model

ARTEFACTS = (
    ("tflite", "none"),
    ("tflite", "float16"),
    ("tflite", "dynamic"),
    ("tflite", "int8"),
    ("tflite", "int16x8"),
    ("onnx", "none"),
    ("onnx", "dynamic"),
    ("onnx", "float16"),
    ("savedmodel", "none"),
)
_EXTENSIONS = {"tflite": ".tflite", "onnx": ".onnx", "savedmodel": ""}


def artefact_path(out_dir, fmt, quantize, text=False):
    """``<out_dir>/<fmt>-<quantize>[-text]<ext>``: where the bench scripts keep each artefact."""
    return os.path.join(out_dir, f"{fmt}-{quantize}{'-text' if text else ''}{_EXTENSIONS[fmt]}")


def ensure_artefact(job, fmt, quantize, out_dir, reuse=False, text=False):
    """Export one artefact into ``out_dir`` (or, with ``reuse``, take the one already there).

    The bench scripts' ``("tflite", "int8")`` artefact is the full-integer one (layer norms
    in int8 too, ``float_layer_norm=False``), as their "full int8" rows say.
    """
    from kerasllm.export import ExportReport
    from kerasllm.export._common import file_size

    path = artefact_path(out_dir, fmt, quantize, text)
    if reuse and os.path.exists(path):
        return ExportReport(path=path, format=fmt, size_bytes=file_size(path), quantize=quantize,
                            notes=["reused from an earlier run"])
    if text:
        return export_text(job, fmt, path, quantize)
    return export_artefact(job, fmt, path, quantize, float_layer_norm=False if (fmt, quantize) == ("tflite", "int8") else None)


# ------------------------------------------------------------------ string-in models


def verification_texts(job, count):
    """Raw texts to compare a string-in model on: ``--test`` (else ``--calibration``) sentences, words
    joined by spaces, or kerasllm's synthetic test sentences."""
    sentences = job.test_sentences or job.calibration_sentences
    if not sentences:
        from kerasllm.data.synthetic_ner import generate_ner_corpus

        sentences = generate_ner_corpus(seed=0, num_train=0, num_dev=0, num_test=count)["test"]
    return [" ".join(s.tokens) for s in sentences[:count]]


def export_text(job, fmt, out, quantize="none", max_length=None):
    """Write a string-in artefact (``tflite`` or ``savedmodel``) of ``job.model``."""
    from kerasllm.export import export_text_savedmodel, export_text_tflite

    if job.tokenizer is None:
        raise FileNotFoundError(f"--model {job.model_dir}: vocab.txt is missing; --text puts the tokenizer in the graph")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if fmt == "tflite":
        return export_text_tflite(job.model, job.tokenizer, out, job.labels, max_length, quantize)
    return export_text_savedmodel(job.model, job.tokenizer, out, job.labels, max_length)


def measure_text(job, fmt, report, quantize="none", threads=None, runs=20, max_length=None, count=50):
    """Compare a string-in artefact with ``kerasllm predict`` on ``count`` raw texts; time it per text."""
    import time

    import numpy as np

    from kerasllm.export import TextRunner, latency, tflite_ops, verify_text
    from kerasllm.training.ner_finetune import predict_entities

    runner = TextRunner(report.path, num_threads=threads)
    texts = verification_texts(job, count)
    check = verify_text(runner, job.model, job.tokenizer, texts, job.labels, max_length)
    longest = max(texts, key=len) if texts else "a"
    artefact_time = latency(lambda t: runner(t), [longest], warmup=3, runs=runs)
    reference_time = None
    if job.label_map is not None and runner.task == "token_classification":
        from kerasllm.data import LabelMap

        label_map = LabelMap(job.labels)
        times = []
        for _ in range(max(3, runs // 4)):
            start = time.perf_counter()
            predict_entities(job.model, job.tokenizer, label_map, [longest], max_length=max_length or 512)
            times.append((time.perf_counter() - start) * 1000.0)
        reference_time = float(np.median(times))
    ops = sorted(tflite_ops(report.path)) if fmt == "tflite" else []
    return {
        "format": fmt,
        "quantize": quantize,
        "text": True,
        "path": report.path,
        "size_bytes": report.size_bytes,
        "max_length": max_length or job.config.max_position,
        "verified_on": f"{len(texts)} raw texts",
        "n_texts": check["n_texts"],
        "identical_texts": check["identical_texts"],
        "text_agreement": check["agreement"],
        "n_entities": check["n_entities"],
        "max_score_diff": check["max_score_diff"],
        "latency_text_chars": len(longest),
        "latency_p50_ms": artefact_time["p50_ms"],
        "latency_p95_ms": artefact_time["p95_ms"],
        "python_pipeline_p50_ms": reference_time,
        "custom_ops": [op for op in ops if not op.replace("_", "").isupper()],
        "assets": dict(report.assets),
        "notes": list(report.notes),
    }


def _print_text_summary(s, model_dir):
    table = Table(title=f"{s['format']} --text ({s['quantize']}) vs kerasllm predict")
    for column in ("model", "size MB", "texts identical", "entities", "max |dscore|", "p50 ms", "p95 ms"):
        table.add_column(column, justify="left" if column == "model" else "right")
    reference = s["python_pipeline_p50_ms"]
    table.add_row(
        "kerasllm predict (Python + Keras)", "", "", str(s["n_entities"]), "0",
        "-" if reference is None else f"{reference:.2f}", "",
    )
    table.add_row(
        f"{s['format']} string-in", f"{s['size_bytes'] / 1e6:.2f}",
        f"{s['identical_texts']}/{s['n_texts']} ({s['text_agreement'] * 100:.1f}%)", "",
        f"{s['max_score_diff']:.2e}", f"{s['latency_p50_ms']:.2f}", f"{s['latency_p95_ms']:.2f}",
    )
    lines = [
        f"compared on {s['verified_on']} (max {s['max_length']} sub-words each); latency per text at batch 1 on the "
        f"longest ({s['latency_text_chars']} characters); Keras = {model_dir}"
    ]
    if s["custom_ops"]:
        lines.append(f"custom ops: {', '.join(s['custom_ops'])}")
    _print_table(table, lines, s)


def _print_table(table, lines, s):
    """The table, its explanation lines, the notes and the path written."""
    console.print(table)
    for line in lines + [f"note: {note}" for note in s["notes"]] + [f"wrote {s['path']}"]:
        console.print(line, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------ the command


def export_and_verify(fmt, model_dir, out, quantize="none", calibration=None, max_length=None, test=None,
                      threads=None, length=128, runs=20, json_path=None, text=False, text_sentences=50,
                      float_layer_norm=None):
    """Export ``model_dir`` to ``out`` and return (and print) the verification summary dict."""
    _check_options(fmt, model_dir, quantize, calibration, test, max_length, threads, length, runs, text)
    if float_layer_norm is not None and (fmt, quantize) != ("tflite", "int8"):
        flag = "--float-layer-norm" if float_layer_norm else "--int8-layer-norm"
        raise ValueError(f"{flag} applies to `export tflite --quantize int8` only (got {fmt} --quantize {quantize})")
    if fmt in ("tflite", "onnx") and os.path.isdir(out):
        raise ValueError(f"--out {out} is a folder; give the {fmt} file to write")
    if text_sentences < 1:
        raise ValueError(f"--text-sentences must be >= 1, got {text_sentences}")

    from kerasllm._io import atomic_write_json

    job = prepare(model_dir, calibration, test, None if text else max_length)
    if text:
        with console.status(f"exporting {model_dir} to a string-in {fmt} ({quantize}) ..."):
            report = export_text(job, fmt, out, quantize, max_length)
        summary = measure_text(job, fmt, report, quantize, threads, runs, max_length, text_sentences)
        _print_text_summary(summary, model_dir)
    else:
        with console.status(f"exporting {model_dir} to {fmt} ({quantize}) ..."):
            report = export_artefact(job, fmt, out, quantize, max_length, float_layer_norm)
        summary = measure(job, fmt, report, quantize, threads, length, runs, max_length)
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
    _print_table(table, [
        f"verified on {s['verified_on']} ({s['n_tokens']} tokens); latency at batch 1, length {s['latency_length']}; "
        f"Keras = {model_dir} (size: float32 parameters)"
    ], s)
