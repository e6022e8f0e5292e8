"""Pretraining from scratch on a text corpus: masked LM (+ next sentence) for BERT, causal LM for GPT.

:func:`run_pretrain` is what ``kerasllm pretrain mlm|clm`` runs:

1. check the options, the corpus files and the vocabulary folder;
2. tokenize the corpus once into ``tf.data`` snapshots (``Dataset.save``) in a
   temporary folder (removed at the end), counting the training and held-out
   data and, for the causal LM, the unigram counts of the training tokens. A corpus too small
   for one sequence is refused here, before anything is written to ``OUT``;
3. create the ``tf.distribute`` strategy, write ``OUT/pretrain_config.json``,
   build the preset model (the tokenizer's vocabulary size, ``max_position =
   seq_length``) and compile it (AdamW, warm-up then linear decay over
   ``steps``);
4. train with ``model.fit`` on an endless shuffled stream, in rounds of
   ``eval_every`` steps: after each round the held-out data are scored, a
   backup is written to ``OUT/backup`` (``--resume`` continues from it, at the
   same position of the data stream), and TensorBoard logs go to ``OUT/logs``.
   Training stops after ``steps`` updates or, cleanly at the end of a step,
   once ``max_minutes`` have passed;
5. save the model with its tokenizer to ``OUT/model`` and score the held-out
   documents: for the causal LM the perplexity and, on the same held-out
   target tokens, the perplexity of an add-one-smoothed unigram model counted
   on the training tokens; for the masked LM the masked-token accuracy (and
   next-sentence accuracy). The scores go to ``OUT/metrics.json``.

``OUT/model`` is a kerasllm model folder: ``kerasllm finetune ner --model
OUT/model`` fine-tunes the masked-LM encoder, ``kerasllm generate --model
OUT/model`` continues text with the causal LM.

The data order is a function of the seed and the step, so a resumed run trains
on the batches the interrupted one would have seen; the random masks (masked
LM) drawn after a resume are new draws.
"""
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasllm._io import atomic_write_json
from kerasllm.training.finetune import _dropout, _log, compile_model, make_strategy, prepare_output
from kerasllm.training.losses import _kept, _labels_like_logits, _token_weights
from kerasllm.training.pretrain_config import ClmPretrainConfig, MlmPretrainConfig, PretrainConfig

__all__ = [
    "ClmPretrainConfig",
    "MlmPretrainConfig",
    "Perplexity",
    "PretrainConfig",
    "load_pretraining_tokenizer",
    "run_pretrain",
    "unigram_perplexity",
]

CONFIG_FILENAME = "pretrain_config.json"


@keras.saving.register_keras_serializable(package="kerasllm")
class Perplexity(keras.metrics.Metric):
    """``exp`` of the mean token cross-entropy over labels ``!= ignore_index``.

    The cross-entropy sum and the token count are accumulated over batches
    (and replicas), so the epoch value is the perplexity of all the tokens
    seen, not a mean of batch perplexities.

    Example:

    >>> import numpy as np
    >>> m = Perplexity()
    >>> _ = m.update_state(np.array([[1, -100]]), np.zeros((1, 2, 4), "float32"))  # uniform over 4
    >>> round(float(m.result()), 4)
    4.0
    """

    def __init__(self, ignore_index=-100, name="perplexity", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.ignore_index = int(ignore_index)
        self.total = self.add_weight("total", initializer="zeros")
        self.count = self.add_weight("count", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
        labels, mask = _kept(_labels_like_logits(tf.convert_to_tensor(y_true), y_pred), self.ignore_index)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=y_pred)
        kept = _token_weights(mask, sample_weight, tf.float32)
        return tf.group(
            self.total.assign_add(tf.cast(tf.reduce_sum(losses * kept), self.dtype)),
            self.count.assign_add(tf.cast(tf.reduce_sum(kept), self.dtype)),
        )

    def result(self):
        return tf.exp(tf.math.divide_no_nan(self.total, self.count))

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "ignore_index": self.ignore_index}


