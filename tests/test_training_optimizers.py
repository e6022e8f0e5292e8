"""Warm-up schedules, AdamW with decay exclusions (vs NumPy), gradient accumulation."""
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from kerasllm.training import (
    WarmupSchedule,
    create_optimizer,
    enable_gradient_accumulation,
    install_train_step,
    masked_sparse_categorical_crossentropy,
)
from tests.test_training_helpers import (
    as_dataset,
    assert_weights_close,
    tiny_classifier,
    token_batch,
    weights_of,
)


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    "schedule, expected",
    [
        # peak 1e-3, T=100, W=10; steps 0, 5, 10, 55, 100, 150
        ("linear", [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0]),
        ("cosine", [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0]),
        ("constant", [0.0, 5e-4, 1e-3, 1e-3, 1e-3, 1e-3]),
    ],
)
def test_warmup_schedule_known_points(schedule, expected):
    lr = WarmupSchedule(1e-3, num_train_steps=100, warmup_steps=10, schedule=schedule)
    got = [float(lr(s)) for s in (0, 5, 10, 55, 100, 150)]
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_warmup_schedule_between_points():
    linear = WarmupSchedule(2.0, num_train_steps=20, warmup_steps=4, schedule="linear")
    cosine = WarmupSchedule(2.0, num_train_steps=20, warmup_steps=4, schedule="cosine")
    # Warm-up: 2 * 3/4. Linear decay at 8: 2 * (20 - 8) / 16. Cosine at 8: progress 1/4.
    assert float(linear(3)) == pytest.approx(1.5)
    assert float(linear(8)) == pytest.approx(1.5)
    assert float(cosine(8)) == pytest.approx(2 * 0.5 * (1 + math.cos(math.pi / 4)), rel=1e-6)
    no_warmup = WarmupSchedule(1.0, num_train_steps=4)
    np.testing.assert_allclose([float(no_warmup(s)) for s in range(5)], [1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-7)
    # Keras hands the step as an int64 variable.
    assert float(linear(tf.Variable(2, dtype=tf.int64))) == pytest.approx(1.0)


def test_warmup_schedule_serializes():
    lr = WarmupSchedule(3e-5, num_train_steps=1000, warmup_steps=100, schedule="cosine")
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(lr))
    assert isinstance(restored, WarmupSchedule)
    assert restored.get_config() == lr.get_config()
    opt = keras.optimizers.AdamW.from_config(create_optimizer(3e-5, 1000, warmup_steps=100).get_config())
    assert isinstance(opt._learning_rate, WarmupSchedule)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(schedule="step"), "allowed values"),
        (dict(warmup_steps=200), "larger than num_train_steps"),
        (dict(warmup_steps=5, warmup_ratio=0.1), "either warmup_steps"),
        (dict(warmup_ratio=1.5), "warmup_ratio"),
        (dict(clipnorm=1.0, global_clipnorm=1.0), "clipnorm"),
        (dict(weight_decay=-1.0), "weight_decay"),
    ],
)
def test_create_optimizer_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_optimizer(1e-3, 100, **kwargs)


def test_warmup_ratio_rounds_up():
    opt = create_optimizer(1e-3, num_train_steps=95, warmup_ratio=0.1)
    assert opt._learning_rate.warmup_steps == 10
    assert float(opt._learning_rate(5)) == pytest.approx(5e-4)


# --------------------------------------------------------------------------- AdamW vs NumPy

EXCLUDED = ("bias", "gamma", "beta", "layer_norm", "LayerNorm")


