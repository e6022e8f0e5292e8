"""Inference throughput: kerasllm against KerasHub (with and without XLA) and Transformers, one table.

    /work/venv/bin/python bench/infer_throughput.py [--steps 10] [--warmup 2] [--bert-base]
        [--skip-hf] [--skip-keras-hub] [--no-xla] [--hf-python /work/refvenv/bin/python]
        [--kerasllm-src LABEL=DIR] [--json OUT]

The shapes and cases of bench/train_throughput.py, timing the forward pass instead:
``predict_on_batch`` for the Keras models (``jit_compile`` of the row), ``model(**batch)`` under
``torch.inference_mode()`` for Transformers. tokens/s is the median call after the warm-up; MFU
uses the forward FLOPs per token from ``kerasllm.models.summary``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _throughput import common_arguments, run_table  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    args = parser.parse_args()
    rows, _ = run_table("infer", args)
    print()
    for shape in sorted({r["shape"] for r in rows}):
        found = {r["case"]: r for r in rows if r["shape"] == shape and "tokens_per_sec" in r}
        best = max((r for r in found.values() if r["framework"] == "kerasllm" and not r.get("source")),
                   key=lambda r: r["tokens_per_sec"], default=None)
        hf = found.get("Transformers (PyTorch)")
        if best and hf:
            ratio = best["tokens_per_sec"] / hf["tokens_per_sec"]
            print(f"{shape}: {best['case']}: inference tokens/s >= 1.0x Transformers: {ratio:.2f}x "
                  f"({'met' if ratio >= 1.0 else 'NOT met'})")


if __name__ == "__main__":
    main()
