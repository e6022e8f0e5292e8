"""Report rows of compressed models: accuracy, parameters, size and latency; merged tables and a plot.

Every ``kerasllm compress ...`` command ends by writing one row,
``OUT/compression_row.json``::

    {"name": "prune 50%", "method": "prune", "settings": {...},
     "metric": "entity_f1", "keras_score": 0.47, "tflite_score": 0.47,
     "params": 4386181, "nonzero_params": 2285061,
     "tflite_quantize": "none", "tflite_bytes": 17571548, "tflite_gzip_bytes": 9853120,
     "latency_p50_ms": 1.9, "latency_p95_ms": 2.4, "latency_length": 64, "latency_threads": 1,
     "model_dir": "OUT/model", "tflite_path": "OUT/model.tflite", "seconds": 81.2}

:func:`merge_rows` reads rows from folders, :func:`markdown_table` /
:func:`write_report` write the merged table (markdown), the rows (JSON) and a
scatter plot of score against gzip size, each point labelled with its latency.
"""
import json
import os

from kerasllm._io import atomic_write_json, atomic_write_text, atomic_write_with

ROW_FILE = "compression_row.json"
MB = 1e6


def write_row(out_dir, row):
    """Write ``row`` to ``out_dir/compression_row.json``; return the path."""
    path = os.path.join(out_dir, ROW_FILE)
    atomic_write_json(path, row)
    return path


def read_rows(paths):
    """Rows from folders (their ``compression_row.json``) or JSON files (one row or a list of rows)."""
    rows = []
    for path in paths:
        path = os.fspath(path)
        file = os.path.join(path, ROW_FILE) if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"{path}: no {ROW_FILE} here (run a `kerasllm compress` command with --out {path} first)"
            )
        with open(file, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{file}: not a JSON file ({err})") from None
        found = data if isinstance(data, list) else [data]
        for row in found:
            if not isinstance(row, dict) or "name" not in row:
                raise ValueError(f"{file}: not a compression report row (no 'name')")
        rows.extend(found)
    return rows


def baseline_row(rows, baseline=None):
    """The row others are compared with: the one named ``baseline``, else the first ``base`` row, else the first."""
    if not rows:
        return None
    if baseline is not None:
        for row in rows:
            if row["name"] == baseline:
                return row
        raise ValueError(f"--baseline {baseline!r}: no row has that name; names: {[r['name'] for r in rows]}")
    return next((row for row in rows if row.get("method") == "base"), rows[0])


def _score(row):
    """The score a row is judged by: its TFLite model's, else its Keras model's."""
    value = row.get("tflite_score")
    return value if value is not None else row.get("keras_score")


def _fmt(value, spec, scale=None):
    if value is None:
        return "-"
    return format(value if scale is None else value * scale, spec)


COLUMNS = (
    "model",
    "score (Keras)",
    "score (TFLite)",
    "Δ vs base",
    "parameters",
    "non-zero",
    "TFLite MB",
    "gzip MB",
    "gzip × base",
    "p50 ms",
)


def table_rows(rows, baseline=None):
    """The cells of the merged table (strings), one list per row, in :data:`COLUMNS` order."""
    base = baseline_row(rows, baseline)
    base_score = _score(base) if base else None
    base_gzip = base.get("tflite_gzip_bytes") if base else None
    cells = []
    for row in rows:
        score = _score(row)
        delta = None if score is None or base_score is None else score - base_score
        ratio = None
        if row.get("tflite_gzip_bytes") and base_gzip:
            ratio = row["tflite_gzip_bytes"] / base_gzip
        cells.append(
            [
                row["name"],
                _fmt(row.get("keras_score"), ".2f", 100),
                _fmt(row.get("tflite_score"), ".2f", 100),
                _fmt(delta, "+.2f", 100),
                _fmt(row.get("params"), ","),
                _fmt(row.get("nonzero_params"), ","),
                _fmt(row.get("tflite_bytes"), ".2f", 1 / MB),
                _fmt(row.get("tflite_gzip_bytes"), ".2f", 1 / MB),
                _fmt(ratio, ".2f"),
                _fmt(row.get("latency_p50_ms"), ".2f"),
            ]
        )
    return cells


def markdown_table(rows, baseline=None):
    """The merged rows as a markdown table (scores in points, ``Δ`` against the baseline row)."""
    metric = next((row.get("metric") for row in rows if row.get("metric")), "score")
    header = [c.replace("score", metric.replace("_", " ")) for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for cells in table_rows(rows, baseline):
        lines.append("| " + " | ".join(cells) + " |")
    base = baseline_row(rows, baseline)
    notes = [
        "",
        f"Δ vs base: TFLite score minus that of `{base['name']}` (points). Sizes are the TFLite files; "
        "gzip level 9. Latency: TFLite at batch 1"
        + (
            f", length {base.get('latency_length')}, {base.get('latency_threads')} thread(s)."
            if base and base.get("latency_length")
            else "."
        ),
    ]
    return "\n".join(lines + notes) + "\n"


def plot(rows, path, title=None):
    """Scatter of score (TFLite) against gzip size, points labelled ``name (p50 ms)``; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if _score(r) is not None and r.get("tflite_gzip_bytes")]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for row in points:
        x, y = row["tflite_gzip_bytes"] / MB, _score(row) * 100
        ax.scatter([x], [y], s=36)
        latency = row.get("latency_p50_ms")
        label = row["name"] + (f" ({latency:.1f} ms)" if latency is not None else "")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    metric = next((r.get("metric") for r in rows if r.get("metric")), "score").replace("_", " ")
    ax.set_xlabel("TFLite size, gzip (MB)")
    ax.set_ylabel(f"{metric} (TFLite, points)")
    ax.set_title(title or f"{metric} against size (labels: latency p50 at batch 1)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def write_report(rows, out_prefix, baseline=None, title=None):
    """Write ``<prefix>.md``, ``<prefix>.json`` and ``<prefix>.png``; return their paths."""
    folder = os.path.dirname(os.path.abspath(out_prefix))
    os.makedirs(folder, exist_ok=True)
    md, js, png = (f"{out_prefix}.{ext}" for ext in ("md", "json", "png"))
    atomic_write_text(md, markdown_table(rows, baseline))
    atomic_write_json(js, rows)
    plot(rows, png, title)
    return {"markdown": md, "json": js, "png": png}
