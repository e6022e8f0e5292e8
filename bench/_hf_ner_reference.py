"""The Hugging Face side of ``bench/ner_vs_hf.py``: BertForTokenClassification, PyTorch, a plain loop.

Runs in an interpreter that has ``torch`` and ``transformers`` (not kerasllm's). It reads the
sentences that ``ner_vs_hf.py`` wrote as JSON (so both sides train on the very same data, read
by one CoNLL reader), fine-tunes with the settings given, and writes, per epoch, the predicted
tags of the dev and test sentences plus the training throughput. Scoring happens in
``ner_vs_hf.py`` with kerasllm's conlleval-compatible scorer, the same code for both sides.

The recipe is Transformers' ``run_ner`` one: label on the first sub-word of each word (-100 on
the rest), truncation at ``--max-length`` (words cut off are predicted ``O``), batches padded
to their longest member (``DataCollatorForTokenClassification``), AdamW without decay on
biases and LayerNorm weights, linear warm-up then linear decay, gradient norm clipped to 1.0.
"""
import argparse
import json
import random
import time

import numpy as np
import torch
from transformers import AutoTokenizer, BertForTokenClassification, DataCollatorForTokenClassification
from transformers import get_linear_schedule_with_warmup
import transformers


def encode(tokenizer, sentences, label_to_id, max_length):
    encoded = tokenizer(
        [s["tokens"] for s in sentences], is_split_into_words=True, truncation=True, max_length=max_length
    )
    features = []
    for i, sentence in enumerate(sentences):
        word_ids = encoded.word_ids(i)
        labels, previous = [], None
        for word in word_ids:
            if word is None or word == previous:
                labels.append(-100)
            else:
                labels.append(label_to_id[sentence["tags"][word]])
            previous = word
        features.append(
            {
                "input_ids": encoded["input_ids"][i],
                "attention_mask": encoded["attention_mask"][i],
                "token_type_ids": encoded["token_type_ids"][i],
                "labels": labels,
                "word_ids": word_ids,
            }
        )
    return features


def predict(model, collator, features, labels, batch_size):
    """Per sentence, a tag per word: the first sub-word's argmax, ``O`` for words truncated away."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size]
            batch = collator([{k: f[k] for k in ("input_ids", "attention_mask", "token_type_ids")} for f in chunk])
            logits = model(**batch).logits.numpy()
            for row, feature in zip(logits, chunk):
                tags, previous = {}, None
                for position, word in enumerate(feature["word_ids"]):
                    if word is not None and word != previous:
                        tags[word] = labels[int(row[position].argmax())]
                    previous = word
                out.append(tags)
    model.train()
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="JSON with train/dev/test sentences and labels")
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    with open(args.data, encoding="utf-8") as f:
        data = json.load(f)
    labels = data["labels"]
    label_to_id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = BertForTokenClassification.from_pretrained(args.model, num_labels=len(labels))
    collator = DataCollatorForTokenClassification(tokenizer)
    train = encode(tokenizer, data["train"], label_to_id, args.max_length)
    evaluation = {name: encode(tokenizer, data[name], label_to_id, args.max_length) for name in ("dev", "test")}

    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, eps=1e-6)
    steps_per_epoch = (len(train) + args.batch_size - 1) // args.batch_size
    total = steps_per_epoch * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total), total)
    generator = torch.Generator().manual_seed(args.seed)
    keys = ("input_ids", "attention_mask", "token_type_ids", "labels")

    model.train()
    epochs, first_step = [], True
    for epoch in range(args.epochs):
        order = torch.randperm(len(train), generator=generator).tolist()
        seconds, tokens = 0.0, 0
        for start in range(0, len(order), args.batch_size):
            batch = collator([{k: train[i][k] for k in keys} for i in order[start : start + args.batch_size]])
            began = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            took = time.perf_counter() - began
            if first_step:  # like kerasllm's ThroughputProgress: the run's first step is left out
                first_step = False
                continue
            seconds += took
            tokens += int(batch["attention_mask"].sum())
        predictions = {
            name: predict(model, collator, feats, labels, args.batch_size) for name, feats in evaluation.items()
        }
        epochs.append(
            {
                "tokens_per_sec": tokens / seconds,
                "train_seconds": seconds,
                "dev": [[p.get(w, "O") for w in range(len(s["tokens"]))] for p, s in zip(predictions["dev"], data["dev"])],
                "test": [[p.get(w, "O") for w in range(len(s["tokens"]))] for p, s in zip(predictions["test"], data["test"])],
            }
        )
        print(f"epoch {epoch + 1}: {tokens / seconds:.0f} tokens/s", flush=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"epochs": epochs, "torch": torch.__version__, "transformers": transformers.__version__}, f)


if __name__ == "__main__":
    main()
