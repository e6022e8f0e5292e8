"""Data-parallel scaling: training steps/s and examples/s for 1 and 2 replicas.

    python bench/scaling_bench.py [--per-replica-batch 16] [--seq-len 128] [--steps 30]

Rows, each in its own interpreter (devices and ``TF_CONFIG`` must be set before TensorFlow
starts), all training the same token classifier on the same synthetic batches:

- ``1 replica`` (the anchor): the default strategy on one device (GPU 0 when there is one);
- ``mirrored, 2 devices``: ``MirroredStrategy`` over 2 GPUs when the machine has them, else
  over 2 logical CPU devices carved out of the one CPU;
- ``multiworker, 2 processes``: ``MultiWorkerMirroredStrategy``, two worker processes on
  127.0.0.1 (one GPU each when there are 2, else the shared CPU), gradients all-reduced over gRPC.

The per-replica batch is fixed, so the global batch grows with the replicas (weak scaling):
with replicas on separate devices a step of 2 replicas ideally takes as long as a step of 1 and
examples/s doubles. "step × 1 replica" is the step-time ratio to the anchor, i.e. the per-step
overhead of the strategy (1.00 = none); "examples/s × 1 replica" is the speed-up. On a CPU the
two logical devices and the two processes share the same cores, so no speed-up is possible
there and the ratios measure coordination overhead plus contention.

The model is fed through ``model.fit`` with kerasllm's train step and masked loss, as in
fine-tuning; the first ``--warmup-steps`` steps (tracing, compilation) are not timed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(spec):
    """Train ``warmup + steps`` steps under ``spec["strategy"]``; write timings to ``spec["out"]``."""
    import numpy as np
    import tensorflow as tf

    if spec.get("logical_cpus"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * spec["logical_cpus"])
    import tf_keras as keras

    from kerasllm import training
    from kerasllm.models import get_preset, token_classifier

    dist = training.strategy(spec["strategy"], devices=spec.get("devices"), verbose=False)
    replicas = dist.num_replicas_in_sync
    global_batch = spec["per_replica_batch"] * replicas
    seq, vocab, labels = spec["seq_len"], 1000, 9
    rng = np.random.default_rng(0)
    n = global_batch * 4
    ids = rng.integers(5, vocab, (n, seq)).astype(np.int32)
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    targets = rng.integers(0, labels, (n, seq)).astype(np.int32)
    data = tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(global_batch, drop_remainder=True).repeat()
    config = get_preset(
        spec["preset"], vocab_size=vocab, max_position=max(seq, 128), dropout=0.0, attention_dropout=0.0
    )
    steps = spec["warmup_steps"] + spec["steps"]
    with dist.scope():
        model = token_classifier(config, labels)
        model.compile(
            optimizer=training.create_optimizer(1e-4, num_train_steps=steps, warmup_steps=1),
            loss=training.masked_sparse_categorical_crossentropy(),
        )
    training.install_train_step(model)

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())  # logs were made numpy: the step has finished

    clock = Clock()
    model.fit(data, epochs=1, steps_per_epoch=steps, callbacks=[clock], verbose=0)
    timed = clock.ends[spec["warmup_steps"] - 1 :]
    seconds = (timed[-1] - timed[0]) / (len(timed) - 1)
    result = {
        "replicas": replicas,
        "global_batch": global_batch,
        "step_seconds": seconds,
        "devices": [d.name for d in tf.config.list_logical_devices("GPU")] or ["CPU"],
        "chief": bool(dist.extended.should_checkpoint),
    }
    with open(spec["out"], "w") as f:
        json.dump(result, f)


def _launch(spec, env_extra=None):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TF_CONFIG", None)
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)], env=env)


def _run(specs_and_envs, timeout):
    """Start the processes, wait (killing them all on timeout or error), return the chief's result."""
    processes = [_launch(spec, env) for spec, env in specs_and_envs]
    deadline = time.monotonic() + timeout
    try:
        for p in processes:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode for p in processes):
        raise RuntimeError(f"a benchmark process failed (exit codes {[p.returncode for p in processes]})")
    results = []
    for spec, _ in specs_and_envs:
        with open(spec["out"]) as f:
            results.append(json.load(f))
    return next(r for r in results if r["chief"])


def _gpu_count():
    """GPUs TensorFlow sees, asked in a child so that this process never initialises TF's devices."""
    code = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def measure(args, folder):
    gpus = _gpu_count()
    base = {
        "per_replica_batch": args.per_replica_batch,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "preset": args.preset,
    }
    rows = []

    def spec(name, **extra):
        return {**base, "out": os.path.join(folder, f"{name}.json"), **extra}

    one = "1 replica" + (" (GPU)" if gpus else " (CPU)")
    rows.append((one, _run([(spec("one", strategy="default"), None)], args.timeout)))

    if gpus >= 2:
        mirrored = spec("mirrored", strategy="mirrored", devices=["/gpu:0", "/gpu:1"])
        name = "mirrored, 2 GPUs"
    else:
        mirrored = spec("mirrored", strategy="mirrored", devices=["/cpu:0", "/cpu:1"], logical_cpus=2)
        name = "mirrored, 2 logical CPU devices"
    rows.append((name, _run([(mirrored, None)], args.timeout)))

    from kerasllm.training.distribution import local_worker_hosts

    hosts = local_worker_hosts(2)
    workers = []
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = {"TF_CONFIG": json.dumps(tf_config)}
        if gpus >= 2:
            env["CUDA_VISIBLE_DEVICES"] = str(index)
        workers.append((spec(f"worker{index}", strategy="multiworker"), env))
    name = "multiworker, 2 processes" + (" (1 GPU each)" if gpus >= 2 else " (shared CPU)")
    rows.append((name, _run(workers, args.timeout)))
    return rows


def table(rows):
    anchor = rows[0][1]
    anchor_rate = anchor["global_batch"] / anchor["step_seconds"]
    lines = [
        "| setup | replicas | global batch | steps/s | examples/s | step ms | step × 1 replica "
        "| examples/s × 1 replica |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        rate = r["global_batch"] / r["step_seconds"]
        lines.append(
            f"| {name} | {r['replicas']} | {r['global_batch']} | {1 / r['step_seconds']:.2f} | {rate:.1f} | "
            f"{1000 * r['step_seconds']:.1f} | {r['step_seconds'] / anchor['step_seconds']:.2f} | "
            f"{rate / anchor_rate:.2f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-replica-batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per row")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed first steps (tracing)")
    parser.add_argument("--preset", default="bert-tiny", help="model preset (bert-tiny: 2 layers, hidden 128)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per row before its processes are killed")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    if args.warmup_steps < 1 or args.steps < 2:
        parser.error("--warmup-steps must be >= 1 and --steps >= 2")
    with tempfile.TemporaryDirectory(prefix="kerasllm-scaling-") as folder:
        started = time.time()
        rows = measure(args, folder)
    print(
        f"\nData-parallel scaling, {args.preset}, {args.per_replica_batch} examples x {args.seq_len} tokens per "
        f"replica; mean step time over {args.steps} steps after {args.warmup_steps} warm-up steps "
        f"({time.time() - started:.0f} s in all)\n"
    )
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"setup": name, **r} for name, r in rows], f, indent=2)


if __name__ == "__main__":
    main()
