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
