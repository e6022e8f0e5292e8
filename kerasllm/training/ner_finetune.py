"""Fine-tune a token classifier for named-entity recognition, end to end.

``run_ner_finetune(NerFinetuneConfig(...))`` is what ``kerasllm finetune ner`` runs:
read CoNLL files (or write kerasllm's embedded corpus), build or load a model and
its tokenizer, train with ``model.fit``, keep the best checkpoint by dev entity
F1, score the test set, and export a TFLite file verified against Keras.
"""
import dataclasses
import os
import shutil
import sys
import time

import numpy as np
import tf_keras as keras

from kerasllm._io import atomic_write_json
from kerasllm.data import LabelMap, read_conll, write_ner_corpus
from kerasllm.data.augment import replace_mentions
from kerasllm.data.conll import ConllDataset
from kerasllm.data.ner_dataset import (
    bucket_batches,
    encode_sentences,
    make_dataset,
    padding_waste,
    predict_word_scores,
)
from kerasllm.evaluation import format_report, ner_scores

DEFAULT_CORPUS_NOTE = "kerasllm's embedded synthetic corpus (no --train given)"


@dataclasses.dataclass
class NerFinetuneConfig:
    """Settings of one NER fine-tuning run (the CLI options, with the same defaults)."""

    train: str = None
    dev: str = None
    test: str = None
    model: str = "bert-tiny"
    out: str = os.path.join("saved_models", "ner-default")
    epochs: int = 12
    batch_size: int = 32
    lr: float = 5e-4
    max_length: int = 128
    stride: int = None
    seed: int = 0
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    patience: int = 3
    vocab_size: int = 1000
    lowercase: bool = False
    augment: float = None  # mention-replacement probability; None: 0.5 on the embedded corpus, else 0
    export: bool = True
    quantize: str = "dynamic"
    mixed_precision: str = "none"
    xla: bool = False
    resume: bool = False

    def validate(self):
        for name in ("epochs", "batch_size", "max_length", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.train is None and (self.dev or self.test):
            raise ValueError("--dev/--test need --train (without --train the embedded corpus is used)")
        for name in ("train", "dev", "test"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"--{name} {path}: no such file")


def _log(message):
    print(message, flush=True)


def prepare_data(cfg, log=_log):
    """Return ``(train, dev, test, source_note)`` as ConllDatasets."""
    if cfg.train is None:
        folder = os.path.join(cfg.out, "data")
        paths = write_ner_corpus(folder, seed=cfg.seed)
        log(f"data: {DEFAULT_CORPUS_NOTE}, written to {folder}")
        train, dev, test = (read_conll(paths[k]) for k in ("train", "dev", "test"))
        return train, dev, test, DEFAULT_CORPUS_NOTE
    train = read_conll(cfg.train)
    dev = read_conll(cfg.dev) if cfg.dev else None
    test = read_conll(cfg.test) if cfg.test else None
    return train, dev, test, cfg.train


def build_model_and_tokenizer(cfg, train, label_map, log=_log):
    """A token classifier and its tokenizer.

    ``cfg.model`` is a preset (trained from scratch, with a WordPiece vocabulary
    learnt from ``train``) or a folder: a kerasllm model, a Hugging Face BERT folder
    or a Google BERT checkpoint (anything :func:`kerasllm.checkpoints.from_pretrained`
    reads), with its ``vocab.txt``. From a folder the encoder weights are loaded and
    the classifier head is initialised fresh.
    """
    from kerasllm.checkpoints import from_pretrained
    from kerasllm.models import PRESETS, get_preset, token_classifier
    from kerasllm.tokenizers import WordPieceTokenizer, train_wordpiece_vocab

    if cfg.model in PRESETS:
        texts = [" ".join(s.tokens) for s in train]
        vocab = train_wordpiece_vocab(texts, cfg.vocab_size, lowercase=cfg.lowercase)
        tokenizer = WordPieceTokenizer(vocab, lowercase=cfg.lowercase)
        config = get_preset(cfg.model, vocab_size=len(vocab), max_position=max(cfg.max_length, 128))
        log(f"model: preset {cfg.model} from scratch, WordPiece vocabulary of {len(vocab)} trained on the training set")
        return token_classifier(config, label_map.num_labels), tokenizer
    if os.path.isdir(cfg.model):
        base = from_pretrained(cfg.model)
        config = base.kerasllm_config
        if config.model_type != "bert":
            raise ValueError(f"--model {cfg.model}: NER needs an encoder (BERT-style) model, got model_type={config.model_type!r}")
        if cfg.max_length > config.max_position:
            raise ValueError(
                f"--max-length {cfg.max_length} exceeds the {config.max_position} positions of {cfg.model}"
            )
        tokenizer = WordPieceTokenizer.load(cfg.model)
        if tokenizer.vocab_size != config.vocab_size:
            raise ValueError(
                f"{cfg.model}: vocab.txt has {tokenizer.vocab_size} tokens but the model's embedding "
                f"has {config.vocab_size}; the tokenizer does not belong to this model"
            )
        model = token_classifier(config, label_map.num_labels)
        copied = transfer_weights(base, model)
        log(f"model: {cfg.model} ({copied} layers loaded; classifier head initialised fresh)")
        return model, tokenizer
    raise ValueError(
        f"--model {cfg.model!r} is neither a preset ({', '.join(PRESETS)}) nor a model folder "
        "(kerasllm, Hugging Face BERT or Google BERT)"
    )


def transfer_weights(source, target, skip=("classifier",)):
    """Copy weights layer by layer where names and shapes agree; return the number of layers copied."""
    copied = 0
    for layer in target.layers:
        if layer.name in skip or not layer.weights:
            continue
        try:
            other = source.get_layer(layer.name)
        except ValueError:
            continue
        weights = other.get_weights()
        if [w.shape for w in weights] == [w.shape for w in layer.get_weights()]:
            layer.set_weights(weights)
            copied += 1
    return copied


class EntityF1Callback(keras.callbacks.Callback):
    """Scores dev entity F1 after every epoch and puts it in the logs as ``val_f1``."""

    def __init__(self, sentences, windows, label_map, batch_size=32, log=_log):
        super().__init__()
        self.sentences, self.windows = sentences, windows
        self.label_map, self.batch_size, self.log = label_map, batch_size, log

    def on_epoch_end(self, epoch, logs=None):
        scores = evaluate_windows(self.model, self.sentences, self.windows, self.label_map, self.batch_size)
        if logs is not None:
            logs["val_f1"] = scores["f1"]
        self.log(f"epoch {epoch + 1}: dev entity F1 {scores['f1'] * 100:.2f}")


def predict_tags(model, sentences, windows, label_map, batch_size=32):
    """Predicted BIO tags (and per-word probabilities) for every sentence."""
    lengths = [len(s.tokens) for s in sentences]
    scores = predict_word_scores(model, windows, len(sentences), lengths, batch_size)
    tags = [[label_map.labels[i] for i in s.argmax(-1)] for s in scores]
    return tags, scores


def evaluate_windows(model, sentences, windows, label_map, batch_size=32):
    tags, _ = predict_tags(model, sentences, windows, label_map, batch_size)
    return ner_scores([s.tags for s in sentences], tags)


def run_ner_finetune(cfg, log=_log):
    """Run the whole fine-tune; return the metrics dict (also written to ``OUT/metrics.json``)."""
    import tensorflow as tf

    from kerasllm import training
    from kerasllm.models import save_pretrained, load_pretrained

    cfg.validate()
    started = time.time()
    training.set_seed(cfg.seed)
    training.set_mixed_precision(cfg.mixed_precision)
    os.makedirs(cfg.out, exist_ok=True)

    train, dev, test, source = prepare_data(cfg, log)
    label_map = LabelMap.from_sentences(train)
    augment = cfg.augment if cfg.augment is not None else (0.5 if cfg.train is None else 0.0)
    if augment > 0:
        scheme, path = train.scheme, train.path
        train = ConllDataset(replace_mentions(train, probability=augment, seed=cfg.seed), scheme=scheme, path=path)
        log(f"augmentation: mention replacement with probability {augment} ({len(train)} training sentences)")
    log(f"labels ({label_map.num_labels}): {', '.join(label_map.labels)}")
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model, tokenizer = build_model_and_tokenizer(cfg, train, label_map, log)

    def windows_of(sentences):
        return encode_sentences(sentences, tokenizer, label_map, cfg.max_length, cfg.stride)

    train_windows = windows_of(train)
    dev_windows = windows_of(dev) if dev else None
    lengths = [len(w.input_ids) for w in train_windows]
    waste_bucketed = padding_waste(train_windows, bucket_batches(lengths, cfg.batch_size, shuffle=True, seed=cfg.seed))
    waste_plain = 1.0 - np.mean(lengths) / max(lengths)
    long_sentences = len(train_windows) - len(train)
    log(
        f"train: {len(train)} sentences -> {len(train_windows)} windows ({long_sentences} extra from long sentences); "
        f"padding waste {waste_bucketed * 100:.1f}% with length bucketing vs {waste_plain * 100:.1f}% padded to the longest"
    )

    total_steps = int(np.ceil(len(train_windows) / cfg.batch_size)) * cfg.epochs
    with strategy.scope():
        optimizer = training.create_optimizer(
            learning_rate=cfg.lr,
            num_train_steps=total_steps,
            warmup_steps=int(cfg.warmup_ratio * total_steps),
            weight_decay=cfg.weight_decay,
        )
        model.compile(
            optimizer=optimizer,
            loss=training.masked_sparse_categorical_crossentropy(),
            metrics=[training.masked_accuracy()],
            jit_compile=cfg.xla,
        )
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    total = model.count_params()
    log(f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / total:.1f}%)")

    best_dir = os.path.join(cfg.out, "model")
    backup_dir = os.path.join(cfg.out, "backup")
    if os.path.isdir(backup_dir) and not cfg.resume:
        log(f"note: removing the backup of an earlier, unfinished run in {backup_dir} (pass --resume to continue it)")
        shutil.rmtree(backup_dir)
    elif cfg.resume and not os.path.isdir(backup_dir):
        raise ValueError(f"--resume: no backup to resume from in {backup_dir}")
    resume = training.ResumableTraining(backup_dir)
    callbacks = training.standard_callbacks(
        cfg.out,
        monitor="val_f1" if dev else "loss",
        mode="max" if dev else "min",
        patience=cfg.patience if dev else None,
        save_fn=lambda m, d: save_pretrained(m, d, labels=label_map.labels, scheme=train.scheme),
        best_dir=best_dir,
        resumable=resume,
    )
    if dev:
        callbacks.insert(0, EntityF1Callback(dev, dev_windows, label_map, cfg.batch_size, log))
    batches = make_dataset(train_windows, cfg.batch_size, shuffle=True, seed=cfg.seed)
    dataset = resume.shuffled_epochs(batches, seed=cfg.seed, batch_fn=lambda d: d)
    history = model.fit(dataset, epochs=cfg.epochs, callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
    tokenizer.save(best_dir)
    label_map.to_json(os.path.join(best_dir, "labels.json"))

    best = load_pretrained(best_dir)
    metrics = {
        "source": source,
        "epochs_run": len(history.history.get("loss", [])),
        "train_seconds": round(time.time() - started, 1),
    }
    for name, sentences in (("dev", dev), ("test", test)):
        if not sentences:
            continue
        windows = windows_of(sentences)
        scores = evaluate_windows(best, sentences, windows, label_map, cfg.batch_size)
        metrics[name] = scores
        log(f"\n{name} set ({len(sentences)} sentences):\n{format_report(scores)}")
    metrics_path = os.path.join(cfg.out, "metrics.json")
    atomic_write_json(metrics_path, metrics)

    if cfg.export:
        metrics["export"] = export_and_verify(best, cfg, test or dev or train, windows_of, label_map, log, train_windows)
        atomic_write_json(metrics_path, metrics)
    if test:
        log(f"test entity F1: {metrics['test']['f1'] * 100:.2f}")
    log(f"model: {best_dir}   metrics: {metrics_path}")
    keras.mixed_precision.set_global_policy("float32")
    return metrics


class _RunnerAsModel:
    """Lets an exported-model runner stand where a Keras model is called for logits."""

    def __init__(self, runner):
        self.runner = runner

    def __call__(self, inputs, training=False):
        return self.runner(inputs)["logits"]


def export_and_verify(model, cfg, sentences, windows_of, label_map, log=_log, train_windows=None):
    """Export ``model`` to ``OUT/model.tflite`` (``cfg.quantize``) and compare it with Keras.

    Returns a dict with the file size, the max abs logit difference and token argmax
    agreement on the evaluation windows, entity F1 of Keras and of the TFLite model,
    and the TFLite latency (p50/p95) at batch 1.
    """
    from kerasllm.data.ner_dataset import pad_batch
    from kerasllm.export import TFLiteRunner, export_tflite, latency, verify

    out_path = os.path.join(cfg.out, "model.tflite")
    windows = windows_of(sentences)
    batches = [pad_batch(windows, idx)[0] for idx in bucket_batches([len(w.input_ids) for w in windows], cfg.batch_size)]
    representative = None
    if cfg.quantize == "int8":
        source = train_windows or windows
        representative = [pad_batch(source, [i])[0] for i in range(min(200, len(source)))]
    assets = {
        "labels.json": label_map.labels,
        "vocab.txt": os.path.join(cfg.out, "model", "vocab.txt"),
    }
    report = export_tflite(model, out_path, quantize=cfg.quantize, representative_data=representative, assets=assets)
    runner = TFLiteRunner(report.path)
    check = verify(model, runner, batches)
    keras_f1 = evaluate_windows(model, sentences, windows, label_map, cfg.batch_size)["f1"]
    tflite_f1 = evaluate_windows(_RunnerAsModel(runner), sentences, windows, label_map, cfg.batch_size)["f1"]
    one = pad_batch(windows, [0])[0]
    timing = latency(runner, one)
    result = {
        "path": report.path,
        "quantize": cfg.quantize,
        "size_bytes": report.size_bytes,
        "max_abs_logit_diff": check["max_abs_diff"],
        "token_argmax_agreement": check["argmax_agreement"],
        "keras_entity_f1": keras_f1,
        "tflite_entity_f1": tflite_f1,
        "latency_p50_ms": timing["p50_ms"],
        "latency_p95_ms": timing["p95_ms"],
    }
    log(
        f"\nTFLite export ({cfg.quantize}): {report.path}, {report.size_bytes / 1e6:.2f} MB\n"
        f"  vs Keras on {check['n_tokens']} tokens: token argmax agreement {check['argmax_agreement'] * 100:.2f}%, "
        f"max abs logit diff {check['max_abs_diff']:.2e}\n"
        f"  entity F1: Keras {keras_f1 * 100:.2f}, TFLite {tflite_f1 * 100:.2f}; "
        f"latency at batch 1, length {one['input_ids'].shape[1]}: p50 {timing['p50_ms']:.2f} ms, p95 {timing['p95_ms']:.2f} ms"
    )
    return result


# ------------------------------------------------------------------ prediction on raw text


def load_ner_folder(directory):
    """Load a fine-tuned NER model folder: ``(model, tokenizer, label_map)``.

    The folder is what ``kerasllm finetune ner`` writes to ``OUT/model``. Raises a
    ``FileNotFoundError``/``ValueError`` naming the folder when it is not one.
    """
    from kerasllm.models import load_pretrained
    from kerasllm.tokenizers import WordPieceTokenizer

    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"--model {directory}: no such folder")
    labels_path = os.path.join(directory, "labels.json")
    if not os.path.isfile(labels_path):
        raise FileNotFoundError(f"--model {directory}: labels.json is missing (not a fine-tuned NER model folder)")
    model = load_pretrained(directory)
    task = model.kerasllm_task.get("task")
    if task != "token_classification":
        raise ValueError(f"--model {directory}: its task is {task!r}, not 'token_classification'")
    tokenizer = WordPieceTokenizer.load(directory)
    if tokenizer.vocab_size != model.kerasllm_config.vocab_size:
        raise ValueError(
            f"--model {directory}: vocab.txt has {tokenizer.vocab_size} tokens but the model's embedding "
            f"has {model.kerasllm_config.vocab_size}"
        )
    label_map = LabelMap.from_json(labels_path)
    if label_map.num_labels != model.output_shape[-1]:
        raise ValueError(
            f"--model {directory}: labels.json has {label_map.num_labels} labels but the classifier "
            f"has {model.output_shape[-1]} outputs"
        )
    return model, tokenizer, label_map


