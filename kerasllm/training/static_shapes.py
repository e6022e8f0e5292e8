"""Batches of one fixed shape, for TPUs and XLA (``--static-shapes``).

kerasllm's input pipelines bucket examples by length and pad each batch only
to its own longest example, and the last batch of an epoch is usually smaller:
good for a CPU or GPU, but XLA compiles one program per input shape, and a TPU
needs every dimension known in advance. :func:`static_batches` pads every
batch to ``[batch_size, length]``, so the dataset's element spec is fully
static and one compiled step serves the whole run.

The last, partial batch is *padded with rows that do not count* rather than
dropped (``drop_remainder``), so every example is still trained on, every
epoch. Padding rows have ``attention_mask`` 0 everywhere, and:

- token labels (``[batch, seq]``, e.g. NER or masked LM) are padded with the
  ignore index (-100): kerasllm's masked losses and metrics skip those
  positions and divide by the number of kept tokens, so the loss and the
  gradient are exactly those of the unpadded batch;
- one label per example (``[batch]``, e.g. classification) is padded with 0
  and a third element, per-row sample weights, is added: ``batch_size / n``
  on the ``n`` real rows and 0 on the padding rows. A Keras mean loss divides
  the weighted sum by the number of rows (``batch_size``), so the loss equals
  the mean over the real rows. Train metrics must then be compiled as
  ``weighted_metrics`` to skip the padding rows (the fine-tuning pipeline does).

What changes: the epoch's reported ``loss`` weights the partial batch like a
full one (each step's loss is unchanged), and each step computes
``batch_size x length`` positions whatever the real lengths.

Example:

>>> import numpy as np, tensorflow as tf
>>> ids = np.ones((3, 5), np.int32)
>>> ds = tf.data.Dataset.from_tensors(({"input_ids": ids, "attention_mask": ids}, ids))
>>> fixed = static_batches(ds, batch_size=4, length=8)
>>> fixed.element_spec[1]
TensorSpec(shape=(4, 8), dtype=tf.int32, name=None)
>>> x, y = next(iter(fixed))
>>> int(x["attention_mask"].numpy().sum()), int((y.numpy() == -100).sum())
(15, 17)
"""
import tensorflow as tf

IGNORE_INDEX = -100


def _rank(spec):
    return spec.shape.rank


def _pad_to(tensor, batch_size, length, value, name):
    """``tensor`` ``[n, t]`` or ``[n]`` padded with ``value`` to ``[batch_size, length]`` or ``[batch_size]``.

    ``length`` may be a scalar tensor (then the sequence dimension stays unknown).
    """
    rows = tf.shape(tensor)[0]
    checks = [
        tf.debugging.assert_less_equal(
            rows, batch_size, message=f"static_batches: a batch of {name} has more rows than batch_size={batch_size}"
        )
    ]
    with tf.control_dependencies(checks):
        missing = tf.maximum(batch_size - rows, 0)
        if tensor.shape.rank == 1:
            padded = tf.pad(tensor, [[0, missing]], constant_values=value)
            return tf.ensure_shape(padded, [batch_size])
        extra = tf.maximum(length - tf.shape(tensor)[1], 0)
        padded = tf.pad(tensor, [[0, missing], [0, extra]], constant_values=value)
        static_length = length if isinstance(length, int) else None
        return tf.ensure_shape(padded[:, :length], [batch_size, static_length])


def _check_cut(inputs, labels, length, label_pad):
    """Positions beyond ``length`` may be cut only when they are padding."""
    checks = []
    if isinstance(inputs, dict) and "attention_mask" in inputs:
        checks.append(
            tf.debugging.assert_equal(
                tf.reduce_sum(tf.cast(inputs["attention_mask"][:, length:], tf.int32)),
                0,
                message=f"static_batches: an example is longer than length={length}",
            )
        )
    for leaf in tf.nest.flatten(labels):
        if leaf.shape.rank == 2:
            checks.append(
                tf.debugging.assert_equal(
                    tf.reduce_all(tf.equal(leaf[:, length:], tf.cast(label_pad, leaf.dtype))),
                    True,
                    message=f"static_batches: a label beyond length={length} is not ignored",
                )
            )
    return checks


