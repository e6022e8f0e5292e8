"""Throughput, best checkpoint, resumable early stopping and exact resumption after an interruption."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import kerasllm.training.callbacks as callbacks_module
from kerasllm.models import load_pretrained, save_pretrained
from kerasllm.training import (
    BestCheckpoint,
    ResumableEarlyStopping,
    ResumableTraining,
    ThroughputProgress,
    create_optimizer,
    install_train_step,
    masked_accuracy,
    masked_sparse_categorical_crossentropy,
    set_seed,
    standard_callbacks,
)
from tests.test_training_helpers import (
    as_dataset,
    assert_weights_close,
    tiny_classifier,
    token_batch,
    weights_of,
)

# --------------------------------------------------------------------------- throughput


def test_throughput_progress_fallback_and_first_step_excluded(monkeypatch):
    progress = ThroughputProgress(tokens_per_batch=100)
    progress.set_model(keras.Sequential([keras.layers.Dense(1)]))
    progress.set_params({"verbose": 0, "epochs": 1, "steps": 3})
    progress.on_train_begin()
    progress.on_epoch_begin(0)
    clock = iter([0.0, 10.0, 20.0, 20.5, 30.0, 30.5])  # a slow first (tracing) step, then 0.5 s steps
    monkeypatch.setattr(callbacks_module.time, "perf_counter", lambda: next(clock))
    for batch in range(3):
        logs = {"loss": 1.0}
        progress.on_train_batch_begin(batch)
        progress.on_train_batch_end(batch, logs)
    monkeypatch.undo()
    assert logs["tokens_per_sec"] == pytest.approx(200.0)  # 100 tokens / 0.5 s, first step left out
    epoch_logs = {"loss": 1.0}
    progress.on_epoch_end(0, epoch_logs)
    assert epoch_logs["tokens"] == 300


# --------------------------------------------------------------------------- best checkpoint


def test_best_checkpoint_saves_only_improvements():
    saved = []
    model = keras.Sequential([keras.layers.Dense(1)])
    cb = BestCheckpoint("val_f1", "auto", "somewhere", save_fn=lambda m, d: saved.append((m, d)), verbose=0)
    assert cb.mode == "max"
    cb.set_model(model)
    cb.on_train_begin()
    for epoch, value in enumerate([0.5, 0.7, 0.6, 0.7, 0.9]):
        cb.on_epoch_begin(epoch)
        cb.on_epoch_end(epoch, {"val_f1": value})
    assert len(saved) == 3 and all(m is model and d == "somewhere" for m, d in saved)
    assert (cb.best, cb.best_epoch) == (0.9, 4)
    cb.on_epoch_end(5, {"loss": 1.0})  # metric missing: warns, keeps going
    assert cb.best == 0.9


def test_best_checkpoint_keeps_previous_best_when_saving_fails(tmp_path):
    model = tiny_classifier()
    directory = str(tmp_path / "best")
    cb = BestCheckpoint("val_loss", "min", directory, save_fn=save_pretrained, verbose=0)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    cb.on_epoch_end(0, {"val_loss": 1.0})
    first = weights_of(load_pretrained(directory))
    for w in model.weights:
        w.assign(w + 1.0)

    def broken_save_weights(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    model.save_weights = broken_save_weights
    cb.on_epoch_begin(1)
    with pytest.raises(RuntimeError, match="previous best model there is unchanged"):
        cb.on_epoch_end(1, {"val_loss": 0.5})
    assert cb.best == 1.0
    assert_weights_close(weights_of(load_pretrained(directory)), first, atol=0.0)
    assert sorted(os.listdir(tmp_path)) == ["best"]  # no staging folder left behind


def test_best_checkpoint_best_value_survives_an_interruption(tmp_path):
    saved = []
    model = keras.Sequential([keras.layers.Dense(1)])

    def fresh():
        cb = BestCheckpoint("val_loss", "min", "best", lambda m, d: saved.append(epoch), state_dir=str(tmp_path), verbose=0)
        cb.set_model(model)
        cb.on_train_begin()
        return cb

    cb = fresh()
    for epoch, value in enumerate([1.0, 0.5, 0.8, 0.4]):
        if epoch == 2:  # the job died after epoch 1 and was restarted
            cb = fresh()
        cb.on_epoch_begin(epoch)
        cb.on_epoch_end(epoch, {"val_loss": value})
    # 0.8 at epoch 2 is worse than the 0.5 from before the restart: not saved.
    assert saved == [0, 1, 3]
    assert (cb.best, cb.best_epoch) == (0.4, 3)


# --------------------------------------------------------------------------- early stopping


def _run_early_stopping(values, state_dir, interrupt_after=None):
    """Feed ``values`` as val_loss; optionally rebuild the callback after an epoch. Returns stop epoch."""
    model = keras.Sequential([keras.layers.Dense(1)])

    def fresh():
        cb = ResumableEarlyStopping("val_loss", patience=2, state_dir=state_dir, verbose=0)
        cb.set_model(model)
        cb.on_train_begin()
        return cb

    cb = fresh()
    for epoch, value in enumerate(values):
        if interrupt_after is not None and epoch == interrupt_after + 1:
            cb = fresh()
        cb.on_epoch_begin(epoch)
        cb.on_epoch_end(epoch, {"val_loss": value})
        if model.stop_training:
            return epoch
    return None


def test_early_stopping_patience_survives_an_interruption(tmp_path):
    values = [1.0, 0.8, 0.9, 0.95, 0.7, 0.6]
    assert _run_early_stopping(values, str(tmp_path / "a")) == 3
    assert _run_early_stopping(values, str(tmp_path / "b"), interrupt_after=2) == 3
    # Without the saved state the patience counter would restart and training would go on.
    assert _run_early_stopping(values, None, interrupt_after=2) is None
    with open(tmp_path / "b" / "early_stopping.json") as f:
        assert json.load(f)["records"]["2"]["wait"] == 1


# --------------------------------------------------------------------------- exact resumption

EPOCHS = 3


class _Preempted(Exception):
    pass


class _Interrupt(keras.callbacks.Callback):
    """Raise after a given epoch (or batch of an epoch), like a killed job."""

    def __init__(self, epoch, batch=None):
        super().__init__()
        self.epoch, self.batch, self._current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.batch is not None and self._current == self.epoch and batch == self.batch:
            raise _Preempted(f"epoch {self.epoch} batch {batch}")

    def on_epoch_end(self, epoch, logs=None):
        if self.batch is None and epoch == self.epoch:
            raise _Preempted(f"epoch {epoch}")


def _training_run(out_dir, interrupt=None, backup_freq="epoch", verbose=0):
    """A fresh 'process': seed, model, optimizer, callbacks and dataset built from scratch."""
    set_seed(0)
    features, labels = token_batch(n=12, seed=11)
    dev_features, dev_labels = token_batch(n=4, seed=12)
    model = tiny_classifier()
    model.compile(
        optimizer=create_optimizer(5e-3, num_train_steps=EPOCHS * 3, warmup_steps=2),
        loss=masked_sparse_categorical_crossentropy(),
        metrics=[masked_accuracy()],
    )
    install_train_step(model)
    callbacks = standard_callbacks(
        str(out_dir), monitor="val_loss", patience=5, backup_freq=backup_freq, tensorboard=True
    )
    resume = next(cb for cb in callbacks if isinstance(cb, ResumableTraining))
    examples = tf.data.Dataset.from_tensor_slices((features, labels))
    train = resume.shuffled_epochs(examples, seed=3, batch_size=4)
    if interrupt is not None:
        callbacks.append(interrupt)
    history = model.fit(
        train,
        epochs=EPOCHS,
        validation_data=as_dataset(dev_features, dev_labels, 4),
        verbose=verbose,
        callbacks=callbacks,
    )
    return model, history, resume


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.MonkeyPatch.context() as env:
        env.delenv("PYTHONHASHSEED", raising=False)  # set_seed sets it; give it back afterwards
        model, history, _ = _training_run(out, verbose=2)
    return weights_of(model), history.history, weights_of(load_pretrained(str(out / "best"))), printed.getvalue()


def test_throughput_progress_reports_non_padding_tokens(uninterrupted):
    _, history, _, printed = uninterrupted
    tokens = float(token_batch(n=12, seed=11)[0]["attention_mask"].sum())
    assert history["tokens"] == [tokens] * EPOCHS  # all of an epoch's non-padding tokens
    assert all(rate > 0 for rate in history["tokens_per_sec"] + history["steps_per_sec"])
    assert "tokens_per_sec" in printed and f"Epoch {EPOCHS}/{EPOCHS}" in printed


@pytest.mark.parametrize(
    "interrupt, backup_freq, resumed_at",
    [
        (_Interrupt(epoch=0), "epoch", (1, 0)),  # killed after the first epoch's backup
        (_Interrupt(epoch=1, batch=1), 2, (1, 1)),  # killed mid-epoch; last backup after step 3 = epoch 1 batch 0
    ],
    ids=["after-epoch", "mid-epoch"],
)
def test_interrupted_then_resumed_run_matches_uninterrupted(
    tmp_path, monkeypatch, uninterrupted, interrupt, backup_freq, resumed_at
):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    want_weights, want_history, want_best, _ = uninterrupted
    with pytest.raises(_Preempted):
        _training_run(tmp_path, interrupt=interrupt, backup_freq=backup_freq)
    assert os.path.isdir(tmp_path / "backup")
    model, history, resume = _training_run(tmp_path, backup_freq=backup_freq)
    assert (resume.initial_epoch, resume.initial_step) == resumed_at
    assert_weights_close(weights_of(model), want_weights, atol=1e-6)
    assert_weights_close(weights_of(load_pretrained(str(tmp_path / "best"))), want_best, atol=1e-6)
    # Dev metrics of the epochs run after the resume are the uninterrupted run's.
    resumed_epochs = len(history.history["val_loss"])
    np.testing.assert_allclose(
        history.history["val_loss"], want_history["val_loss"][-resumed_epochs:], rtol=1e-5
    )
    assert not os.path.exists(tmp_path / "backup")  # removed once training completed
    if callbacks_module.tensorboard_available():
        assert os.listdir(tmp_path / "logs")


def test_shuffled_epochs_order_depends_only_on_seed_and_epoch(tmp_path):
    def batches(resume, epoch, skip=0):
        resume._position.assign([epoch, skip])
        # A resumed epoch is shorter than the declared cardinality; fit never reads past it.
        return [b.numpy().tolist() for b in ds.take(3 - skip)]

    resume = ResumableTraining(str(tmp_path / "a"))
    ds = resume.shuffled_epochs(tf.data.Dataset.range(10), seed=7, batch_size=4)
    first = [batches(resume, e) for e in range(3)]
    assert all(sorted(sum(epoch, [])) == list(range(10)) for epoch in first)
    assert first[0] != first[1] != first[2]
    assert batches(resume, 1, skip=2) == first[1][2:]
    tf.random.set_seed(1234)  # another process, another global seed: same order
    _ = tf.random.uniform([5])
    other = ResumableTraining(str(tmp_path / "b"))
    ds = other.shuffled_epochs(tf.data.Dataset.range(10), seed=7, batch_size=4)
    assert [batches(other, e) for e in range(3)] == first
    assert ds.cardinality().numpy() == 3
    with pytest.raises(ValueError, match="finite"):
        other.shuffled_epochs(tf.data.Dataset.range(3).repeat(), batch_size=2)


def test_standard_callbacks_layout(tmp_path):
    callbacks = standard_callbacks(str(tmp_path), monitor="val_masked_accuracy", patience=2)
    names = [type(cb).__name__ for cb in callbacks]
    board = ["TensorBoard"] if callbacks_module.tensorboard_available() else []
    assert names == ["ThroughputProgress", "BestCheckpoint", "ResumableEarlyStopping", *board, "ResumableTraining"]
    best, early, resume = callbacks[1], callbacks[2], callbacks[-1]
    assert best.mode == "max" and early.monitor_op == np.greater
    assert best.directory == os.path.join(str(tmp_path), "best")
    assert best.state_dir == early.state_dir == resume.state_dir
    assert resume.state_dir.startswith(os.path.join(str(tmp_path), "backup"))
    bare = standard_callbacks(str(tmp_path), save_fn=False, resumable=False, tensorboard=False, progress=False)
    assert bare == []
