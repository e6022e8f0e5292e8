"""Token-classification inputs from CoNLL sentences, and model outputs back to word tags.

Sentences longer than the model's maximum are split into overlapping windows of
whole words (never truncated); predictions of the windows are merged back per
word. Batches group windows of similar length (length bucketing) and are padded
only to their own longest window.
"""
import dataclasses
import math

import numpy as np

from kerasllm.data.alignment import align_labels, make_windows, merge_window_predictions

IGNORE_INDEX = -100


@dataclasses.dataclass
class NerWindow:
    """One model input: the words ``start_word:end_word`` of sentence ``sentence``."""

    sentence: int
    start_word: int
    end_word: int
    input_ids: np.ndarray
    word_ids: list  # per token: index of the word inside the window, or None for specials
    labels: np.ndarray  # per token: label id on the first sub-word, IGNORE_INDEX elsewhere


def encode_sentences(sentences, tokenizer, label_map=None, max_length=128, stride=None, path=None):
    """Tokenize ``sentences`` (:class:`kerasllm.data.Sentence`) into :class:`NerWindow` s.

    Args:
        sentences: sentences with ``tokens`` (and ``tags`` when ``label_map`` is given).
        tokenizer: a :class:`kerasllm.tokenizers.WordPieceTokenizer`.
        label_map: a :class:`kerasllm.data.LabelMap`; None for prediction only.
        max_length: model input length including ``[CLS]`` and ``[SEP]``.
        stride: sub-words shared by consecutive windows of a long sentence
            (default: a quarter of the window).

    Sentences longer than a window are split into overlapping windows of whole
    words; a single word with more sub-words than a window holds is cut to the
    window (the sub-words after the first carry no label and no prediction).
    """
    if max_length < 4:
        raise ValueError(f"max_length={max_length} is too small (needs room for [CLS], [SEP] and words)")
    slots = max_length - 2
    stride = slots // 4 if stride is None else stride
    windows = []
    for index, sentence in enumerate(sentences):
        words = list(sentence.tokens)
        label_ids = None
        if label_map is not None:
            label_ids = label_map.encode_sentence(sentence, path=path)
        # A single word longer than a window (a long URL) keeps its first sub-words: its label
        # and its prediction sit on the first one, as Transformers' truncation would leave them.
        counts = [min(count, slots) for count in tokenizer.subword_counts(words)]
        for start, end in make_windows(counts, slots, stride):
            encoding = tokenizer.encode_words(words[start:end], max_length=max_length)
            word_ids = list(encoding.word_ids)
            if label_ids is None:
                labels = np.full(len(word_ids), IGNORE_INDEX, np.int32)
            else:
                labels = np.asarray(align_labels(word_ids, label_ids[start:end], IGNORE_INDEX), np.int32)
            windows.append(
                NerWindow(index, start, end, np.asarray(encoding.input_ids, np.int32), word_ids, labels)
            )
    return windows


