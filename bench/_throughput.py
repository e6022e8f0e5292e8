"""Shared code of ``train_throughput.py`` and ``infer_throughput.py``: one worker per framework, one table.

Every measurement runs in a fresh subprocess (``python bench/_throughput.py worker ...``) so
TensorFlow, Keras 3 and PyTorch never share a process and each starts from a clean heap.
This module imports only the standard library at the top: the Transformers worker runs it
in the reference interpreter (``--hf-python``), which has torch but not kerasllm.

Workers build a token classifier of the given shape with random weights (13 labels, as
WNUT-17), feed one fixed random batch (no padding) and time ``steps`` calls after
``warmup`` untimed ones (the first call traces/compiles):

- ``kerasllm``: ``kerasllm.models.token_classifier`` compiled with
  ``kerasllm.training.create_optimizer`` (AdamW, weight decay 0.01, clipnorm 1.0);
  ``fit`` steps on the repeated batch (timed by a callback) / ``predict_on_batch``;
  ``xla`` sets ``jit_compile=True``; ``--fuse-elementwise`` trains through
  ``install_train_step(fuse_elementwise=True)`` (kerasllm.training.fusion). The
  "kerasllm default" row uses what ``kerasllm finetune`` picks on this machine
  (``mixed_precision`` and ``fuse_elementwise`` "auto", no XLA).
- ``keras_hub``: ``keras_hub.models.BertBackbone`` + ``Dense`` (Keras 3, TensorFlow
  backend), ``keras.optimizers.AdamW`` (same settings); ``jit_compile`` False or True
  (Keras 3's default ``"auto"`` would pick XLA by itself).
- ``hf``: Transformers ``BertForTokenClassification`` (PyTorch, its default attention
  implementation), ``torch.optim.AdamW`` and ``clip_grad_norm_(1.0)``; inference under
  ``torch.inference_mode()``.

FLOPs per token come from ``kerasllm.models.summary`` (a multiply-add counts 2; training
is 3x the forward pass); model FLOP utilisation (MFU) is the achieved FLOP/s over a
float32 NumPy matmul ceiling measured in the same run (best of a 2048^3 matmul, timed
before and after the workers).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_LABELS = 13

SHAPES = {
    # name: (layers, hidden, heads, ffn, vocab, batch, length)
    "minilm-128": (6, 384, 12, 1536, 30522, 16, 128),
    "bert-base-128": (12, 768, 12, 3072, 30522, 16, 128),
    "bert-base-512": (12, 768, 12, 3072, 30522, 4, 512),
}


# ----------------------------------------------------------------------------- workers


def _random_batch(shape, seed=0):
    import numpy as np

    _, _, _, _, vocab, batch, length = shape
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, length)).astype("int32")
    labels = rng.integers(0, NUM_LABELS, size=(batch, length)).astype("int32")
    return ids, labels


def _time_calls(fn, steps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return times


def _time_fit(keras, model, x, labels, steps, warmup):
    """Seconds of each ``model.fit`` step (after ``warmup`` steps) on a repeated batch.

    ``fit`` is how users train, and in tf_keras it is also the fast path: under
    ``jit_compile=True`` its ``train_on_batch`` took 2.56 s per MiniLM step where
    ``fit`` took 1.6 s (bench/speed_notes.md).
    """
    import tensorflow as tf

    times = []

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.began = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.began)

    data = tf.data.Dataset.from_tensors((x, labels)).repeat()
    model.fit(data, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[StepTimer()])
    return times[warmup:]


def _kerasllm_worker(args, shape):
    import numpy as np
    import tf_keras as keras

    from kerasllm import training
    from kerasllm.models import get_preset, token_classifier

    layers, hidden, heads, ffn, vocab, batch, length = shape
    training.set_seed(0)
    training.set_mixed_precision(args.mixed_precision)
    config = get_preset(
        "bert-base", num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=ffn, vocab_size=vocab,
        max_position=max(512, length),
    )
    if args.attention_type != "full":
        config = config.replace(attention_type=args.attention_type, attention_window=args.attention_window)
    model = token_classifier(config, NUM_LABELS)
    lazy = {"lazy_sparse_updates": True} if args.lazy_sparse_updates else {}  # older trees lack the option
    optimizer = training.create_optimizer(1e-4, num_train_steps=10_000, warmup_steps=10, weight_decay=0.01, **lazy)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=args.xla,
    )
    if args.fuse_elementwise:
        training.install_train_step(model, fuse_elementwise=True)
    ids, labels = _random_batch(shape)
    x = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    if args.mode == "train":
        return _time_fit(keras, model, x, labels, args.steps, args.warmup)
    return _time_calls(lambda: model.predict_on_batch(x), args.steps, args.warmup)


def _keras_hub_worker(args, shape):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import keras_hub
    import numpy as np

    layers, hidden, heads, ffn, vocab, batch, length = shape
    keras.utils.set_random_seed(0)
    if args.mixed_precision != "none":
        keras.config.set_dtype_policy(f"mixed_{args.mixed_precision}")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocab, num_layers=layers, num_heads=heads, hidden_dim=hidden, intermediate_dim=ffn,
        max_sequence_length=max(512, length), dropout=0.1,
    )
    logits = keras.layers.Dense(NUM_LABELS, dtype="float32")(backbone.output["sequence_output"])
    model = keras.Model(backbone.input, logits)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-4, weight_decay=0.01, epsilon=1e-6, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=args.xla,
    )
    ids, labels = _random_batch(shape)
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids), "segment_ids": np.zeros_like(ids)}
    if args.mode == "train":
        return _time_fit(keras, model, x, labels, args.steps, args.warmup)
    return _time_calls(lambda: model.predict_on_batch(x), args.steps, args.warmup)


def _hf_worker(args, shape):
    import torch
    import transformers

    layers, hidden, heads, ffn, vocab, batch, length = shape
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=max(512, length), num_labels=NUM_LABELS,
    )
    model = transformers.BertForTokenClassification(config)
    ids, labels = _random_batch(shape)
    low = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(args.mixed_precision)
    autocast = torch.autocast("cpu", dtype=low or torch.bfloat16, enabled=low is not None)
    batch_in = {
        "input_ids": torch.from_numpy(ids).long(),
        "attention_mask": torch.ones(ids.shape, dtype=torch.long),
        "token_type_ids": torch.zeros(ids.shape, dtype=torch.long),
    }
    if args.mode == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, eps=1e-6)
        target = torch.from_numpy(labels).long()

        def step():
            with autocast:
                loss = model(**batch_in, labels=target).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()

        return _time_calls(step, args.steps, args.warmup)
    model.eval()

    def forward():
        with torch.inference_mode(), autocast:
            model(**batch_in)

    return _time_calls(forward, args.steps, args.warmup)


PRECISIONS = ("none", "bfloat16", "float16")
PRECISION_LABELS = {"none": "", "bfloat16": " bf16", "float16": " fp16"}

WORKERS = {"kerasllm": _kerasllm_worker, "keras_hub": _keras_hub_worker, "hf": _hf_worker}


def worker_main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", choices=sorted(WORKERS))
    parser.add_argument("--mode", choices=("train", "infer"), required=True)
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--xla", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--attention-type", default="full")
    parser.add_argument("--attention-window", type=int, default=256)
    parser.add_argument("--mixed-precision", choices=PRECISIONS, default="none")
    parser.add_argument("--lazy-sparse-updates", action="store_true")
    parser.add_argument("--fuse-elementwise", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    times = WORKERS[args.framework](args, SHAPES[args.shape])
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"times": times}, f)


# ----------------------------------------------------------------------------- driver


def _ceiling_worker(size=2048, repeats=5):
    """``{"float32": GFLOP/s, "kernel": ..., "bfloat16": GFLOP/s}`` of ``size^3`` matmuls, printed as JSON.

    float32 is NumPy's (OpenBLAS) product; bfloat16 is TensorFlow's (oneDNN) product
    of bfloat16 matrices, the type mixed-precision training multiplies in.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    a @ b
    result = {"float32": 2 * size**3 / min(_time_calls(lambda: a @ b, repeats, 0)) / 1e9}
    try:
        from threadpoolctl import threadpool_info

        result["kernel"] = ", ".join(
            f"{i.get('internal_api')} {i.get('architecture')}" for i in threadpool_info() if i.get("user_api") == "blas"
        )
    except ImportError:
        result["kernel"] = "?"
    import tensorflow as tf

    x, y = tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16)
    product = tf.function(tf.matmul)
    product(x, y).numpy()
    result["bfloat16"] = 2 * size**3 / min(_time_calls(lambda: product(x, y).numpy(), repeats, 0)) / 1e9
    print(json.dumps(result))


