"""Where an XLA-compiled kerasllm training step spends its time, op by op (CPU).

    XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true \\
        /work/venv/bin/python bench/profile_train_step.py [--steps 3] [--dropout 0.1] [--top 30]

Builds the MiniLM-shaped token classifier of ``train_throughput.py`` (6 layers, hidden 384,
12 heads, FFN 1536, vocabulary 30,522, batch 16 x 128, AdamW with global clipping), compiles
``fit`` with ``jit_compile=True``, warms up, then records ``--steps`` steps with the TensorFlow
profiler and sums the duration of every XLA thunk (matmuls, fusions) per step, grouped by
name without its numeric suffix. Without the ``XLA_FLAGS`` above XLA records no thunks and
the table is empty (the script says so).

Durations are per executing thread: XLA runs independent thunks on both cores at once and
Eigen matmuls split over threads, so the sum is not the wall time. It shows what dominates,
which is how bench/speed_notes.md found the dropout masks and the global gradient norm.
"""
import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-xla", action="store_true",
                        help="profile the graph-mode step instead (TensorFlow ops, summed by op type)")
    parser.add_argument("--mixed-precision", default="none", choices=("none", "bfloat16", "float16"))
    args = parser.parse_args()
    if not args.no_xla and "xla_cpu_enable_xprof_traceme" not in os.environ.get("XLA_FLAGS", ""):
        print("note: XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true is not set: XLA records no thunks", file=sys.stderr)

    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from kerasllm import training
    from kerasllm.models import get_preset, token_classifier

    training.set_seed(0)
    training.set_mixed_precision(args.mixed_precision)
    config = get_preset(
        "bert-base", num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536, vocab_size=30522,
        max_position=512, dropout=args.dropout, attention_dropout=args.dropout,
    )
    model = token_classifier(config, 13)
    model.compile(
        optimizer=training.create_optimizer(1e-4, num_train_steps=10_000, warmup_steps=10, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=not args.no_xla,
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 30522, (16, 128)).astype("int32")
    labels = rng.integers(0, 13, (16, 128)).astype("int32")
    x = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    data = tf.data.Dataset.from_tensors((x, labels)).repeat()
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)  # compile and warm up

    logdir = tempfile.mkdtemp(prefix="kerasllm-profile-")
    tf.profiler.experimental.start(logdir)
    began = time.perf_counter()
    model.fit(data, steps_per_epoch=args.steps, epochs=1, verbose=0)
    wall = (time.perf_counter() - began) / args.steps
    tf.profiler.experimental.stop()

    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
        space.ParseFromString(f.read())
    per_name, calls = collections.Counter(), collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if args.no_xla:
                if not line.name.startswith("tf_"):  # the executor's compute threads: one event per op
                    continue
            elif "Eigen" not in line.name:  # XLA's CPU thunks run on the Eigen thread pool
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "?")
                if name.startswith(("ThunkExecutor", "SlinkyThreadPool")) or name.startswith("call"):
                    continue  # containers of the thunks below
                if args.no_xla:
                    base = name.rsplit(":", 1)[-1]  # "scope/op_name:OpType" -> the op type
                else:
                    base = re.sub(r"[._]\d+$", "", name)
                per_name[base] += event.duration_ps / 1e9 / args.steps
                calls[base] += 1 / args.steps
    total = sum(per_name.values())
    print(f"wall time per step {wall * 1e3:.0f} ms (under the profiler); thunk time {total:.0f} ms over both threads\n")
    print(f"{'ms/step':>8} | {'share':>6} | {'calls':>6} | thunk")
    print("-" * 60)
    for name, ms in per_name.most_common(args.top):
        print(f"{ms:>8.1f} | {ms / total:>6.1%} | {calls[name]:>6.0f} | {name}")
    if not per_name:
        print("(no XLA thunks recorded: set XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true)")


if __name__ == "__main__":
    main()
