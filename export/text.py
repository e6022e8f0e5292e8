"""String-in exports: the WordPiece tokenizer inside the SavedModel and the ``.tflite`` file.

:func:`export_text_tflite` and :func:`export_text_savedmodel` write a model whose
one input is ``text`` (a ``[batch]`` string tensor of raw UTF-8 sentences) and
whose outputs are ready to use:

- token classification (NER), one row per text, entities padded with ``-1``
  (score ``0``) to the largest count in the batch::

      entity_type   int32 [batch, entities]  index into the entity types (labels.json order)
      entity_start  int32 [batch, entities]  UTF-8 byte offset of the first character
      entity_end    int32 [batch, entities]  byte offset just past the last character
      entity_score  float [batch, entities]  mean probability of the predicted tags
      entity_count  int32 [batch]

- sequence classification: ``probabilities`` (softmax) and ``logits``, ``[batch, labels]``.

The graph is the one :func:`kerasllm.training.ner_finetune.predict_entities`
runs in Python: :meth:`WordPieceTokenizer.tflite_tokenize_with_offsets` (TF Text's
``FastBertNormalize`` with kerasllm's BERT normaliser model, then
``FastWordpieceTokenizeWithOffsets``, whose pre-tokenization splits the same
words as the basic tokenizer), ``[CLS] ... [SEP]``, the encoder, a softmax, each
word's tag from its first sub-word, and conlleval's rules for where an entity
begins and ends (:mod:`kerasllm.evaluation.ner`). Differences: a text longer than
``max_length`` sub-words is truncated (``predict_entities`` slides windows over
it), offsets are UTF-8 bytes, an ``entity_end`` also covers characters BERT drops
(control and format characters such as U+0007 or U+200B) that directly follow
the entity (:class:`TextRunner` turns offsets into characters and trims those),
and the tokenizer exceptions listed in :mod:`kerasllm.tokenizers.wordpiece`.

TFLite ops of the string-in model: two TF Text custom ops, ``FastBertNormalize``
and ``FastWordpieceTokenizeWithOffsets``, which the interpreter gets from
``tensorflow_text.tflite_registrar`` (:func:`custom_op_registerers`); everything
else is TFLite builtins (no Flex delegate): the encoder's ops plus ``CUMSUM``,
``SCATTER_ND``, ``GATHER``/``GATHER_ND``, ``WHERE``, ``UNSORTED_SEGMENT_MAX``/
``UNSORTED_SEGMENT_SUM``, ``ARG_MAX``, ``SOFTMAX``. :func:`custom_ops` lists the
custom ops of a written file.
"""
import importlib
import json
import os

import numpy as np
import tensorflow as tf

from kerasllm.export._common import check_assets, check_max_length, float32_model, sidecar_path
from kerasllm.layers._utils import portable_graph

TEXT_INPUT = "text"
SERVING = "serving_default"
TASKS = ("token_classification", "sequence_classification")
ENTITY_OUTPUTS = ("entity_count", "entity_end", "entity_score", "entity_start", "entity_type")
CUSTOM_OPS = ("FastBertNormalize", "FastWordpieceTokenizeWithOffsets")
_PREFIX_CODES = {"O": 0, "B": 1, "I": 2, "E": 3, "S": 4, "L": 3, "U": 4}
_O, _B, _E, _S = 0, 1, 3, 4


def custom_op_registerers():
    """The TF Text kernel registerers a TFLite interpreter needs for a string-in model."""
    from tensorflow_text import tflite_registrar

    return [tflite_registrar.AddFastBertNormalize, tflite_registrar.AddFastWordpieceTokenize]


def entity_types(labels):
    """``(types, prefix_codes, type_codes)`` of tag strings (``"O"``, ``"B-PER"``, ...).

    ``types`` are the entity types in first-seen order; ``type_codes[i]`` is the
    index of label ``i``'s type in it (``-1`` for ``O``).
    """
    from kerasllm.evaluation.ner import split_tag

    types, prefixes, codes = [], [], []
    for label in labels:
        prefix, type_ = split_tag(label)
        prefixes.append(_PREFIX_CODES[prefix])
        if prefix == "O":
            codes.append(-1)
            continue
        if type_ not in types:
            types.append(type_)
        codes.append(types.index(type_))
    return types, prefixes, codes


