"""``predict_on_batch`` for kerasllm models without tf.data's autotuning stall.

tf_keras's ``Model.predict_on_batch`` wraps each batch in a fresh one-element
``tf.data`` iterator. With autotuning on (tf.data's default) the iterator starts a
background modelling thread, and deleting the iterator waits for it: on the 2-core
machine of ``bench/speed_notes.md`` that added 105-128 ms to about half the calls of
a 190 ms MiniLM forward pass (median 6,600 instead of 10,300 tokens/s over 20 calls).
:func:`install_predict_on_batch` gives a model a ``predict_on_batch`` that builds the
same iterator with autotuning off and otherwise does what tf_keras's does (the
model's ``predict_function``, its distribution strategy, NumPy outputs). The model
builders of :mod:`kerasllm.models` install it.
"""
import types

import tensorflow as tf


def _single_batch_iterator(strategy, x):
    options = tf.data.Options()
    options.autotune.enabled = False  # one element: nothing to tune, and no thread to wait for
    dataset = tf.data.Dataset.from_tensors((x,)).with_options(options)
    return iter(strategy.experimental_distribute_dataset(dataset))


def predict_on_batch(model, x):
    """``model.predict_on_batch(x)`` (tf_keras semantics) over an iterator without autotuning.

    Raises:
        RuntimeError: inside a ``tf.function`` (as tf_keras does).
    """
    if tf.inside_function():
        raise RuntimeError("`predict_on_batch` cannot be called inside a tf.function; call the model instead")
    with model.distribute_strategy.scope():
        iterator = _single_batch_iterator(model.distribute_strategy, x)
        model.predict_function = model.make_predict_function()
        outputs = model.predict_function(iterator)
    return tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, outputs)


def install_predict_on_batch(model):
    """Give ``model`` (a tf_keras model) the :func:`predict_on_batch` above; returns ``model``.

    Example:

    >>> import numpy as np
    >>> from kerasllm.models import get_preset, token_classifier
    >>> model = token_classifier(get_preset("bert-tiny", vocab_size=50), num_labels=3)  # installs it
    >>> ids = np.ones((2, 5), "int32")
    >>> model.predict_on_batch({"input_ids": ids, "attention_mask": ids, "token_type_ids": 0 * ids}).shape
    (2, 5, 3)
    """
    model.predict_on_batch = types.MethodType(predict_on_batch, model)
    return model
