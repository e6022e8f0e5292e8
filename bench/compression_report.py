"""Every compression row of issue 6 for one fine-tuned NER model: one table, one JSON file, one plot.

Runs, on the base model folder and the CoNLL files, the same code as the
``kerasllm compress`` commands (one output folder per row under ``--out``):

    float32             the base model as a float32 TFLite file (the anchor)
    PTQ dynamic, int8   post-training quantization (kerasllm.export.export_tflite)
    prune 50%, 80%      magnitude pruning (polynomial schedule) + fine-tuning
    prune 50% +emb      the same with the token embedding table pruned too
    prune 50% +emb +KD  the same, fine-tuned towards the dense model too (--prune-alpha)
    prune 2:4           2:4 structured sparsity
    QAT int8            quantization-aware fine-tuning, int8 TFLite (layer norms in float)
    PQAT int8           QAT of the pruned 50% model keeping its zeros
    student distilled   every k-th teacher block, distilled (KL x T^2 + alpha x hard;
                        --augment K: on K augmented copies of the training set too;
                        the teacher's embedding tables kept frozen, --train-embeddings: not)
    student replaced    the same blocks trained in the teacher's place (module replacing)
    student no teacher  the same student fine-tuned on the labels alone (twice: with the
                        distilled row's lr and epochs, and with the replaced row's)
    low-rank 50% FFN    SVD of the feed-forward kernels to half their parameters + fine-tune

and prints the merged table with the anchor (float32) and each row's ratio to
it, then checks the issue's targets. A row whose folder already holds
``compression_row.json`` is reused (rerun with ``--force`` to redo it), so an
interrupted run continues where it stopped.

Usage::

    python bench/compression_report.py --model saved_models/ner/model \\
        --train train.conll --test test.conll --out saved_models/compression

Timings depend on the machine (and on what else runs on it).
"""
import argparse
import gc
import os
import sys
import time


def _rows(args):
    """``(folder, method, kwargs, option overrides)`` of every row, in table order."""
    # the students' blocks: every k-th block if --every is given, else --layers (their keyword arguments)
    blocks = {"every": args.every} if args.every else {"layers": [int(v) for v in args.layers.split(",")]}
    blocks["freeze_embeddings"] = not args.train_embeddings  # the students' tables: the teacher's, frozen
    prune = {"epochs": args.prune_epochs} if args.prune_epochs else {}
    rows = [
        ("float32", "ptq", {"quantize": "none"}, {}),
        ("ptq-dynamic", "ptq", {"quantize": "dynamic"}, {}),
        ("ptq-int8", "ptq", {"quantize": "int8"}, {}),
        ("prune50", "prune", {"sparsity": 0.5}, prune),
        ("prune80", "prune", {"sparsity": 0.8}, prune),
        ("prune50-emb", "prune", {"sparsity": 0.5, "include_embeddings": True}, prune),
        ("prune50-emb-kd", "prune", {"sparsity": 0.5, "include_embeddings": True, "distill_alpha": args.prune_alpha,
                                     "temperature": args.temperature}, prune),
        ("prune-2of4", "prune", {"m_by_n": (2, 4)}, prune),
        ("qat-int8", "qat", {}, {"lr": args.qat_lr}),
        ("pqat-int8", "qat", {"preserve_sparsity": True}, {"model": "prune50", "lr": args.qat_lr}),
        ("distill", "distill", {**blocks, "temperature": args.temperature, "alpha": args.alpha,
                                 "average_last": args.average_last},
         {"lr": args.distill_lr, "epochs": args.distill_epochs, "augment": args.augment}),
        ("distill-replace", "distill", {**blocks, "alpha": args.replace_alpha, "temperature": args.temperature,
                                         "replace_epochs": args.replace_epochs, "replace_lr": args.replace_lr},
         {"epochs": 0}),
        ("student-no-teacher", "distill", {**blocks, "alpha": 1.0},
         {"lr": args.distill_lr, "epochs": args.distill_epochs}),
        ("student-no-teacher-replace", "distill", {**blocks, "alpha": 1.0},
         {"lr": args.replace_lr, "epochs": args.replace_epochs, "name": "student 2L no teacher (replacing's lr, epochs)"}),
        ("lowrank50", "lowrank", {"param_fraction": 0.5}, {"epochs": args.lowrank_epochs}),
    ]
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {r[0] for r in rows}
        if unknown:
            raise SystemExit(f"--only: unknown rows {sorted(unknown)}; rows: {[r[0] for r in rows]}")
        rows = [r for r in rows if r[0] in wanted]
    return rows


