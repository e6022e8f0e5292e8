"""Time and peak memory of full vs sliding-window attention as the sequence grows, with fitted exponents.

    /work/venv/bin/python bench/attention_scaling.py [--lengths 512 1024 2048 4096 8192] [--window 256]
        [--repeats 3] [--layers 6] [--out bench/attention_scaling.png] [--json OUT]

Two subjects, each at every length, batch 1, inference (``training=False``) in a ``tf.function``:
one :class:`kerasllm.layers.MultiHeadAttention` (hidden 384, 12 heads) and a full encoder
forward (``kerasllm.models.bert_encoder`` of the MiniLM shape: ``--layers`` blocks, hidden 384,
FFN 1536, positions = the longest length). Each (subject, attention type, length) runs in a fresh
process: peak memory is the growth of the process's peak resident set size (``ru_maxrss``) over
its size just before the first call (weights and inputs already allocated), time is the median of
``--repeats`` calls after that first (tracing) call. The growth exponent is the least-squares slope
of log(value) against log(n) from n = 1024 to the longest length. At n = 1024 the sliding-window
layer is also compared with the full layer given the equivalent banded mask (same weights): the
largest absolute difference of the outputs.
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HIDDEN, HEADS, FFN, VOCAB = 384, 12, 1536, 30522
SUBJECTS = ("layer", "encoder")
TYPES = ("full", "sliding_window")


def _rss_mb():
    """Current resident set size (MB) from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(subject, attention_type, n, window, repeats, layers):
    """One measurement in this process: ``{"seconds", "peak_mb"}``."""
    import numpy as np
    import tensorflow as tf

    from kerasllm.layers import MultiHeadAttention
    from kerasllm.models import bert_encoder, get_preset

    rng = np.random.default_rng(0)
    if subject == "layer":
        layer = MultiHeadAttention(HEADS, attention_type=attention_type, attention_window=window)
        x = tf.constant(rng.normal(size=(1, n, HIDDEN)).astype(np.float32))
        mask = tf.ones([1, n], tf.int32)
        layer.build(x.shape)
        fn = tf.function(lambda: layer(x, attention_mask=mask, training=False))
    else:
        config = get_preset(
            "bert-base", num_layers=layers, hidden_size=HIDDEN, num_heads=HEADS, intermediate_size=FFN,
            vocab_size=VOCAB, max_position=n, attention_type=attention_type, attention_window=window,
        )
        model = bert_encoder(config)
        ids = tf.constant(rng.integers(1, VOCAB, size=(1, n)).astype(np.int32))
        inputs = {"input_ids": ids, "attention_mask": tf.ones_like(ids), "token_type_ids": tf.zeros_like(ids)}
        fn = tf.function(lambda: model(inputs, training=False)["sequence_output"])
    before = _rss_mb()
    fn().numpy()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before  # ru_maxrss is KB on Linux
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn().numpy()
        times.append(time.perf_counter() - began)
    return {"seconds": statistics.median(times), "peak_mb": peak}


def equivalence(n, window):
    """Largest |sliding window - full attention with the banded mask| at length ``n`` (same weights)."""
    import numpy as np

    from kerasllm.layers import MultiHeadAttention
    from kerasllm.layers.masks import local_attention_mask

    x = np.random.default_rng(1).normal(size=(1, n, HIDDEN)).astype(np.float32)
    full = MultiHeadAttention(HEADS)
    local = MultiHeadAttention(HEADS, attention_type="sliding_window", attention_window=window)
    full(x)
    local(x)
    local.set_weights(full.get_weights())
    band = local_attention_mask(n, n, window)[None]
    return float(np.abs(full(x, attention_mask=band).numpy() - local(x).numpy()).max())