def unigram_perplexity(train_counts, target_counts):
    """Perplexity of an add-one-smoothed unigram model on some target tokens.

    Args:
        train_counts: ``[vocab_size]`` token counts of the training text; the
            model gives token ``v`` the probability ``(c_v + 1) / (N + V)``.
        target_counts: ``[vocab_size]`` counts of the tokens scored.

    Returns:
        ``exp(-sum_v target_v * log p_v / sum_v target_v)``.

    Example:
        >>> round(unigram_perplexity([3, 1], [1, 1]), 4)  # p = 4/6 and 2/6
        2.1213
    """
    train_counts = np.asarray(train_counts, np.float64)
    target_counts = np.asarray(target_counts, np.float64)
    log_p = np.log(train_counts + 1.0) - np.log(train_counts.sum() + train_counts.size)
    return float(np.exp(-(target_counts * log_p).sum() / target_counts.sum()))


def load_pretraining_tokenizer(folder, objective):
    """The tokenizer in ``folder`` for ``objective``: WordPiece (``mlm``) or byte-level BPE (``clm``).

    Raises ``FileNotFoundError``/``ValueError`` naming the folder (as ``--vocab``)
    when the files are missing or do not make a usable tokenizer.
    """
    from kerasllm.tokenizers import BytePairTokenizer, WordPieceTokenizer

    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--vocab {folder}: no such folder")
    if objective == "mlm":
        needed, kind, make = ["vocab.txt"], "wordpiece", WordPieceTokenizer.load
    else:
        needed, kind, make = ["vocab.json", "merges.txt"], "bpe", BytePairTokenizer.from_folder
    missing = [name for name in needed if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        what = "a WordPiece vocabulary" if objective == "mlm" else "a byte-level BPE vocabulary"
        raise FileNotFoundError(
            f"--vocab {folder}: {' and '.join(missing)} missing; {objective} pretraining needs {what} "
            f"(kerasllm vocab {kind} --corpus ... --out {folder})"
        )
    try:
        tokenizer = make(folder)
    except ValueError as err:
        raise ValueError(f"--vocab {folder}: {err}") from None
    if objective == "mlm" and tokenizer.mask_id is None:
        raise ValueError(f"--vocab {folder}: the vocabulary has no [MASK] token, which masked-LM pretraining needs")
    if objective == "clm" and tokenizer.eos_id is None:
        raise ValueError(f"--vocab {folder}: the tokenizer has no end-of-text token to separate documents")
    return tokenizer


# ----------------------------------------------------------------------------- objectives


def _count(dataset, fn):
    """Sum of ``fn(element)`` (an integer scalar) over a finite dataset, in the graph."""
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda total, x: total + tf.cast(fn(x), tf.int64)))


def _histogram(dataset, fn, size):
    """Counts of the ids ``fn(element)`` over a finite dataset (ids in ``[0, size)``; negatives ignored)."""

    def add(counts, element):
        ids = tf.reshape(fn(element), [-1])
        ids = tf.boolean_mask(ids, ids >= 0)
        return counts + tf.math.bincount(ids, minlength=size, maxlength=size, dtype=tf.int64)

    return dataset.reduce(tf.zeros([size], tf.int64), add).numpy()


def _snapshot(dataset, path):
    """Run ``dataset`` once into a ``tf.data`` snapshot at ``path``; return a dataset reading it back in order.

    The tokenizer runs once, and the datasets read from the snapshot carry none
    of its (large) graph, so creating their iterators is cheap.
    """
    dataset.save(path, shard_func=lambda *element: tf.constant(0, tf.int64))  # one shard keeps the order
    return tf.data.Dataset.load(path)