def run_row(folder, method, kwargs, overrides, args):
    from kerasllm.compression import pipeline
    from kerasllm.compression.report import ROW_FILE, read_rows

    out = os.path.join(args.out, folder)
    if os.path.isfile(os.path.join(out, ROW_FILE)) and not args.force:
        print(f"[{folder}] reusing {out}/{ROW_FILE}", flush=True)
        return read_rows([out])[0]
    model = overrides.get("model")
    model = os.path.join(args.out, model, "model") if model else args.model
    options = pipeline.CompressOptions(
        model=model, out=out, train=args.train, dev=args.dev, test=args.test,
        max_length=args.max_length, batch_size=args.batch_size, epochs=overrides.get("epochs", args.epochs),
        lr=overrides.get("lr", args.lr), seed=args.seed, latency_length=args.latency_length,
        latency_threads=args.threads, name=overrides.get("name"), augment=overrides.get("augment", 0),
    )
    print(f"\n===== [{folder}] kerasllm compress {method} {kwargs}", flush=True)
    started = time.time()
    row = getattr(pipeline, f"run_{method}")(options, **kwargs)
    print(f"[{folder}] done in {time.time() - started:.0f} s", flush=True)
    import tf_keras as keras

    keras.backend.clear_session()
    gc.collect()
    return row


def retime(rows, args, rounds=5, runs=20):
    """Time every row's TFLite file again, interleaved round by round, on one batch-1 input.

    The rows were timed one after the other, minutes apart; on a shared machine
    the load changes in between. Here each round times every file (p50 of ``runs``
    calls) and a row's latency is the median over the rounds.
    """
    import numpy as np

    from kerasllm.compression import pipeline
    from kerasllm.export import TFLiteRunner, latency

    options = pipeline.CompressOptions(model=args.model, out=args.out, test=args.test, max_length=args.max_length,
                                       latency_length=args.latency_length)
    _, data = pipeline.load(options)
    one = data.latency_input()
    runners = {name: TFLiteRunner(row["tflite_path"], num_threads=args.threads) for name, row in rows.items()}
    times = {name: [] for name in rows}
    for _ in range(rounds):
        for name, runner in runners.items():
            times[name].append(latency(runner, one, warmup=3, runs=runs)["p50_ms"])
    for name, row in rows.items():
        row["latency_p50_ms_alone"] = row["latency_p50_ms"]
        row["latency_p50_ms"] = float(np.median(times[name]))
        row["latency_note"] = f"median over {rounds} interleaved rounds of p50 of {runs} runs"