def _is_mark(char):
    import unicodedata

    return unicodedata.category(char).startswith("M")


def split_words(tokenizer, text):
    """Split ``text`` into the tokenizer's basic words; return ``(words, spans)``.

    ``spans[i] = (start, end)`` are character offsets into ``text`` with
    ``text[start:end] == words[i]``. The words are those :meth:`encode` finds
    (whitespace and punctuation splits), so :meth:`encode_words` on them gives
    the same word pieces as encoding the text. A word's span runs from its first
    sub-word's start to its last sub-word's end, and over any combining marks
    right after it (decomposed accents, ``e`` + U+0301), which the tokenizer's end
    offsets leave out. Characters that normalise away (control, zero-width)
    belong to no word.
    """
    encoding = tokenizer.encode(text)
    bounds = {}
    for word, (start, end) in zip(encoding.word_ids, encoding.offsets):
        if word is None:
            continue
        if word in bounds:
            s, e = bounds[word]
            bounds[word] = (min(s, start), max(e, end))
        else:
            bounds[word] = (start, end)
    ordered = [bounds[w] for w in sorted(bounds)]
    spans = []
    for i, (start, end) in enumerate(ordered):
        limit = ordered[i + 1][0] if i + 1 < len(ordered) else len(text)
        while end < limit and _is_mark(text[end]):
            end += 1
        spans.append((start, end))
    return [text[s:e] for s, e in spans], spans


