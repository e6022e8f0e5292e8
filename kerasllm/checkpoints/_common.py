"""Shared steps of every importer: table -> kerasllm arrays, checks, one all-or-nothing assign."""
import logging
import os

import numpy as np
import tf_keras as keras

from kerasllm.checkpoints.tables import HEAD_LAYERS, TRANSFORMS, expand

logger = logging.getLogger("kerasllm.checkpoints")


def weight_path(variable):
    """``encoder_layer_0/attention/qkv_kernel:0`` -> ``encoder_layer_0/attention/qkv_kernel``."""
    name = variable.name
    return name[:-2] if name.endswith(":0") else name


def model_weights(model):
    return {weight_path(w): w for w in model.weights}


def arrays_from_table(tensors, table, num_layers, source):
    """Apply ``table`` to checkpoint ``tensors`` (name -> array).

    Returns ``(values, used)``: kerasllm path -> array for every row whose tensors
    are all present, and the checkpoint names consumed. A row with only some of
    its fused tensors present is an error (a corrupt or foreign checkpoint).
    """
    values, used = {}, set()
    for row in expand(table, num_layers):
        present = [n in tensors for n in row.source]
        if not any(present):
            continue
        if not all(present):
            missing = [n for n, p in zip(row.source, present) if not p]
            raise ValueError(f"{source}: tensor(s) {missing} missing (needed with {row.source} for {row.target})")
        values[row.target] = TRANSFORMS[row.transform].forward([tensors[n] for n in row.source])
        used.update(row.source)
    return values, used


def arrays_to_table(model, table, num_layers):
    """Inverse of :func:`arrays_from_table`: checkpoint name -> array for every mapped weight of ``model``."""
    weights = model_weights(model)
    out = {}
    for row in expand(table, num_layers):
        if row.target not in weights:
            continue
        parts = TRANSFORMS[row.transform].backward(weights[row.target].numpy())
        out.update(zip(row.source, parts))
    return out


def is_head(path):
    return path.split("/", 1)[0] in HEAD_LAYERS


def assign(model, values, source):
    """Check every array against ``model`` first, then assign them all at once.

    Backbone weights absent from ``values`` are an error; head weights absent are
    left at their fresh initialisation and reported in one log line. Nothing is
    assigned unless every check passes, so a failed load never returns a half-loaded model.
    """
    weights = model_weights(model)
    pairs, fresh, missing = [], [], []
    for path, variable in weights.items():
        if path not in values:
            (fresh if is_head(path) else missing).append(path)
            continue
        value = np.asarray(values[path])
        expected = tuple(variable.shape)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"{source}: shape mismatch for {path}: checkpoint has {tuple(value.shape)}, "
                f"the model expects {expected} (does config.json match the weights?)"
            )
        pairs.append((variable, value.astype(variable.dtype.as_numpy_dtype, copy=False)))
    if missing:
        raise ValueError(
            f"{source}: the checkpoint has no tensor for {len(missing)} backbone weight(s): "
            f"{missing[:6]}{' ...' if len(missing) > 6 else ''}"
        )
    keras.backend.batch_set_value(pairs)
    if fresh:
        heads = sorted({p.split("/", 1)[0] for p in fresh})
        message = f"kerasllm: {', '.join(heads)} not in {source}: initialised fresh (train before use)"
        logger.warning(message)
    return fresh


def report_unused(names, source):
    if names:
        logger.info("kerasllm: %d tensor(s) of %s not used by this model: %s", len(names), source, sorted(names)[:8])


def check_vocab(directory, vocab_size, config_name):
    """A ``vocab.txt`` next to the weights must have ``vocab_size`` lines."""
    path = os.path.join(directory, "vocab.txt")
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = len(f.read().splitlines())
    if lines != vocab_size:
        raise ValueError(
            f"{path} has {lines} tokens but {config_name} says vocab_size={vocab_size}; "
            "the tokenizer and the embedding table must agree (wrong vocab.txt or config?)"
        )