def _numpy_adamw(weights, grads_per_step, lrs, wd, clipnorm, b1=0.9, b2=0.999, eps=1e-6, decayed=None):
    """Loshchilov & Hutter's AdamW as Keras states it (decay w -= lr*wd*w, then Adam), float64."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        for k in w:
            g = grads[k].astype(np.float64)
            norm = np.sqrt(np.sum(g * g))
            if norm > clipnorm:
                g = g * clipnorm / norm
            if decayed[k]:
                w[k] = w[k] - lr * wd * w[k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            w[k] = w[k] - alpha * m[k] / (np.sqrt(v[k]) + eps)
    return w


def test_adamw_matches_numpy_and_skips_excluded_variables():
    model = tiny_classifier()
    features, labels = token_batch(n=4, seed=1)
    loss_fn = masked_sparse_categorical_crossentropy()
    peak, wd, clip = 1e-2, 0.5, 1.0
    opt = create_optimizer(peak, num_train_steps=4, schedule="linear", weight_decay=wd, clipnorm=clip)
    variables = model.trainable_variables
    names = [v.name for v in variables]
    start = {v.name: v.numpy() for v in variables}
    grads_per_step = []
    for step in range(2):
        batch_features, batch_labels = token_batch(n=4, seed=10 + step)
        with tf.GradientTape() as tape:
            loss = loss_fn(batch_labels, model(batch_features))
        grads = tape.gradient(loss, variables)
        grads_per_step.append({n: tf.convert_to_tensor(g).numpy() for n, g in zip(names, grads)})
        opt.apply_gradients(zip(grads, variables))
    got = {v.name: v.numpy() for v in variables}
    lrs = [peak * (4 - s) / 4 for s in range(2)]  # linear decay, no warm-up
    decayed = {n: not any(p in n for p in EXCLUDED) for n in names}
    assert decayed["classifier/kernel:0"] and decayed["embeddings/token_embeddings:0"]
    assert not decayed["encoder_layer_0/attention/qkv_bias:0"]
    assert not decayed["encoder_layer_0/attention_norm/gamma:0"]
    assert not decayed["embeddings/layer_norm/beta:0"]
    want = _numpy_adamw(start, grads_per_step, lrs, wd, clip, decayed=decayed)
    for n in names:
        np.testing.assert_allclose(got[n], want[n], atol=2e-6, err_msg=n)
    # The reference is sensitive to the exclusion: decaying a layer-norm gamma would move it by ~lr*wd.
    everything = _numpy_adamw(start, grads_per_step, lrs, wd, clip, decayed={n: True for n in names})
    gamma = "encoder_layer_0/attention_norm/gamma:0"
    assert np.max(np.abs(everything[gamma] - got[gamma])) > 1e-3


def _numpy_adam_global_clip(grads_per_step, clip, lr=1.0, b1=0.9, b2=0.999, eps=1e-6):
    w = [np.zeros_like(g, dtype=np.float64) for g in grads_per_step[0]]
    m, v = [np.zeros_like(x) for x in w], [np.zeros_like(x) for x in w]
    for t, grads in enumerate(grads_per_step, start=1):
        norm = math.sqrt(sum(float(np.sum(np.square(g))) for g in grads))
        grads = [g * clip / max(norm, clip) for g in grads]
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            w[i] = w[i] - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m[i] / (np.sqrt(v[i]) + eps)
    return w


def test_global_clipnorm_clips_jointly():
    var_a, var_b = tf.Variable([0.0, 0.0]), tf.Variable([0.0])
    opt = create_optimizer(1.0, 10, clipnorm=None, global_clipnorm=1.0, weight_decay=0.0, schedule="constant")
    # Step 1 has global norm 5 (clipped to 1), step 2 norm 0.5 (kept): Adam's second step
    # depends on the ratio of the two, so the clipping shows.
    steps = [[np.array([3.0, 0.0]), np.array([4.0])], [np.array([0.3, -0.4]), np.array([0.0])]]
    for grads in steps:
        opt.apply_gradients(zip([tf.constant(g, tf.float32) for g in grads], [var_a, var_b]))
    want = _numpy_adam_global_clip(steps, clip=1.0)
    np.testing.assert_allclose(var_a.numpy(), want[0], rtol=2e-5)
    np.testing.assert_allclose(var_b.numpy(), want[1], rtol=2e-5)
    unclipped = _numpy_adam_global_clip(steps, clip=1e9)
    assert np.max(np.abs(unclipped[0] - want[0])) > 1e-2


@pytest.mark.parametrize("clip", [dict(clipnorm=1.0), dict(clipnorm=None, global_clipnorm=1.0)])
def test_clipping_sees_an_embedding_gradient_summed_over_duplicate_rows(clip):
    # A lookup's gradient lists row 2 three times ([.3, .3] each) and row 0 once ([0, .3]).
    # Summed, it is [[0, .3], [0, 0], [.9, .9], [0, 0]] with norm 0.3 * sqrt(19) = 1.31 > 1,
    # so it is clipped; the rows as listed have norm 0.3 * sqrt(7) = 0.79 and would not be.
    table = tf.Variable(np.zeros((4, 2), np.float32))
    sparse = tf.IndexedSlices(0.3 * tf.constant([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]]),
                              tf.constant([2, 0, 2, 2]), tf.constant([4, 2]))
    opt = create_optimizer(1.0, 10, weight_decay=0.0, schedule="constant", epsilon=1e-6, **clip)
    # One step is sign-like in Adam; a second, smaller step makes the scale matter.
    dense_steps = [tf.convert_to_tensor(sparse).numpy(), np.full((4, 2), 0.05, np.float32)]
    opt.apply_gradients([(sparse, table)])
    opt.apply_gradients([(tf.constant(dense_steps[1]), table)])
    want = _numpy_adam_global_clip([[g] for g in dense_steps], clip=1.0)[0]
    np.testing.assert_allclose(table.numpy(), want, rtol=1e-4)  # float32 bias corrections
    unclipped = _numpy_adam_global_clip([[g] for g in dense_steps], clip=1e9)[0]  # what the listed norm gives
    assert np.max(np.abs(unclipped - want)) > 1e-2


def _numpy_lazy_adamw(table, steps, lr, wd, b1=0.9, b2=0.999, eps=1e-6):
    """LazyAdam with decoupled decay, float64: only the rows a step's gradient lists move."""
    w = table.astype(np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, (rows, values) in enumerate(steps, start=1):
        g = np.zeros_like(w)
        np.add.at(g, rows, values)  # duplicates summed
        seen = np.unique(rows)
        m[seen] = b1 * m[seen] + (1 - b1) * g[seen]
        v[seen] = b2 * v[seen] + (1 - b2) * g[seen] ** 2
        alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        w[seen] = w[seen] - lr * wd * w[seen] - alpha * m[seen] / (np.sqrt(v[seen]) + eps)
    return w, m, v


def test_lazy_sparse_updates_move_only_the_looked_up_rows():
    rng = np.random.default_rng(3)
    start = rng.normal(size=(6, 3)).astype(np.float32)
    table = tf.Variable(start, name="token_embeddings")
    steps = [(np.array([1, 3, 1]), rng.normal(size=(3, 3))), (np.array([3, 4]), rng.normal(size=(2, 3)))]
    opt = create_optimizer(0.1, 10, weight_decay=0.2, schedule="constant", lazy_sparse_updates=True,
                           global_clipnorm=None)
    for rows, values in steps:
        grad = tf.IndexedSlices(tf.constant(values, tf.float32), tf.constant(rows), tf.constant([6, 3]))
        opt.apply_gradients([(grad, table)])
    want, want_m, _ = _numpy_lazy_adamw(start, steps, lr=0.1, wd=0.2)
    np.testing.assert_allclose(table.numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(table.numpy()[[0, 2, 5]], start[[0, 2, 5]])  # never looked up: untouched
    np.testing.assert_allclose(opt._momentums[0].numpy(), want_m, rtol=1e-5, atol=1e-7)
    # The dense (Keras) update decays every row: row 0 would have moved.
    dense = tf.Variable(start)
    dense_opt = create_optimizer(0.1, 10, weight_decay=0.2, schedule="constant", global_clipnorm=None)
    for rows, values in steps:
        dense_opt.apply_gradients([(tf.IndexedSlices(tf.constant(values, tf.float32), tf.constant(rows),
                                                      tf.constant([6, 3])), dense)])
    assert np.max(np.abs(dense.numpy()[0] - start[0])) > 1e-3
    assert create_optimizer(0.1, 10, lazy_sparse_updates=True).get_config()["lazy_sparse_updates"] is True


# --------------------------------------------------------------------------- gradient accumulation


def _trained(batches, steps_per_update, loss, batch_size, initial):
    model = tiny_classifier()
    model.set_weights(initial)
    model.compile(optimizer=create_optimizer(1e-3, num_train_steps=10, weight_decay=0.01), loss=loss)
    if steps_per_update > 1:
        enable_gradient_accumulation(model, steps_per_update)
    history = model.fit(as_dataset(*batches, batch_size), epochs=1, verbose=0, shuffle=False)
    return model, history.history


def _equal_count_batches(n, seed, seq=6):
    """Every row keeps 4 tokens, so a token-averaged loss weighs rows equally (a mean-reduced loss)."""
    features, _ = token_batch(n=n, seq=seq, seed=seed, ignore_fraction=0.0)
    features["attention_mask"][:] = 1
    labels = np.random.default_rng(seed).integers(0, 3, (n, seq)).astype(np.int32)
    labels[:, -2:] = -100
    return features, labels


@pytest.fixture(scope="module")
def whole_batches():
    """18 examples in batches of 8, 8 and 2, one update per batch, no accumulation."""
    initial = tiny_classifier().get_weights()
    batches = _equal_count_batches(18, seed=3)
    model, history = _trained(batches, 1, masked_sparse_categorical_crossentropy(), 8, initial)
    return initial, batches, model, history


@pytest.mark.parametrize(
    "steps",
    [
        2,  # micro-batches 4+4, 4+4, 1+1
        3,  # uneven and empty micro-batches: 3+3+2, 3+3+2, 1+1+0
    ],
)
def test_accumulated_micro_batches_equal_one_step_on_the_whole_batch(whole_batches, steps):
    initial, batches, whole, whole_history = whole_batches
    accumulated, history = _trained(batches, steps, masked_sparse_categorical_crossentropy(), 8, initial)
    # One update per batch of 8 in both runs.
    assert int(accumulated.optimizer.iterations) == int(whole.optimizer.iterations) == 3
    assert_weights_close(weights_of(whole), weights_of(accumulated), atol=1e-5)
    assert history["loss"][0] == pytest.approx(whole_history["loss"][0], rel=1e-5)
    # Training did move the weights, so the comparison is not vacuous.
    moved = max(np.max(np.abs(a - b)) for a, b in zip(initial, whole.get_weights()))
    assert moved > 1e-4


def test_install_train_step_validates_its_arguments():
    model = tiny_classifier()
    with pytest.raises(ValueError, match="positive integer"):
        install_train_step(model, gradient_accumulation_steps=0)
    with pytest.raises(TypeError, match="tf_keras.Model"):
        install_train_step(object(), 2)


def test_accumulation_with_mixed_float16_loss_scaling():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_classifier()
        # Eager keeps this test quick; the graph path is the one the other tests trace.
        model.compile(
            optimizer=create_optimizer(1e-3, 10), loss=masked_sparse_categorical_crossentropy(), run_eagerly=True
        )
        assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
        enable_gradient_accumulation(model, 2)
        before = model.get_weights()
        history = model.fit(as_dataset(*token_batch(n=8, seed=7), 8), epochs=2, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(history.history["loss"]))
    assert any(np.max(np.abs(a - b)) > 0 for a, b in zip(before, model.get_weights()))


# --------------------------------------------------------------------------- global norm


@pytest.mark.parametrize("jit_compile", [False, True])
def test_global_norm_equals_numpy(jit_compile):
    from kerasllm.training.optimizers import global_norm

    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=s).astype(np.float32) for s in [(7, 5), (3, 4, 6), (9,), ()]]
    rows = rng.normal(size=(3, 5)).astype(np.float32)
    sparse = tf.IndexedSlices(tf.constant(rows), tf.constant([4, 0, 2]), tf.constant([6, 5]))
    want = math.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in arrays + [rows]))

    @tf.function(jit_compile=jit_compile)
    def norm(tensors):
        return global_norm(list(tensors) + [sparse, None])

    got = float(norm([tf.constant(a) for a in arrays]))
    assert got == pytest.approx(want, rel=1e-6)


def test_global_clipnorm_clips_jointly_inside_xla():
    var_a, var_b = tf.Variable([0.0, 0.0]), tf.Variable([0.0])
    opt = create_optimizer(1.0, 10, clipnorm=None, global_clipnorm=1.0, weight_decay=0.0, schedule="constant")
    steps = [[np.array([3.0, 0.0]), np.array([4.0])], [np.array([0.3, -0.4]), np.array([0.0])]]

    @tf.function(jit_compile=True)
    def apply(grads):
        opt.apply_gradients(zip(grads, [var_a, var_b]))

    for grads in steps:
        apply([tf.constant(g, tf.float32) for g in grads])
    want = _numpy_adam_global_clip(steps, clip=1.0)
    np.testing.assert_allclose(var_a.numpy(), want[0], rtol=2e-5)
    np.testing.assert_allclose(var_b.numpy(), want[1], rtol=2e-5)