def _tokenized_splits(corpus, tokenizer, cache_dir, by_line=False):
    """Every document tokenized once (one tokenizer graph for both splits), then split by key."""
    from kerasllm.data.pretraining import tokenize_documents

    documents = tokenize_documents(corpus.documents("all", with_keys=True), tokenizer, by_line=by_line)
    documents = _snapshot(documents, os.path.join(cache_dir, "documents"))
    return {
        "train": documents.filter(lambda doc: tf.logical_not(corpus.held_out(doc["doc"]))),
        "validation": documents.filter(lambda doc: corpus.held_out(doc["doc"])),
    }


class _Objective:
    """What an objective adds to :func:`run_pretrain`: its data, model, loss, scores and report.

    Attributes:
        name: ``"mlm"`` or ``"clm"``.
        unit: what a training example is called in the log (``"block"``, ``"segment"``).
    """

    name = unit = None

    def __init__(self, cfg, tokenizer, corpus):
        self.cfg, self.tokenizer, self.corpus = cfg, tokenizer, corpus


class _CausalLM(_Objective):
    """GPT next-token prediction on blocks of ``seq_length + 1`` ids."""

    name = "clm"
    unit = "block"

    def prepare(self, cache_dir):
        """Tokenize the corpus into blocks (snapshots in ``cache_dir``); count them and the training unigrams."""
        from kerasllm.data.pretraining import causal_lm_blocks

        documents = _tokenized_splits(self.corpus, self.tokenizer, cache_dir)
        self.blocks = {
            split: _snapshot(
                causal_lm_blocks(docs, self.cfg.seq_length, self.tokenizer.eos_id), os.path.join(cache_dir, split)
            )
            for split, docs in documents.items()
        }
        self.train_counts = _histogram(self.blocks["train"], lambda block: block, self.tokenizer.vocab_size)
        return {split: _count(blocks, lambda block: 1) for split, blocks in self.blocks.items()}

    def too_small(self, split):
        return f"fewer than {self.cfg.seq_length + 1} tokens (one block of --seq-length {self.cfg.seq_length} + 1)"

    def train_batches(self):
        from kerasllm.data.pretraining import causal_lm_dataset

        return causal_lm_dataset(self.blocks["train"], self.cfg.batch_size, shuffle_seed=self.cfg.seed, repeat=True)

    def validation_batches(self):
        from kerasllm.data.pretraining import causal_lm_dataset

        return causal_lm_dataset(self.blocks["validation"], self.cfg.batch_size)

    def build(self, config):
        from kerasllm.models import gpt_decoder

        return gpt_decoder(config)

    def loss_and_metrics(self):
        from kerasllm.training.losses import masked_sparse_categorical_crossentropy

        return masked_sparse_categorical_crossentropy(), [Perplexity()]

    def evaluate(self, model):
        scores = model.evaluate(self.validation_batches(), return_dict=True, verbose=0)
        targets = _histogram(self.blocks["validation"], lambda block: block[1:], self.tokenizer.vocab_size)
        unigram = unigram_perplexity(self.train_counts, targets)
        return {
            "perplexity": float(scores["perplexity"]),
            "loss": float(scores["loss"]),
            "unigram_perplexity": unigram,
            "perplexity_ratio": float(scores["perplexity"]) / unigram,
            "tokens": int(targets.sum()),
        }

    def headline(self, scores):
        return (
            f"held-out perplexity {scores['perplexity']:.2f} vs unigram {scores['unigram_perplexity']:.2f} "
            f"(add-one smoothed, counted on the training tokens): ratio {scores['perplexity_ratio']:.3f} "
            f"on {scores['tokens']:,} held-out tokens"
        )