def matmul_ceiling():
    """The matmul ceilings of :func:`_ceiling_worker`, measured in a fresh process.

    The process runs without ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE``: some
    machines set them to pin OpenBLAS to an older kernel (Haswell's AVX2 on an
    AVX-512 CPU: half the rate), which would understate the hardware's ceiling and
    overstate every MFU.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "ceiling"], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def flops_per_token(shape_name, mode):
    """Model FLOPs per token (forward, or forward + backward) from ``kerasllm.models.summary``."""
    from kerasllm.models import get_preset, summary

    layers, hidden, heads, ffn, vocab, _, length = SHAPES[shape_name]
    config = get_preset(
        "bert-base", num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=ffn, vocab_size=vocab,
        max_position=max(512, length),
    )
    counts = summary(config, seq_len=length)
    return counts["train_flops_per_token" if mode == "train" else "flops_per_token"]


def run_worker(python, framework, mode, shape, args, xla=False, pythonpath=None, extra=()):
    """Run one worker in a subprocess; return its tokens/s (median step) or an error string."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    command = [
        python, os.path.abspath(__file__), "worker", framework, "--mode", mode, "--shape", shape,
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads), "--out", out,
        *extra,
    ] + (["--xla"] if xla else [])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    try:
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            return f"failed (exit {done.returncode}): {tail[0][:120]}"
        with open(out, encoding="utf-8") as f:
            times = json.load(f)["times"]
    finally:
        os.unlink(out)
    _, _, _, _, _, batch, length = SHAPES[shape]
    return {"tokens_per_sec": batch * length / statistics.median(times), "times": times}


