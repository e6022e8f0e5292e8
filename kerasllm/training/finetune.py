"""The fine-tuning pipeline every task shares (``kerasllm finetune ner|classify``).

:func:`run_finetune` runs one fine-tune end to end:

1. check the settings, create the ``tf.distribute`` strategy (printing the
   choice and the replica count; everything that holds variables is built
   inside its scope) and resolve the TPU defaults (bfloat16, steps per
   execution, static shapes);
2. write the settings to ``OUT/finetune_config.json`` and handle ``OUT/backup``
   (continue it with ``resume``, else remove it). In a multi-worker cluster
   only the chief writes to ``OUT`` (settings, model, TensorBoard logs,
   metrics, export); the other workers train and read the chief's backup;
3. read the data (or write the task's embedded corpus to ``OUT/data``);
4. build the model and its tokenizer: from a preset with a WordPiece vocabulary
   trained on the training texts, or from a model folder (kerasllm, Hugging Face
   BERT, Google BERT) whose encoder weights are copied into the task model;
5. add parameter-efficient weights (LoRA, adapters, frozen layers) if asked;
6. compile with AdamW on a warm-up schedule and train with ``model.fit``,
   keeping the best checkpoint by the dev metric, stopping early, writing
   TensorBoard logs and a backup to resume from;
7. score dev and test with the best checkpoint, write ``OUT/metrics.json``;
8. export the best model to TFLite and verify it against Keras.

A :class:`FinetuneTask` supplies only what differs between tasks: how files are
read, the label set, how examples become model inputs, the head, the loss, the
dev score, the report and the export check.

Output folder: ``model/`` (weights, ``labels.json``, tokenizer files),
``finetune_config.json``, ``metrics.json``, ``logs/`` (TensorBoard),
``model.tflite`` (+ ``model.labels.json``, ``model.vocab.txt``), ``data/``
(embedded corpus only) and, while training, ``backup/``.

Parameter-efficient runs train a model with LoRA/adapter weights; every
checkpoint written to ``model/`` is first passed through
:func:`kerasllm.models.peft.merge_peft`, so the saved, evaluated and exported
model is a plain model of the task that loads with
:func:`kerasllm.models.load_pretrained`.
"""
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import tf_keras as keras

from kerasllm._io import atomic_write_json
from kerasllm.training.finetune_config import split_list

CONFIG_FILENAME = "finetune_config.json"
# Settings that may change when a run is resumed; any other difference is refused.
_RESUMABLE_CHANGES = ("resume", "export", "quantize", "worker_hosts", "task_index")


def _log(message):
    print(message, flush=True)