class _MaskedLM(_Objective):
    """BERT masked-LM (+ next-sentence) pretraining."""

    name = "mlm"
    unit = "segment"

    def prepare(self, cache_dir):
        """Tokenize the corpus into segments (snapshots in ``cache_dir``) and count them.

        The held-out batches are masked once, here, and kept, so that every
        evaluation scores the same masked tokens.
        """
        from kerasllm.data.pretraining import packed_segments, sentence_chunks

        cfg = self.cfg
        self.chunks = {}
        for split, docs in _tokenized_splits(self.corpus, self.tokenizer, cache_dir, by_line=cfg.nsp).items():
            if cfg.nsp:
                chunks = sentence_chunks(docs, cfg.seq_length - 3)
            else:
                chunks = packed_segments(docs, cfg.seq_length - 2, self.tokenizer.sep_id)
            self.chunks[split] = _snapshot(chunks, os.path.join(cache_dir, split))
        counts = {split: _count(chunks, lambda c: 1) for split, chunks in self.chunks.items()}
        if counts["validation"]:
            size = self.tokenizer.vocab_size
            self.validation = _snapshot(self._batches("validation", False), os.path.join(cache_dir, "validation-masked"))
            self.masked_counts = _histogram(self.validation, lambda batch: batch[1]["mlm_logits"], size)
            train_counts = _histogram(self.chunks["train"], lambda chunk: chunk["tokens"], size)
            train_counts[[self.tokenizer.cls_id, self.tokenizer.sep_id, self.tokenizer.pad_id]] = 0
            self.most_frequent = int(np.argmax(train_counts))
        return counts

    def too_small(self, split):
        if self.cfg.nsp:
            return "no tokens"
        return f"fewer than {self.cfg.seq_length - 2} tokens (one sequence of --seq-length {self.cfg.seq_length})"

    def _batches(self, split, training):
        from kerasllm.data.pretraining import masked_lm_dataset

        cfg = self.cfg
        return masked_lm_dataset(
            self.chunks[split], self.tokenizer, cfg.seq_length, cfg.batch_size, next_sentence=cfg.nsp,
            whole_word=cfg.whole_word, rate=cfg.mask_rate, seed=cfg.seed, training=training,
        )

    def train_batches(self):
        return self._batches("train", True)

    def validation_batches(self):
        return self.validation

    def build(self, config):
        from kerasllm.models import bert_pretraining

        return bert_pretraining(config.replace(pad_token_id=self.tokenizer.pad_id), next_sentence=self.cfg.nsp)

    def loss_and_metrics(self):
        from kerasllm.training.losses import masked_accuracy, masked_sparse_categorical_crossentropy

        loss = {"mlm_logits": masked_sparse_categorical_crossentropy()}
        metrics = {"mlm_logits": [masked_accuracy()]}
        if self.cfg.nsp:
            loss["nsp_logits"] = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            metrics["nsp_logits"] = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        return loss, metrics

    def evaluate(self, model):
        scores = model.evaluate(self.validation_batches(), return_dict=True, verbose=0)
        masked = int(self.masked_counts.sum())
        result = {
            # "mlm_logits_masked_accuracy" with next-sentence prediction, "masked_accuracy" without (one output)
            "masked_accuracy": float(scores.get("mlm_logits_masked_accuracy", scores.get("masked_accuracy"))),
            "loss": float(scores["loss"]),
            "masked_tokens": masked,
            # the anchor: always predict the most frequent training token
            "most_frequent_token": self.tokenizer.id_to_token(self.most_frequent),
            "most_frequent_accuracy": float(self.masked_counts[self.most_frequent] / masked),
        }
        if self.cfg.nsp:
            result["next_sentence_accuracy"] = float(scores["nsp_logits_accuracy"])
        return result

    def headline(self, scores):
        line = (
            f"held-out masked-token accuracy {100 * scores['masked_accuracy']:.2f}% on {scores['masked_tokens']:,} "
            f"masked tokens (always {scores['most_frequent_token']!r}, the most frequent training token: "
            f"{100 * scores['most_frequent_accuracy']:.2f}%)"
        )
        if "next_sentence_accuracy" in scores:
            line += f"; next-sentence accuracy {100 * scores['next_sentence_accuracy']:.2f}%"
        return line


OBJECTIVES = {"mlm": _MaskedLM, "clm": _CausalLM}
PRESET_TYPES = {"mlm": "bert", "clm": "gpt"}


