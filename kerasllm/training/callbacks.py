"""Callbacks for long, resumable ``model.fit`` runs.

- :class:`ThroughputProgress`: Keras's progress bar plus ``tokens_per_sec``.
- :class:`BestCheckpoint`: save the model whenever the dev metric improves.
- :class:`ResumableEarlyStopping`: Keras's early stopping whose patience
  survives an interruption.
- :class:`ResumableTraining`: ``BackupAndRestore`` plus a data order that is a
  function of (seed, epoch), so an interrupted-then-resumed run ends with the
  same weights as an uninterrupted one.
- :func:`standard_callbacks`: all of the above and TensorBoard in one list.

Resumption, in full: ``BackupAndRestore`` restores model, optimizer and the
epoch/step counters; :meth:`ResumableTraining.shuffled_epochs` makes the data
of epoch ``e`` independent of how many epochs this process has seen; and
:class:`BestCheckpoint` / :class:`ResumableEarlyStopping` keep their state
(best value, patience counter) next to the backup. The remaining source of
difference is randomness inside the model (dropout draws from TF's global
generator, which is not part of the backup).
"""
import importlib.util
import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasllm.training.train_step import TOKENS_KEY

logger = logging.getLogger("kerasllm.training")

_MAX_WORDS = ("acc", "f1", "precision", "recall", "auc", "fmeasure", "exact_match", "bleu", "rouge", "iou")
STATE_DIRNAME = "callback_state"


