"""A drop-in ``train_step`` for functional models: gradient accumulation and token counts.

tf_keras's optimizer cannot accumulate gradients, and a functional model cannot
override ``train_step`` by subclassing, so :func:`install_train_step` replaces
the bound method on one model instance. ``model.fit`` then runs, for each batch
it draws:

1. *Micro-batching* (``gradient_accumulation_steps = n > 1``): the batch is cut
   into ``n`` consecutive slices of ``ceil(batch / n)`` examples (the last ones
   may be shorter, or empty). Each slice is run forward and backward on its own,
   one after the other, and its gradient is added with weight
   ``slice_size / batch``; one optimizer update follows. Peak activation memory
   is that of one slice, while the update is that of the whole batch.

   So the dataset yields the *effective* batch (micro-batch x n), and one
   ``fit`` step is one optimizer update: learning-rate schedules, checkpoint
   frequencies and ``BackupAndRestore`` positions all count updates, and no
   half-accumulated gradient ever has to be saved. The same code runs under
   every ``tf.distribute`` strategy (each replica slices its share of the
   batch), because no replica-synchronising operation is placed inside a
   ``tf.cond`` or loop.

   For losses that are means over examples the update equals the full-batch
   update exactly. For a token-averaged loss (e.g.
   :class:`~kerasllm.training.MaskedSparseCategoricalCrossentropy`) each slice
   is averaged over its own tokens and slices are weighted by examples, the
   usual behaviour of gradient accumulation; it equals the full-batch update
   when slices hold equal numbers of kept tokens.

2. *Token counting*: the step returns ``tokens``, the number of non-padding
   tokens of the global batch (sum of ``x[token_mask]`` over replicas; when the
   inputs have no such key, the number of elements of the first input), which
   :class:`~kerasllm.training.ThroughputProgress` turns into tokens/s.

3. *One loss under every strategy*: the ``loss`` (and ``val_loss``) in the logs is
   the mean of the step losses weighted by the global batch size, Keras's own
   formula on one device. Keras's tracker would weight each replica's share by
   that replica's batch size, which differs from the one-device figure whenever
   a batch splits unevenly over replicas (a partial last batch; replicas with
   different token counts). A custom ``train_step`` that calls ``compute_loss``
   more than once keeps its own ``loss``.

With ``gradient_accumulation_steps=1`` the model's own ``train_step`` runs
unchanged; ``tokens`` is added and ``loss`` reported as above. Mixed precision is handled: with a
``LossScaleOptimizer`` each slice's loss is scaled and the sum is unscaled once.

The patch lives on the instance: it is not saved with the model and is lost by
``clone_model``; call :func:`install_train_step` again after rebuilding.
"""
import contextlib
import threading
import types

import tensorflow as tf
import tf_keras as keras

from kerasllm.training import fusion

TOKENS_KEY = "tokens"


def _batch_size(x):
    return tf.shape(tf.nest.flatten(x)[0])[0]


def _slice(structure, start, stop):
    if structure is None:
        return None
    return tf.nest.map_structure(lambda t: t[start:stop], structure)


def _count_tokens(model, x, token_mask):
    """This replica's token count, or the global one when Keras will keep only the first replica's."""
    if isinstance(x, dict) and token_mask in x:
        count = tf.reduce_sum(tf.cast(x[token_mask], tf.float32))
    else:
        count = tf.cast(tf.size(tf.nest.flatten(x)[0]), tf.float32)
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return count
    # fit reduces the step's outputs over replicas with `distribute_reduction_method`:
    # "auto" sums them, except on TPU where it keeps the first replica's value.
    method = getattr(model, "distribute_reduction_method", "auto")
    if method == "auto":
        tpu = (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy)
        method = "first" if isinstance(tf.distribute.get_strategy(), tpu) else "sum"
    if method == "first":
        count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return count


def _add(total, grad):
    if total is None:
        return grad
    if grad is None:
        return total
    if isinstance(total, tf.IndexedSlices) or isinstance(grad, tf.IndexedSlices):
        if isinstance(total, tf.IndexedSlices) and isinstance(grad, tf.IndexedSlices):
            # Stay sparse: the optimizer sums duplicate indices.
            return tf.IndexedSlices(
                tf.concat([total.values, grad.values], 0),
                tf.concat([total.indices, grad.indices], 0),
                total.dense_shape,
            )
        return tf.convert_to_tensor(total) + tf.convert_to_tensor(grad)
    return total + grad


