"""``kerasllm finetune ner --resume``: an interrupted-then-resumed run ends like an uninterrupted one.

The whole pipeline runs (data, vocabulary, model, AdamW schedule, dev F1 callback, best
checkpoint, early-stopping state, length-bucketed shuffled batches); the interruption is an
exception raised after the second epoch's backup, as a killed process would leave it. Dropout is
0 (``--dropout 0``) so that both runs are exactly repeatable.
"""
import numpy as np
import pytest

import kerasllm.training as training_module
from kerasllm.data import generate_ner_corpus, write_conll
from kerasllm.models import load_pretrained
from kerasllm.training.ner_finetune import NerFinetuneConfig, run_ner_finetune

import tf_keras as keras


class _Killed(Exception):
    pass


class _KillAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Killed(f"killed after epoch {epoch + 1}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume-corpus")
    data = generate_ner_corpus(seed=5, num_train=120, num_dev=30, num_test=0)
    for name in ("train", "dev"):
        write_conll(folder / f"{name}.conll", data[name])
    return folder


def _config(corpus, out, resume=False, speed=("none", "off")):
    return NerFinetuneConfig(
        train=str(corpus / "train.conll"), dev=str(corpus / "dev.conll"), model="bert-tiny", out=str(out),
        epochs=4, batch_size=16, max_length=32, vocab_size=300, lr=2e-3, patience=10, dropout=0.0,
        export=False, resume=resume, mixed_precision=speed[0], fuse_elementwise=speed[1],
    )


def _weights(folder):
    return load_pretrained(str(folder / "model")).get_weights()


# float32 graph mode, and bfloat16 with fused element-wise ops (the default on an AMX CPU):
# there, XLA clusters compiled lazily would run TensorFlow's kernels on a shape's first
# steps and round differently from the compiled ones (kerasllm.training.fusion).
@pytest.mark.parametrize("speed", [("none", "off"), ("bfloat16", "on")], ids=["float32", "bfloat16-fused"])
def test_interrupted_then_resumed_finetune_matches_uninterrupted(corpus, tmp_path, monkeypatch, speed):
    quiet = lambda message: None  # noqa: E731
    want = run_ner_finetune(_config(corpus, tmp_path / "straight", speed=speed), log=quiet)
    assert want["epochs_run"] == 4

    standard = training_module.standard_callbacks

    def with_kill(*args, **kwargs):
        return standard(*args, **kwargs) + [_KillAfterEpoch(1)]

    monkeypatch.setattr(training_module, "standard_callbacks", with_kill)
    with pytest.raises(_Killed):
        run_ner_finetune(_config(corpus, tmp_path / "resumed", speed=speed), log=quiet)
    monkeypatch.setattr(training_module, "standard_callbacks", standard)
    assert (tmp_path / "resumed" / "backup").is_dir()
    assert (tmp_path / "resumed" / "model").is_dir()  # the best checkpoint so far is intact

    got = run_ner_finetune(_config(corpus, tmp_path / "resumed", resume=True, speed=speed), log=quiet)
    # Only epochs 3 and 4 ran after the resume, and they saw what the straight run saw.
    assert len(got["history"]["loss"]) == 2
    np.testing.assert_allclose(got["history"]["loss"], want["history"]["loss"][2:], rtol=1e-5)
    np.testing.assert_allclose(got["history"]["val_f1"], want["history"]["val_f1"][2:], atol=1e-9)
    assert got["best_epoch"] == want["best_epoch"]
    assert got["dev"]["f1"] == pytest.approx(want["dev"]["f1"], abs=1e-9)
    for a, b in zip(_weights(tmp_path / "resumed"), _weights(tmp_path / "straight")):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert not (tmp_path / "resumed" / "backup").exists()  # removed once training completed