def slope(ns, values):
    """Least-squares slope of log(values) on log(ns)."""
    xs, ys = [math.log(n) for n in ns], [math.log(max(v, 1e-9)) for v in values]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def run_one(subject, attention_type, n, args):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    command = [
        sys.executable, os.path.abspath(__file__), "--worker", subject, attention_type, str(n), out,
        "--window", str(args.window), "--repeats", str(args.repeats), "--layers", str(args.layers),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    try:
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            return {"error": f"exit {done.returncode}: {tail[0][:100]}"}
        with open(out, encoding="utf-8") as f:
            return json.load(f)
    finally:
        os.unlink(out)


def plot(results, lengths, path, window):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "seconds", "seconds per forward"), (axes[1], "peak_mb", "peak memory growth (MB)")):
        for subject in SUBJECTS:
            for kind in TYPES:
                points = [(n, results[(subject, kind, n)][key]) for n in lengths if key in results[(subject, kind, n)]]
                if points:
                    name = f"{subject}, {'full' if kind == 'full' else f'window {window}'}"
                    ax.plot(*zip(*points), marker="o", linestyle="-" if kind == "full" else "--", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length n")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("kerasllm attention: full vs sliding window (batch 1, inference)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, default=6, help="encoder blocks of the full-encoder subject")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "attention_scaling.png"))
    parser.add_argument("--json")
    parser.add_argument("--worker", nargs=4, metavar=("SUBJECT", "TYPE", "N", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        subject, kind, n, out = args.worker
        result = measure(subject, kind, int(n), args.window, args.repeats, args.layers)
        with open(out, "w", encoding="utf-8") as f:
            json.dump(result, f)
        return

    lengths = sorted(args.lengths)
    load = os.getloadavg()[0]
    results = {}
    for subject in SUBJECTS:
        for n in lengths:
            for kind in TYPES:
                print(f"  {subject} {kind} n={n} ...", file=sys.stderr, flush=True)
                results[(subject, kind, n)] = run_one(subject, kind, n, args)
    load = max(load, os.getloadavg()[0])
    check_n = 1024 if 1024 in lengths else lengths[0]
    diff = equivalence(check_n, args.window)

    print(f"\nAttention scaling, batch 1, inference; window w={args.window}; hidden {HIDDEN}, {HEADS} heads; "
          f"encoder = {args.layers} blocks, FFN {FFN}.\n1-minute load average up to {load:.1f} on {os.cpu_count()} CPUs.\n")
    header = f"{'subject':<8} | {'n':>5} | {'full s':>8} | {'window s':>8} | {'speed-up':>8} | {'full MB':>8} | {'window MB':>9} | {'mem ratio':>9}"
    print(header)
    print("-" * len(header))
    for subject in SUBJECTS:
        for n in lengths:
            full, local = results[(subject, "full", n)], results[(subject, "sliding_window", n)]
            cells = []
            for r in (full, local):
                cells.append(f"{r['seconds']:.3f}" if "seconds" in r else r.get("error", "-")[:8])
            speed = full["seconds"] / local["seconds"] if "seconds" in full and "seconds" in local else None
            mem = full["peak_mb"] / local["peak_mb"] if "peak_mb" in full and local.get("peak_mb", 0) > 0 else None
            mems = [f"{r['peak_mb']:.0f}" if "peak_mb" in r else "-" for r in (full, local)]
            print(
                f"{subject:<8} | {n:>5} | {cells[0]:>8} | {cells[1]:>8} | {('-' if speed is None else f'{speed:.2f}x'):>8} | "
                f"{mems[0]:>8} | {mems[1]:>9} | {('-' if mem is None else f'{mem:.1f}x'):>9}"
            )
    print()
    fit = [n for n in lengths if n >= 1024]
    exponents = {}
    for subject in SUBJECTS:
        for kind in TYPES:
            rows = [results[(subject, kind, n)] for n in fit]
            if len(fit) >= 2 and all("seconds" in r for r in rows):
                exponents[(subject, kind)] = (
                    slope(fit, [r["seconds"] for r in rows]), slope(fit, [r["peak_mb"] for r in rows])
                )
                t, m = exponents[(subject, kind)]
                print(f"growth exponent n={fit[0]}..{fit[-1]}, {subject}, {kind}: time {t:.2f}, memory {m:.2f}")
    print(f"\nmax |sliding window - full attention with the banded mask| at n={check_n}: {diff:.2e} "
          f"(target < 1e-5: {'met' if diff < 1e-5 else 'NOT met'})")
    if ("layer", "sliding_window") in exponents:
        m = exponents[("layer", "sliding_window")][1]
        print(f"sliding-window layer memory exponent {m:.2f} (target <= 1.2: {'met' if m <= 1.2 else 'NOT met'})")
    for subject in SUBJECTS:
        full, local = results.get((subject, "full", 4096), {}), results.get((subject, "sliding_window", 4096), {})
        if "seconds" in full and "seconds" in local:
            speed = full["seconds"] / local["seconds"]
            print(f"{subject} at n=4096: window {speed:.2f}x faster than full (target >= 3x: {'met' if speed >= 3 else 'NOT met'})")
    plot(results, lengths, args.out, args.window)
    print(f"plot: {args.out}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"load": load, "window": args.window, "max_abs_diff": diff,
                       "results": [{"subject": s, "type": k, "n": n, **v} for (s, k, n), v in results.items()]}, f, indent=1)


if __name__ == "__main__":
    main()