class _StepAndTimeLimit(keras.callbacks.Callback):
    """Stops ``fit`` after ``steps`` optimizer updates or ``max_minutes``; positions the data stream on resume.

    ``position`` (a variable the training dataset reads when its iterator
    starts) is set to the number of batches the restored run has already
    trained on, read from :class:`ResumableTraining` (which must run first).
    """

    def __init__(self, steps, max_minutes, steps_per_round, resume, position, log=_log):
        super().__init__()
        self.steps, self.max_minutes, self.steps_per_round = steps, max_minutes, steps_per_round
        self.resume, self.position, self.log = resume, position, log
        self.stopped_by = "steps"

    def on_train_begin(self, logs=None):
        done = self.resume.initial_epoch * self.steps_per_round + self.resume.initial_step
        self.position.assign(done)
        if done:
            self.log(f"resuming at step {done} (the data stream skips the {done} batches already trained on)")
        self.deadline = None if self.max_minutes is None else time.time() + 60 * self.max_minutes

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.steps:
            self.model.stop_training = True
        elif self.deadline is not None and time.time() >= self.deadline:
            self.stopped_by = "time"
            self.model.stop_training = True
            self.log(
                f"\n--max-minutes {self.max_minutes:g}: stopping at step "
                f"{int(self.model.optimizer.iterations.numpy())} of {self.steps}"
            )


def _positioned(batches, position):
    """``batches`` from batch ``position`` on (read when an iterator starts)."""
    return tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).flat_map(lambda _: batches.skip(position.read_value()))


def _check_data(cfg, corpus, task, cache_dir):
    """Tokenize and count the data (snapshots in ``cache_dir``); raise naming the corpus when a split is too small."""
    if not any(True for _ in corpus.documents("all").take(1)):
        raise ValueError(f"--corpus {cfg.corpus}: no text in {len(corpus.files)} file(s) (empty or blank)")
    counts = task.prepare(cache_dir)
    for split, what in (("train", "training documents"), ("validation", "held-out documents")):
        if not counts[split]:
            extra = f" (1 in {cfg.validation_every})" if split == "validation" else ""
            raise ValueError(
                f"--corpus {cfg.corpus}: the {what}{extra} hold {task.too_small(split)}; "
                + ("lower --validation-every or add text" if split == "validation" else "add text or lower --seq-length")
            )
    return counts