class FinetuneTask:
    """What one task adds to :func:`run_finetune`; subclasses implement every method.

    Attributes:
        name: the task's name (``"ner"``, ``"classify"``), stored in the config file.
        label: the task as named in messages (``"NER"``).
        monitor: the dev score that selects the best checkpoint (the logs key
            is ``"val_" + monitor``); higher is better.
        logged_scores: the dev scores put into the epoch logs (and TensorBoard).
        corpus_note: how the embedded corpus is described in the output.
    """

    name = None
    label = None
    monitor = None
    logged_scores = ()
    corpus_note = None

    def write_corpus(self, folder, cfg):
        """Write the embedded corpus; return ``{"train": path, "dev": path, "test": path}``."""
        raise NotImplementedError

    def read(self, path, cfg):
        """Read one data file."""
        raise NotImplementedError

    def label_map(self, train):
        """The :class:`kerasllm.data.LabelMap` of the training data."""
        raise NotImplementedError

    def augment(self, train, cfg, log):
        """The training data to fit on (after the label map is built); default: unchanged."""
        return train

    def vocab_texts(self, train):
        """The training texts a preset's WordPiece vocabulary is trained on."""
        raise NotImplementedError

    def head(self, config, num_labels):
        """Build the task model (encoder + head) for ``config``."""
        raise NotImplementedError

    def encode(self, data, tokenizer, label_map, cfg):
        """Model inputs (with label ids) for ``data``."""
        raise NotImplementedError

    def describe_training_data(self, train, features, cfg, log):
        """Log a line about the encoded training set."""

    def dataset(self, features, cfg):
        """A finite ``tf.data.Dataset`` of ``(inputs, labels)`` batches in a fixed order."""
        raise NotImplementedError

    def loss_and_metrics(self):
        """``(loss, [metrics])`` for ``model.compile``."""
        raise NotImplementedError

    def evaluate(self, model, data, features, label_map, cfg):
        """Scores of ``model`` (anything called like a Keras model for logits) on ``data``."""
        raise NotImplementedError

    def describe_epoch(self, scores):
        """The per-epoch dev line, e.g. ``"dev entity F1 81.20"``."""
        raise NotImplementedError

    def report(self, data, scores):
        """A multi-line report of ``scores`` on ``data``."""
        raise NotImplementedError

    def headline(self, scores):
        """The last line of the run, for the test scores."""
        raise NotImplementedError

    def save_info(self, train, label_map, cfg):
        """Extra entries for the model folder's ``kerasllm.json`` (labels, ...)."""
        return {"labels": label_map.labels}

    def export(self, model, cfg, data, tokenizer, label_map, train_features, log):
        """Export ``model`` to TFLite, verify it on ``data``; return the export metrics."""
        raise NotImplementedError

    def dev_callback(self, dev, features, label_map, cfg, log):
        """The callback that puts the dev scores into the epoch logs."""
        return DevScoreCallback(
            lambda model: self.evaluate(model, dev, features, label_map, cfg),
            self.logged_scores,
            self.describe_epoch,
            log=log,
        )


class DevScoreCallback(keras.callbacks.Callback):
    """Scores the dev set after every epoch and puts scores in the logs as ``val_<name>``.

    Args:
        score_fn: ``score_fn(model) -> dict`` of scores.
        keys: the scores that go into the logs (and so to early stopping, the
            best checkpoint and TensorBoard).
        describe: ``describe(scores) -> str``, logged as ``epoch N: ...``.
        log: where the line goes (default ``print``).

    Example:
        >>> cb = DevScoreCallback(lambda m: {"accuracy": 0.5, "n": 4}, ["accuracy"], lambda s: f"dev accuracy {s['accuracy']}")
        >>> logs = {}
        >>> cb.on_epoch_end(0, logs)
        epoch 1: dev accuracy 0.5
        >>> logs
        {'val_accuracy': 0.5}
    """

    def __init__(self, score_fn, keys, describe, log=_log):
        super().__init__()
        self.score_fn, self.keys, self.describe, self.log = score_fn, tuple(keys), describe, log

    def on_epoch_end(self, epoch, logs=None):
        scores = self.score_fn(self.model)
        if logs is not None:
            for key in self.keys:
                logs[f"val_{key}"] = scores[key]
        self.log(f"epoch {epoch + 1}: {self.describe(scores)}")


# ----------------------------------------------------------------------------- pieces


def prepare_output(cfg, task_name, log=_log, chief=True, filename=CONFIG_FILENAME):
    """Create ``cfg.out``, check or clear ``OUT/backup``, write ``OUT/finetune_config.json`` (or ``filename``).

    With ``cfg.resume`` the backup must exist and the settings must equal those
    of the interrupted run (apart from ``resume``, ``export``, ``quantize`` and
    the cluster addresses). Without it, a backup left by an unfinished run is
    removed. Returns the backup folder. A worker that is not the chief
    (``chief=False``) touches nothing: it only reads the chief's backup.
    """
    backup_dir = os.path.join(cfg.out, "backup")
    if not chief:
        return backup_dir
    os.makedirs(cfg.out, exist_ok=True)
    config_path = os.path.join(cfg.out, filename)
    settings = {"task": task_name, **cfg.to_dict()}
    if cfg.resume:
        if not os.path.isdir(backup_dir):
            raise ValueError(f"--resume: no backup to resume from in {backup_dir}")
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as f:
                before = json.load(f)
            changed = sorted(
                k for k in set(before) | set(settings)
                if k not in _RESUMABLE_CHANGES and before.get(k) != settings.get(k)
            )
            if changed:
                described = ", ".join(f"{k}: {before.get(k)!r} -> {settings.get(k)!r}" for k in changed)
                raise ValueError(
                    f"--resume: the interrupted run in {cfg.out} used other settings ({described}); "
                    "resume with the same options, or drop --resume to start over"
                )
    elif os.path.isdir(backup_dir):
        log(f"note: removing the backup of an earlier, unfinished run in {backup_dir} (pass --resume to continue it)")
        shutil.rmtree(backup_dir)
    atomic_write_json(config_path, settings)
    return backup_dir


