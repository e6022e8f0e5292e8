"""Fault tolerance of multi-worker fine-tuning: a killed worker, a restarted cluster, the same result.

The pipeline of ``kerasllm finetune ner`` (``run_ner_finetune`` with ``strategy="multiworker"``,
``worker_hosts`` and ``task_index``: the ``--worker-hosts``/``--task-index`` options) runs as two
worker processes on 127.0.0.1, with ``ResumableTraining`` (``BackupAndRestore`` plus the exact
data order) backing up after every epoch. In the interrupted run, worker 1 freezes right
after the backup of epoch 2 and the test kills it with SIGKILL, as a preempted machine would
vanish. TensorFlow's fault-tolerance model for ``MultiWorkerMirroredStrategy`` is then to restart
the *whole* cluster: the surviving chief cannot continue alone (its next all-reduce waits for, then
fails on, the dead peer), so it is stopped too, and both workers are started again with
``--resume``. They restore epoch 3 (not 1), train the remaining epochs, and end with the weights,
losses and dev scores of an uninterrupted two-worker run (after 24 steps the tiny model still
predicts no entity on dev, so the dev F1 is 0 in both; the weights and losses carry the
comparison). Only the chief writes the output folder.

Every process has a deadline and is killed in a ``finally`` block. The cluster test takes minutes
on two shared cores, so it is marked slow; the option checks run in the default suite.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from kerasllm.training.distribution import local_worker_hosts
from tests._subprocess import ROOT

EPOCHS, KILL_AFTER = 4, 1  # the victim freezes after the backup of epoch KILL_AFTER + 1

WORKER = textwrap.dedent(
    """
    import json, logging, sys, time
    import numpy as np
    import tf_keras as keras
    import kerasllm.training as training_module
    from kerasllm.training.ner_finetune import NerFinetuneConfig, run_ner_finetune

    args = json.loads(sys.argv[1])
    log = logging.getLogger("kerasllm.training")
    log.addHandler(logging.StreamHandler(sys.stdout))
    log.setLevel(logging.INFO)

    class Watch(keras.callbacks.Callback):
        # Runs after ResumableTraining, so the epoch's backup is on disk when the marker appears.
        def on_epoch_end(self, epoch, logs=None):
            if epoch == args.get("freeze_after"):
                with open(args["marker"], "w") as f:
                    f.write(str(epoch))
                if args.get("freeze"):
                    print("frozen: waiting to be killed", flush=True)
                    time.sleep(3600)

        def on_train_end(self, logs=None):
            np.savez(args["weights"], *self.model.get_weights())

    standard = training_module.standard_callbacks
    training_module.standard_callbacks = lambda *a, **k: standard(*a, **k) + [Watch()]
    metrics = run_ner_finetune(NerFinetuneConfig(**args["config"]))
    with open(args["result"], "w") as f:
        json.dump(metrics, f)
    print("worker finished", flush=True)
    """
)


class _Cluster:
    """Two worker processes of one fine-tune; ``stop()`` kills whatever still runs."""

    def __init__(self, folder, name, config, hosts, freeze_after=None, victim=None):
        self.folder, self.name = folder, name
        self.processes, self.logs = [], []
        for index in range(2):
            args = {
                "config": {**config, "worker_hosts": ",".join(hosts), "task_index": index},
                "result": str(folder / f"{name}.result{index}.json"),
                "weights": str(folder / f"{name}.weights{index}.npz"),
                "marker": str(folder / f"{name}.marker{index}"),
                "freeze_after": freeze_after,
                "freeze": index == victim,
            }
            env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
            env.pop("TF_CONFIG", None)
            log = open(folder / f"{name}.log{index}", "w")
            self.logs.append(log)
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER, json.dumps(args)], cwd=ROOT, env=env, stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def log(self, index):
        return (self.folder / f"{self.name}.log{index}").read_text()

    def wait(self, deadline):
        for p in self.processes:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        for index, p in enumerate(self.processes):
            assert p.returncode == 0, self.log(index)[-3000:]

    def result(self, index):
        with open(self.folder / f"{self.name}.result{index}.json") as f:
            metrics = json.load(f)
        with np.load(self.folder / f"{self.name}.weights{index}.npz") as npz:
            weights = [npz[f"arr_{i}"] for i in range(len(npz.files))]
        return metrics, weights

    def stop(self):
        for p in self.processes:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in self.logs:
            log.close()


def _wait_for(paths, processes, deadline):
    while not all(os.path.exists(p) for p in paths):
        for p in processes:
            assert p.poll() is None, f"a worker exited (code {p.returncode}) before the kill point"
        assert time.monotonic() < deadline, "the workers did not reach the kill point in time"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def ner_setup(tmp_path_factory):
    """CoNLL files and a tiny kerasllm model folder (hidden 32, 2 layers) with its vocabulary."""
    from kerasllm.data import generate_ner_corpus, write_conll
    from kerasllm.models import bert_encoder, get_preset, save_pretrained
    from kerasllm.tokenizers import WordPieceTokenizer, train_wordpiece_vocab

    folder = tmp_path_factory.mktemp("fault-tolerance")
    data = generate_ner_corpus(seed=7, num_train=64, num_dev=24, num_test=0)
    for name in ("train", "dev"):
        write_conll(folder / f"{name}.conll", data[name])
    tokenizer = WordPieceTokenizer(train_wordpiece_vocab([" ".join(s.tokens) for s in data["train"]], 300))
    config = get_preset(
        "bert-tiny", vocab_size=tokenizer.vocab_size, hidden_size=32, num_heads=2, intermediate_size=64,
        max_position=32, dropout=0.0, attention_dropout=0.0,
    )
    model_dir = folder / "tiny-model"
    save_pretrained(bert_encoder(config), str(model_dir))
    tokenizer.save(str(model_dir))
    return folder


def _config(setup, out):
    return dict(
        train=str(setup / "train.conll"), dev=str(setup / "dev.conll"), model=str(setup / "tiny-model"),
        out=str(out), epochs=EPOCHS, batch_size=16, max_length=32, lr=2e-3, patience=10, dropout=0.0,
        export=False, strategy="multiworker",
    )


@pytest.mark.slow
def test_killed_worker_cluster_restarts_and_ends_like_an_uninterrupted_run(ner_setup, tmp_path):
    deadline = time.monotonic() + 900
    hosts = [local_worker_hosts(2), local_worker_hosts(2)]
    straight = interrupted = restarted = None
    try:
        # The uninterrupted reference and the run to be interrupted train side by side.
        straight = _Cluster(tmp_path, "straight", _config(ner_setup, tmp_path / "straight"), hosts[0])
        interrupted = _Cluster(
            tmp_path, "interrupted", _config(ner_setup, tmp_path / "resumed"), hosts[1],
            freeze_after=KILL_AFTER, victim=1,
        )
        markers = [tmp_path / f"interrupted.marker{i}" for i in range(2)]
        _wait_for(markers, interrupted.processes, deadline)
        victim, chief = interrupted.processes[1], interrupted.processes[0]
        victim.send_signal(signal.SIGKILL)  # worker 1 vanishes after the backup of epoch KILL_AFTER + 1
        victim.wait()
        try:
            chief_code = chief.wait(timeout=120)  # it fails on the dead peer, or waits for it forever
        except subprocess.TimeoutExpired:
            chief_code = None
        interrupted.stop()
        assert chief_code != 0  # the chief cannot finish alone
        assert not os.path.exists(tmp_path / "interrupted.result0.json")
        backup = tmp_path / "resumed" / "backup"
        assert (backup / "chief").is_dir()

        # Restart the whole cluster (same addresses) with --resume.
        restarted = _Cluster(
            tmp_path, "restarted", {**_config(ner_setup, tmp_path / "resumed"), "resume": True}, hosts[1]
        )
        restarted.wait(deadline)
        straight.wait(deadline)
    finally:
        for cluster in (straight, interrupted, restarted):
            if cluster is not None:
                cluster.stop()

    for index in range(2):
        log = restarted.log(index)
        assert f"resuming at epoch {KILL_AFTER + 2}, step 0" in log, log[-2000:]
        assert f"Epoch {KILL_AFTER + 2}/{EPOCHS}" in log and "Epoch 1/" not in log
    want, want_weights = straight.result(0)
    got, got_weights = restarted.result(0)
    worker, worker_weights = restarted.result(1)
    assert want["replicas"] == got["replicas"] == 2 and worker["chief"] is False
    # Only the epochs after the backup ran again, and they saw what the uninterrupted run saw.
    resumed_epochs = EPOCHS - KILL_AFTER - 1
    assert len(got["history"]["loss"]) == resumed_epochs
    np.testing.assert_allclose(got["history"]["loss"], want["history"]["loss"][-resumed_epochs:], atol=1e-5)
    np.testing.assert_allclose(got["history"]["val_f1"], want["history"]["val_f1"][-resumed_epochs:], atol=1e-5)
    np.testing.assert_allclose(worker["history"]["loss"], got["history"]["loss"], atol=1e-5)
    # The best checkpoint's dev scores (entity F1, token accuracy, counts per type).
    for key, value in want["dev"].items():
        assert got["dev"][key] == (pytest.approx(value, abs=1e-5) if isinstance(value, float) else value), key
    assert got["best_epoch"] == want["best_epoch"]
    assert want["history"]["loss"][-1] < want["history"]["loss"][0]  # it trained
    for a, b, c in zip(got_weights, want_weights, worker_weights):
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_array_equal(a, c)  # the workers stay identical

    # Only the chief wrote the output folder; the backup is gone once training completed.
    out = tmp_path / "resumed"
    assert sorted(os.listdir(out)) == ["finetune_config.json", "logs", "metrics.json", "model"]
    assert [name for name in os.listdir(out / "logs") if "worker" in name] == []
    assert "not the chief" in restarted.log(1) and "not the chief" not in restarted.log(0)


def _cli(*args, env=None):
    from kerasllm.cli.main import app

    return CliRunner().invoke(app, ["finetune", "ner", *args], env=env)


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--worker-hosts", "127.0.0.1:2222,127.0.0.1:2223", "--task-index", "2"], None,
         "--task-index 2 is out of range for 2 --worker-hosts (0 to 1)"),
        (["--worker-hosts", "127.0.0.1:2222,127.0.0.1:2223"], None, "--worker-hosts needs --task-index"),
        (["--worker-hosts", "127.0.0.1,127.0.0.1:2223", "--task-index", "0"], None, "'127.0.0.1' is not host:port"),
        (["--worker-hosts", "127.0.0.1:2222,127.0.0.1:2223", "--task-index", "1"],
         {"TF_CONFIG": json.dumps({"cluster": {"worker": ["10.0.0.1:1", "10.0.0.2:1"]},
                                   "task": {"type": "worker", "index": 1}})},
         "TF_CONFIG is already set"),
        (["--task-index", "1"], None, "--task-index 1 needs --worker-hosts"),
    ],
)
def test_cluster_options_fail_with_one_clear_line(tmp_path, monkeypatch, args, env, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    started = time.monotonic()
    result = _cli("--strategy", "multiworker", "--out", str(tmp_path / "out"), *args, env=env)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing was written
    assert time.monotonic() - started < 60
    assert "TF_CONFIG" not in os.environ or env  # a failed check leaves the environment as it was


def test_cluster_options_need_the_multiworker_strategy(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)  # and undo any TF_CONFIG the command sets
    result = _cli("--worker-hosts", "127.0.0.1:2222,127.0.0.1:2223", "--task-index", "0", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "--worker-hosts/--task-index apply to --strategy multiworker (or auto), not 'default'" in " ".join(
        result.output.split()
    )
    assert "TF_CONFIG" not in os.environ  # a refused command leaves no cluster behind


def test_cluster_config_and_an_equal_tf_config(monkeypatch):
    from kerasllm.training.distribution import cluster_config, configure_cluster

    monkeypatch.delenv("TF_CONFIG", raising=False)
    hosts = "10.0.0.1:2222, 10.0.0.2:2222,[::1]:2224"
    wanted = cluster_config(hosts, 2)
    assert wanted == {
        "cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222", "[::1]:2224"]},
        "task": {"type": "worker", "index": 2},
    }
    assert configure_cluster(hosts, 2) == wanted
    assert json.loads(os.environ["TF_CONFIG"]) == wanted
    assert configure_cluster(hosts, 2) == wanted  # the same again: accepted
    assert configure_cluster(None, 2) == wanted  # the index alone, agreeing with TF_CONFIG
    with pytest.raises(ValueError, match="differs from --worker-hosts/--task-index"):
        configure_cluster(hosts, 0)
    for bad, match in (("a:1,a:1", "more than once"), ("a:0", "not host:port"), ("", "empty")):
        with pytest.raises(ValueError, match=match):
            cluster_config(bad, 0)
    monkeypatch.delenv("TF_CONFIG")
    from kerasllm.training import strategy

    with pytest.raises(ValueError, match="only apply to the 'multiworker' strategy, not 'mirrored'"):
        strategy("mirrored", worker_hosts=hosts, task_index=0)
    assert "TF_CONFIG" not in os.environ