def run_pretrain(cfg, log=_log):
    """Pretrain a model from scratch with settings ``cfg``; return the metrics dict.

    Args:
        cfg: a :class:`MlmPretrainConfig` or :class:`ClmPretrainConfig`.
        log: where progress lines go (default ``print``).

    See the module docstring for the steps and the output folder.
    """
    from kerasllm import training
    from kerasllm.data.corpus import TextCorpus
    from kerasllm.models import PRESETS, get_preset, save_pretrained
    from kerasllm.models.peft import parameter_counts
    from kerasllm.training.distribution import accelerator_settings

    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"objective {cfg.objective!r}: use MlmPretrainConfig or ClmPretrainConfig")
    cfg.validate()
    if cfg.preset not in PRESETS or PRESETS[cfg.preset].model_type != PRESET_TYPES[cfg.objective]:
        allowed = [name for name, c in PRESETS.items() if c.model_type == PRESET_TYPES[cfg.objective]]
        raise ValueError(f"--preset {cfg.preset!r}: {cfg.objective} pretraining takes one of {', '.join(allowed)}")
    started = time.time()
    training.set_seed(cfg.seed)
    corpus = TextCorpus(cfg.corpus, documents=cfg.documents, validation_every=cfg.validation_every)
    tokenizer = load_pretraining_tokenizer(cfg.vocab, cfg.objective)
    log(f"corpus: {cfg.corpus}: {corpus.describe()}")
    log(f"vocabulary: {type(tokenizer).__name__} of {tokenizer.vocab_size} tokens from {cfg.vocab}")
    cache_dir = tempfile.mkdtemp(prefix="kerasllm-pretrain-")
    try:
        task = OBJECTIVES[cfg.objective](cfg, tokenizer, corpus)
        counts = _check_data(cfg, corpus, task, cache_dir)
        log(f"data: {counts['train']:,} training {task.unit}s, {counts['validation']:,} held-out {task.unit}s "
            f"(tokenized in {time.time() - started:.0f} s)")

        dist = make_strategy(cfg, log)
        chief = dist.extended.should_checkpoint
        backup_dir = prepare_output(cfg, f"pretrain-{cfg.objective}", log, chief=chief, filename=CONFIG_FILENAME)
        speed = accelerator_settings(
            dist, cfg.mixed_precision, cfg.steps_per_execution, False, cfg.eval_every, xla=cfg.xla,
            fuse_elementwise=cfg.fuse_elementwise, width=get_preset(cfg.preset).hidden_size,
        )
        training.set_mixed_precision(speed.mixed_precision)
        config = get_preset(
            cfg.preset, vocab_size=tokenizer.vocab_size, max_position=cfg.seq_length, **_dropout(cfg)
        )
        with dist.scope():
            model = task.build(config)
            loss, metrics = task.loss_and_metrics()
            compile_model(model, cfg, cfg.steps, loss, metrics, speed.steps_per_execution)
        training.install_train_step(model, fuse_elementwise=speed.fuse_elementwise)
        counts_params = parameter_counts(model)
        log(f"model: preset {cfg.preset} from scratch, {counts_params['total']:,} parameters")

        resume = training.ResumableTraining(backup_dir)
        callbacks = training.standard_callbacks(cfg.out, save_fn=False, resumable=resume, tensorboard=chief)
        with tf.init_scope(), tf.device("/cpu:0"):
            position = tf.Variable(0, dtype=tf.int64, trainable=False, name="kerasllm_stream_position")
        # A run shorter than one scoring interval is one round of its own length (the progress bar's target).
        per_round = min(cfg.eval_every, cfg.steps)
        limit = _StepAndTimeLimit(cfg.steps, cfg.max_minutes, per_round, resume, position, log)
        callbacks.append(limit)  # after ResumableTraining: it reads the restored step
        rounds = math.ceil(cfg.steps / per_round)
        log(f"training: {cfg.steps} steps of {cfg.batch_size} x {cfg.seq_length} tokens, held-out scores every "
            f"{cfg.eval_every} steps" + (f", at most {cfg.max_minutes:g} minutes" if cfg.max_minutes else ""))
        fit_started = time.time()
        history = model.fit(
            _positioned(task.train_batches(), position),
            epochs=rounds,
            steps_per_epoch=per_round,
            validation_data=task.validation_batches(),
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 2,
        )
        train_seconds = time.time() - fit_started
        steps_done = int(model.optimizer.iterations.numpy())
        if not chief:
            return {"objective": cfg.objective, "chief": False, "steps": steps_done}

        model_dir = os.path.join(cfg.out, "model")
        save_pretrained(model, model_dir)
        tokenizer.save(model_dir)
        scores = task.evaluate(model)
        tokens_per_sec = [v for v in history.history.get("tokens_per_sec", []) if v]
        result = {
            "objective": cfg.objective,
            "corpus": cfg.corpus,
            "preset": cfg.preset,
            "parameters": counts_params["total"],
            f"train_{task.unit}s": counts["train"],
            f"validation_{task.unit}s": counts["validation"],
            "steps": steps_done,
            "stopped_by": limit.stopped_by,
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(time.time() - started, 1),
            "train_tokens_per_sec": round(float(np.mean(tokens_per_sec)), 1) if tokens_per_sec else None,
            "validation": scores,
            "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        }
        metrics_path = os.path.join(cfg.out, "metrics.json")
        atomic_write_json(metrics_path, result)
        log(task.headline(scores))
        log(f"model: {model_dir}   metrics: {metrics_path}")
        return result
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
        keras.mixed_precision.set_global_policy("float32")
