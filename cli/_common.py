"""Pieces shared by the CLI commands: the console and the user-error wrapper."""
import os

import typer
from rich.console import Console

console = Console()


def run_user_errors(fn, *args, **kwargs):
    """Run ``fn``; errors a user can cause end in one red line and exit code 2, not a traceback.

    Set ``KERASLLM_DEBUG=1`` to see the full traceback instead.
    """
    try:
        return fn(*args, **kwargs)
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("KERASLLM_DEBUG"):
            raise
        console.print(f"[red]error:[/red] {err}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(2)


def require_file(path, option):
    """Raise a FileNotFoundError naming ``option`` unless ``path`` is a file."""
    if path is not None and not os.path.isfile(path):
        raise FileNotFoundError(f"{option} {path}: no such file")


def read_texts(texts, input_path, fmt, verb="process"):
    """The texts to run on: ``texts`` then the lines of ``input_path``; checks ``--format``."""
    if fmt not in ("table", "jsonl"):
        raise ValueError(f"--format {fmt!r}: choose table or jsonl")
    require_file(input_path, "--input")
    texts = list(texts or [])
    if input_path:
        with open(input_path, encoding="utf-8") as f:
            texts += [line.rstrip("\r\n") for line in f]
    if not texts:
        raise ValueError(f"no text to {verb}: pass texts as arguments or --input FILE")
    return texts


def report_scores(summary, report, headline, out, record):
    """Print an evaluation: a summary line, the report table, a headline; write ``record`` to ``out``."""
    from kerasllm._io import atomic_write_json

    console.print(summary, highlight=False, soft_wrap=True)
    typer.echo(report)
    typer.echo(headline)
    if out:
        atomic_write_json(out, record)
        console.print(f"wrote {out}", highlight=False, soft_wrap=True)


def capped_max_length(model, max_length):
    """``--max-length`` checked (>= 4) and capped at the model's ``max_position``."""
    if max_length < 4:
        raise ValueError(f"--max-length must be >= 4, got {max_length}")
    return min(max_length, model.kerasllm_config.max_position)


def model_inputs(names, batch_size, length, vocab_size, seed=0, low_id=5):
    """Synthetic int32 inputs for ``names``: random ids in ``[low_id, vocab_size)``, full masks."""
    import numpy as np

    rng = np.random.default_rng(seed)
    high = max(vocab_size, low_id + 1)
    inputs = {}
    for name in names:
        if name == "input_ids":
            inputs[name] = rng.integers(low_id, high, size=(batch_size, length)).astype(np.int32)
        elif name == "attention_mask":
            inputs[name] = np.ones((batch_size, length), np.int32)
        else:
            inputs[name] = np.zeros((batch_size, length), np.int32)
    return inputs