def _task(model):
    task = (getattr(model, "kerasllm_task", None) or {}).get("task")
    if task not in TASKS:
        raise ValueError(
            f"a string-in export needs a token or sequence classifier (kerasllm_task 'token_classification' "
            f"or 'sequence_classification'); {model.name!r} has task {task!r}"
        )
    return task


def _encode(tokenizer, texts, max_length):
    """Model inputs of a batch of strings, and where each kept sub-word went.

    Returns ``(inputs, pieces)``: ``inputs`` the int32 ``[batch, seq]`` model
    inputs, ``pieces`` a dict of flat per-sub-word tensors ``ids``, ``row``,
    ``pos`` (position in the row, ``[CLS]`` at 0), ``start``/``end`` (byte offsets).
    Built from ops with TFLite kernels only (no ragged concat or slicing).
    """
    flat = tokenizer.tflite_tokenize_with_offsets(texts)
    batch = tf.shape(texts)[0]
    splits = flat["row_splits"]
    pos = tf.range(tf.shape(flat["ids"])[0]) - tf.gather(splits, flat["rows"])
    keep = pos < max_length - 2
    pieces = {
        "ids": tf.boolean_mask(flat["ids"], keep),
        "row": tf.boolean_mask(flat["rows"], keep),
        "pos": tf.boolean_mask(pos, keep) + 1,
        "start": tf.boolean_mask(flat["starts"], keep),
        "end": tf.boolean_mask(flat["ends"], keep),
    }
    lengths = tf.minimum(splits[1:] - splits[:-1], max_length - 2)
    seq = tf.reduce_max(tf.concat([lengths, [0]], axis=0)) + 2
    every_row = tf.range(batch)
    at = tf.concat(
        [
            tf.stack([pieces["row"], pieces["pos"]], axis=1),
            tf.stack([every_row, tf.zeros_like(every_row)], axis=1),
            tf.stack([every_row, lengths + 1], axis=1),
        ],
        axis=0,
    )
    pad = tokenizer.pad_id
    values = tf.concat(
        [pieces["ids"], tf.fill([batch], tokenizer.cls_id), tf.fill([batch], tokenizer.sep_id)], axis=0
    )
    shape = tf.stack([batch, seq])
    inputs = {
        "input_ids": tf.scatter_nd(at, values - pad, shape) + pad,
        "attention_mask": tf.scatter_nd(at, tf.ones_like(values), shape),
        "token_type_ids": tf.zeros(shape, tf.int32),
    }
    return inputs, pieces


def _entities(probs, pieces, batch, first_table, prefix_table, type_table):
    """Entity tensors (see the module doc) from token probabilities ``[batch, seq, labels]``."""
    is_first = tf.gather(first_table, pieces["ids"])
    first = is_first > 0
    word_of_piece = tf.cumsum(is_first) - 1
    num_words = tf.reduce_sum(is_first)
    word_row = tf.boolean_mask(pieces["row"], first)
    word_pos = tf.boolean_mask(pieces["pos"], first)
    word_start = tf.boolean_mask(pieces["start"], first)
    word_end = tf.math.unsorted_segment_max(pieces["end"], word_of_piece, num_words)
    word_probs = tf.gather_nd(probs, tf.stack([word_row, word_pos], axis=1))
    label = tf.argmax(word_probs, axis=-1, output_type=tf.int32)
    score = tf.reduce_max(word_probs, axis=-1)
    prefix = tf.gather(prefix_table, label)
    type_ = tf.gather(type_table, label)

    # conlleval: where an entity begins (kerasllm.evaluation.ner._starts_chunk).
    index = tf.range(num_words)
    previous = tf.maximum(index - 1, 0)
    same_row = tf.logical_and(index > 0, tf.equal(tf.gather(word_row, previous), word_row))
    prev_prefix = tf.where(same_row, tf.gather(prefix, previous), tf.fill([num_words], _O))
    prev_type = tf.where(same_row, tf.gather(type_, previous), tf.fill([num_words], -1))
    inside = tf.not_equal(prefix, _O)
    begins = tf.logical_and(
        inside,
        tf.reduce_any(
            tf.stack(
                [
                    tf.equal(prefix, _B),
                    tf.equal(prefix, _S),
                    tf.equal(prev_prefix, _O),
                    tf.equal(prev_prefix, _E),
                    tf.equal(prev_prefix, _S),
                    tf.not_equal(prev_type, type_),
                ]
            ),
            axis=0,
        ),
    )
    begins_int = tf.cast(begins, tf.int32)
    count_all = tf.reduce_sum(begins_int)
    # Words outside any entity go to one extra, discarded segment.
    segment = tf.where(inside, tf.cumsum(begins_int) - 1, tf.fill([num_words], count_all))
    first_word = tf.boolean_mask(index, begins)
    last_word = tf.math.unsorted_segment_max(index, segment, count_all + 1)[:count_all]
    total = tf.math.unsorted_segment_sum(score, segment, count_all + 1)[:count_all]
    words = tf.math.unsorted_segment_sum(tf.ones_like(score), segment, count_all + 1)[:count_all]
    entity_row = tf.gather(word_row, first_word)

    count = tf.math.unsorted_segment_sum(tf.ones_like(entity_row), entity_row, batch)
    slot = tf.range(count_all) - tf.gather(tf.cumsum(count, exclusive=True), entity_row)
    width = tf.reduce_max(tf.concat([count, [0]], axis=0))
    at = tf.stack([entity_row, slot], axis=1)
    shape = tf.stack([batch, width])

    def padded(values):  # -1 where a row has fewer entities
        return tf.scatter_nd(at, values + 1, shape) - 1

    return {
        "entity_type": padded(tf.gather(type_, first_word)),
        "entity_start": padded(tf.gather(word_start, first_word)),
        "entity_end": padded(tf.gather(word_end, last_word)),
        "entity_score": tf.scatter_nd(at, total / words, shape),
        "entity_count": count,
    }


