"""Fine-tune a text classifier (single texts or text pairs), end to end.

``run_classify_finetune(ClassifyFinetuneConfig(...))`` is what ``kerasllm finetune
classify`` runs: read CSV / TSV / JSONL files (or write kerasllm's embedded topic
corpus), build or load a BERT-style sequence classifier and its tokenizer, train
with ``model.fit``, keep the best checkpoint by dev accuracy (or macro-F1), score
the test set (accuracy, macro-F1, per-class precision / recall / F1) and export
a TFLite file verified against Keras. The steps every task shares live in
:mod:`kerasllm.training.finetune`.

A text pair is encoded ``[CLS] a [SEP] b [SEP]`` with segment ids 0 for
``[CLS] a [SEP]`` and 1 for ``b [SEP]``; over-long inputs are truncated to
``max_length`` sub-words, longest sequence first.
"""
import dataclasses
import math
import os

import numpy as np

from kerasllm.data import LabelMap, read_classification, write_classification_corpus
from kerasllm.data.ner_dataset import bucket_batches
from kerasllm.evaluation import classification_scores, format_classification_report
from kerasllm.training import finetune
from kerasllm.training.finetune import _log
from kerasllm.training.finetune_config import ClassifyFinetuneConfig

__all__ = [
    "ClassifyFinetuneConfig",
    "ClassifyTask",
    "EncodedTexts",
    "classification_dataset",
    "encode_examples",
    "encode_texts",
    "evaluate_encoded",
    "load_classify_folder",
    "predict_labels",
    "predict_probabilities",
    "run_classify_finetune",
    "score_line",
]

DEFAULT_CORPUS_NOTE = "kerasllm's embedded topic-classification corpus (no --train given)"
NO_LABEL = -1


@dataclasses.dataclass
class EncodedTexts:
    """Model inputs of classification examples: one unpadded row per example.

    Attributes:
        input_ids: per example an int32 array ``[CLS] a [SEP]`` (``b [SEP]``).
        token_type_ids: per example the segment ids (0 for the first text, 1 for the pair).
        labels: int32 ``[n]`` label ids (``-1`` when unlabelled).
    """

    input_ids: list
    token_type_ids: list
    labels: np.ndarray

    def __len__(self):
        return len(self.input_ids)

    @property
    def lengths(self):
        """Sub-words per example, special tokens included."""
        return [len(ids) for ids in self.input_ids]

    def batch(self, indices, pad_id=0, multiple=8):
        """``(inputs, labels)`` of ``indices``, padded to the batch's longest (rounded up to ``multiple``).

        Example:
            >>> e = EncodedTexts([np.array([2, 7, 3]), np.array([2, 3])], [np.zeros(3), np.zeros(2)], np.array([1, 0]))
            >>> inputs, labels = e.batch([0, 1], multiple=4)
            >>> inputs["input_ids"].tolist(), inputs["attention_mask"].tolist(), labels.tolist()
            ([[2, 7, 3, 0], [2, 3, 0, 0]], [[1, 1, 1, 0], [1, 1, 0, 0]], [1, 0])
        """
        indices = list(indices)
        longest = max(len(self.input_ids[i]) for i in indices)
        length = int(math.ceil(longest / multiple) * multiple)
        ids = np.full((len(indices), length), pad_id, np.int32)
        types = np.zeros((len(indices), length), np.int32)
        mask = np.zeros((len(indices), length), np.int32)
        for row, i in enumerate(indices):
            n = len(self.input_ids[i])
            ids[row, :n] = self.input_ids[i]
            types[row, :n] = self.token_type_ids[i]
            mask[row, :n] = 1
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return inputs, np.asarray(self.labels, np.int32)[indices]


def encode_texts(tokenizer, texts, pairs=None, max_length=128, labels=None, chunk=512):
    """Tokenize ``texts`` (and ``pairs``) into :class:`EncodedTexts`.

    Args:
        tokenizer: a :class:`kerasllm.tokenizers.WordPieceTokenizer`.
        texts: the first texts.
        pairs: the second texts, or None.
        max_length: longest input, special tokens included; longer inputs are
            truncated (pairs: the longer sequence first).
        labels: label ids, or None (all ``-1``).
        chunk: texts tokenized per call.
    """
    texts = list(texts)
    pairs = None if pairs is None else list(pairs)
    input_ids, token_type_ids = [], []
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        part_pairs = None if pairs is None else pairs[start : start + chunk]
        batch = tokenizer.encode_batch(part, part_pairs, max_length=max_length, truncation=True, padding="longest")
        for row, n in enumerate(batch["attention_mask"].sum(axis=1)):
            input_ids.append(batch["input_ids"][row, :n].astype(np.int32))
            token_type_ids.append(batch["token_type_ids"][row, :n].astype(np.int32))
    labels = np.full(len(texts), NO_LABEL, np.int32) if labels is None else np.asarray(labels, np.int32)
    return EncodedTexts(input_ids, token_type_ids, labels)


