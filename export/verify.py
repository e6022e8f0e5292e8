"""Measure an exported artefact against its Keras model: agreement, error, latency, a table.

Example:

>>> rows = []
>>> for name, runner in [("tflite", TFLiteRunner("ner.tflite"))]:  # doctest: +SKIP
...     row = {"format": name, **verify(model, runner, batches), **latency(runner, batches[0])}
...     rows.append(row)
>>> print(format_table(rows))  # doctest: +SKIP
"""
import time

import numpy as np

from kerasllm.export._common import outputs_as_dict


def _primary(names, output):
    if output is not None:
        if output not in names:
            raise ValueError(f"output {output!r} not among the model outputs {sorted(names)}")
        return output
    return "logits" if "logits" in names else sorted(names)[0]


def verify(keras_model, runner, inputs_list, output=None, mask_name="attention_mask"):
    """Compare ``runner`` with ``keras_model`` on every input dict of ``inputs_list``.

    Args:
        keras_model: the reference model (called with ``training=False``).
        runner: any callable ``dict of arrays -> dict of arrays`` (TFLiteRunner,
            OnnxRunner, SavedModelRunner).
        inputs_list: a list of input dicts (or one dict).
        output: which output to score argmaxes on (default ``logits``, or the
            first output name).
        mask_name: the padding-mask input; its zeros are left out of token-level
            agreement.

    Returns:
        ``{"max_abs_diff", "argmax_agreement", "n_tokens", "n_examples"}``:
        ``max_abs_diff`` over every element of every shared output;
        ``argmax_agreement`` the fraction of non-padding tokens (``[b, t, c]``
        outputs) or of examples (``[b, c]`` outputs) whose argmaxes agree;
        ``n_tokens`` how many positions (tokens or examples) were scored.
    """
    if isinstance(inputs_list, dict):
        inputs_list = [inputs_list]
    max_diff, agree, scored, examples = 0.0, 0, 0, 0
    primary = None
    for index, inputs in enumerate(inputs_list):
        reference = {
            k: np.asarray(v) for k, v in outputs_as_dict(keras_model, keras_model(inputs, training=False)).items()
        }
        got = runner(inputs)
        missing = sorted(set(reference) - set(got))
        if missing:
            raise ValueError(
                f"verify: the runner's outputs {sorted(got)} lack {missing} (inputs_list[{index}])"
            )
        primary = _primary(reference, output)
        for name, want in reference.items():
            have = np.asarray(got[name])
            if have.shape != want.shape:
                raise ValueError(
                    f"verify: output {name!r} has shape {have.shape} from the runner but "
                    f"{want.shape} from Keras (inputs_list[{index}])"
                )
            diff = np.max(np.abs(have.astype(np.float64) - want.astype(np.float64))) if want.size else 0.0
            max_diff = max(max_diff, float(diff))
        want, have = reference[primary], np.asarray(got[primary])
        same = np.argmax(want, axis=-1) == np.argmax(have, axis=-1)
        if want.ndim >= 3 and mask_name in inputs:
            mask = np.asarray(inputs[mask_name]).astype(bool)
            if mask.shape == same.shape:
                same = same[mask]
        agree += int(np.sum(same))
        scored += int(np.size(same))
        examples += int(want.shape[0]) if want.ndim else 1
    return {
        "max_abs_diff": max_diff,
        "argmax_agreement": agree / scored if scored else float("nan"),
        "n_tokens": scored,
        "n_examples": examples,
    }


def latency(runner_or_callable, inputs, warmup=3, runs=20):
    """Wall-clock latency of ``runner_or_callable(inputs)``: ``{"p50_ms", "p95_ms"}``.

    Runs ``warmup`` untimed calls first, then ``runs`` timed ones.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for _ in range(max(0, warmup)):
        runner_or_callable(inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner_or_callable(inputs)
        times.append((time.perf_counter() - start) * 1000.0)
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p95_ms": float(np.percentile(times, 95)),
    }


def _cell(value):
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return "" if value is None else str(value)


def format_table(rows, columns=None):
    """A plain fixed-width table of ``rows`` (dicts); numbers right-aligned.

    ``columns`` picks and orders the columns (default: every key, first-seen order).
    """
    rows = list(rows)
    if columns is None:
        columns = []
        for row in rows:
            for key in row:
                if key not in columns:
                    columns.append(key)
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(c), (int, float, np.integer, np.floating)) or row.get(c) is None for row in rows)
        for c in columns
    ]
    widths = [max([len(str(c))] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values):
        parts = [
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ]
        return "  ".join(parts).rstrip()

    out = [line([str(c) for c in columns]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)