def text_serving_function(model, tokenizer, labels=None, max_length=None):
    """``(function, specs)``: a ``tf.function`` from ``{"text": [batch] strings}`` to the outputs above.

    Args:
        model: a kerasllm token or sequence classifier (``kerasllm_task`` set).
        tokenizer: its :class:`~kerasllm.tokenizers.WordPieceTokenizer`.
        labels: the tags of a token classifier, in output order (``"O"``,
            ``"B-PER"``, ...); not used for sequence classifiers.
        max_length: sub-words per text including ``[CLS]``/``[SEP]``; longer texts
            are truncated. Default: the model's ``max_position``.

    Example:

    >>> serve, specs = text_serving_function(model, tokenizer, labels=label_map.labels)  # doctest: +SKIP
    >>> serve({"text": tf.constant(["Barack Obama visited Paris"])})["entity_count"]  # doctest: +SKIP
    <tf.Tensor: shape=(1,), dtype=int32, numpy=array([2], dtype=int32)>
    """
    task = _task(model)
    if task == "token_classification":
        if labels is None or len(labels) != model.output_shape[-1]:
            got = "none" if labels is None else len(labels)
            raise ValueError(
                f"labels must list the {model.output_shape[-1]} tags of {model.name!r} in output order; got {got}"
            )
        _, prefixes, codes = entity_types(labels)
    config = model.kerasllm_config
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but {model.name!r} embeds {config.vocab_size}"
        )
    if max_length is None:
        max_length = config.max_position
    check_max_length(model, max_length)
    if max_length < 3:
        raise ValueError(f"max_length must leave room for [CLS], [SEP] and one sub-word; got {max_length}")
    tokenizer._tflite_parts()  # build the tokenizer's tables eagerly, outside any trace
    names = set(model.input_names)
    specs = {TEXT_INPUT: tf.TensorSpec([None], tf.string, name=TEXT_INPUT)}
    vocab = tokenizer.get_vocabulary()
    with tf.init_scope():
        first_table = tf.constant([0 if t.startswith("##") and t != "##" else 1 for t in vocab], tf.int32)
        if task == "token_classification":
            prefix_table = tf.constant(prefixes, tf.int32)
            type_table = tf.constant(codes, tf.int32)

    @tf.function(input_signature=[specs], autograph=False)  # plain graph code: no AutoGraph pass
    def serve(inputs):
        texts = inputs[TEXT_INPUT]
        encoded, pieces = _encode(tokenizer, texts, max_length)
        with portable_graph():
            logits = model({k: v for k, v in encoded.items() if k in names}, training=False)
        logits = tf.cast(logits, tf.float32)
        if task == "sequence_classification":
            return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}
        probs = tf.nn.softmax(logits, axis=-1)
        return _entities(probs, pieces, tf.shape(texts)[0], first_table, prefix_table, type_table)

    return serve, specs


