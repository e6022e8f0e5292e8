"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train exactly like one process.

Each worker runs in its own interpreter with ``TF_CONFIG`` naming both (free ports picked
here), builds the model inside ``kerasllm.training.strategy("multiworker")`` and trains on the
global batch, sharded by data. Both must end with identical weights, equal (within 1e-5) to a
single process trained at the same global batch. The test waits at most a few minutes and kills
whatever is still running.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests._subprocess import ROOT

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    from kerasllm import training
    from tests.test_training_helpers import tiny_classifier, token_batch

    out = sys.argv[1]
    dist = training.strategy(sys.argv[2])
    features, labels = token_batch(n=24, seed=5)
    with dist.scope():
        model = tiny_classifier()
        rng = np.random.default_rng(0)
        model.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in model.get_weights()])
        model.compile(optimizer=training.create_optimizer(1e-3, num_train_steps=9, warmup_steps=2),
                      loss=training.masked_sparse_categorical_crossentropy())
    training.install_train_step(model)
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    history = model.fit(data.with_options(options), epochs=3, verbose=0).history
    with open(out, "w") as f:
        json.dump(dict(replicas=dist.num_replicas_in_sync, loss=history["loss"],
                       weights=[w.tolist() for w in model.get_weights()]), f)
    """
)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _launch(out, strategy, tf_config=None):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(out), strategy],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait_all(processes, timeout):
    deadline = time.monotonic() + timeout
    try:
        for p in processes:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = [p.stdout.read() for p in processes]
    for p, log in zip(processes, logs):
        assert p.returncode == 0, log[-3000:]
    return logs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multiworker")
    hosts = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    workers = [
        _launch(folder / f"worker{i}.json", "multiworker", {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
        for i in range(2)
    ]
    single = _launch(folder / "single.json", "default")
    _wait_all(workers + [single], timeout=420)
    return [json.loads((folder / name).read_text()) for name in ("worker0.json", "worker1.json", "single.json")]


def test_two_workers_end_identical_and_equal_one_process(runs):
    worker0, worker1, single = runs
    assert (worker0["replicas"], worker1["replicas"], single["replicas"]) == (2, 2, 1)
    assert single["loss"][-1] < single["loss"][0]  # it trained
    for a, b, c in zip(worker0["weights"], worker1["weights"], single["weights"]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-5)
    np.testing.assert_allclose(worker0["loss"], single["loss"], atol=1e-5)