def _dependency_tensors(grads):
    deps = []
    for g in grads:
        if isinstance(g, tf.IndexedSlices):
            deps.append(g.values)
        elif g is not None:
            deps.append(g)
    return deps


def _accumulating_step(model, data, steps):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    loss_scaled = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
    variables = model.trainable_variables
    static_batch = tf.nest.flatten(x)[0].shape[0]
    if static_batch is not None:
        # Static shapes (TPU): Python bounds, empty slices dropped.
        chunk = max(1, -(-static_batch // steps))
        bounds = [(s, min(s + chunk, static_batch)) for s in range(0, static_batch, chunk)] or [(0, 0)]
        total = float(max(static_batch, 1))
    else:
        batch = _batch_size(x)
        chunk = (batch + steps - 1) // steps
        bounds = [(tf.minimum(i * chunk, batch), tf.minimum(i * chunk + chunk, batch)) for i in range(steps)]
        total = tf.cast(tf.maximum(batch, 1), tf.float32)
    summed = [None] * len(variables)
    previous = []
    step_loss = 0.0
    for start, stop in bounds:
        # The slice waits for the previous slice's gradients, so slices run one
        # after the other instead of all at once (which would not save memory).
        with tf.control_dependencies(previous):
            xi, yi, wi = _slice(x, start, stop), _slice(y, start, stop), _slice(sample_weight, start, stop)
        weight = tf.cast(stop - start, tf.float32) / total
        with tf.GradientTape() as tape:
            y_pred = model(xi, training=True)
            loss = model.compute_loss(xi, yi, y_pred, wi)
            weighted = loss * tf.cast(weight, loss.dtype)
            step_loss = step_loss + tf.cast(weighted, tf.float32)
            if loss_scaled:
                weighted = optimizer.get_scaled_loss(weighted)
        if hasattr(model, "_validate_target_and_loss"):
            model._validate_target_and_loss(yi, loss)
        grads = tape.gradient(weighted, variables)
        summed = [_add(s, g) for s, g in zip(summed, grads)]
        previous = _dependency_tensors(grads)
        model.compute_metrics(xi, yi, y_pred, wi)
    if loss_scaled:
        summed = optimizer.get_unscaled_gradients(summed)
    optimizer.apply_gradients(zip(summed, variables))
    return model.get_metrics_result(), step_loss


class _BatchWeightedLoss(keras.metrics.Metric):
    """The epoch's ``loss``: step losses averaged with the global batch size as weight.

    That is Keras's own formula on one device. Keras's loss tracker, under a
    multi-replica strategy, weights each replica's share by that replica's batch
    size instead, which drifts from the one-device value whenever a batch splits
    unevenly (a partial last batch, token counts that differ between replicas).
    Here every replica adds its share of the step's loss times the global batch
    size, so the sums over replicas are those of one device.
    """

    def __init__(self, name="loss"):
        super().__init__(name=name)
        self.total = self.add_weight("total", initializer="zeros")
        self.count = self.add_weight("count", initializer="zeros")

    def update_state(self, weighted_value, weight):
        self.total.assign_add(weighted_value)
        self.count.assign_add(weight)

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


_CAPTURE = threading.local()  # MirroredStrategy runs the replicas' steps in threads


def _capturing_compute_loss(original):
    """``compute_loss`` that also hands its result to :func:`_capture_loss` of this thread."""

    def compute_loss(self, *args, **kwargs):
        loss = original(self, *args, **kwargs)
        sink = getattr(_CAPTURE, "sink", None)
        if sink is not None:
            sink.append(loss)
        return loss

    return compute_loss


def _capture_loss(step):
    """Run ``step()``; return its logs and the loss it differentiated (``None`` unless one call)."""
    _CAPTURE.sink = captured = []
    try:
        logs = step()
    finally:
        _CAPTURE.sink = None
    return logs, (captured[0] if len(captured) == 1 else None)


def _report_loss(logs, loss, data, tracker):
    """Put the strategy-independent running mean of the step losses in ``logs["loss"]``."""
    logs = dict(logs)
    if loss is None or "loss" not in logs:  # a custom step with its own losses: leave them
        return logs
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    batch = tf.cast(_batch_size(x), tf.float32)
    local_replicas = 1.0
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        # Each replica's loss is its share of the global batch's loss (kerasllm's token
        # losses divide by the global count; Keras scales its losses by 1/replicas), so
        # the shares, each weighted by the global batch size, add up to the step's loss.
        batch = ctx.all_reduce(tf.distribute.ReduceOp.SUM, batch)
        local_replicas = float(len(tf.distribute.get_strategy().extended.worker_devices))
    # Reading the tracker sums its variables over this worker's replicas, and fit then
    # sums the logs over workers (MultiWorkerMirroredStrategy): the count is split so
    # that it is counted once in the end.
    tracker.update_state(tf.cast(loss, tf.float32) * batch, batch / local_replicas)
    logs["loss"] = tracker.result()
    return logs


def install_train_step(model, gradient_accumulation_steps=1, token_mask="attention_mask", fuse_elementwise=False):
    """Give ``model`` kerasllm's ``train_step`` (micro-batch accumulation, ``tokens`` log).

    Call it before ``fit`` (any time after building the model; compiling before
    or after does not matter). Calling it again replaces the previous setting.

    Args:
        model: a ``tf_keras.Model`` (functional or subclassed).
        gradient_accumulation_steps: slices each batch is cut into; 1 keeps
            Keras's own step.
        token_mask: input key whose sum counts the tokens of a batch; ``None``
            turns the ``tokens`` log off.
        fuse_elementwise: trace the step under
            :func:`kerasllm.training.fusion.fused_elementwise` (the ops between
            matrix products compiled by XLA, the products left to TensorFlow)
            and update each variable in one XLA kernel. For graph-mode training
            (``compile(jit_compile=False)``); it pays for bfloat16 on an AMX CPU
            (see :mod:`kerasllm.training.fusion`).

    Returns:
        ``model``, patched in place.

    Example:

    >>> from kerasllm.models import get_preset, token_classifier
    >>> model = token_classifier(get_preset("bert-tiny", vocab_size=50, num_layers=1), 3)
    >>> model = install_train_step(model, gradient_accumulation_steps=4)
    >>> model.kerasllm_gradient_accumulation_steps
    4
    """
    steps = gradient_accumulation_steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"gradient_accumulation_steps must be a positive integer, got {steps!r}")
    if not isinstance(model, keras.Model):
        raise TypeError(f"install_train_step needs a tf_keras.Model, got {type(model).__name__}")
    original_train, original_test = type(model).train_step, type(model).test_step
    with model.distribute_strategy.scope():
        tracker = _BatchWeightedLoss()
    # Not an attribute Keras tracks: the tracker's variables must stay out of the model's weights.
    object.__setattr__(model, "_kerasllm_loss_tracker", tracker)

    def train_step(self, data):
        scope = contextlib.nullcontext()
        if fuse_elementwise:
            scope = fusion.fused_elementwise()
            # tf_keras turns its per-variable XLA update off when it finds no GPU; it is read when traced.
            optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
            if hasattr(optimizer, "_update_step_xla"):
                optimizer.jit_compile = True
        with scope:
            if steps == 1:
                logs, loss = _capture_loss(lambda: original_train(self, data))
            else:
                logs, loss = _accumulating_step(self, data, steps)
        logs = _report_loss(logs, loss, data, tracker)
        if token_mask is not None:
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            logs[TOKENS_KEY] = _count_tokens(self, x, token_mask)
        return logs

    def test_step(self, data):
        logs, loss = _capture_loss(lambda: original_test(self, data))
        return _report_loss(logs, loss, data, tracker)

    def reset_metrics(self):
        type(self).reset_metrics(self)
        tracker.reset_state()

    model.compute_loss = types.MethodType(_capturing_compute_loss(type(model).compute_loss), model)
    model.test_step = types.MethodType(test_step, model)
    model.reset_metrics = types.MethodType(reset_metrics, model)
    model.test_function = None
    model.train_step = types.MethodType(train_step, model)
    model.kerasllm_gradient_accumulation_steps = steps
    model.kerasllm_fuse_elementwise = bool(fuse_elementwise)
    # A cached train function would still call the old step.
    model.train_function = None
    return model


def enable_gradient_accumulation(model, steps, token_mask="attention_mask"):
    """Accumulate gradients over ``steps`` micro-batches per update (see :func:`install_train_step`).

    Feed ``fit`` batches of ``steps x micro_batch`` examples: each is split into
    ``steps`` micro-batches processed one at a time, then one optimizer update
    is made, identical to the update on the whole batch for example-averaged
    losses.
    """
    return install_train_step(model, gradient_accumulation_steps=steps, token_mask=token_mask)