def _text_assets(model, tokenizer, labels):
    assets = {"vocab.txt": "".join(t + "\n" for t in tokenizer.get_vocabulary()).encode("utf-8")}
    config = {"task": _task(model), "tokenizer": tokenizer.get_config()}
    if labels is not None:
        assets["labels.json"] = list(labels)
    assets["text_model.json"] = config
    return check_assets(assets)


def export_text_tflite(model, tokenizer, out_path, labels=None, max_length=None, quantize="none"):
    """Write a string-in ``.tflite`` file: raw text in, entities (or class scores) out.

    Args:
        model: a kerasllm token or sequence classifier.
        tokenizer: its :class:`~kerasllm.tokenizers.WordPieceTokenizer` (uncased, or
            cased without accent stripping).
        out_path: the ``.tflite`` file (written atomically). Beside it:
            ``<stem>.labels.json``, ``<stem>.vocab.txt`` and ``<stem>.text_model.json``
            (task and tokenizer settings), read by :class:`TextRunner`.
        labels: the tags of a token classifier in output order (required for NER).
        max_length: sub-words per text including ``[CLS]``/``[SEP]``; longer texts are
            truncated. Default: the model's ``max_position``.
        quantize: ``"none"``, ``"float16"`` or ``"dynamic"`` (weights of the encoder;
            full-integer int8 is not offered for string inputs).

    Returns:
        :class:`ExportReport`; ``notes`` name the custom ops the file needs.

    Example:

    >>> report = export_text_tflite(model, tokenizer, "ner_text.tflite", labels=label_map.labels)  # doctest: +SKIP
    >>> TextRunner(report.path)(["Barack Obama visited Paris"])  # doctest: +SKIP
    [[{'start': 0, 'end': 12, 'type': 'person', 'text': 'Barack Obama', 'score': 0.93}, ...]]
    """
    if quantize not in ("none", "float16", "dynamic"):
        raise ValueError(
            f"quantize={quantize!r} is not available for a string-in model; use 'none', 'float16' or 'dynamic' "
            "(full-integer int8 needs numeric calibration inputs: export the token-id model for that)"
        )
    out_path = os.fspath(out_path)
    model, note = float32_model(model, "TFLite")
    serve, specs = text_serving_function(model, tokenizer, labels, max_length)
    checked = _text_assets(model, tokenizer, labels)
    from kerasllm.export.tflite import _check_signatures, function_to_tflite, write_tflite

    flatbuffer, _ = function_to_tflite(serve, specs, repr(model.name), quantize, allow_custom_ops=True)
    signatures = _check_signatures(flatbuffer, [SERVING], custom_op_registerers())
    notes = [note] if note else []
    notes.append(
        "string-in model: needs the TF Text custom ops " + ", ".join(CUSTOM_OPS) + " (register "
        "tensorflow_text.tflite_registrar.AddFastBertNormalize and AddFastWordpieceTokenize); "
        "everything else is TFLite builtins"
    )
    return write_tflite(out_path, flatbuffer, checked, quantize, signatures, notes)


def export_text_savedmodel(model, tokenizer, out_dir, labels=None, max_length=None):
    """Write a string-in SavedModel folder (``serving_default``: ``text`` -> entities or scores).

    Same graph and arguments as :func:`export_text_tflite`; the folder's
    ``assets.extra/`` holds ``labels.json``, ``vocab.txt`` and ``text_model.json``.
    Loading it needs ``import tensorflow_text`` (its ops are TF Text's). Written
    beside ``out_dir`` and renamed into place, so a failure leaves nothing behind.

    Returns:
        :class:`ExportReport`.

    Example:

    >>> report = export_text_savedmodel(model, tokenizer, "ner_text", labels=label_map.labels)  # doctest: +SKIP
    >>> TextRunner(report.path)(["Barack Obama visited Paris"])  # doctest: +SKIP
    """
    from kerasllm.export.savedmodel import save_serving

    serve, _ = text_serving_function(model, tokenizer, labels, max_length)
    return save_serving(serve, model, out_dir, _text_assets(model, tokenizer, labels))


