"""``kerasllm bench latency``: time any artefact (Keras folder, .tflite, .onnx, SavedModel) the same way."""
import os
from typing import Optional

import typer
from rich.table import Table

from ._common import console, model_inputs, run_user_errors


def register(app):
    bench_app = typer.Typer(help="Measure models and exported artefacts.", no_args_is_help=True)
    bench_app.command("latency")(bench_latency)
    app.add_typer(bench_app, name="bench")


def bench_latency(
    model: str = typer.Option(..., help="A kerasllm model folder (Keras), a .tflite or .onnx file, or a SavedModel folder."),
    length: int = typer.Option(128, help="Sequence length (capped at the model's max_position for a Keras folder; a fixed-length artefact uses its own)."),
    batch_size: int = typer.Option(1, help="Batch size."),
    runs: int = typer.Option(50, help="Timed runs."),
    warmup: int = typer.Option(5, help="Untimed warm-up runs."),
    threads: Optional[int] = typer.Option(None, help="CPU threads of the runtime. \\[default: the runtime's own]"),
):
    """Latency (p50/p95 ms) and throughput (tokens/s) of one model or artefact on random token ids."""
    run_user_errors(measure_latency, model, length, batch_size, runs, warmup, threads)


def _kind(path):
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return "savedmodel"
        if os.path.isfile(os.path.join(path, "config.json")):
            return "keras"
    elif os.path.isfile(path):
        extension = os.path.splitext(path)[1].lower()
        if extension in (".tflite", ".onnx"):
            return extension[1:]
    if not os.path.exists(path):
        raise FileNotFoundError(f"--model {path}: no such file or folder")
    raise ValueError(
        f"--model {path}: unknown model type; expected a kerasllm model folder (config.json), a SavedModel "
        "folder (saved_model.pb), a .tflite or an .onnx file"
    )


def _vocab_size(path, kind):
    """Vocabulary size from the vocab.txt exported beside an artefact, or None."""
    vocab = _asset(path, kind, "vocab.txt")
    if not os.path.isfile(vocab):
        return None
    with open(vocab, encoding="utf-8") as f:
        return sum(1 for _ in f)


def _asset(path, kind, name):
    from kerasllm.export._common import sidecar_path

    return os.path.join(path, "assets.extra", name) if kind == "savedmodel" else sidecar_path(path, name)


def _is_text_model(path, kind):
    """True for a string-in artefact (kerasllm export --text writes text_model.json beside it)."""
    return kind in ("tflite", "savedmodel") and os.path.isfile(_asset(path, kind, "text_model.json"))


def _plain_words(path, kind):
    """Vocabulary tokens that are whole words of letters (each tokenizes to itself)."""
    with open(_asset(path, kind, "vocab.txt"), encoding="utf-8") as f:
        words = [w.rstrip("\n") for w in f]
    words = [w for w in words if w.isalpha() and w.isascii()]
    if not words:
        raise ValueError(f"{path}: its vocab.txt has no plain words to build a test text from")
    return words


def _set_tf_threads(threads):
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        return None
    except RuntimeError:
        return "--threads ignored: TensorFlow was already initialised in this process"


def _fixed_length(runner):
    """The artefact's fixed sequence length, or None if dynamic."""
    shapes = [shape for _, shape in getattr(runner, "_expected", {}).values() if shape is not None and len(shape) >= 2]
    for shape in shapes:
        if shape[1] not in (None, -1):
            return int(shape[1])
    return None


def measure_latency(path, length=128, batch_size=1, runs=50, warmup=5, threads=None):
    """Time ``path``; return ``{"kind", "length", "batch_size", "p50_ms", "p95_ms", "tokens_per_s"}``."""
    for option, value in (("--length", length), ("--batch-size", batch_size), ("--runs", runs), ("--threads", threads)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    if warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {warmup}")
    import numpy as np

    kind = _kind(path)
    notes = []
    inputs = None
    from kerasllm.export import OnnxRunner, SavedModelRunner, TFLiteRunner, latency

    if kind == "keras":
        import tensorflow as tf

        from kerasllm.models import load_pretrained

        if threads:
            notes.append(_set_tf_threads(threads))
        model = load_pretrained(path)
        config = model.kerasllm_config
        if length > config.max_position:
            notes.append(f"--length {length} capped at the model's max_position {config.max_position}")
            length = config.max_position
        names, vocab_size = list(model.input_names), config.vocab_size
        fn = tf.function(lambda x: model(x, training=False))
    elif _is_text_model(path, kind):
        from kerasllm.export import TextRunner

        if threads and kind == "savedmodel":
            notes.append(_set_tf_threads(threads))
        runner = TextRunner(path, num_threads=threads)
        words = _plain_words(path, kind)
        rng = np.random.default_rng(0)
        texts = [" ".join(rng.choice(words, size=max(1, length - 2))) for _ in range(batch_size)]
        notes.append(
            f"string-in model: each text is {max(1, length - 2)} random whole-word vocabulary tokens "
            "(one sub-word each), tokenized inside the model"
        )
        kind += " (text)"
        fn, inputs = runner.raw, texts
    else:
        if kind == "tflite":
            runner = TFLiteRunner(path, num_threads=threads)
        elif kind == "onnx":
            runner = OnnxRunner(path, num_threads=threads)
        else:
            if threads:
                notes.append(_set_tf_threads(threads))
            runner = SavedModelRunner(path)
        fixed = _fixed_length(runner)
        if fixed is not None and fixed != length:
            notes.append(f"the artefact has a fixed sequence length {fixed}; timed at {fixed}, not {length}")
            length = fixed
        names, fn = runner.input_names, runner
        vocab_size = _vocab_size(path, kind)
        if vocab_size is None:
            notes.append("no vocab.txt beside the artefact: random ids drawn from 5..99")
            vocab_size = 100
    if inputs is None:
        inputs = model_inputs(names, batch_size, length, vocab_size)
    try:
        timing = latency(fn, inputs, warmup=warmup, runs=runs)
    except (RuntimeError, Exception) as err:  # noqa: BLE001 - a runtime failing on these inputs is a user-level problem
        if isinstance(err, (ValueError, FileNotFoundError)):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} failed on a batch of {batch_size} x {length} tokens ({first}); "
            "is --length beyond the model's position table?"
        ) from None
    result = {
        "model": path,
        "kind": kind,
        "batch_size": batch_size,
        "length": length,
        "p50_ms": timing["p50_ms"],
        "p95_ms": timing["p95_ms"],
        "tokens_per_s": batch_size * length / (timing["p50_ms"] / 1000.0) if timing["p50_ms"] > 0 else float("inf"),
    }
    table = Table(title=f"latency over {runs} runs (after {warmup} warm-up)")
    for column in ("model", "kind", "batch", "length", "p50 ms", "p95 ms", "tokens/s"):
        table.add_column(column, justify="left" if column in ("model", "kind") else "right")
    table.add_row(
        path, kind, str(batch_size), str(length), f"{result['p50_ms']:.2f}", f"{result['p95_ms']:.2f}",
        f"{result['tokens_per_s']:,.0f}",
    )
    console.print(table)
    console.print(
        f"p50 {result['p50_ms']:.3f} ms  p95 {result['p95_ms']:.3f} ms  {result['tokens_per_s']:.0f} tokens/s",
        highlight=False, soft_wrap=True,
    )
    for note in notes:
        if note:
            console.print(f"note: {note}", highlight=False, soft_wrap=True)
    return result