def bucket_batches(lengths, batch_size, shuffle=False, seed=0, bucket_size=50):
    """Group indices into batches of similar length.

    Without shuffling: sorted by length. With shuffling: a seeded permutation is cut
    into chunks of ``bucket_size`` batches, each chunk sorted by length and cut
    into batches, and the batch order shuffled (the same seed gives the same order).
    """
    lengths = np.asarray(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    chunk = batch_size * bucket_size
    batches = []
    for c in range(0, len(order), chunk):
        part = order[c : c + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def pad_batch(windows, indices, pad_id=0, multiple=8):
    """Inputs dict and labels for ``windows[indices]``, padded to the batch's longest (rounded up)."""
    longest = max(len(windows[i].input_ids) for i in indices)
    length = int(math.ceil(longest / multiple) * multiple)
    n = len(indices)
    ids = np.full((n, length), pad_id, np.int32)
    mask = np.zeros((n, length), np.int32)
    labels = np.full((n, length), IGNORE_INDEX, np.int32)
    for row, i in enumerate(indices):
        w = windows[i]
        ids[row, : len(w.input_ids)] = w.input_ids
        mask[row, : len(w.input_ids)] = 1
        labels[row, : len(w.labels)] = w.labels
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return inputs, labels


def padding_waste(windows, batches, multiple=8):
    """Fraction of padded positions over all positions for the given batching."""
    real = padded = 0
    for indices in batches:
        longest = max(len(windows[i].input_ids) for i in indices)
        padded += len(indices) * int(math.ceil(longest / multiple) * multiple)
        real += sum(len(windows[i].input_ids) for i in indices)
    return 1.0 - real / padded if padded else 0.0


def make_dataset(windows, batch_size, shuffle=False, seed=0, pad_id=0, extra=None):
    """A finite ``tf.data.Dataset`` of padded ``(inputs, labels)`` batches, length-bucketed.

    The batches are formed once (from a ``seed``-ed permutation when ``shuffle``,
    else by sorted length) and each is padded to its own longest window, rounded
    up to a multiple of 8. Their order is fixed: shuffle the batch order every
    epoch with ``dataset.shuffle(len(dataset))`` or, for exact resumption,
    ``ResumableTraining.shuffled_epochs(dataset, seed, batch_fn=lambda d: d)``.

    ``extra``: one float array ``[len(window), k]`` per window (a teacher's logits,
    say); the batches are then ``(inputs, labels, extra)``, ``extra`` zero-padded to
    ``[batch, length, k]`` like the inputs.
    """
    import tensorflow as tf

    if not windows:
        raise ValueError("no examples to build a dataset from")
    if extra is not None and len(extra) != len(windows):
        raise ValueError(f"extra has {len(extra)} arrays for {len(windows)} windows")
    batches = bucket_batches([len(w.input_ids) for w in windows], batch_size, shuffle=shuffle, seed=seed)

    def generate():
        for indices in batches:
            inputs, labels = pad_batch(windows, indices, pad_id)
            if extra is None:
                yield inputs, labels
                continue
            padded = np.zeros(labels.shape + extra[indices[0]].shape[1:], np.float32)
            for row, i in enumerate(indices):
                padded[row, : len(extra[i])] = extra[i]
            yield inputs, labels, padded

    spec = tf.TensorSpec([None, None], tf.int32)
    signature = ({"input_ids": spec, "attention_mask": spec, "token_type_ids": spec}, spec)
    if extra is not None:
        signature += (tf.TensorSpec([None, None, extra[0].shape[1]], tf.float32),)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(batches)))


def window_outputs(model, windows, batch_size=32, pad_id=0, softmax=False):
    """``model``'s outputs on each window: one float32 ``[len(window.input_ids), num_labels]`` array each.

    The windows run in length-bucketed batches (``training=False``); ``softmax``
    turns the logits into probabilities.
    """
    import tensorflow as tf

    outputs = [None] * len(windows)
    for indices in bucket_batches([len(w.input_ids) for w in windows], batch_size):
        inputs, _ = pad_batch(windows, indices, pad_id)
        values = model(inputs, training=False)
        values = np.asarray(tf.nn.softmax(values, axis=-1) if softmax else values, np.float32)
        for row, i in enumerate(indices):
            outputs[i] = values[row, : len(windows[i].input_ids)]
    return outputs


def predict_word_scores(model, windows, num_sentences, sentence_lengths, batch_size=32, pad_id=0):
    """Run ``model`` over ``windows``; return per sentence a ``[num_words, num_labels]`` probability array.

    Each word's score comes from its first sub-word; windows of a long sentence are
    merged with :func:`kerasllm.data.merge_window_predictions`.
    """
    per_window = []
    for w, probs in zip(windows, window_outputs(model, windows, batch_size, pad_id, softmax=True)):
        scores = np.zeros((w.end_word - w.start_word, probs.shape[-1]), np.float32)
        seen = set()
        for position, word in enumerate(w.word_ids):
            if word is not None and word not in seen:
                seen.add(word)
                scores[word] = probs[position]
        per_window.append(scores)
    by_sentence = [[] for _ in range(num_sentences)]
    for w, scores in zip(windows, per_window):
        by_sentence[w.sentence].append(((w.start_word, w.end_word), scores))
    results = []
    for index in range(num_sentences):
        spans = [span for span, _ in by_sentence[index]]
        scores = [s for _, s in by_sentence[index]]
        if len(spans) == 1:
            results.append(scores[0])
        else:
            results.append(merge_window_predictions(sentence_lengths[index], spans, scores))
    return results