def xla_length_multiple(max_length, shapes=8, minimum=16):
    """The length quantum that gives XLA at most about ``shapes`` programs up to ``max_length``.

    Example:

    >>> xla_length_multiple(64), xla_length_multiple(128), xla_length_multiple(512)
    (16, 16, 64)
    """
    return max(minimum, -(-max_length // shapes))


def static_batches(dataset, batch_size, length, label_pad=IGNORE_INDEX, input_pad=0, length_multiple=None):
    """Pad every ``(inputs, labels)`` batch of ``dataset`` to ``[batch_size, length]``.

    With ``length_multiple`` a batch is padded only to the next multiple of it
    (at most ``length``): a few shapes instead of one (``--xla`` without
    ``--static-shapes``). XLA compiles one program per shape, so
    ``length_multiple=16`` and ``length=64`` give at most 4 programs, against
    one per distinct batch length (and per partial batch) with plain
    bucketing, while padding far less than ``length`` everywhere.

    Args:
        dataset: a batched ``tf.data.Dataset`` of ``(inputs, labels)``;
            ``inputs`` is a tensor or a dict of ``[batch, seq]`` tensors, and
            ``labels`` a tensor or dict of tensors, all ``[batch, seq]`` (token
            labels) or all ``[batch]`` (one label per example).
        batch_size: the global batch size; no batch may be larger.
        length: the fixed sequence length; positions beyond it must be padding.
        label_pad: the ignored label token labels are padded with.
        input_pad: the value inputs are padded with (the ``[PAD]`` id, mask 0).
        length_multiple: pad the sequence only to a multiple of this (see above);
            the sequence dimension of the element spec is then unknown.

    Returns:
        A dataset of ``(inputs, labels)`` (token labels) or ``(inputs, labels,
        sample_weight)`` (one label per example) whose element spec is fully
        static. See the module docstring for why the padding changes nothing.
    """
    if batch_size < 1 or length < 1:
        raise ValueError(f"static_batches needs batch_size >= 1 and length >= 1, got {batch_size} and {length}")
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(f"static_batches expects (inputs, labels) batches, got element spec {spec}")
    for leaf in tf.nest.flatten(spec[0]):
        if _rank(leaf) != 2:
            raise ValueError(f"static_batches: inputs must be [batch, seq] tensors, got {leaf}")
    label_ranks = {_rank(leaf) for leaf in tf.nest.flatten(spec[1])}
    if label_ranks not in ({1}, {2}):
        raise ValueError(
            f"static_batches: labels must all be [batch, seq] (token labels) or all [batch], got {spec[1]}"
        )
    per_example = label_ranks == {1}
    if length_multiple is not None and (not isinstance(length_multiple, int) or length_multiple < 1):
        raise ValueError(f"static_batches: length_multiple must be a positive integer, got {length_multiple!r}")
    for leaf in tf.nest.flatten(spec):
        if leaf.shape[0] is not None and leaf.shape[0] > batch_size:
            raise ValueError(f"static_batches: batches of {leaf.shape[0]} rows exceed batch_size={batch_size}")

    def pad(inputs, labels):
        target = length
        if length_multiple is not None:
            longest = tf.shape(tf.nest.flatten(inputs)[0])[1]
            target = tf.minimum(length, -(-longest // length_multiple) * length_multiple)
        with tf.control_dependencies(_check_cut(inputs, labels, length, label_pad)):
            rows = tf.shape(tf.nest.flatten(labels)[0])[0]
            fixed_inputs = tf.nest.map_structure(lambda t: _pad_to(t, batch_size, target, input_pad, "inputs"), inputs)
        if not per_example:
            fixed_labels = tf.nest.map_structure(lambda t: _pad_to(t, batch_size, target, label_pad, "labels"), labels)
            return fixed_inputs, fixed_labels
        fixed_labels = tf.nest.map_structure(lambda t: _pad_to(t, batch_size, target, 0, "labels"), labels)
        real = tf.range(batch_size) < rows
        scale = tf.cast(batch_size, tf.float32) / tf.cast(tf.maximum(rows, 1), tf.float32)
        weights = tf.where(real, scale, 0.0)
        return fixed_inputs, fixed_labels, weights

    return dataset.map(pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def is_static(dataset):
    """True when every dimension of every element of ``dataset`` is known.

    Example:

    >>> import tensorflow as tf
    >>> is_static(tf.data.Dataset.range(10).batch(4)), is_static(tf.data.Dataset.range(8).batch(4, drop_remainder=True))
    (False, True)
    """
    return all(leaf.shape.is_fully_defined() for leaf in tf.nest.flatten(dataset.element_spec))