def make_strategy(cfg, log=_log):
    """The ``tf.distribute`` strategy of ``cfg`` (printed with its replica count)."""
    from kerasllm.training.distribution import strategy

    try:
        dist = strategy(
            cfg.strategy,
            devices=split_list(cfg.devices),
            tpu=cfg.tpu,
            worker_hosts=cfg.worker_hosts,
            task_index=cfg.task_index,
        )
    except RuntimeError as err:
        raise ValueError(f"--strategy {cfg.strategy}: {err}") from None
    replicas = dist.num_replicas_in_sync
    log(f"batch: {cfg.batch_size} examples per step (global), {cfg.batch_size / replicas:g} per replica")
    return dist


def prepare_data(cfg, task, log=_log):
    """Return ``(train, dev, test, source)``: the files of ``cfg`` or the task's embedded corpus."""
    if cfg.train is None:
        folder = os.path.join(cfg.out, "data")
        paths = task.write_corpus(folder, cfg)
        log(f"data: {task.corpus_note}, written to {folder}")
        train, dev, test = (task.read(paths[k], cfg) for k in ("train", "dev", "test"))
        return train, dev, test, task.corpus_note
    train = task.read(cfg.train, cfg)
    dev = task.read(cfg.dev, cfg) if cfg.dev else None
    test = task.read(cfg.test, cfg) if cfg.test else None
    return train, dev, test, cfg.train


def _copy_matching(source, target, skip):
    """Copy weights layer by layer where names and shapes agree; return the names copied."""
    copied = []
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
            copied.append(layer.name)
    return copied


def transfer_weights(source, target, skip=("classifier",)):
    """Copy weights layer by layer where names and shapes agree; return the number of layers copied."""
    return len(_copy_matching(source, target, skip))


def _mean_or_none(values):
    return round(float(np.mean(values)), 1) if values else None


def _dropout(cfg):
    """Config overrides for ``cfg.dropout`` (none when it is unset)."""
    return {} if cfg.dropout is None else {"dropout": cfg.dropout, "attention_dropout": cfg.dropout}


def model_width(model):
    """Hidden size of ``--model`` (a preset, or a folder with ``config.json`` / ``bert_config.json``), or None.

    Read before the model is built, for the speed settings (:func:`accelerator_settings`'s
    ``width``); anything unreadable is None and left to the build to report.
    """
    from kerasllm.models import PRESETS, get_preset

    if model in PRESETS:
        return get_preset(model).hidden_size
    for name in ("config.json", "bert_config.json"):
        path = os.path.join(str(model), name)
        try:
            with open(path, encoding="utf-8") as f:
                width = json.load(f).get("hidden_size")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(width, int) and not isinstance(width, bool):
            return width
    return None