def common_arguments(parser):
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case (median reported)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every case, round-robin (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing, compilation)")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    parser.add_argument("--bert-base", action="store_true", help="also BERT-base at length 128 and 512 (slow)")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), help="shapes to run (overrides --bert-base)")
    parser.add_argument("--hf-python", default=os.environ.get("KERASLLM_REF_PYTHON", "/work/refvenv/bin/python"))
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-keras-hub", action="store_true")
    parser.add_argument("--no-xla", action="store_true", help="leave out the XLA rows")
    parser.add_argument(
        "--lazy-sparse-updates", action="store_true",
        help="add kerasllm rows whose AdamW updates only the embedding rows a step looked up",
    )
    parser.add_argument(
        "--no-default-row", action="store_true",
        help="leave out the row of kerasllm's own choice for this machine (mixed precision and fusion 'auto')",
    )
    parser.add_argument(
        "--fused", action="store_true",
        help="add kerasllm rows trained with fuse_elementwise (graph mode) in each of --precisions",
    )
    parser.add_argument(
        "--precisions", nargs="+", choices=PRECISIONS, default=["none"],
        help="compute types to run every framework in (none = float32; bfloat16/float16 = mixed precision)",
    )
    parser.add_argument(
        "--kerasllm-src", action="append", default=[], metavar="LABEL=DIR",
        help="also run kerasllm from another source tree (e.g. a `git archive` of an older commit)",
    )
    parser.add_argument("--json", help="write every figure to this file")