def label_ids(examples, label_map):
    """Label ids of :class:`kerasllm.data.ClassificationExamples`; an unknown label names its file and line."""
    index = label_map.label_to_id
    ids = []
    for i, label in enumerate(examples.labels):
        if label not in index:
            where = f"{examples.path}, line {examples.lines[i]}" if examples.path and examples.lines else f"example {i}"
            raise ValueError(
                f"{where}: unknown label {label!r}; the model knows {label_map.num_labels} labels "
                f"({', '.join(label_map.labels)}), those of its training data"
            )
        ids.append(index[label])
    return ids


def encode_examples(examples, tokenizer, label_map, max_length=128):
    """:func:`encode_texts` of labelled :class:`kerasllm.data.ClassificationExamples`."""
    return encode_texts(tokenizer, examples.texts, examples.pairs, max_length, label_ids(examples, label_map))


def classification_dataset(encoded, batch_size, shuffle=False, seed=0):
    """A finite ``tf.data.Dataset`` of padded ``(inputs, labels)`` batches, length-bucketed.

    Batches are formed once (see :func:`kerasllm.data.ner_dataset.bucket_batches`),
    each padded to its own longest example (rounded up to a multiple of 8).
    """
    import tensorflow as tf

    if not len(encoded):
        raise ValueError("no examples to build a dataset from")
    batches = bucket_batches(encoded.lengths, batch_size, shuffle=shuffle, seed=seed)
    spec = tf.TensorSpec([None, None], tf.int32)
    signature = (
        {"input_ids": spec, "attention_mask": spec, "token_type_ids": spec},
        tf.TensorSpec([None], tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(lambda: (encoded.batch(b) for b in batches), output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(batches)))


def predict_probabilities(model, encoded, batch_size=32):
    """Class probabilities ``[n, num_labels]`` of ``model`` (or a runner wrapped to act like one)."""
    import tensorflow as tf

    probabilities = None
    for indices in bucket_batches(encoded.lengths, batch_size):
        inputs, _ = encoded.batch(indices)
        batch = tf.nn.softmax(tf.cast(model(inputs, training=False), tf.float32), axis=-1).numpy()
        if probabilities is None:
            probabilities = np.zeros((len(encoded), batch.shape[-1]), np.float32)
        probabilities[indices] = batch
    return probabilities


def evaluate_encoded(model, encoded, label_map, batch_size=32):
    """:func:`kerasllm.evaluation.classification_scores` of ``model`` on labelled ``encoded``."""
    predicted = predict_probabilities(model, encoded, batch_size).argmax(-1)
    labels = label_map.labels
    return classification_scores(
        [labels[i] for i in encoded.labels], [labels[i] for i in predicted], labels=labels
    )


def score_line(scores):
    """``"accuracy 85.00, macro-F1 84.12"`` (percentages) of :func:`evaluate_encoded` scores."""
    return f"accuracy {scores['accuracy'] * 100:.2f}, macro-F1 {scores['macro_f1'] * 100:.2f}"


def _sequence_classifier(config, num_labels):
    from kerasllm.models import sequence_classifier

    if not config.use_pooler:  # a checkpoint without a pooler: it is added and trained fresh
        config = config.replace(use_pooler=True)
    return sequence_classifier(config, num_labels)


class ClassifyTask(finetune.FinetuneTask):
    """Text classification for :func:`kerasllm.training.finetune.run_finetune`.

    Args:
        select: the dev metric that picks the best checkpoint: ``"accuracy"`` or ``"macro_f1"``.
    """

    name = "classify"
    label = "text classification"
    logged_scores = ("accuracy", "macro_f1")
    corpus_note = DEFAULT_CORPUS_NOTE

    def __init__(self, select="accuracy"):
        self.monitor = select

    def write_corpus(self, folder, cfg):
        return write_classification_corpus(folder, seed=cfg.seed)

    def read(self, path, cfg):
        try:
            examples, _ = read_classification(path, cfg.text_column, cfg.label_column, cfg.text_pair_column)
        except ValueError as err:
            # the reader names its Python arguments; on the command line they are options
            message = str(err).replace(
                "text_column= / label_column= / text_pair_column=", "--text-column / --label-column / --text-pair-column"
            )
            raise ValueError(message) from None
        return examples

    def label_map(self, train):
        return LabelMap(train.label_names)

    def vocab_texts(self, train):
        return train.texts + (train.pairs or [])

    def head(self, config, num_labels):
        return _sequence_classifier(config, num_labels)

    def encode(self, data, tokenizer, label_map, cfg):
        return encode_examples(data, tokenizer, label_map, cfg.max_length)

    def describe_training_data(self, train, encoded, cfg, log):
        lengths = np.asarray(encoded.lengths)
        full = int(np.sum(lengths >= cfg.max_length))
        counts = {label: 0 for label in train.label_names}
        for label in train.labels:
            counts[label] += 1
        log(
            f"train: {len(train)} {'text pairs' if train.pairs is not None else 'texts'}; "
            + ", ".join(f"{label} {n}" for label, n in counts.items())
            + f"; sub-words per example: median {int(np.median(lengths))}, max {int(lengths.max())}"
            + (f"; {full} filled --max-length {cfg.max_length} (longer ones truncated)" if full else "")
        )

    def dataset(self, encoded, cfg):
        return classification_dataset(encoded, cfg.batch_size, shuffle=True, seed=cfg.seed)

    def loss_and_metrics(self):
        import tf_keras as keras

        return (
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )

    def evaluate(self, model, data, encoded, label_map, cfg):
        return evaluate_encoded(model, encoded, label_map, cfg.batch_size)

    def describe_epoch(self, scores):
        return f"dev {score_line(scores)}"

    def report(self, data, scores):
        return f"({len(data)} examples):\n{format_classification_report(scores)}"

    def headline(self, scores):
        return f"test {score_line(scores)}"

    def save_info(self, train, label_map, cfg):
        return {
            "labels": label_map.labels,
            "text_column": cfg.text_column,
            "label_column": cfg.label_column,
            "text_pair_column": cfg.text_pair_column,
        }

    def export(self, model, cfg, data, tokenizer, label_map, train_encoded, log):
        encoded = self.encode(data, tokenizer, label_map, cfg)
        batches = [encoded.batch(b)[0] for b in bucket_batches(encoded.lengths, cfg.batch_size)]
        representative = None
        if cfg.quantize == "int8":
            representative = [train_encoded.batch([i])[0] for i in range(min(200, len(train_encoded)))]
        assets = {"labels.json": label_map.labels, "vocab.txt": os.path.join(cfg.out, "model", "vocab.txt")}

        def accuracy(model_like):
            return evaluate_encoded(model_like, encoded, label_map, cfg.batch_size)["accuracy"]

        return finetune.export_verified(
            model, cfg, batches, encoded.batch([0])[0], accuracy, "accuracy", "example", assets, representative, log
        )


def run_classify_finetune(cfg, log=_log):
    """Run the whole fine-tune; return the metrics dict (also written to ``OUT/metrics.json``)."""
    return finetune.run_finetune(cfg, ClassifyTask(cfg.select), log)


# ------------------------------------------------------------------ prediction on raw text


def load_classify_folder(directory):
    """Load a fine-tuned text-classification folder: ``(model, tokenizer, label_map)``.

    The folder is what ``kerasllm finetune classify`` writes to ``OUT/model``;
    ``model.kerasllm_task`` also holds the column names it was trained with
    (``text_column``, ``label_column``, ``text_pair_column``).
    """
    return finetune.load_task_folder(directory, "sequence_classification", "text classification")


def predict_labels(model, tokenizer, label_map, texts, pairs=None, max_length=128, batch_size=32):
    """Predicted label and class probabilities for raw ``texts`` (and ``pairs``).

    Returns per text a dict: ``label``, ``score`` (its probability) and
    ``probabilities`` (``{label: probability}`` over every class).
    """
    encoded = encode_texts(tokenizer, texts, pairs, max_length)
    if not len(encoded):
        return []
    probabilities = predict_probabilities(model, encoded, batch_size)
    results = []
    for row in probabilities:
        best = int(row.argmax())
        results.append(
            {
                "label": label_map.labels[best],
                "score": float(row[best]),
                "probabilities": {label: float(p) for label, p in zip(label_map.labels, row)},
            }
        )
    return results