def build_model_and_tokenizer(cfg, texts, num_labels, head, task_label, log=_log):
    """A task model and its tokenizer.

    Args:
        cfg: a :class:`FinetuneConfig`. ``cfg.model`` is a preset (trained from
            scratch, with a WordPiece vocabulary of ``cfg.vocab_size`` learnt
            from ``texts``) or a folder: a kerasllm model, a Hugging Face BERT
            folder or a Google BERT checkpoint (anything
            :func:`kerasllm.checkpoints.from_pretrained` reads), with its
            ``vocab.txt``. From a folder the encoder weights are copied and the
            layers it lacks (always the classifier head) are initialised fresh;
            the log line names them.
        texts: the training texts (for a preset's vocabulary).
        num_labels: outputs of the head.
        head: ``head(config, num_labels) -> model``.
        task_label: the task as named in errors (``"NER"``).
    """
    from kerasllm.checkpoints import from_pretrained
    from kerasllm.models import PRESETS, get_preset
    from kerasllm.tokenizers import WordPieceTokenizer, train_wordpiece_vocab

    if cfg.model in PRESETS:
        vocab = train_wordpiece_vocab(texts, cfg.vocab_size, lowercase=cfg.lowercase)
        tokenizer = WordPieceTokenizer(vocab, lowercase=cfg.lowercase)
        config = get_preset(cfg.model, vocab_size=len(vocab), max_position=max(cfg.max_length, 128), **_dropout(cfg))
        if config.model_type != "bert":
            raise ValueError(f"--model {cfg.model}: {task_label} needs an encoder (BERT-style) preset")
        log(f"model: preset {cfg.model} from scratch, WordPiece vocabulary of {len(vocab)} trained on the training set")
        return head(config, num_labels), tokenizer
    if os.path.isdir(cfg.model):
        base = from_pretrained(cfg.model)
        config = base.kerasllm_config
        if config.model_type != "bert":
            raise ValueError(
                f"--model {cfg.model}: {task_label} needs an encoder (BERT-style) model, got model_type={config.model_type!r}"
            )
        if cfg.max_length > config.max_position:
            raise ValueError(
                f"--max-length {cfg.max_length} exceeds the {config.max_position} positions of {cfg.model}"
            )
        if getattr(config, "freeze_layers", 0) or getattr(config, "freeze_embeddings", False):
            # what the source run froze is not this run's choice (--freeze-* is)
            config = config.replace(freeze_embeddings=False, freeze_layers=0)
        tokenizer = WordPieceTokenizer.load(cfg.model)
        if tokenizer.vocab_size != config.vocab_size:
            raise ValueError(
                f"{cfg.model}: vocab.txt has {tokenizer.vocab_size} tokens but the model's embedding "
                f"has {config.vocab_size}; the tokenizer does not belong to this model"
            )
        model = head(config.replace(**_dropout(cfg)), num_labels)
        copied = _copy_matching(base, model, skip=("classifier",))
        fresh = [layer.name for layer in model.layers if layer.weights and layer.name not in copied]
        log(f"model: {cfg.model} ({len(copied)} layers loaded; {', '.join(fresh)} initialised fresh)")
        return model, tokenizer
    raise ValueError(
        f"--model {cfg.model!r} is neither a preset ({', '.join(PRESETS)}) nor a model folder "
        "(kerasllm, Hugging Face BERT or Google BERT)"
    )


def apply_peft(model, cfg, log=_log):
    """``model`` with the parameter-efficient options of ``cfg`` applied (unchanged when none is on)."""
    if not cfg.peft:
        return model
    from kerasllm.models.peft import describe_peft, with_peft

    peft_model = with_peft(
        model,
        lora_rank=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_targets=tuple(split_list(cfg.lora_targets)),
        adapter_size=cfg.adapter_size,
        freeze_embeddings=cfg.freeze_embeddings,
        freeze_layers=cfg.freeze_layers,
    )
    _keep_tags(model, peft_model)
    log(f"peft: {describe_peft(peft_model)}")
    if (cfg.lora_rank or cfg.adapter_size) and not os.path.isdir(cfg.model):
        log("note: LoRA/adapters freeze the encoder, here a freshly initialised one; use them with a pretrained --model")
    return peft_model


def _keep_tags(source, target):
    for name in ("kerasllm_config", "kerasllm_task"):
        if getattr(target, name, None) is None and getattr(source, name, None) is not None:
            setattr(target, name, getattr(source, name))


def plain_model(model, cfg):
    """The model to save: LoRA folded into the base kernels when PEFT is on."""
    if not cfg.peft:
        return model
    from kerasllm.models.peft import merge_peft

    merged = merge_peft(model)
    _keep_tags(model, merged)
    return merged


