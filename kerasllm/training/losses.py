"""Token-level loss and accuracy that skip ignored labels (``-100`` by default).

Both follow the Hugging Face convention for token classification and masked
LM: a label equal to ``ignore_index`` (padding, sub-word continuations,
unmasked positions) contributes nothing, and the result is a mean over the kept
tokens only.

Under a ``tf.distribute`` strategy the loss divides by the number of kept
tokens of the *global* batch (summed over replicas), so a replicated step
computes exactly the loss and gradient of the same batch on one device, even
when replicas hold different numbers of kept tokens.
"""
import tensorflow as tf
import tf_keras as keras


def _kept(y_true, ignore_index):
    y_true = tf.cast(y_true, tf.int32)
    mask = tf.not_equal(y_true, ignore_index)
    return tf.where(mask, y_true, tf.zeros_like(y_true)), mask


def _labels_like_logits(y_true, y_pred):
    # Keras may hand labels as [batch, seq, 1]; drop that axis.
    if y_true.shape.rank is not None and y_pred.shape.rank is not None and y_true.shape.rank == y_pred.shape.rank:
        y_true = tf.squeeze(y_true, axis=-1)
    return y_true


def _token_weights(mask, sample_weight, dtype):
    """``mask`` as ``dtype``, times ``sample_weight`` (per sequence or per token) when given."""
    kept = tf.cast(mask, dtype)
    if sample_weight is not None:
        sample_weight = tf.cast(sample_weight, dtype)
        while sample_weight.shape.rank is not None and sample_weight.shape.rank < kept.shape.rank:
            sample_weight = sample_weight[..., None]
        kept = kept * sample_weight
    return kept


def _cross_replica_sum(value):
    """Sum ``value`` over the replicas of the current step (itself outside a replicated step)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


@keras.saving.register_keras_serializable(package="kerasllm")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy averaged over labels ``!= ignore_index``.

    ``loss = sum_kept(w * ce) / count_kept``, where ``w`` is the optional
    ``sample_weight`` (per sequence ``[batch]`` or per token ``[batch, seq]``)
    and ``count_kept`` counts the kept tokens (weights scale, they do not
    renormalise, as in Keras). A batch with no kept token has loss 0.

    The reduction is ``SUM`` so that Keras adds the per-replica parts instead of
    averaging them; each part is already divided by the global token count.

    Args:
        ignore_index: label value to skip.
        from_logits: ``y_pred`` are logits (default) rather than probabilities.

    Example:

    >>> import numpy as np
    >>> loss = MaskedSparseCategoricalCrossentropy()
    >>> logits = np.zeros((1, 3, 4), "float32")
    >>> round(float(loss(np.array([[1, -100, 2]]), logits)), 4)  # log(4)
    1.3863
    """

    def __init__(self, ignore_index=-100, from_logits=True, name="masked_sparse_categorical_crossentropy"):
        super().__init__(reduction=keras.losses.Reduction.SUM, name=name)
        self.ignore_index = int(ignore_index)
        self.from_logits = bool(from_logits)

    def __call__(self, y_true, y_pred, sample_weight=None):
        with tf.name_scope(self.name):
            y_pred = tf.convert_to_tensor(y_pred)
            y_true = _labels_like_logits(tf.convert_to_tensor(y_true), y_pred)
            labels, mask = _kept(y_true, self.ignore_index)
            logits = tf.cast(y_pred, tf.float32)
            num_classes = tf.shape(logits)[-1]
            checks = [
                tf.debugging.assert_less(
                    tf.reduce_max(tf.concat([tf.reshape(labels, [-1]), [0]], 0)),
                    num_classes,
                    message=f"{self.name}: a label id is >= the number of classes of the logits",
                ),
                tf.debugging.assert_non_negative(
                    labels, message=f"{self.name}: negative label id other than ignore_index={self.ignore_index}"
                ),
            ]
            with tf.control_dependencies(checks):
                per_token = keras.backend.sparse_categorical_crossentropy(
                    labels, logits, from_logits=self.from_logits
                )
            kept = tf.cast(mask, tf.float32)
            weighted = kept
            if sample_weight is not None:
                sample_weight = tf.cast(sample_weight, tf.float32)
                while sample_weight.shape.rank is not None and sample_weight.shape.rank < kept.shape.rank:
                    sample_weight = sample_weight[..., None]
                weighted = kept * sample_weight
            total = tf.reduce_sum(per_token * weighted)
            count = _cross_replica_sum(tf.reduce_sum(kept))
            return tf.math.divide_no_nan(total, count)

    def call(self, y_true, y_pred):
        # Per-token losses with ignored positions zeroed (used only if someone
        # calls ``call`` directly; ``__call__`` does the masked mean).
        y_true = _labels_like_logits(tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred))
        labels, mask = _kept(y_true, self.ignore_index)
        ce = keras.backend.sparse_categorical_crossentropy(
            labels, tf.cast(y_pred, tf.float32), from_logits=self.from_logits
        )
        return ce * tf.cast(mask, ce.dtype)

    def get_config(self):
        return {"ignore_index": self.ignore_index, "from_logits": self.from_logits, "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("reduction", None)
        return cls(**config)


@keras.saving.register_keras_serializable(package="kerasllm")
class MaskedAccuracy(keras.metrics.Metric):
    """Fraction of kept tokens (label ``!= ignore_index``) whose arg-max prediction is right.

    Counts are accumulated over batches (and summed over replicas), so the
    epoch value is the accuracy over all kept tokens, not a mean of batch
    means.

    Example:

    >>> import numpy as np
    >>> m = MaskedAccuracy()
    >>> logits = np.eye(3, dtype="float32")[None]  # predicts 0, 1, 2
    >>> _ = m.update_state(np.array([[0, -100, 1]]), logits)
    >>> float(m.result())
    0.5
    """

    def __init__(self, ignore_index=-100, name="masked_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.ignore_index = int(ignore_index)
        self.correct = self.add_weight("correct", initializer="zeros")
        self.count = self.add_weight("count", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = _labels_like_logits(tf.convert_to_tensor(y_true), y_pred)
        labels, mask = _kept(y_true, self.ignore_index)
        predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        kept = _token_weights(mask, sample_weight, self.dtype)
        hits = tf.cast(tf.equal(predicted, labels), self.dtype) * kept
        return tf.group(self.correct.assign_add(tf.reduce_sum(hits)), self.count.assign_add(tf.reduce_sum(kept)))

    def result(self):
        return tf.math.divide_no_nan(self.correct, self.count)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        config = super().get_config()
        config["ignore_index"] = self.ignore_index
        return config


def masked_sparse_categorical_crossentropy(ignore_index=-100, from_logits=True):
    """A :class:`MaskedSparseCategoricalCrossentropy` loss for ``model.compile(loss=...)``."""
    return MaskedSparseCategoricalCrossentropy(ignore_index=ignore_index, from_logits=from_logits)


def masked_accuracy(ignore_index=-100, name="masked_accuracy"):
    """A :class:`MaskedAccuracy` metric for ``model.compile(metrics=[...])``."""
    return MaskedAccuracy(ignore_index=ignore_index, name=name)
