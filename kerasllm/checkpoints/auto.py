"""``from_pretrained``: one entry point for kerasllm, Hugging Face and Google BERT folders."""
import os

from kerasllm.checkpoints._common import build_loaded, fit_classifier, model_weights
from kerasllm.checkpoints.google import is_google_folder, load_google
from kerasllm.checkpoints.hf import WEIGHT_FILES, load_hf
from kerasllm.models.saving import TASK_NAME, load_pretrained


def detect_format(path):
    """``"kerasllm"``, ``"hf"`` or ``"google"`` for a model folder (raises if it is none of them)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model folder: {path}")
    if not os.path.isdir(path):
        raise ValueError(f"{path} is a file; pass the folder that holds the checkpoint")
    if os.path.isfile(os.path.join(path, TASK_NAME)):
        return "kerasllm"
    if is_google_folder(path):
        return "google"
    if os.path.isfile(os.path.join(path, "config.json")):
        return "hf"
    raise FileNotFoundError(
        f"{path} is not a model folder: looked for {TASK_NAME} (kerasllm), config.json + one of "
        f"{', '.join(WEIGHT_FILES)} (Hugging Face), bert_config.json + bert_model.ckpt.index (Google BERT)"
    )


def _retask(model, path, task, num_labels):
    """Copy a loaded kerasllm model's weights into a model for another task."""
    info = dict(model.kerasllm_task)
    if task == "masked_lm":
        task, extra = "pretraining", {"next_sentence": False}
    elif task in ("token_classification", "sequence_classification"):
        extra = {"num_labels": num_labels or info.get("num_labels") or 2}
    else:
        extra = {}
    values = {name: w.numpy() for name, w in model_weights(model).items()}
    values = fit_classifier(values, path, (info["task"], info.get("num_labels")), (task, extra.get("num_labels")))
    target = build_loaded(model.kerasllm_config, task, values, path, **extra)
    target.kerasllm_task = {"task": task, **extra}
    return target


def from_pretrained(path, task=None, num_labels=None):
    """Load a model folder into the matching kerasllm model; nothing is downloaded.

    Args:
        path: a kerasllm folder (:func:`kerasllm.models.save_pretrained`), a Hugging
            Face BERT/GPT-2 folder (``config.json`` + ``model.safetensors`` or
            ``tf_model.h5``) or a Google BERT folder (``bert_config.json`` +
            ``bert_model.ckpt.*``).
        task: ``encoder``, ``pretraining``, ``masked_lm``, ``token_classification``,
            ``sequence_classification`` or ``causal_lm``; by default the task the
            checkpoint was saved for. A head the checkpoint lacks is initialised
            fresh, and a warning on the ``kerasllm.checkpoints`` logger says so.
        num_labels: classes of a classification head (default: the checkpoint's).

    Returns:
        The tf_keras model, with ``model.kerasllm_config`` and ``model.kerasllm_task``.

    Example:

    >>> model = from_pretrained("tests/fixtures/checkpoints/tiny_bert")  # doctest: +SKIP
    >>> model.kerasllm_task["task"]  # doctest: +SKIP
    'token_classification'
    """
    path = os.fspath(path)
    kind = detect_format(path)
    if kind == "hf":
        return load_hf(path, task=task, num_labels=num_labels)
    if kind == "google":
        return load_google(path, task=task, num_labels=num_labels)
    model = load_pretrained(path)
    same_labels = num_labels in (None, model.kerasllm_task.get("num_labels"))
    if task in (None, model.kerasllm_task.get("task")) and same_labels:
        return model
    return _retask(model, path, task or model.kerasllm_task["task"], num_labels)