def resolve_mode(monitor, mode):
    """``"min"`` or ``"max"``; ``"auto"`` means max for accuracy/F1-like names, else min."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode={mode!r} is invalid; allowed values: ['auto', 'min', 'max']")
    if mode != "auto":
        return mode
    return "max" if any(word in monitor.lower() for word in _MAX_WORDS) else "min"


def _is_chief(model):
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    return bool(strategy.extended.should_checkpoint)


def _wait_for_all_workers(model):
    """Return once every worker of a ``MultiWorkerMirroredStrategy`` has called this (an all-reduce)."""
    strategy = getattr(model, "distribute_strategy", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.ones([])), axis=None)


def _to_float(value):
    if value is None:
        return None
    return float(np.asarray(value))


def _write_json(path, data):
    """Atomic JSON write through ``tf.io.gfile`` (works for local and gs:// paths)."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True))
    tf.io.gfile.rename(tmp, path, overwrite=True)


class _EpochState:
    """Mixin: keep a callback's state per finished epoch in ``state_dir/<state_name>.json``.

    The state after epoch ``e`` is written at the end of ``e``. When a run starts
    at epoch ``e > 0`` (``BackupAndRestore`` resumed it), the state after
    ``e - 1`` is loaded at the first ``on_epoch_begin``. Writing before the
    backup (callback order of :func:`standard_callbacks`) keeps the pair
    consistent: a crash between the two writes replays epoch ``e`` from the
    state after ``e - 1``.
    """

    state_name = "state"

    def _init_state(self, state_dir):
        self.state_dir = state_dir
        self._restore_pending = False

    def _state_path(self):
        return os.path.join(self.state_dir, f"{self.state_name}.json")

    def _start_run(self):
        self._restore_pending = self.state_dir is not None

    def _maybe_restore(self, epoch):
        if not self._restore_pending:
            return
        self._restore_pending = False
        path = self._state_path()
        if epoch == 0 or not tf.io.gfile.exists(path):
            return
        with tf.io.gfile.GFile(path) as f:
            records = json.load(f).get("records", {})
        state = records.get(str(epoch - 1))
        if state is None:
            logger.warning("%s: no saved state for epoch %d in %s; starting fresh", self.state_name, epoch - 1, path)
            return
        self.set_state(state)

    def _record(self, epoch):
        if self.state_dir is None or not _is_chief(self.model):
            return
        path = self._state_path()
        records = {}
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                records = json.load(f).get("records", {})
        records[str(epoch)] = self.get_state()
        keep = sorted(records, key=int)[-3:]
        _write_json(path, {"records": {k: records[k] for k in keep}})


class ThroughputProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar with ``tokens_per_sec`` (and ``tokens``) in the logs.

    Tokens come from the ``tokens`` value that
    :func:`kerasllm.training.install_train_step` adds to each step's logs (the
    non-padding tokens of the global batch, i.e. the sum of ``attention_mask``).
    Without it, ``tokens_per_batch`` (e.g. ``batch_size * seq_len``, padding
    included) is used when given; otherwise only ``steps_per_sec`` is shown.

    Times cover the training steps only (not validation or other callbacks),
    and the very first step of the run, which traces and compiles the step
    function, is left out of the average once later steps exist. At the end of
    an epoch the logs (and so ``History`` and TensorBoard) get the epoch's
    ``tokens_per_sec`` and its total ``tokens``.

    Pass it in ``callbacks`` and Keras uses it instead of its own progress bar
    (it honours ``fit(verbose=...)``). Put it first so that later callbacks
    see its values.

    Args:
        tokens_per_batch: fallback token count per step.
    """

    def __init__(self, tokens_per_batch=None):
        super().__init__(count_mode="steps", stateful_metrics=["tokens_per_sec", "steps_per_sec", TOKENS_KEY])
        self.tokens_per_batch = tokens_per_batch
        self._warned = False

    def _implements_train_batch_hooks(self):
        return True  # timing needs the batch hooks even when nothing is printed

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._first_step = None  # (seconds, tokens, steps) of the run's first, tracing step

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._epoch_tokens = 0.0
        self._timed = [0.0, 0.0, 0]  # seconds, tokens, steps
        self._last_batch = -1
        self._batch_start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs if logs is not None else {}
        now = time.perf_counter()
        seconds = now - (now if self._batch_start is None else self._batch_start)
        steps = max(1, batch - self._last_batch)  # > 1 with steps_per_execution
        self._last_batch = batch
        tokens = None
        if TOKENS_KEY in logs:
            tokens = _to_float(logs[TOKENS_KEY]) * steps
        elif self.tokens_per_batch:
            tokens = float(self.tokens_per_batch) * steps
        elif not self._warned:
            self._warned = True
            logger.info("ThroughputProgress: no token count (install_train_step or tokens_per_batch); steps/s only")
        self._epoch_tokens += tokens or 0.0
        if self._first_step is None:
            self._first_step = (seconds, tokens or 0.0, steps)
        else:
            self._timed = [self._timed[0] + seconds, self._timed[1] + (tokens or 0.0), self._timed[2] + steps]
        self._add_rates(logs, tokens is not None)
        super().on_train_batch_end(batch, logs)

    def _add_rates(self, logs, have_tokens):
        seconds, tokens, steps = self._timed if self._timed[2] else self._first_step or (0.0, 0.0, 0)
        if seconds <= 0:
            return
        logs["steps_per_sec"] = steps / seconds
        if have_tokens:
            logs["tokens_per_sec"] = tokens / seconds

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        have_tokens = self._epoch_tokens > 0
        self._add_rates(logs, have_tokens)
        if have_tokens:
            logs[TOKENS_KEY] = self._epoch_tokens
        super().on_epoch_end(epoch, logs)


class BestCheckpoint(_EpochState, keras.callbacks.Callback):
    """After each epoch, save the model with ``save_fn(model, directory)`` if ``monitor`` improved.

    The best value is updated only after ``save_fn`` returns, and a failing
    save stops training with a ``RuntimeError`` naming the folder; with an
    atomic ``save_fn`` (``kerasllm.models.save_pretrained`` writes next to the
    folder and renames) the previous best folder stays intact. Under
    multi-worker training only the chief writes to ``directory``; the other
    workers save to a temporary folder they remove (saving can run collective
    operations every worker must take part in).

    Args:
        monitor: a key of the epoch logs, e.g. ``"val_loss"`` or ``"val_f1"``.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy/F1-like names).
        directory: the folder that holds the best model.
        save_fn: ``save_fn(model, directory)``; default ``kerasllm.models.save_pretrained``.
        min_delta: smallest change that counts as an improvement.
        state_dir: where to keep the best value so a resumed run continues
            from it (:func:`standard_callbacks` uses the backup folder).
        verbose: print a line when the model is saved.

    Example:

    >>> import tempfile
    >>> cb = BestCheckpoint("val_loss", "min", tempfile.mkdtemp(), save_fn=lambda m, d: None)
    >>> cb.mode
    'min'
    """

    state_name = "best_checkpoint"

    def __init__(
        self, monitor="val_loss", mode="auto", directory="best", save_fn=None, min_delta=0.0, state_dir=None, verbose=1
    ):
        super().__init__()
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode)
        self.directory = directory
        if save_fn is None:
            from kerasllm.models import save_pretrained

            save_fn = save_pretrained
        self.save_fn = save_fn
        self.min_delta = abs(float(min_delta))
        self.verbose = verbose
        self._init_state(state_dir)
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = None
        self._warned_missing = False

    def get_state(self):
        return {"best": self.best, "best_epoch": self.best_epoch}

    def set_state(self, state):
        self.best, self.best_epoch = float(state["best"]), state["best_epoch"]

    def improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_train_begin(self, logs=None):
        self._reset()
        self._start_run()

    def on_epoch_begin(self, epoch, logs=None):
        self._maybe_restore(epoch)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            if not self._warned_missing:
                self._warned_missing = True
                logger.warning(
                    "BestCheckpoint: %r is not in the epoch logs (available: %s); nothing is saved. "
                    "Pass validation data or monitor one of those keys.",
                    self.monitor,
                    sorted(logs or {}),
                )
            self._record(epoch)
            return
        value = _to_float(value)
        if not math.isnan(value) and self.improved(value):
            # Every worker saves, since saving may run collective ops all workers must join;
            # under multi-worker training the others write to a temporary folder, then remove it.
            chief = _is_chief(self.model)
            directory = self.directory if chief else tempfile.mkdtemp(prefix="kerasllm-worker-save-")
            try:
                self.save_fn(self.model, directory)
            except Exception as err:
                raise RuntimeError(
                    f"BestCheckpoint: saving the model to {directory} failed at epoch {epoch + 1} "
                    f"({type(err).__name__}: {err}); the previous best model there is unchanged"
                ) from err
            finally:
                if not chief:
                    shutil.rmtree(directory, ignore_errors=True)
            if self.verbose and chief:
                print(
                    f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5g} to {value:.5g}; "
                    f"saved to {self.directory}",
                    flush=True,
                )
            self.best, self.best_epoch = value, epoch
        self._record(epoch)


class ResumableEarlyStopping(_EpochState, keras.callbacks.EarlyStopping):
    """``tf_keras.callbacks.EarlyStopping`` whose patience counter and best value survive a resume.

    ``restore_best_weights`` is not offered: the best weights of an interrupted
    run are not kept. Load the :class:`BestCheckpoint` folder instead.

    Args:
        monitor, mode, patience, min_delta, baseline, start_from_epoch, verbose:
            as in ``tf_keras.callbacks.EarlyStopping`` (``mode="auto"`` means
            max for accuracy/F1-like names).
        state_dir: where to keep the state between runs (None: not kept).
    """

    state_name = "early_stopping"

    def __init__(
        self,
        monitor="val_loss",
        mode="auto",
        patience=3,
        min_delta=0.0,
        baseline=None,
        start_from_epoch=0,
        state_dir=None,
        verbose=1,
    ):
        super().__init__(
            monitor=monitor,
            mode=resolve_mode(monitor, mode),
            patience=patience,
            min_delta=min_delta,
            baseline=baseline,
            start_from_epoch=start_from_epoch,
            verbose=verbose,
        )
        self._init_state(state_dir)

    def get_state(self):
        best = None if self.best is None else float(self.best)
        return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch)}

    def set_state(self, state):
        self.wait, self.best_epoch = state["wait"], state["best_epoch"]
        self.best = state["best"] if state["best"] is not None else self.best

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._start_run()

    def on_epoch_begin(self, epoch, logs=None):
        self._maybe_restore(epoch)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._record(epoch)


class ResumableTraining(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose resumed run continues with exactly the data it would have seen.

    ``BackupAndRestore`` restores the model, the optimizer (moments, step
    count, hence the learning-rate schedule) and the epoch (and step, with an
    integer ``save_freq``), then iterates the dataset from its start.
    :meth:`shuffled_epochs` wraps a dataset so that epoch ``e`` is shuffled with
    a seed made of (``seed``, ``e``) and, after a mid-epoch resume, skips the
    batches already trained on. With both, a run interrupted and resumed (same
    seeds, dropout-free or otherwise deterministic model) ends with the same
    weights as one that was never interrupted.

    When training finishes (including by early stopping) and
    ``delete_checkpoint`` is true, the whole ``backup_dir`` is removed.

    Args:
        backup_dir: folder for the backup (and, in :func:`standard_callbacks`,
            the other callbacks' state); use one folder per run.
        save_freq: ``"epoch"`` or a number of steps between backups.
        delete_checkpoint: remove the backup once ``fit`` completes.
        save_before_preemption: see ``tf_keras.callbacks.BackupAndRestore``.

    Example:

    >>> import tempfile, tensorflow as tf
    >>> resume = ResumableTraining(tempfile.mkdtemp())
    >>> ds = resume.shuffled_epochs(tf.data.Dataset.range(10), seed=1, batch_size=4)
    >>> [len(b) for b in ds]
    [4, 4, 2]
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True, save_before_preemption=False):
        super().__init__(
            backup_dir,
            save_freq=save_freq,
            delete_checkpoint=delete_checkpoint,
            save_before_preemption=save_before_preemption,
        )
        self.initial_epoch = 0
        self.initial_step = 0
        # [epoch, batches to skip] read by the datasets when an epoch's iterator starts.
        with tf.init_scope(), tf.device("/cpu:0"):
            self._position = tf.Variable([0, 0], dtype=tf.int64, trainable=False, name="kerasllm_data_position")

    @property
    def state_dir(self):
        """Folder where :func:`standard_callbacks` keeps the other callbacks' state."""
        return os.path.join(self.backup_dir, STATE_DIRNAME)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        steps = (self.params or {}).get("steps")
        epoch, step = self._training_state.maybe_load_initial_counters_from_ckpt(steps, 0, "train")
        self.initial_epoch, self.initial_step = int(epoch), int(step)
        self._position.assign([self.initial_epoch, self.initial_step])
        if self.initial_epoch or self.initial_step:
            logger.info("ResumableTraining: resuming at epoch %d, step %d", self.initial_epoch + 1, self.initial_step)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._position.assign([epoch + 1, 0])

    def on_train_end(self, logs=None):
        # Every worker has written (and cleared) its last backup copy before the chief removes the folder.
        _wait_for_all_workers(self.model)
        delete = self.delete_checkpoint and _is_chief(self.model)
        super().on_train_end(logs)
        if delete and tf.io.gfile.exists(self.backup_dir):
            tf.io.gfile.rmtree(self.backup_dir)

    def shuffled_epochs(self, dataset, seed=0, batch_size=None, batch_fn=None, buffer_size=None, drop_remainder=False):
        """A dataset whose epoch ``e`` is ``dataset`` shuffled with seed (``seed``, ``e``), then batched.

        Give ``fit`` this dataset without ``steps_per_epoch``: Keras starts a new
        iterator every epoch, and each reads the current epoch from this
        callback. The order depends only on ``seed`` and the epoch (not on TF's
        global seed), so a new process reproduces it.

        Args:
            dataset: a finite, unbatched ``tf.data.Dataset`` in a fixed order.
            seed: shuffling seed.
            batch_size: batch size (or give ``batch_fn``).
            batch_fn: ``fn(dataset) -> batched dataset``, e.g. a ``padded_batch``.
            buffer_size: shuffle buffer; default the whole dataset when its size
                is known, else 10,000 examples.
            drop_remainder: for ``batch_size``: drop the last, smaller batch.

        When the number of batches is known it is declared to Keras (progress
        bar, mid-epoch positions). The epoch resumed mid-way is shorter than
        declared: ``fit`` reads exactly the remaining batches, but iterating it
        to the end by hand raises ``FailedPreconditionError``.
        """
        if (batch_size is None) == (batch_fn is None):
            raise ValueError("give exactly one of batch_size and batch_fn")
        if batch_fn is None:

            def batch_fn(ds):
                return ds.batch(batch_size, drop_remainder=drop_remainder)

        size = int(dataset.cardinality().numpy())
        if size == tf.data.INFINITE_CARDINALITY:
            raise ValueError("shuffled_epochs needs a finite dataset (remove .repeat())")
        if buffer_size is None:
            buffer_size = size if size > 0 else 10_000
        position = self._position
        seed = int(seed)

        def one_epoch(_):
            # Inside this traced function set_seed fixes the seed of this function's
            # graph only, so the order depends on (seed, epoch) and not on TF's
            # global seed or on how many random ops the process created before.
            # The graph seed is a constant (the user's seed is in epoch_seed): a graph
            # seed of 0 with a tensor op seed trips TF's `seeds == (0, 0)` check.
            tf.random.set_seed(1)
            where = position.read_value()
            epoch_seed = tf.constant(seed, tf.int64) * 1_000_003 + where[0]
            shuffled = dataset.shuffle(buffer_size, seed=epoch_seed, reshuffle_each_iteration=False)
            return batch_fn(shuffled).skip(where[1])

        epochs = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).flat_map(one_epoch)
        batches = int(batch_fn(dataset).cardinality().numpy())
        if batches >= 0:
            # Lets Keras know the steps per epoch (progress bar, mid-epoch resume).
            epochs = epochs.apply(tf.data.experimental.assert_cardinality(batches))
        return epochs.prefetch(tf.data.AUTOTUNE)