def tflite_ops(path):
    """``{op name: count}`` of a ``.tflite`` file (custom ops by their custom name).

    Example:

    >>> sorted(op for op in tflite_ops("ner_text.tflite") if not op.isupper())  # doctest: +SKIP
    ['FastBertNormalize', 'FastWordpieceTokenizeWithOffsets']
    """
    from ai_edge_litert.interpreter import InterpreterWithCustomOps

    interpreter = InterpreterWithCustomOps(model_path=os.fspath(path), custom_op_registerers=custom_op_registerers())
    counts = {}
    for op in interpreter._get_ops_details():  # no public per-op listing in ai_edge_litert
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts


def _char_offsets(text, byte_offsets):
    """Character offsets of UTF-8 byte offsets into ``text``."""
    data = np.frombuffer(text.encode("utf-8"), np.uint8)
    chars_before = np.concatenate([[0], np.cumsum((data & 0xC0) != 0x80)])
    return [int(chars_before[b]) for b in byte_offsets]


def _trim_dropped(text, start, end):
    """``end`` moved back over characters BERT drops (control/format, U+FFFD) right after an entity.

    The graph's end offset is where the next kept character starts, so it runs
    over such characters; ``predict_entities`` ends at the last kept one.
    """
    from kerasllm.tokenizers._normalization import is_bert_control

    while end > start and (is_bert_control(text[end - 1]) or text[end - 1] in "\x00\ufffd"):
        end -= 1
    return end


class TextRunner:
    """Run a string-in model (``.tflite`` file or SavedModel folder) on Python strings.

    Args:
        path: a file from :func:`export_text_tflite` or a folder from
            :func:`export_text_savedmodel` (its ``labels.json`` and
            ``text_model.json`` beside it / in ``assets.extra``).
        num_threads: TFLite interpreter threads (XNNPACK).

    ``runner(texts)`` returns, per text, for NER a list of entity dicts as
    :func:`kerasllm.training.ner_finetune.predict_entities` does (``start``/``end``
    character offsets, ``type``, ``text``, ``score``), for classification
    ``{"label", "score", "scores": {label: probability}}``. ``runner.raw(texts)``
    gives the model's output arrays.

    Example:

    >>> TextRunner("ner_text.tflite", num_threads=2)(["Barack Obama visited Paris"])  # doctest: +SKIP
    [[{'start': 0, 'end': 12, 'type': 'person', 'text': 'Barack Obama', 'score': 0.93}, ...]]
    """

    def __init__(self, path, num_threads=None):
        from kerasllm.export.savedmodel import ASSETS_FOLDER

        path = os.fspath(path)
        self.path = path
        if os.path.isdir(path):
            importlib.import_module("tensorflow_text")  # registers the tokenizer ops

            if not os.path.isfile(os.path.join(path, "saved_model.pb")):
                raise FileNotFoundError(f"no SavedModel at {path} (saved_model.pb missing)")
            self._function = tf.saved_model.load(path).signatures[SERVING]
            self._kind = "savedmodel"
            asset = lambda name: os.path.join(path, ASSETS_FOLDER, name)  # noqa: E731
        else:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"string-in model not found: {path}")
            from kerasllm.export.tflite import TFLiteRunner

            self._runner = TFLiteRunner(path, num_threads=num_threads, custom_op_registerers=custom_op_registerers())
            if self._runner.input_names != [TEXT_INPUT]:
                raise ValueError(
                    f"{path} takes {self._runner.input_names}, not raw text; write it with export_text_tflite"
                )
            self._kind = "tflite"
            asset = lambda name: sidecar_path(path, name)  # noqa: E731
        with open(asset("text_model.json"), encoding="utf-8") as f:
            self.task = json.load(f)["task"]
        self.labels = None
        if os.path.isfile(asset("labels.json")):
            with open(asset("labels.json"), encoding="utf-8") as f:
                self.labels = json.load(f)
        if self.task == "token_classification":
            if self.labels is None:
                raise FileNotFoundError(f"{asset('labels.json')} is missing; the entity types are read from it")
            self.types = entity_types(self.labels)[0]

    def raw(self, texts):
        """The model's outputs (dict of numpy arrays) for a list of strings."""
        if isinstance(texts, str):
            raise TypeError("TextRunner expects a list of strings")
        data = np.array([t.encode("utf-8") for t in texts], dtype=object).reshape([len(texts)])
        if self._kind == "tflite":
            out = self._runner._runner(**{TEXT_INPUT: data})
            return {k: np.asarray(v) for k, v in out.items()}
        out = self._function(**{TEXT_INPUT: tf.constant(data, tf.string)})
        return {k: v.numpy() for k, v in out.items()}

    def __call__(self, texts):
        out = self.raw(texts)
        results = []
        for i, text in enumerate(texts):
            if self.task == "sequence_classification":
                probs = out["probabilities"][i]
                names = self.labels or [str(k) for k in range(len(probs))]
                best = int(np.argmax(probs))
                results.append(
                    {"label": names[best], "score": float(probs[best]),
                     "scores": {n: float(p) for n, p in zip(names, probs)}}
                )
                continue
            n = int(out["entity_count"][i])
            starts = _char_offsets(text, out["entity_start"][i, :n])
            ends = [_trim_dropped(text, s, e) for s, e in zip(starts, _char_offsets(text, out["entity_end"][i, :n]))]
            results.append(
                [
                    {"start": s, "end": e, "type": self.types[int(t)], "text": text[s:e], "score": float(score)}
                    for s, e, t, score in zip(starts, ends, out["entity_type"][i, :n], out["entity_score"][i, :n])
                ]
            )
        return results