def _default_case(mode, width=None):
    """The row of what kerasllm picks by itself here: ``(label, precision, fused)``.

    ``kerasllm finetune``'s "auto" settings without ``--xla`` (see
    :mod:`kerasllm.training.fusion`): bfloat16 with fused element-wise ops on a CPU
    with AMX, float32 graph mode elsewhere (the plain "kerasllm" row, so no extra row).
    """
    from kerasllm.training.fusion import resolve_fusion, resolve_precision

    if mode != "train":  # a loaded model predicts in the type it was saved in (float32)
        return None
    precision = resolve_precision("auto", width=width)
    fused = resolve_fusion("auto", precision, width=width)
    if precision == "none" and not fused:
        return None
    return f"kerasllm default{PRECISION_LABELS[precision]}{' fused' if fused else ''}", precision, fused


def _cases(args, mode="train", width=None):
    """``(label, framework, xla, pythonpath, precision, flags)`` rows in table order.

    Every framework runs in each of ``--precisions`` (mixed precision: float32
    weights, the given compute type); a row's label carries " bf16"/" fp16".
    ``flags`` are extra worker arguments.
    """
    xlas = (False,) if args.no_xla else (False, True)
    cases = []
    default = None if args.no_default_row else _default_case(mode, width)
    if default is not None:
        label, precision, fused = default
        cases.append((label, "kerasllm", False, None, precision, ("--fuse-elementwise",) if fused else ()))
    for precision in args.precisions:
        tag = PRECISION_LABELS[precision]
        cases += [(f"kerasllm{tag}{' XLA' if x else ''}", "kerasllm", x, None, precision, ()) for x in xlas]
        if args.fused and mode == "train":
            cases.append((f"kerasllm{tag} fused", "kerasllm", False, None, precision, ("--fuse-elementwise",)))
        if args.lazy_sparse_updates:  # graph mode only: under XLA the embedding gradient is dense
            cases.append((f"kerasllm{tag} lazy", "kerasllm", False, None, precision, ("--lazy-sparse-updates",)))
        for spec in args.kerasllm_src:
            label, _, folder = spec.partition("=")
            if not folder:
                raise SystemExit(f"--kerasllm-src {spec!r}: expected LABEL=DIR")
            cases += [(f"kerasllm {label}{tag}{' XLA' if x else ''}", "kerasllm", x, os.path.abspath(folder),
                       precision, ()) for x in xlas]
        if not args.skip_keras_hub:
            cases += [(f"KerasHub{tag}{' XLA' if x else ''}", "keras_hub", x, None, precision, ()) for x in xlas]
        if not args.skip_hf:
            if os.path.exists(args.hf_python):
                cases.append((f"Transformers (PyTorch){tag}", "hf", False, None, precision, ()))
            else:
                print(f"note: {args.hf_python} not found: no Transformers row", file=sys.stderr)
    return cases


def _fmt(value, pattern):
    return "-" if value is None else format(value, pattern)


def run_table(mode, args):
    """Measure every case of ``args`` for ``mode`` ("train" or "infer"), print the table, return the rows.

    With ``--repeats N`` every case runs N times, round-robin over the cases (so a
    slow spell of the machine falls on all of them alike), and a row reports the
    median of its runs' tokens/s with the lowest and highest.
    """
    shapes = args.shapes or (list(SHAPES) if args.bert_base else ["minilm-128"])
    load = os.getloadavg()[0]
    ceiling = matmul_ceiling()
    results = []
    for shape in shapes:
        flops = flops_per_token(shape, mode)
        cases = _cases(args, mode, width=SHAPES[shape][1])
        rows = [{"shape": shape, "case": label, "framework": framework, "xla": xla, "precision": precision,
                 "source": path, "flags": list(flags), "flops_per_token": flops, "runs": []}
                for label, framework, xla, path, precision, flags in cases]
        for repeat in range(args.repeats):
            for row, (label, framework, xla, path, precision, flags) in zip(rows, cases):
                python = args.hf_python if framework == "hf" else sys.executable
                print(f"  {shape}: {label} (run {repeat + 1}/{args.repeats}) ...", file=sys.stderr, flush=True)
                extra = ("--mixed-precision", precision) + tuple(flags)
                measured = run_worker(python, framework, mode, shape, args, xla=xla, pythonpath=path, extra=extra)
                if isinstance(measured, str):
                    row["error"] = measured
                else:
                    row["runs"].append(measured["tokens_per_sec"])
        for row in rows:
            if row["runs"]:
                row.pop("error", None)
                row["tokens_per_sec"] = statistics.median(row["runs"])
        results += rows
    again = matmul_ceiling()
    ceiling = {k: (max(v, again[k]) if isinstance(v, float) else v) for k, v in ceiling.items()}
    load = max(load, os.getloadavg()[0])
    _print_table(mode, results, ceiling, load)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"mode": mode, "ceiling_gflops": ceiling, "load": load, "rows": results}, f, indent=1)
    return results, ceiling


