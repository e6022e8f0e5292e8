"""Training throughput: kerasllm against KerasHub (with and without XLA) and Transformers, one table.

    /work/venv/bin/python bench/train_throughput.py [--steps 10] [--warmup 2] [--bert-base]
        [--skip-hf] [--skip-keras-hub] [--no-xla] [--hf-python /work/refvenv/bin/python]
        [--kerasllm-src LABEL=DIR] [--json OUT]

A MiniLM-shaped token classifier (6 layers, hidden 384, 12 heads, FFN 1536, vocabulary 30,522,
13 labels), batch 16 x length 128, one AdamW step per call (weight decay 0.01, gradient clipping
1.0, dropout 0.1 as in BERT), random weights and one fixed batch; ``--bert-base`` adds the BERT-base
shape at length 128 (batch 16) and 512 (batch 4). Each case runs in its own process (see
bench/_throughput.py); the table gives tokens/s (median step after the warm-up), the ratio to
KerasHub, KerasHub with XLA and Transformers (PyTorch), the achieved GFLOP/s and the model FLOP
utilisation against a NumPy float32 matmul ceiling measured in the same run.

``--kerasllm-src before=/tmp/kerasllm-head`` adds rows for another source tree (for example
``git archive HEAD | tar -x -C /tmp/kerasllm-head``), which is how bench/speed_notes.md measures
each change before and after, side by side.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _throughput import common_arguments, mfu, run_table  # noqa: E402

TARGETS = (
    ("kerasllm", "KerasHub XLA", 1.5, "training tokens/s >= 1.5x KerasHub with XLA"),
    ("kerasllm", "Transformers (PyTorch)", 1.0, "training tokens/s >= 1.0x Transformers"),
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    args = parser.parse_args()
    rows, ceiling = run_table("train", args)
    print()
    for shape in sorted({r["shape"] for r in rows}):
        found = {r["case"]: r for r in rows if r["shape"] == shape and "tokens_per_sec" in r}
        ours = [r for r in found.values() if r["framework"] == "kerasllm" and not r.get("source")]
        best = max(ours, key=lambda r: r["tokens_per_sec"], default=None)
        if best is None:
            continue
        for _, anchor, target, text in TARGETS:
            if anchor in found:
                ratio = best["tokens_per_sec"] / found[anchor]["tokens_per_sec"]
                print(f"{shape}: {best['case']}: {text}: {ratio:.2f}x ({'met' if ratio >= target else 'NOT met'})")
        # The fastest row may compute in bfloat16: its share of the float32 ceiling is then not
        # like for like, so the best float32 row is reported too, and every row's own-type share.
        float32 = [r for r in ours if r.get("precision", "none") == "none"]
        best32 = max(float32, key=lambda r: r["tokens_per_sec"], default=None)
        for row in [best] + ([best32] if best32 is not None and best32 is not best else []):
            share, own = mfu(row, ceiling), mfu(row, ceiling, own_type=True)
            print(f"{shape}: {row['case']}: training MFU >= 50% of the float32 matmul ceiling: {share:.1%} "
                  f"({'met' if share >= 0.5 else 'NOT met'}); of its own type's ceiling: {own:.1%}")


if __name__ == "__main__":
    main()