def check_targets(rows):
    """The issue's targets against the measured rows: a list of ``(target, verdict, detail)``."""
    base = rows.get("float32")
    results = []

    def f1(row, kind="tflite_score"):
        return None if row is None else row.get(kind)

    def verdict(ok):
        return "met" if ok else "missed"

    b_keras = f1(base, "keras_score")
    prune = rows.get("prune50")
    if base and prune:
        drop = (b_keras - prune["keras_score"]) * 100
        ratio = prune["tflite_gzip_bytes"] / base["tflite_gzip_bytes"]
        results.append(("prune 50%: F1 drop <= 1.0 point", verdict(drop <= 1.0), f"drop {drop:+.2f}"))
        results.append(("prune 50%: gzip <= 0.6x dense", verdict(ratio <= 0.6), f"{ratio:.2f}x"))
    for key, label in (("prune50-emb", "incl. embeddings"), ("prune50-emb-kd", "incl. embeddings, +KD")):
        emb = rows.get(key)
        if base and emb:
            ratio_e = emb["tflite_gzip_bytes"] / base["tflite_gzip_bytes"]
            drop_e = (b_keras - emb["keras_score"]) * 100
            results.append((f"prune 50% {label}: F1 drop <= 1.0 / gzip <= 0.6x",
                            verdict(drop_e <= 1.0 and ratio_e <= 0.6), f"drop {drop_e:+.2f}, {ratio_e:.2f}x"))
    qat, ptq = rows.get("qat-int8"), rows.get("ptq-int8")
    if base and qat:
        drop = (b_keras - qat["tflite_score"]) * 100
        ratio = qat["tflite_bytes"] / base["tflite_bytes"]
        results.append(("QAT int8: F1 drop <= 1.0 vs float Keras", verdict(drop <= 1.0), f"drop {drop:+.2f}"))
        results.append(("QAT int8: file <= 0.3x float32 TFLite", verdict(ratio <= 0.3), f"{ratio:.2f}x"))
        if ptq:
            results.append(("QAT int8 >= PTQ int8 F1", verdict(qat["tflite_score"] >= ptq["tflite_score"]),
                            f"{qat['tflite_score'] * 100:.2f} vs {ptq['tflite_score'] * 100:.2f}"))
    # each student against the same student trained on the labels alone with its own lr and epochs
    for key, label, alone_key in (("distill", "distilled student (KL)", "student-no-teacher"),
                                  ("distill-replace", "module-replaced student", "student-no-teacher-replace")):
        student, alone = rows.get(key), rows.get(alone_key)
        if base and student:
            share = student["keras_score"] / b_keras if b_keras else float("nan")
            results.append((f"{label} F1 >= 90% of teacher", verdict(share >= 0.9), f"{share * 100:.1f}%"))
            if alone:
                results.append((f"{label} > student without teacher",
                                verdict(student["keras_score"] > alone["keras_score"]),
                                f"{student['keras_score'] * 100:.2f} vs {alone['keras_score'] * 100:.2f}"))
    low = rows.get("lowrank50")
    if low:
        results.append(("low-rank 50% FFN: F1 and latency reported", "reported",
                        f"F1 {low['keras_score'] * 100:.2f}, p50 {low['latency_p50_ms']:.2f} ms"))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the base NER folder (OUT/model of kerasllm finetune ner)")
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev")
    parser.add_argument("--test", required=True)
    parser.add_argument("--out", default=os.path.join("saved_models", "compression"))
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs of prune/QAT")
    parser.add_argument("--prune-epochs", type=int, help="fine-tuning epochs of the prune rows (default: --epochs)")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--qat-lr", type=float, default=2e-5)
    parser.add_argument("--every", type=int, help="student = every k-th teacher block (3: blocks 3 and 6 of 6), "
                        "instead of --layers")
    parser.add_argument("--layers", default="0,3",
                        help="student = these teacher blocks, comma-separated, 0-based (default 0,3: blocks 1 and 4, "
                             "every 3rd block from the first; they distilled better than blocks 3 and 6)")
    parser.add_argument("--train-embeddings", action="store_true",
                        help="train the students' embedding tables too (default: frozen, as compress distill does "
                             "for a student of teacher blocks)")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.2, help="label weight of the distilled student")
    parser.add_argument("--prune-alpha", type=float, default=0.5,
                        help="label weight of the prune 50%% +emb +KD row (the rest: KL to the dense model)")
    parser.add_argument("--distill-epochs", type=int, default=6)
    parser.add_argument("--distill-lr", type=float, default=2e-4)
    parser.add_argument("--replace-epochs", type=int, default=6,
                        help="epochs of the module-replacing student row (rate 0.3 -> 1 over their first 80%%)")
    parser.add_argument("--replace-lr", type=float, default=5e-4, help="peak learning rate of the module-replacing row")
    parser.add_argument("--replace-alpha", type=float, default=1.0,
                        help="label weight of the module-replacing row (1.0: labels only; below 1 adds the KL term)")
    parser.add_argument("--augment", type=int, default=2,
                        help="augmented copies of --train for the distilled student row (compress distill --augment)")
    parser.add_argument("--average-last", type=int, default=0,
                        help="distilled student row: also score the mean of the last N epochs' weights on --dev "
                             "(compress distill --average-last; needs --dev)")
    parser.add_argument("--lowrank-epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--latency-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="comma-separated row folders to run (default: all)")
    parser.add_argument("--force", action="store_true", help="redo rows that already have a result")
    args = parser.parse_args(argv)
    if args.layers is not None and not all(v.strip().isdigit() for v in args.layers.split(",")):
        parser.error(f"--layers {args.layers!r}: write block indices separated by commas, such as 0,3")

    from kerasllm.compression.report import markdown_table, write_report

    started = time.time()
    rows = {}
    for folder, method, kwargs, overrides in _rows(args):
        if method == "qat" and overrides.get("model") and overrides["model"] not in rows:
            rows[overrides["model"]] = run_row(overrides["model"], "prune", {"sparsity": 0.5}, {}, args)
        rows[folder] = run_row(folder, method, kwargs, overrides, args)
    retime(rows, args)
    ordered = list(rows.values())
    paths = write_report(ordered, os.path.join(args.out, "compression_report"), baseline="float32"
                         if any(r["name"] == "float32" for r in ordered) else None)
    print("\n" + markdown_table(ordered, "float32" if "float32" in rows else None))
    print("targets of issue 6 (base: the float32 row):")
    for target, verdict, detail in check_targets(rows):
        print(f"  {verdict:<8} {target}: {detail}")
    print(f"\nwrote {paths['markdown']}, {paths['json']}, {paths['png']} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