def verify_text(runner, model, tokenizer, texts, labels=None, max_length=None, score_tolerance=1e-4):
    """Compare a string-in model with the Python pipeline on the same raw ``texts``.

    For NER the reference is :func:`kerasllm.training.ner_finetune.predict_entities`
    (same ``max_length``, default the model's ``max_position``); a text agrees when
    its entities have the same ``start``, ``end`` and ``type`` in the same order
    and every score is within ``score_tolerance``. For sequence classification the
    reference is the softmax of the Keras model on :meth:`encode_batch` ids; a text
    agrees when the predicted class is the same.

    Args:
        runner: a :class:`TextRunner` (or any callable with its output format).
        model, tokenizer: the Keras model and its tokenizer.
        texts: the raw strings.
        labels: the tags / class names in output order (required for NER).
        max_length: as given to the export.

    Returns:
        ``{"n_texts", "identical_texts", "agreement", "n_entities", "max_score_diff"}``
        (``n_entities``: entities in the reference, 0 for classification).

    Example:

    >>> verify_text(TextRunner("ner_text.tflite"), model, tokenizer, texts, label_map.labels)  # doctest: +SKIP
    {'n_texts': 50, 'identical_texts': 50, 'agreement': 1.0, 'n_entities': 61, 'max_score_diff': 2.4e-07}
    """
    texts = list(texts)
    if max_length is None:
        max_length = model.kerasllm_config.max_position
    got = runner(texts)
    same, entities, worst = 0, 0, 0.0
    if _task(model) == "token_classification":
        from kerasllm.data import LabelMap
        from kerasllm.training.ner_finetune import predict_entities

        want = predict_entities(model, tokenizer, LabelMap(list(labels)), texts, max_length=max_length)
        for have, ref in zip(got, want):
            entities += len(ref)
            spans = [(e["start"], e["end"], e["type"]) for e in have]
            if spans != [(e["start"], e["end"], e["type"]) for e in ref]:
                continue
            diff = max([abs(a["score"] - b["score"]) for a, b in zip(have, ref)], default=0.0)
            worst = max(worst, diff)
            same += diff <= score_tolerance
    else:
        encoded = tokenizer.encode_batch(texts, max_length=max_length)
        inputs = {k: v for k, v in encoded.items() if k in model.input_names}
        probs = tf.nn.softmax(tf.cast(model(inputs, training=False), tf.float32), axis=-1).numpy()
        for have, ref in zip(got, probs):
            scores = np.array(list(have["scores"].values()))
            worst = max(worst, float(np.max(np.abs(scores - ref))))
            same += int(np.argmax(scores) == np.argmax(ref))
    return {
        "n_texts": len(texts),
        "identical_texts": same,
        "agreement": same / len(texts) if texts else float("nan"),
        "n_entities": entities,
        "max_score_diff": worst,
    }