def entities_from_tags(tags, scores, label_map):
    """``[(type, first_word, end_word, score)]`` of one sentence's BIO tags.

    ``score`` is the mean probability of the predicted label over the entity's words.
    """
    from kerasllm.evaluation import extract_entities

    index = label_map.label_to_id
    out = []
    for type_, start, end in extract_entities(tags):
        probs = [float(scores[i, index[tags[i]]]) for i in range(start, end)]
        out.append((type_, start, end, float(np.mean(probs))))
    return out


def predict_entities(model, tokenizer, label_map, texts, max_length=128, stride=None, batch_size=32):
    """Entity spans in raw ``texts``: per text a list of dicts.

    Each dict has ``start``/``end`` (character offsets into the text), ``type``,
    ``text`` (``text[start:end]``) and ``score`` (mean probability of the predicted
    labels over the entity's words; a word's probabilities come from its first
    sub-word). Texts longer than ``max_length`` sub-words are windowed exactly as
    in training (:func:`encode_sentences`) and merged back per word.
    """
    from kerasllm.data import Sentence

    split = [split_words(tokenizer, text) for text in texts]
    keep = [i for i, (words, _) in enumerate(split) if words]
    sentences = [Sentence(split[i][0], ["O"] * len(split[i][0])) for i in keep]
    results = [[] for _ in texts]
    if not sentences:
        return results
    windows = encode_sentences(sentences, tokenizer, None, max_length, stride)
    tags, scores = predict_tags(model, sentences, windows, label_map, batch_size)
    for i, sentence_tags, sentence_scores in zip(keep, tags, scores):
        text, spans = texts[i], split[i][1]
        for type_, first, end, score in entities_from_tags(sentence_tags, sentence_scores, label_map):
            start, stop = spans[first][0], spans[end - 1][1]
            results[i].append({"start": start, "end": stop, "type": type_, "text": text[start:stop], "score": score})
    return results
