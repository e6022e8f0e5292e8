"""Export latency: every runtime of one model at batch 1, against Keras float32 as the anchor.

    /work/venv/bin/python bench/export_bench.py --model OUT/model [--calibration train.conll] \\
        [--artefacts saved_models/export_figures] [--length 128] [--runs 50] [--threads 2] \\
        [--hf-python /work/refvenv/bin/python]

One run times, on the same random ``[1, length]`` token ids: the Keras model (float32,
``tf.function``; the anchor), TFLite float32 / float16 / dynamic-range int8 / full int8 /
int16x8 (ai_edge_litert, XNNPACK where it has kernels), onnxruntime float32 / dynamic int8 / float16 (CPU provider),
and Hugging Face PyTorch eager on the same weights (the kerasllm model written with
``kerasllm.checkpoints.save_hf`` and loaded with ``transformers`` in ``--hf-python``,
since torch lives in a separate environment; skipped when neither interpreter has it).
Every runtime gets ``--threads`` threads and runs one after the other. The table gives
p50/p95, the speed-up over Keras (anchor p50 / row p50), the file size and its ratio to
the float32 TFLite file, and checks the issue's targets: TFLite dynamic int8 at least 2x
faster than Keras float32 and at most 0.3x the float32 TFLite size; onnxruntime float32
at least as fast as PyTorch eager. Artefacts come from ``--artefacts`` when present
(``bench/export_figures.py`` writes them there) and are exported into it otherwise
(full int8 and int16x8 need ``--calibration``). Absolute times depend on the machine and its
load; the ratios are the result.
"""
import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_HF_SNIPPET = r"""
import json, sys, time
import numpy as np, torch, transformers
transformers.logging.set_verbosity_error()
folder, inputs_path, runs, threads, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
config = transformers.AutoConfig.from_pretrained(folder)
model = getattr(transformers, config.architectures[0]).from_pretrained(folder).eval()
data = np.load(inputs_path)
feed = {k: torch.from_numpy(data[k].astype(np.int64)) for k in data.files}
with torch.no_grad():
    for _ in range(3):
        model(**feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = model(**feed)
        times.append((time.perf_counter() - start) * 1000.0)
np.save(out_path, out.logits.numpy())
print(json.dumps({"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
                  "torch": torch.__version__, "transformers": transformers.__version__}))
"""

RUNTIMES = (
    ("TFLite float32", "tflite", "none"),
    ("TFLite float16", "tflite", "float16"),
    ("TFLite dynamic int8", "tflite", "dynamic"),
    ("TFLite full int8", "tflite", "int8"),
    ("TFLite int16x8", "tflite", "int16x8"),
    ("ONNX Runtime float32", "onnx", "none"),
    ("ONNX Runtime dynamic int8", "onnx", "dynamic"),
    ("ONNX Runtime float16", "onnx", "float16"),
)


