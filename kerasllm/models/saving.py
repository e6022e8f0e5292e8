"""Build models by task, and save/load them as a kerasllm folder.

A kerasllm folder holds ``config.json`` (the :class:`TransformerConfig`),
``kerasllm.json`` (task, number of labels, label names, ...) and
``model.weights.h5``. The config carries the PEFT settings (LoRA, adapters,
frozen layers), so a fine-tuned LoRA model reloads with the same weights
trainable (:mod:`kerasllm.models.peft`). Whole models also round-trip through tf_keras's own
formats (``.keras``, H5, SavedModel) because every layer is registered.
"""
import json
import os
import shutil
import tempfile

from kerasllm.models.bert import bert_encoder, bert_pretraining, sequence_classifier, token_classifier
from kerasllm._io import atomic_write_json
from kerasllm.models.config import TransformerConfig
from kerasllm.models.encoder_decoder import encoder_decoder
from kerasllm.models.gpt import gpt_decoder

TASKS = {
    "encoder": lambda config, info: bert_encoder(config),
    "pretraining": lambda config, info: bert_pretraining(config, next_sentence=info.get("next_sentence", True)),
    "token_classification": lambda config, info: token_classifier(config, info["num_labels"]),
    "sequence_classification": lambda config, info: sequence_classifier(config, info["num_labels"]),
    "causal_lm": lambda config, info: gpt_decoder(config),
    "seq2seq_lm": lambda config, info: encoder_decoder(config),
}
WEIGHTS_NAME = "model.weights.h5"
CONFIG_NAME = "config.json"
TASK_NAME = "kerasllm.json"


def build_model(config, task=None, **info):
    """Build the model for ``task`` (default: the backbone of ``config.model_type``)."""
    if task is None:
        task = {"bert": "encoder", "gpt": "causal_lm", "encoder_decoder": "seq2seq_lm"}[config.model_type]
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; allowed values: {sorted(TASKS)}")
    if task in ("token_classification", "sequence_classification") and "num_labels" not in info:
        raise ValueError(f"task {task!r} needs num_labels")
    return TASKS[task](config, info)


def save_pretrained(model, directory, **extra):
    """Write ``model`` to ``directory`` (config.json, kerasllm.json, model.weights.h5).

    The folder is written next to its final place and renamed into it, so an
    interrupted save never leaves a half-written model; an existing folder is
    replaced only once the new one is complete. ``extra`` (labels, tokenizer
    settings, ...) is stored in ``kerasllm.json``.
    """
    config = getattr(model, "kerasllm_config", None)
    task = getattr(model, "kerasllm_task", None)
    if config is None or task is None:
        raise ValueError("save_pretrained needs a model built by kerasllm.models (it has no kerasllm_config)")
    directory = os.path.abspath(directory)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(directory)}.tmp-")
    try:
        config.save(os.path.join(staging, CONFIG_NAME))
        atomic_write_json(os.path.join(staging, TASK_NAME), {**task, **extra})
        model.save_weights(os.path.join(staging, WEIGHTS_NAME))
        if os.path.isdir(directory):
            # Keep files other tools wrote (tokenizer, metrics, logs): move them over.
            for name in os.listdir(directory):
                if not os.path.exists(os.path.join(staging, name)):
                    os.replace(os.path.join(directory, name), os.path.join(staging, name))
            old = directory + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(staging, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def load_pretrained(directory):
    """Rebuild a model saved by :func:`save_pretrained` and load its weights.

    Returns the model; its ``kerasllm_task`` holds what ``kerasllm.json`` stored.
    """
    config_path = os.path.join(directory, CONFIG_NAME)
    task_path = os.path.join(directory, TASK_NAME)
    weights_path = os.path.join(directory, WEIGHTS_NAME)
    for path in (config_path, task_path, weights_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{directory} is not a kerasllm model folder: {os.path.basename(path)} is missing")
    config = TransformerConfig.load(config_path)
    with open(task_path, encoding="utf-8") as f:
        info = json.load(f)
    task = info.get("task")
    model = build_model(config, task, **{k: v for k, v in info.items() if k != "task"})
    model.load_weights(weights_path)
    model.kerasllm_task = info
    return model