def _anchor(rows, shape, label):
    for r in rows:
        if r["shape"] == shape and r["case"] == label and "tokens_per_sec" in r:
            return r["tokens_per_sec"]
    return None


def mfu(row, ceiling, own_type=False):
    """Achieved model GFLOP/s of ``row`` over the float32 ceiling (or, ``own_type``, its compute type's)."""
    key = row.get("precision", "none") if own_type else "none"
    peak = ceiling.get({"none": "float32"}.get(key, key))
    return None if not peak or "tokens_per_sec" not in row else row["tokens_per_sec"] * row["flops_per_token"] / 1e9 / peak


def _print_table(mode, rows, ceiling, load):
    what = "training (AdamW step)" if mode == "train" else "inference (forward)"
    print(
        f"\n{what} tokens/s of a token classifier, random weights, one fixed batch without padding; "
        f"median of the timed steps.\nMatmul ceilings (2048^3): float32 {ceiling['float32']:.1f} GFLOP/s "
        f"(NumPy, {ceiling.get('kernel', '?')}), bfloat16 {ceiling['bfloat16']:.1f} GFLOP/s (TensorFlow/oneDNN); "
        f"1-minute load average up to {load:.1f} on {os.cpu_count()} CPUs.\n"
    )
    header = (
        f"{'shape':<14} | {'case':<28} | {'tokens/s':>9} | {'x KerasHub':>10} | {'x KerasHub XLA':>14} | "
        f"{'x Transformers':>14} | {'GFLOP/s':>8} | {'MFU':>6} | {'MFU own type':>12} | runs: low-high"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['shape']:<14} | {r['case']:<28} | {r['error']}")
            continue
        tps = r["tokens_per_sec"]
        ratios = [
            (tps / a if a else None) for a in (
                _anchor(rows, r["shape"], "KerasHub"),
                _anchor(rows, r["shape"], "KerasHub XLA"),
                _anchor(rows, r["shape"], "Transformers (PyTorch)"),
            )
        ]
        achieved = tps * r["flops_per_token"] / 1e9
        print(
            f"{r['shape']:<14} | {r['case']:<28} | {tps:>9.0f} | {_fmt(ratios[0], '>10.2f')} | "
            f"{_fmt(ratios[1], '>14.2f')} | {_fmt(ratios[2], '>14.2f')} | {achieved:>8.1f} | "
            f"{_fmt(mfu(r, ceiling), '>6.1%')} | {_fmt(mfu(r, ceiling, own_type=True), '>12.1%')} | "
            f"{min(r['runs']):.0f}-{max(r['runs']):.0f} ({len(r['runs'])})"
        )
    print(
        "\nFLOPs per token from kerasllm.models.summary (multiply-add = 2"
        + ("; training = 3x forward" if mode == "train" else "")
        + "); MFU = achieved GFLOP/s / float32 matmul ceiling; MFU own type: over the ceiling of the row's "
        "compute type (bfloat16 rows: the bfloat16 ceiling). x ratios compare every row with the float32 anchors."
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "ceiling":
        _ceiling_worker()
    else:
        raise SystemExit("run bench/train_throughput.py or bench/infer_throughput.py")