def tensorboard_available():
    """True when the ``tensorboard`` package (which ``tf.summary`` writes through) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def standard_callbacks(
    out_dir,
    monitor="val_loss",
    mode="auto",
    patience=None,
    min_delta=0.0,
    save_fn=None,
    best_dir=None,
    backup_freq="epoch",
    resumable=True,
    tensorboard=True,
    progress=True,
    tokens_per_batch=None,
):
    """The callbacks of a kerasllm training run, in the order they must run.

    Layout under ``out_dir``: ``best/`` (the best model, via ``save_fn``),
    ``backup/`` (``ResumableTraining``; removed when training completes) and
    ``logs/`` (TensorBoard).

    Args:
        out_dir: the run's output folder.
        monitor, mode, min_delta: the dev metric to select and stop on.
        patience: epochs without improvement before stopping; None: no early stop.
        save_fn: ``save_fn(model, directory)``; default ``kerasllm.models.save_pretrained``;
            ``False`` leaves :class:`BestCheckpoint` out.
        best_dir: where the best model goes (default ``out_dir/best``).
        backup_freq: ``"epoch"`` or a number of steps between backups.
        resumable: True (create a :class:`ResumableTraining`), False (none), or
            a :class:`ResumableTraining` you already built (e.g. to call its
            :meth:`~ResumableTraining.shuffled_epochs` before ``fit``).
        tensorboard: write TensorBoard logs (skipped with a warning when the
            ``tensorboard`` package is not installed).
        progress: use :class:`ThroughputProgress` as the progress bar.
        tokens_per_batch: see :class:`ThroughputProgress`.

    Returns:
        A list for ``model.fit(callbacks=...)``. Find the
        :class:`ResumableTraining` in it to build the training dataset.

    Example:

    >>> import tempfile
    >>> cbs = standard_callbacks(tempfile.mkdtemp(), monitor="val_loss", patience=2)
    >>> [type(cb).__name__ for cb in cbs if type(cb).__name__ != "TensorBoard"]
    ['ThroughputProgress', 'BestCheckpoint', 'ResumableEarlyStopping', 'ResumableTraining']
    """
    if isinstance(resumable, ResumableTraining):
        resume = resumable
    elif resumable:
        resume = ResumableTraining(os.path.join(out_dir, "backup"), save_freq=backup_freq)
    else:
        resume = None
    state_dir = resume.state_dir if resume is not None else None
    callbacks = []
    if progress:
        callbacks.append(ThroughputProgress(tokens_per_batch=tokens_per_batch))
    if save_fn is not False:
        callbacks.append(
            BestCheckpoint(
                monitor,
                mode,
                best_dir or os.path.join(out_dir, "best"),
                save_fn=save_fn,
                min_delta=min_delta,
                state_dir=state_dir,
            )
        )
    if patience is not None:
        callbacks.append(
            ResumableEarlyStopping(monitor, mode, patience=patience, min_delta=min_delta, state_dir=state_dir)
        )
    if tensorboard and tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=os.path.join(out_dir, "logs")))
    elif tensorboard:
        logger.warning(
            "TensorBoard logs are off: the 'tensorboard' package is not installed "
            "(pip install 'tensorboard>=2.21,<2.22' to get %s)",
            os.path.join(out_dir, "logs"),
        )
    if resume is not None:
        # Last: the other callbacks record their epoch state before the backup is written.
        callbacks.append(resume)
    return callbacks