def time_hf(model, inputs, runs, threads, hf_python, keras_logits):
    """``(row, note)`` for Transformers PyTorch eager on the same weights, or ``(None, why)``."""
    if all(importlib.util.find_spec(name) for name in ("torch", "transformers")):
        python = sys.executable
    elif hf_python and os.path.exists(hf_python):
        python = hf_python
    else:
        return None, "PyTorch eager skipped: no torch/transformers here and no --hf-python"
    from kerasllm.checkpoints import save_hf

    with tempfile.TemporaryDirectory(prefix="kerasllm-hf-") as tmp:
        folder = save_hf(model, os.path.join(tmp, "hf"))
        np.savez(os.path.join(tmp, "inputs.npz"), **inputs)
        logits_path = os.path.join(tmp, "logits.npy")
        result = subprocess.run(
            [python, "-c", _HF_SNIPPET, folder, os.path.join(tmp, "inputs.npz"), str(runs), str(threads), logits_path],
            capture_output=True, text=True, check=False,
        )
        if result.returncode:
            tail = result.stderr.strip().splitlines()[-1:] or ["?"]
            return None, f"PyTorch eager failed: {tail[0]}"
        timing = json.loads(result.stdout.strip().splitlines()[-1])
        diff = float(np.max(np.abs(np.load(logits_path) - keras_logits)))
    note = (f"PyTorch eager: torch {timing['torch']}, transformers {timing['transformers']} ({python}); "
            f"its logits differ from Keras by at most {diff:.2e} (same weights)")
    return {"p50_ms": timing["p50_ms"], "p95_ms": timing["p95_ms"]}, note


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="kerasllm model folder")
    parser.add_argument("--calibration", help="CoNLL file for full int8 (when it must be exported)")
    parser.add_argument("--artefacts", default="saved_models/export_figures", help="folder of exported artefacts")
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hf-python", default=os.environ.get("KERASLLM_REF_PYTHON", "/work/refvenv/bin/python"))
    args = parser.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from kerasllm.cli._common import model_inputs
    from kerasllm.cli.export_cmd import artefact_path, ensure_artefact, open_runner, prepare
    from kerasllm.export import format_table, latency

    os.makedirs(args.artefacts, exist_ok=True)
    job = prepare(args.model, args.calibration)
    model, config = job.model, job.config
    length = min(args.length, config.max_position)
    inputs = model_inputs(list(model.input_names), 1, length, config.vocab_size)
    keras_fn = tf.function(lambda x: model(x, training=False))
    keras_logits = np.asarray(keras_fn(inputs))
    anchor = latency(keras_fn, inputs, warmup=5, runs=args.runs)
    timings = [("Keras float32 (anchor)", anchor, 4 * model.count_params())]
    notes = [f"Keras size: float32 parameters ({model.count_params():,})"]
    for name, fmt, quantize in RUNTIMES:
        if quantize in ("int8", "int16x8") and job.representative is None and not os.path.exists(
                artefact_path(args.artefacts, fmt, quantize)):
            notes.append(f"{name} skipped: pass --calibration to export it")
            continue
        print(f"{name} ...", file=sys.stderr, flush=True)
        report = ensure_artefact(job, fmt, quantize, args.artefacts, reuse=True)
        runner = open_runner(fmt, report.path, args.threads)
        timings.append((name, latency(runner, inputs, warmup=5, runs=args.runs), report.size_bytes))
        del runner  # no idle runtime thread pools left while the next one is timed
        gc.collect()
    hf, note = time_hf(model, inputs, args.runs, args.threads, args.hf_python, keras_logits)
    notes.append(note)
    if hf is not None:
        timings.append(("PyTorch eager (Transformers)", hf, None))

    tflite32 = dict((n, s) for n, _, s in timings).get("TFLite float32")
    rows = []
    for name, timing, size in timings:
        rows.append({
            "runtime": name,
            "p50_ms": timing["p50_ms"],
            "p95_ms": timing["p95_ms"],
            "x_vs_keras": anchor["p50_ms"] / timing["p50_ms"],
            "size_mb": None if size is None else size / 1e6,
            "size_vs_tflite32": None if size is None or not tflite32 else size / tflite32,
        })
    by_name = {r["runtime"]: r for r in rows}
    print(f"\nmodel {args.model}: batch 1, length {length}, {args.threads} threads, {args.runs} runs after 5 warm-up")
    print(format_table(rows))
    dynamic = by_name.get("TFLite dynamic int8")
    if dynamic:
        print(f"target TFLite dynamic int8 >= 2x faster than Keras float32: {dynamic['x_vs_keras']:.2f}x -> "
              f"{'met' if dynamic['x_vs_keras'] >= 2 else 'MISSED'}")
        print(f"target TFLite dynamic int8 <= 0.3x the float32 TFLite size: {dynamic['size_vs_tflite32']:.3f}x -> "
              f"{'met' if dynamic['size_vs_tflite32'] <= 0.3 else 'MISSED'}")
    ort, torch_row = by_name.get("ONNX Runtime float32"), by_name.get("PyTorch eager (Transformers)")
    if ort and torch_row:
        ratio = torch_row["p50_ms"] / ort["p50_ms"]
        print(f"target ONNX Runtime float32 at least as fast as PyTorch eager: {ratio:.2f}x -> "
              f"{'met' if ratio >= 1 else 'MISSED'}")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