def compile_model(model, cfg, steps_per_epoch, loss, metrics, steps_per_execution=1, static_shapes=False):
    """Compile ``model`` with AdamW on a linear warm-up/decay schedule over the whole run.

    With ``static_shapes`` the metrics are weighted (padding rows of the last
    batch carry weight 0, see :mod:`kerasllm.training.static_shapes`).
    """
    from kerasllm import training

    total_steps = steps_per_epoch * cfg.epochs
    optimizer = training.create_optimizer(
        learning_rate=cfg.lr,
        num_train_steps=total_steps,
        warmup_steps=int(cfg.warmup_ratio * total_steps),
        weight_decay=cfg.weight_decay,
        lazy_sparse_updates=cfg.lazy_embedding_updates,
    )
    metrics = {"weighted_metrics": metrics} if static_shapes else {"metrics": metrics}
    model.compile(
        optimizer=optimizer, loss=loss, jit_compile=cfg.xla, steps_per_execution=steps_per_execution, **metrics
    )


# ----------------------------------------------------------------------------- export


class _RunnerAsModel:
    """Lets an exported-model runner stand where a Keras model is called for logits."""

    def __init__(self, runner):
        self.runner = runner

    def __call__(self, inputs, training=False):
        return self.runner(inputs)["logits"]


def export_verified(model, cfg, batches, one, score_fn, score_name, unit, assets, representative=None, log=_log):
    """Export ``model`` to ``OUT/model.tflite`` (``cfg.quantize``) and compare it with Keras.

    Args:
        model: the Keras model.
        cfg: a :class:`FinetuneConfig` (``out``, ``quantize``).
        batches: input dicts to compare logits on.
        one: the input dict timed at batch 1.
        score_fn: ``score_fn(model_like) -> float``, the task score of the Keras
            model and of the TFLite model on the evaluation data.
        score_name: its key in the result (``"entity_f1"`` -> ``keras_entity_f1``).
        unit: what argmax agreement counts (``"token"``, ``"example"``).
        assets: files written beside the model (see :func:`kerasllm.export.export_tflite`).
        representative: calibration inputs for ``int8``.

    Returns:
        A dict: path, quantize, size, max abs logit difference,
        ``<unit>_argmax_agreement``, the score of both models, and the TFLite
        latency (p50/p95) at batch 1.
    """
    from kerasllm.export import TFLiteRunner, export_tflite, latency, verify

    out_path = os.path.join(cfg.out, "model.tflite")
    report = export_tflite(model, out_path, quantize=cfg.quantize, representative_data=representative, assets=assets)
    runner = TFLiteRunner(report.path)
    check = verify(model, runner, batches)
    keras_score = score_fn(model)
    tflite_score = score_fn(_RunnerAsModel(runner))
    timing = latency(runner, one)
    result = {
        "path": report.path,
        "quantize": cfg.quantize,
        "size_bytes": report.size_bytes,
        "max_abs_logit_diff": check["max_abs_diff"],
        f"{unit}_argmax_agreement": check["argmax_agreement"],
        f"keras_{score_name}": keras_score,
        f"tflite_{score_name}": tflite_score,
        "latency_p50_ms": timing["p50_ms"],
        "latency_p95_ms": timing["p95_ms"],
    }
    label = score_name.replace("_", " ").replace("f1", "F1")
    log(
        f"\nTFLite export ({cfg.quantize}): {report.path}, {report.size_bytes / 1e6:.2f} MB\n"
        f"  vs Keras on {check['n_tokens']} {unit}s: {unit} argmax agreement {check['argmax_agreement'] * 100:.2f}%, "
        f"max abs logit diff {check['max_abs_diff']:.2e}\n"
        f"  {label}: Keras {keras_score * 100:.2f}, TFLite {tflite_score * 100:.2f}; "
        f"latency at batch 1, length {one['input_ids'].shape[1]}: p50 {timing['p50_ms']:.2f} ms, p95 {timing['p95_ms']:.2f} ms"
    )
    return result


# ----------------------------------------------------------------------------- folders


