"""Rebuild and load compressed kerasllm models.

Pruned, distilled and QAT-trained models have the architecture their config
describes and load with :func:`kerasllm.models.load_pretrained`. A low-rank model
has smaller feed-forward layers; its folder's ``kerasllm.json`` lists them under
``"lowrank"`` and :func:`load_model` rebuilds that structure before loading the
weights. :func:`load_model` reads every kerasllm folder, so compression commands
use it for their ``--model``.
"""
import json
import os

from kerasllm.compression._layers import copy_model_attributes


def rebuild(model):
    """An untrained model with ``model``'s architecture, from its ``kerasllm_config``/``kerasllm_task``."""
    from kerasllm.compression.lowrank import apply_lowrank_structure
    from kerasllm.models import build_model

    config = getattr(model, "kerasllm_config", None)
    info = dict(getattr(model, "kerasllm_task", None) or {})
    if config is None or "task" not in info:
        raise ValueError(f"model {model.name!r} was not built by kerasllm.models (no kerasllm_config/kerasllm_task)")
    ranks = info.pop("lowrank", None)
    task = info.pop("task")
    fresh = build_model(config, task, **info)
    if ranks:
        apply_lowrank_structure(fresh, ranks)
    return copy_model_attributes(model, fresh)


def copy_model(model):
    """An independent copy of ``model`` (same architecture and weights, new variables)."""
    import tf_keras as keras

    if getattr(model, "kerasllm_config", None) is not None and "task" in (getattr(model, "kerasllm_task", None) or {}):
        copy = rebuild(model)
    else:
        copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy_model_attributes(model, copy)


def load_model(directory):
    """Load any kerasllm model folder, low-rank ones included; ``kerasllm_task`` holds ``kerasllm.json``."""
    from kerasllm.models import load_pretrained
    from kerasllm.models.config import TransformerConfig
    from kerasllm.models.saving import CONFIG_NAME, TASK_NAME, WEIGHTS_NAME

    directory = os.fspath(directory)
    task_path = os.path.join(directory, TASK_NAME)
    info = {}
    if os.path.isfile(task_path):
        with open(task_path, encoding="utf-8") as f:
            info = json.load(f)
    if not info.get("lowrank"):
        return load_pretrained(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not os.path.isfile(os.path.join(directory, name)):
            raise FileNotFoundError(f"{directory} is not a kerasllm model folder: {name} is missing")

    class _Template:
        name = os.path.basename(directory)
        kerasllm_config = TransformerConfig.load(os.path.join(directory, CONFIG_NAME))
        kerasllm_task = info

    model = rebuild(_Template())
    model.load_weights(os.path.join(directory, WEIGHTS_NAME))
    model.kerasllm_task = info
    return model
