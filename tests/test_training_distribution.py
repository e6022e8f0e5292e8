"""Strategy selection, MirroredStrategy equivalence (2 logical CPUs), mixed precision, seeding, docstrings."""
import doctest
import importlib
import os
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kerasllm.training import set_mixed_precision, set_seed, strategy
from kerasllm.training.distribution import _tpu_hint
from tests._subprocess import run_result_script


# Runs in a fresh interpreter: logical devices must be configured before TF initialises.
MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from kerasllm.training import (create_optimizer, install_train_step, masked_accuracy,
                                   masked_sparse_categorical_crossentropy, strategy)
    from tests.test_training_helpers import tiny_classifier, token_batch

    features, labels = token_batch(n=8, seed=21)  # the two halves keep different numbers of tokens
    initial = tiny_classifier().get_weights()

    def run(dist, accumulation=1, fuse=False):
        with dist.scope():
            model = tiny_classifier()
            model.set_weights(initial)
            model.compile(optimizer=create_optimizer(1e-2, num_train_steps=10, warmup_steps=1),
                          loss=masked_sparse_categorical_crossentropy(), metrics=[masked_accuracy()])
        install_train_step(model, gradient_accumulation_steps=accumulation, fuse_elementwise=fuse)
        data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)
        history = model.fit(data, epochs=4, verbose=0).history
        return dict(replicas=dist.num_replicas_in_sync, loss=history["loss"],
                    accuracy=history["masked_accuracy"], tokens=history["tokens"],
                    weights=float(sum(np.abs(w).sum() for w in model.get_weights())))

    mirrored = strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    out = dict(default=run(strategy("default")), mirrored=run(mirrored),
               mirrored_accumulated=run(mirrored, accumulation=2),
               mirrored_fused=run(mirrored, fuse=True),
               kept_tokens=int((labels != -100).sum()), real_tokens=int(features["attention_mask"].sum()))
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def mirrored_result():
    result, stdout = run_result_script(MIRRORED_SCRIPT, timeout=300)
    result["stdout"] = stdout
    return result


def test_mirrored_over_two_cpus_has_two_replicas(mirrored_result):
    assert mirrored_result["default"]["replicas"] == 1
    assert mirrored_result["mirrored"]["replicas"] == 2
    assert "MirroredStrategy with 2 replica(s)" in mirrored_result["stdout"]


def test_mirrored_loss_trajectory_matches_default(mirrored_result):
    default, mirrored = mirrored_result["default"], mirrored_result["mirrored"]
    # Same global batch of 8 (4 per replica, uneven kept tokens): the token-averaged loss is
    # normalised by the global token count, so every step's loss and update agree.
    np.testing.assert_allclose(mirrored["loss"], default["loss"], atol=1e-5)
    np.testing.assert_allclose(mirrored["accuracy"], default["accuracy"], atol=1e-6)
    assert mirrored["weights"] == pytest.approx(default["weights"], rel=1e-5)
    assert default["loss"][-1] < default["loss"][0]  # it trained
    # The tokens log counts the whole global batch, not one replica's share.
    assert mirrored["tokens"][-1] == default["tokens"][-1] == mirrored_result["real_tokens"]


def test_fused_elementwise_step_under_mirrored_matches_default(mirrored_result):
    default, fused = mirrored_result["default"], mirrored_result["mirrored_fused"]
    assert fused["replicas"] == 2
    np.testing.assert_allclose(fused["loss"], default["loss"], atol=1e-5)
    assert fused["weights"] == pytest.approx(default["weights"], rel=1e-5)


def test_gradient_accumulation_runs_under_mirrored(mirrored_result):
    accumulated = mirrored_result["mirrored_accumulated"]
    assert accumulated["replicas"] == 2
    assert all(np.isfinite(accumulated["loss"]))
    assert accumulated["loss"][-1] < accumulated["loss"][0]


def test_default_and_auto_strategies(capsys):
    assert strategy("default").num_replicas_in_sync == 1
    if not tf.config.list_physical_devices("GPU") and _tpu_hint() is None and "TF_CONFIG" not in os.environ:
        chosen = strategy("auto")
        assert chosen is tf.distribute.get_strategy()
        assert "strategy default (auto)" in capsys.readouterr().out


def test_tpu_without_a_tpu_fails_fast_with_what_it_looked_for(monkeypatch):
    for key in ("TPU_NAME", "COLAB_TPU_ADDR", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_ACCELERATOR_TYPE"):
        monkeypatch.delenv(key, raising=False)
    started = time.time()
    with pytest.raises(RuntimeError, match=r"no TPU found: looked for .*TPU_NAME"):
        strategy("tpu", verbose=False)
    with pytest.raises(RuntimeError, match=r"no TPU (found|reachable).*'my-tpu'"):
        strategy("tpu", tpu="my-tpu", tpu_timeout=10, verbose=False)
    assert time.time() - started < 25


def test_strategy_argument_errors():
    with pytest.raises(ValueError, match="allowed values"):
        strategy("horovod")
    with pytest.raises(ValueError, match="only applies to the 'mirrored'"):
        strategy("default", devices=["/cpu:0"])
    with pytest.raises(ValueError, match="only applies to the 'tpu'"):
        strategy("mirrored", tpu="x")


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("mode, policy", [("none", "float32"), ("float16", "mixed_float16"), ("bfloat16", "mixed_bfloat16")])
def test_set_mixed_precision(restore_policy, mode, policy):
    assert set_mixed_precision(mode).name == policy
    assert keras.mixed_precision.global_policy().name == policy
    dense = keras.layers.Dense(2)
    assert dense.compute_dtype == ("float32" if mode == "none" else policy.split("_")[1])


def test_set_mixed_precision_rejects_other_values(restore_policy):
    for bad in ("fp16", "mixed_float16", "float64", 16):
        with pytest.raises(ValueError, match="allowed values: \\['none', 'float16', 'bfloat16'\\]"):
            set_mixed_precision(bad)


def test_compile_adds_loss_scaling_for_float16_only(restore_policy):
    for mode, scaled in (("float16", True), ("bfloat16", False)):
        set_mixed_precision(mode)
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        model.compile(optimizer=keras.optimizers.AdamW(), loss="mse")
        assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer) is scaled


def test_set_seed_repeats_python_numpy_and_tf(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    import random

    def draw():
        return random.random(), np.random.rand(), float(tf.random.uniform([])), keras.initializers.GlorotUniform()((2,)).numpy().tolist()

    set_seed(123)
    first = draw()
    set_seed(123)
    assert draw() == first
    with pytest.raises(ValueError, match="non-negative integer"):
        set_seed(-1)


@pytest.mark.parametrize(
    "name",
    [
        "kerasllm.training.optimizers",
        "kerasllm.training.losses",
        "kerasllm.training.callbacks",
        "kerasllm.training.train_step",
        "kerasllm.training.mixed_precision",
        "kerasllm.training.seed",
        "kerasllm.training.distribution",
    ],
)
def test_training_docstring_examples(name, monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs=vars(module).copy(), optionflags=doctest.ELLIPSIS)
    keras.mixed_precision.set_global_policy("float32")
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0