def load_task_folder(directory, task, what):
    """Load a fine-tuned model folder of ``task``: ``(model, tokenizer, label_map)``.

    Args:
        directory: what ``kerasllm finetune ...`` writes to ``OUT/model``.
        task: the expected ``kerasllm.json`` task (``"token_classification"``).
        what: how the folder is described in errors (``"NER"``).

    Raises ``FileNotFoundError``/``ValueError`` naming the folder when it is not one.
    """
    from kerasllm.data import LabelMap
    from kerasllm.models import load_pretrained
    from kerasllm.tokenizers import WordPieceTokenizer

    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"--model {directory}: no such folder")
    labels_path = os.path.join(directory, "labels.json")
    if not os.path.isfile(labels_path):
        raise FileNotFoundError(f"--model {directory}: labels.json is missing (not a fine-tuned {what} model folder)")
    model = load_pretrained(directory)
    found = model.kerasllm_task.get("task")
    if found != task:
        raise ValueError(f"--model {directory}: its task is {found!r}, not {task!r}")
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


# ----------------------------------------------------------------------------- the run


def run_finetune(cfg, task, log=_log):
    """Run one fine-tune of ``task`` with settings ``cfg``; return the metrics dict.

    The metrics are also written to ``OUT/metrics.json``; see the module
    docstring for the steps and the output folder.
    """
    from kerasllm import training
    from kerasllm.models import load_pretrained, save_pretrained
    from kerasllm.models.peft import parameter_counts

    from kerasllm.training.distribution import accelerator_settings

    cfg.validate()
    started = time.time()
    training.set_seed(cfg.seed)
    scratch = None
    try:
        # The strategy first: only the chief (worker 0 of a cluster) writes to cfg.out.
        dist = make_strategy(cfg, log)
        chief = dist.extended.should_checkpoint
        backup_dir = prepare_output(cfg, task.name, log, chief=chief)
        speed = accelerator_settings(
            dist, cfg.mixed_precision, cfg.steps_per_execution, cfg.static_shapes, xla=cfg.xla,
            fuse_elementwise=cfg.fuse_elementwise, width=model_width(cfg.model),
        )
        training.set_mixed_precision(speed.mixed_precision)
        data_cfg = cfg
        if not chief:
            scratch = tempfile.mkdtemp(prefix="kerasllm-worker-")
            data_cfg = dataclasses.replace(cfg, out=scratch)
            log(
                f"not the chief: this worker writes nothing to {cfg.out} but TensorFlow's temporary backup copies "
                f"(removed after each save); its data go to {scratch}"
            )
        train, dev, test, source = prepare_data(data_cfg, task, log)
        label_map = task.label_map(train)
        train = task.augment(train, cfg, log)
        log(f"labels ({label_map.num_labels}): {', '.join(label_map.labels)}")
        with dist.scope():
            model, tokenizer = build_model_and_tokenizer(
                cfg, task.vocab_texts(train), label_map.num_labels, task.head, task.label, log
            )
            model = apply_peft(model, cfg, log)

        train_features = task.encode(train, tokenizer, label_map, cfg)
        dev_features = task.encode(dev, tokenizer, label_map, cfg) if dev else None
        task.describe_training_data(train, train_features, cfg, log)
        steps_per_epoch = math.ceil(len(train_features) / cfg.batch_size)
        speed = accelerator_settings(
            dist, speed.mixed_precision, cfg.steps_per_execution, cfg.static_shapes, steps_per_epoch, xla=cfg.xla,
            fuse_elementwise="on" if speed.fuse_elementwise else "off",
        )
        if speed != ("none", 1, False, False):
            log(
                f"speed: mixed precision {speed.mixed_precision}, {speed.steps_per_execution} step(s) per execution, "
                f"static shapes {'on' if speed.static_shapes else 'off'}, "
                f"fused element-wise ops {'on' if speed.fuse_elementwise else 'off'}"
            )
        # Under XLA (or fused element-wise clusters) without --static-shapes, batches are padded
        # to a few shapes: XLA compiles one program (one set of clusters) for each.
        few_shapes = (cfg.xla or speed.fuse_elementwise) and not speed.static_shapes
        with dist.scope():
            loss, metrics = task.loss_and_metrics()
            compile_model(
                model, cfg, steps_per_epoch, loss, metrics, speed.steps_per_execution,
                speed.static_shapes or few_shapes,
            )
        # kerasllm's step: a loss log that does not depend on the replica split or the
        # number of workers, and the token counts behind train_tokens_per_sec.
        training.install_train_step(model, fuse_elementwise=speed.fuse_elementwise)
        counts = parameter_counts(model)
        log(f"parameters: {counts['trainable']:,} trainable of {counts['total']:,} ({100 * counts['fraction']:.1f}%)")

        best_dir = os.path.join(cfg.out, "model")
        resume = training.ResumableTraining(backup_dir)
        info = task.save_info(train, label_map, cfg)
        callbacks = training.standard_callbacks(
            cfg.out,
            monitor=f"val_{task.monitor}" if dev else "loss",
            mode="max" if dev else "min",
            patience=cfg.patience if dev else None,
            save_fn=lambda m, d: save_pretrained(plain_model(m, cfg), d, **info),
            best_dir=best_dir,
            resumable=resume,
            tensorboard=chief,
        )
        if dev:
            callbacks.insert(0, task.dev_callback(dev, dev_features, label_map, cfg, log))
        batches = task.dataset(train_features, cfg)
        from kerasllm.training.static_shapes import static_batches, xla_length_multiple

        if speed.static_shapes:
            batches = static_batches(batches, cfg.batch_size, cfg.max_length)
        elif few_shapes:
            multiple = xla_length_multiple(cfg.max_length)
            log(
                f"XLA: batches padded to {cfg.batch_size} rows and a multiple of {multiple} sub-words "
                f"(at most {-(-cfg.max_length // multiple)} compiled shapes; --static-shapes for one)"
            )
            batches = static_batches(batches, cfg.batch_size, cfg.max_length, length_multiple=multiple)
        dataset = resume.shuffled_epochs(batches, seed=cfg.seed, batch_fn=lambda d: d)
        history = model.fit(dataset, epochs=cfg.epochs, callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
        if not chief:
            log("training done; the chief scores, saves and exports the model")
            return {
                "task": task.name,
                "chief": False,
                "epochs_run": len(history.history.get("loss", [])),
                "replicas": dist.num_replicas_in_sync,
                "history": {k: [float(v) for v in values] for k, values in history.history.items()},
            }
        tokenizer.save(best_dir)
        label_map.to_json(os.path.join(best_dir, "labels.json"))

        best = load_pretrained(best_dir)
        best_epoch = next((cb.best_epoch for cb in callbacks if isinstance(cb, training.BestCheckpoint)), None)
        metrics = {
            "task": task.name,
            "source": source,
            "epochs_run": len(history.history.get("loss", [])),
            "best_epoch": None if best_epoch is None else best_epoch + 1,
            "train_seconds": round(time.time() - started, 1),
            "strategy": cfg.strategy,
            "replicas": dist.num_replicas_in_sync,
            "parameters": counts,
            # Non-padding training tokens per second of training steps, mean over the epochs run here.
            "train_tokens_per_sec": _mean_or_none(history.history.get("tokens_per_sec")),
            "history": {
                key: [float(v) for v in values]
                for key, values in history.history.items()
                if key in ("loss", f"val_{task.monitor}")
            },
        }
        for name, data in (("dev", dev), ("test", test)):
            if not data:
                continue
            features = dev_features if name == "dev" else task.encode(data, tokenizer, label_map, cfg)
            metrics[name] = task.evaluate(best, data, features, label_map, cfg)
            log(f"\n{name} set {task.report(data, metrics[name])}")
        metrics_path = os.path.join(cfg.out, "metrics.json")
        atomic_write_json(metrics_path, metrics)

        if cfg.export:
            metrics["export"] = task.export(best, cfg, test or dev or train, tokenizer, label_map, train_features, log)
            atomic_write_json(metrics_path, metrics)
        if test:
            log(task.headline(metrics["test"]))
        log(f"model: {best_dir}   metrics: {metrics_path}")
        return metrics
    finally:
        keras.mixed_precision.set_global_policy("float32")
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
