"""Pretraining from scratch on tiny Shakespeare, each model against a simple anchor on the same held-out text.

The commands run are the CLI's own (each is printed before it runs):

1. ``kerasllm vocab bpe --size 4000`` and ``kerasllm vocab wordpiece --size 1000 --lowercase``
   (both learnt from the training documents only: every 10th document is held out);
2. ``kerasllm pretrain clm --preset gpt-tiny``: held-out perplexity against the perplexity of an
   add-one-smoothed unigram model counted on the training tokens, on the same held-out target tokens
   (target: ratio < 0.30);
3. ``kerasllm pretrain mlm --preset bert-tiny``: held-out masked-token accuracy against always
   guessing the most frequent training token, on the same masked tokens (target: accuracy >= 35%).

Each run has a time budget (``--max-minutes``); pick ``--*-steps`` so that the learning-rate
schedule ends near it on your machine. The table gives the figures, the anchors and the ratios;
``WORK/*/metrics.json`` hold everything else. Example::

    python bench/pretrain_shakespeare.py

The defaults are the measured runs (docs/pretraining.md): gpt-tiny with BPE 4,000 for 600 steps;
bert-tiny with WordPiece 1,000, no next-sentence pairs (sequences packed to the full length) and
no dropout, for up to 2,600 steps or 20 minutes.

(measured results in docs/pretraining.md).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "tinyshakespeare", "input.txt")


def _run(args, log_path):
    """Run ``kerasllm ARGS``, echoing and logging its output; stop on failure."""
    command = [sys.executable, "-m", "kerasllm.cli.main", *args]
    print("$ kerasllm " + " ".join(args), flush=True)
    started = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        for line in process.stdout:
            log.write(line)
            log.flush()
            if not line.startswith(("WARNING", "I0000", "E0000", "W0000")):
                sys.stdout.write(line)
                sys.stdout.flush()
        if process.wait():
            sys.exit(f"failed ({process.returncode}): kerasllm {' '.join(args)}; see {log_path}")
    return time.time() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DATA, help="tinyshakespeare input.txt")
    parser.add_argument("--work", default=os.path.join(ROOT, "saved_models", "pretrain_shakespeare"))
    parser.add_argument("--vocab-size", type=int, default=4000, help="BPE vocabulary of the causal LM")
    parser.add_argument("--clm-steps", type=int, default=600)
    parser.add_argument("--clm-minutes", type=float, default=20)
    parser.add_argument("--clm-batch-size", type=int, default=32)
    parser.add_argument("--clm-seq-length", type=int, default=128)
    parser.add_argument("--clm-lr", type=float, default=2e-3)
    parser.add_argument("--mlm-steps", type=int, default=2600)
    parser.add_argument("--mlm-minutes", type=float, default=20)
    parser.add_argument("--mlm-batch-size", type=int, default=64)
    parser.add_argument("--mlm-seq-length", type=int, default=128)
    parser.add_argument("--mlm-lr", type=float, default=2e-3)
    parser.add_argument("--mlm-vocab-size", type=int, default=1000, help="WordPiece vocabulary of the masked LM")
    parser.add_argument("--mlm-dropout", type=float, default=0.0)
    parser.add_argument("--mlm-nsp", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=True,
                        help="compile the train steps with XLA (about 1.3x faster for gpt-tiny on 2 CPU cores)")
    parser.add_argument("--skip", choices=["clm", "mlm"], action="append", default=[])
    args = parser.parse_args(argv)
    if not os.path.isfile(args.data):
        sys.exit(f"--data {args.data}: no such file (tinyshakespeare input.txt)")
    os.makedirs(args.work, exist_ok=True)
    work = args.work
    rows, load = [], {"start": os.getloadavg()}

    if "clm" not in args.skip:
        bpe = os.path.join(work, "bpe")
        _run(["vocab", "bpe", "--corpus", args.data, "--size", str(args.vocab_size), "--out", bpe],
             os.path.join(work, "vocab_bpe.log"))
        seconds = _run(
            ["pretrain", "clm", "--corpus", args.data, "--vocab", bpe, "--preset", "gpt-tiny",
             "--steps", str(args.clm_steps), "--max-minutes", str(args.clm_minutes),
             "--batch-size", str(args.clm_batch_size), "--seq-length", str(args.clm_seq_length),
             "--lr", str(args.clm_lr), "--xla" if args.xla else "--no-xla", "--out", os.path.join(work, "clm")],
            os.path.join(work, "pretrain_clm.log"),
        )
        with open(os.path.join(work, "clm", "metrics.json")) as f:
            m = json.load(f)
        v = m["validation"]
        rows.append(("clm gpt-tiny", "held-out perplexity", f"{v['perplexity']:.2f}", "unigram (add-one) perplexity",
                     f"{v['unigram_perplexity']:.2f}", f"{v['perplexity_ratio']:.3f}", "ratio < 0.30",
                     v["perplexity_ratio"] < 0.30, m, seconds))
        load["after clm"] = os.getloadavg()

    if "mlm" not in args.skip:
        wordpiece = os.path.join(work, "wordpiece")
        _run(["vocab", "wordpiece", "--corpus", args.data, "--size", str(args.mlm_vocab_size), "--lowercase",
              "--out", wordpiece], os.path.join(work, "vocab_wordpiece.log"))
        seconds = _run(
            ["pretrain", "mlm", "--corpus", args.data, "--vocab", wordpiece, "--preset", "bert-tiny",
             "--steps", str(args.mlm_steps), "--max-minutes", str(args.mlm_minutes),
             "--batch-size", str(args.mlm_batch_size), "--seq-length", str(args.mlm_seq_length),
             "--lr", str(args.mlm_lr), "--dropout", str(args.mlm_dropout), "--nsp" if args.mlm_nsp else "--no-nsp",
             "--xla" if args.xla else "--no-xla", "--out", os.path.join(work, "mlm")],
            os.path.join(work, "pretrain_mlm.log"),
        )
        with open(os.path.join(work, "mlm", "metrics.json")) as f:
            m = json.load(f)
        v = m["validation"]
        rows.append(("mlm bert-tiny", "held-out masked-token accuracy", f"{100 * v['masked_accuracy']:.2f}%",
                     f"always {v['most_frequent_token']!r}", f"{100 * v['most_frequent_accuracy']:.2f}%",
                     f"{v['masked_accuracy'] / v['most_frequent_accuracy']:.2f}", "accuracy >= 35%",
                     v["masked_accuracy"] >= 0.35, m, seconds))
        load["after mlm"] = os.getloadavg()

    print("\n| run | metric | kerasllm | anchor | anchor value | ratio | target | met | steps | train min | tokens/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, metric, value, anchor, anchor_value, ratio, target, met, m, seconds in rows:
        print(
            f"| {name} | {metric} | {value} | {anchor} | {anchor_value} | {ratio} | {target} | {'yes' if met else 'NO'} "
            f"| {m['steps']} ({m['stopped_by']}) | {m['train_seconds'] / 60:.1f} | {m['train_tokens_per_sec']} |"
        )
    print("\nload average (1, 5, 15 min): " + "; ".join(f"{k} {' '.join(f'{x:.2f}' for x in v)}" for k, v in load.items()))


if __name__ == "__main__":
    main()
