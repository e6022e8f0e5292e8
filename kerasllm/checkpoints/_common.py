"""Shared steps of every importer: table -> kerasllm arrays, checks, one all-or-nothing assign."""
import json
import logging
import os

import numpy as np
import tf_keras as keras

from kerasllm.checkpoints.tables import HEAD_LAYERS, TRANSFORMS, expand
from kerasllm.layers._utils import deferred_initialization
from kerasllm.models.saving import build_model

logger = logging.getLogger("kerasllm.checkpoints")


def weight_path(variable):
    """``encoder_layer_0/attention/qkv_kernel:0`` -> ``encoder_layer_0/attention/qkv_kernel``."""
    name = variable.name
    return name[:-2] if name.endswith(":0") else name


def model_weights(model):
    return {weight_path(w): w for w in model.weights}


def arrays_from_table(tensors, table, num_layers, source):
    """Apply ``table`` to checkpoint ``tensors`` (name -> array).

    Returns ``(values, origin)``: kerasllm path -> array for every row whose tensors
    are all present, and kerasllm path -> the checkpoint names it came from. A row
    with only some of its fused tensors present is an error (a corrupt or foreign
    checkpoint).
    """
    values, origin = {}, {}
    for row in expand(table, num_layers):
        present = [n in tensors for n in row.source]
        if not any(present):
            continue
        if not all(present):
            missing = [n for n, p in zip(row.source, present) if not p]
            raise ValueError(f"{source}: tensor(s) {missing} missing (needed with {row.source} for {row.target})")
        values[row.target] = TRANSFORMS[row.transform].forward([tensors[n] for n in row.source])
        origin[row.target] = row.source
    return values, origin


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


def fit_classifier(values, source, own, wanted):
    """``values`` without the checkpoint's ``classifier`` unless it was trained for ``wanted``.

    ``own`` and ``wanted`` are ``(task, num_labels)``: a classifier trained for
    another task or another number of labels is no use to the new head, which is
    then initialised fresh (and a warning says why).
    """
    has_classifier = any(k.startswith("classifier/") for k in values)
    if own == wanted or not has_classifier or wanted[0] not in ("token_classification", "sequence_classification"):
        return values
    logger.warning(
        "kerasllm: %s has a classifier for %s with %s labels; %s with %s labels gets a new one",
        source, own[0], own[1], wanted[0], wanted[1],
    )
    return {k: v for k, v in values.items() if not k.startswith("classifier/")}


def build_loaded(config, task, values, source, origin=None, **info):
    """Build the kerasllm model for ``task`` and fill it from ``values`` (see :func:`assign`).

    The model is built with its initializers deferred: weights the checkpoint
    provides are never drawn at random (for BERT-base that draw costs more than
    the whole load), head weights it lacks are initialised as usual.
    """
    with deferred_initialization() as deferred:
        model = build_model(config, task, **info)
    assign(model, values, source, deferred, origin)
    return model


def assign(model, values, source, deferred=None, origin=None):
    """Check every array against ``model`` first, then assign them all at once.

    Backbone weights absent from ``values`` are an error; head weights absent are
    left at their fresh initialisation and reported in one log line. Nothing is
    assigned unless every check passes, so a failed load never returns a half-loaded model.
    ``deferred`` (a :class:`~kerasllm.layers._utils.DeferredInitializers`) runs the
    initializers of the weights that were not assigned; ``origin`` (from
    :func:`arrays_from_table`) lets errors name the checkpoint tensor too.
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
            names = f" (from {', '.join(origin[path])})" if origin and path in origin else ""
            raise ValueError(
                f"{source}: shape mismatch for {path}{names}: the checkpoint gives {tuple(value.shape)}, "
                f"the model expects {expected} (does config.json match the weights?)"
            )
        pairs.append((variable, value.astype(variable.dtype.as_numpy_dtype, copy=False)))
    if missing:
        raise ValueError(
            f"{source}: the checkpoint has no tensor for {len(missing)} backbone weight(s): "
            f"{missing[:6]}{' ...' if len(missing) > 6 else ''}"
        )
    keras.backend.batch_set_value(pairs)
    if deferred is not None:
        deferred.finish([variable for variable, _ in pairs])
    if fresh:
        heads = sorted({p.split("/", 1)[0] for p in fresh})
        message = f"kerasllm: {', '.join(heads)} not in {source}: initialised fresh (train before use)"
        logger.warning(message)
    return fresh


def report_unused(tensors, origin, source, ignored=()):
    """Log the checkpoint tensors no table row consumed (other than the ``ignored`` suffixes)."""
    used = {name for names in origin.values() for name in names}
    names = [n for n in tensors if n not in used and not n.endswith(tuple(ignored))]
    if names:
        logger.info("kerasllm: %d tensor(s) of %s not used by this model: %s", len(names), source, sorted(names)[:8])


def check_vocab(directory, vocab_size, config_name):
    """The vocabulary next to the weights must fit the embedding table.

    A ``vocab.txt`` (WordPiece) must have exactly ``vocab_size`` lines; a
    ``vocab.json`` (GPT-2 BPE) must have no id at or above ``vocab_size`` (GPT-2
    checkpoints may pad their table past the vocabulary, never the other way).
    """
    text_path, json_path = os.path.join(directory, "vocab.txt"), os.path.join(directory, "vocab.json")
    if os.path.isfile(text_path):
        with open(text_path, encoding="utf-8") as f:
            lines = len(f.read().splitlines())
        if lines != vocab_size:
            raise ValueError(
                f"{text_path} has {lines} tokens but {config_name} says vocab_size={vocab_size}; "
                "the tokenizer and the embedding table must agree (wrong vocab.txt or config?)"
            )
    elif os.path.isfile(json_path):
        try:
            with open(json_path, encoding="utf-8") as f:
                ids = json.load(f).values()
            top = int(max(ids, default=-1))
        except (ValueError, AttributeError, TypeError) as err:
            raise ValueError(f"{json_path}: not a JSON object of token -> id ({err})") from None
        if top >= vocab_size:
            raise ValueError(
                f"{json_path} has {len(ids)} tokens (ids up to {top}) but {config_name} says "
                f"vocab_size={vocab_size}; the tokenizer and the embedding table must agree "
                "(wrong vocab.json or config?)"
            )
