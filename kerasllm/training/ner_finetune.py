"""Fine-tune a token classifier for named-entity recognition, end to end.

``run_ner_finetune(NerFinetuneConfig(...))`` is what ``kerasllm finetune ner`` runs:
read CoNLL files (or write kerasllm's embedded corpus), build or load a model and
its tokenizer, train with ``model.fit``, keep the best checkpoint by dev entity
F1, score the test set, and export a TFLite file verified against Keras. The
steps every task shares live in :mod:`kerasllm.training.finetune`; this module
adds what is particular to NER (CoNLL files, sub-word windows, entity F1) and
prediction on raw text.
"""
import os

import numpy as np

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
from kerasllm.training import finetune
from kerasllm.training.finetune import _log, transfer_weights
from kerasllm.training.finetune_config import NerFinetuneConfig

__all__ = [
    "EntityF1Callback",
    "NerFinetuneConfig",
    "NerTask",
    "build_model_and_tokenizer",
    "evaluate_windows",
    "export_and_verify",
    "load_ner_folder",
    "predict_entities",
    "predict_tags",
    "run_ner_finetune",
    "split_words",
    "transfer_weights",
]

DEFAULT_CORPUS_NOTE = "kerasllm's embedded synthetic corpus (no --train given)"
_RunnerAsModel = finetune._RunnerAsModel  # kerasllm.cli.export_cmd imports it from here


def prepare_data(cfg, log=_log):
    """Return ``(train, dev, test, source_note)`` as ConllDatasets."""
    return finetune.prepare_data(cfg, NerTask(), log)


def build_model_and_tokenizer(cfg, train, label_map, log=_log):
    """A token classifier and its tokenizer.

    ``cfg.model`` is a preset (trained from scratch, with a WordPiece vocabulary
    learnt from ``train``) or a folder: a kerasllm model, a Hugging Face BERT folder
    or a Google BERT checkpoint (anything :func:`kerasllm.checkpoints.from_pretrained`
    reads), with its ``vocab.txt``. From a folder the encoder weights are loaded and
    the classifier head is initialised fresh.
    """
    task = NerTask()
    return finetune.build_model_and_tokenizer(
        cfg, task.vocab_texts(train), label_map.num_labels, task.head, task.label, log
    )


class EntityF1Callback(finetune.DevScoreCallback):
    """Scores dev entity F1 after every epoch and puts it in the logs as ``val_f1``."""

    def __init__(self, sentences, windows, label_map, batch_size=32, log=_log):
        super().__init__(self._score, ["f1"], lambda s: f"dev entity F1 {s['f1'] * 100:.2f}", log)
        self.sentences, self.windows = sentences, windows
        self.label_map, self.batch_size = label_map, batch_size

    def _score(self, model):
        return evaluate_windows(model, self.sentences, self.windows, self.label_map, self.batch_size)


def predict_tags(model, sentences, windows, label_map, batch_size=32):
    """Predicted BIO tags (and per-word probabilities) for every sentence."""
    lengths = [len(s.tokens) for s in sentences]
    scores = predict_word_scores(model, windows, len(sentences), lengths, batch_size)
    tags = [[label_map.labels[i] for i in s.argmax(-1)] for s in scores]
    return tags, scores


def evaluate_windows(model, sentences, windows, label_map, batch_size=32):
    tags, _ = predict_tags(model, sentences, windows, label_map, batch_size)
    return ner_scores([s.tags for s in sentences], tags)


class NerTask(finetune.FinetuneTask):
    """Named-entity recognition for :func:`kerasllm.training.finetune.run_finetune`."""

    name = "ner"
    label = "NER"
    monitor = "f1"
    logged_scores = ("f1",)
    corpus_note = DEFAULT_CORPUS_NOTE

    def write_corpus(self, folder, cfg):
        return write_ner_corpus(folder, seed=cfg.seed)

    def read(self, path, cfg):
        return read_conll(path)

    def label_map(self, train):
        return LabelMap.from_sentences(train)

    def vocab_texts(self, train):
        return [" ".join(s.tokens) for s in train]

    def head(self, config, num_labels):
        from kerasllm.models import token_classifier

        return token_classifier(config, num_labels)

    def encode(self, data, tokenizer, label_map, cfg):
        return encode_sentences(data, tokenizer, label_map, cfg.max_length, cfg.stride, path=getattr(data, "path", None))

    def augment(self, train, cfg, log):
        """Mention replacement (default: on for the embedded corpus only)."""
        augment = cfg.augment if cfg.augment is not None else (0.5 if cfg.train is None else 0.0)
        if augment <= 0:
            return train
        augmented = replace_mentions(train, probability=augment, seed=cfg.seed)
        log(f"augmentation: mention replacement with probability {augment} ({len(augmented)} training sentences)")
        return ConllDataset(augmented, scheme=train.scheme, path=train.path)

    def describe_training_data(self, train, windows, cfg, log):
        lengths = [len(w.input_ids) for w in windows]
        bucketed = padding_waste(windows, bucket_batches(lengths, cfg.batch_size, shuffle=True, seed=cfg.seed))
        plain = 1.0 - np.mean(lengths) / max(lengths)
        log(
            f"train: {len(train)} sentences -> {len(windows)} windows ({len(windows) - len(train)} extra from long "
            f"sentences); padding waste {bucketed * 100:.1f}% with length bucketing vs {plain * 100:.1f}% padded "
            "to the longest"
        )

    def dataset(self, windows, cfg):
        return make_dataset(windows, cfg.batch_size, shuffle=True, seed=cfg.seed)

    def loss_and_metrics(self):
        from kerasllm import training

        return training.masked_sparse_categorical_crossentropy(), [training.masked_accuracy()]

    def evaluate(self, model, sentences, windows, label_map, cfg):
        return evaluate_windows(model, sentences, windows, label_map, cfg.batch_size)

    def describe_epoch(self, scores):
        return f"dev entity F1 {scores['f1'] * 100:.2f}"

    def report(self, sentences, scores):
        return f"({len(sentences)} sentences):\n{format_report(scores)}"

    def headline(self, scores):
        return f"test entity F1: {scores['f1'] * 100:.2f}"

    def save_info(self, train, label_map, cfg):
        return {"labels": label_map.labels, "scheme": train.scheme}

    def export(self, model, cfg, sentences, tokenizer, label_map, train_windows, log):
        def windows_of(data):
            return self.encode(data, tokenizer, label_map, cfg)

        return export_and_verify(model, cfg, sentences, windows_of, label_map, log, train_windows)


def run_ner_finetune(cfg, log=_log):
    """Run the whole fine-tune; return the metrics dict (also written to ``OUT/metrics.json``)."""
    return finetune.run_finetune(cfg, NerTask(), log)


def export_and_verify(model, cfg, sentences, windows_of, label_map, log=_log, train_windows=None):
    """Export ``model`` to ``OUT/model.tflite`` (``cfg.quantize``) and compare it with Keras.

    Returns a dict with the file size, the max abs logit difference and token argmax
    agreement on the evaluation windows, entity F1 of Keras and of the TFLite model,
    and the TFLite latency (p50/p95) at batch 1.
    """
    from kerasllm.data.ner_dataset import pad_batch

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

    def entity_f1(model_like):
        return evaluate_windows(model_like, sentences, windows, label_map, cfg.batch_size)["f1"]

    return finetune.export_verified(
        model, cfg, batches, pad_batch(windows, [0])[0], entity_f1, "entity_f1", "token", assets, representative, log
    )


# ------------------------------------------------------------------ prediction on raw text


def load_ner_folder(directory):
    """Load a fine-tuned NER model folder: ``(model, tokenizer, label_map)``.

    The folder is what ``kerasllm finetune ner`` writes to ``OUT/model``. Raises a
    ``FileNotFoundError``/``ValueError`` naming the folder when it is not one.
    """
    return finetune.load_task_folder(directory, "token_classification", "NER")


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
