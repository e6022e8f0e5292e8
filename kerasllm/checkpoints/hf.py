"""Hugging Face BERT and GPT-2 folders: ``config.json`` + safetensors (or ``tf_model.h5``), both ways."""
import json
import os

import numpy as np

from kerasllm._io import atomic_replace_dir, atomic_write_json
from kerasllm.checkpoints._common import (
    arrays_from_table,
    arrays_to_table,
    build_loaded,
    check_vocab,
    fit_classifier,
    report_unused,
)
from kerasllm.checkpoints.tables import (
    BERT_HF_BACKBONE,
    BERT_HF_IGNORED,
    BERT_HF_TABLE,
    GPT2_HF_IGNORED,
    GPT2_HF_TABLE,
)
from kerasllm.layers.activations import ACTIVATION_ALIASES, ACTIVATIONS
from kerasllm.models.config import TransformerConfig

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TF_H5 = "tf_model.h5"
PYTORCH_BIN = "pytorch_model.bin"
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, TF_H5)

BERT_ARCHITECTURES = {
    "BertModel": "encoder",
    "BertForMaskedLM": "masked_lm",
    "BertForPreTraining": "pretraining",
    "BertForTokenClassification": "token_classification",
    "BertForSequenceClassification": "sequence_classification",
}
GPT2_ARCHITECTURES = {"GPT2Model": "causal_lm", "GPT2LMHeadModel": "causal_lm"}
_PREFIX = {"bert": "bert.", "gpt2": "transformer."}


def read_config(directory):
    path = os.path.join(directory, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def _activation(name, path):
    key = ACTIVATION_ALIASES.get(name, name)
    if key not in ACTIVATIONS:
        raise ValueError(f"{path}: activation {name!r} is not supported; kerasllm has {sorted(ACTIVATIONS)}")
    return key


def config_from_hf(hf, path):
    """A :class:`TransformerConfig` from a Hugging Face BERT or GPT-2 ``config.json`` dict.

    Google's ``bert_config.json`` uses the same field names as Hugging Face BERT.
    """
    try:
        return _config_from_hf(hf, path)
    except KeyError as err:
        raise ValueError(f"{path}: missing field {err.args[0]!r}") from None


def _config_from_hf(hf, path):
    model_type = hf.get("model_type")
    if model_type == "bert":
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: position_embedding_type={hf['position_embedding_type']!r}; only 'absolute' is supported")
        return TransformerConfig(
            model_type="bert",
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            max_position=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2),
            activation=_activation(hf.get("hidden_act", "gelu"), path),
            dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            layer_norm_epsilon=hf.get("layer_norm_eps", 1e-12),
            initializer_range=hf.get("initializer_range", 0.02),
            pad_token_id=hf.get("pad_token_id") or 0,
        )
    if model_type == "gpt2":
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if hf.get(flag):
                raise ValueError(f"{path}: {flag}=true is not supported by kerasllm's GPT decoder")
        if hf.get("scale_attn_weights") is False:
            raise ValueError(f"{path}: scale_attn_weights=false is not supported by kerasllm's GPT decoder")
        d = hf["n_embd"]
        return TransformerConfig(
            model_type="gpt",
            vocab_size=hf["vocab_size"],
            hidden_size=d,
            num_layers=hf["n_layer"],
            num_heads=hf["n_head"],
            intermediate_size=hf.get("n_inner") or 4 * d,
            max_position=hf["n_positions"],
            type_vocab_size=0,
            activation=_activation(hf.get("activation_function", "gelu_new"), path),
            dropout=hf.get("resid_pdrop", 0.1),
            attention_dropout=hf.get("attn_pdrop", 0.1),
            layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
            normalize_first=True,
            initializer_range=hf.get("initializer_range", 0.02),
            use_pooler=False,
        )
    raise ValueError(
        f"{path}: unknown model_type {model_type!r}; kerasllm imports 'bert' and 'gpt2' checkpoints"
    )


def find_weights(directory):
    """The weights file of a Hugging Face folder, or a clear error naming what was looked for."""
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    if os.path.isfile(os.path.join(directory, PYTORCH_BIN)) or os.path.isfile(
        os.path.join(directory, PYTORCH_BIN + ".index.json")
    ):
        raise ValueError(
            f"{directory} holds only {PYTORCH_BIN} (a pickled PyTorch file). kerasllm does not unpickle "
            "files and does not depend on torch: convert it once to safetensors, e.g. with transformers "
            "installed: AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)"
        )
    raise FileNotFoundError(
        f"no weights file in {directory}: looked for {', '.join(WEIGHT_FILES)} "
        "(Hugging Face), bert_model.ckpt.index (Google BERT) and kerasllm.json + model.weights.h5 (kerasllm)"
    )


def _read_safetensors(path):
    from safetensors.numpy import load_file

    if path.endswith(".json"):  # sharded: index.json maps tensor -> shard file
        with open(path, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors = {}
        for shard in shards:
            tensors.update(load_file(os.path.join(os.path.dirname(path), shard)))
        return tensors
    return load_file(path)


_H5_ANCHORS = {"bert": "bert", "transformer": "transformer", "classifier": "classifier",
               "mlm___cls": "cls", "nsp___cls": "cls", "cls": "cls"}


def _read_tf_h5(path):
    """Weights of a Transformers TF (``TFBert*``/``TFGPT2*``) ``tf_model.h5``, renamed to PyTorch names.

    Keras H5 weights sit at ``<layer>/<model scope>/bert/encoder/layer_._0/.../kernel:0``;
    the name from the last anchor component on is turned into the PyTorch name
    (``layer_._0`` -> ``layer.0``, ``kernel``/``gamma``/``embeddings`` -> ``weight``,
    ``beta`` -> ``bias``) and Dense kernels are transposed to PyTorch's [out, in].
    GPT-2's TF Conv1D kernels (``.../weight``) already have PyTorch Conv1D's layout;
    their ``[1, out]`` biases become 1-D.
    """
    import h5py

    tensors = {}

    def visit(name, item):
        if not isinstance(item, h5py.Dataset):
            return
        parts = name.replace(":0", "").split("/")
        anchors = [i for i, p in enumerate(parts) if p in _H5_ANCHORS]
        if not anchors:
            return
        parts = parts[anchors[-1]:]
        parts[0] = _H5_ANCHORS[parts[0]]
        leaf = parts[-1]
        array = np.asarray(item)
        if leaf == "kernel":
            parts[-1], array = "weight", array.T
        elif leaf in ("gamma", "embeddings"):
            parts[-1] = "weight"
        elif leaf == "beta":
            parts[-1] = "bias"
        elif leaf == "bias" and array.ndim == 2 and array.shape[0] == 1:
            array = array.reshape(-1)  # TF GPT-2's Conv1D keeps its bias as [1, out]
        tensors[".".join(parts).replace("_._", ".")] = np.ascontiguousarray(array)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    # TF BERT keeps the embedding tables one level down: bert.embeddings.word_embeddings.weight
    # already matches; the MLM bias sits at cls.predictions.bias as in PyTorch.
    return tensors


def read_tensors(path):
    if path.endswith(".h5"):
        return _read_tf_h5(path)
    return _read_safetensors(path)


def _strip_prefix(tensors, prefix):
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in tensors.items()}


def _task_from_architectures(hf, model_type):
    table = BERT_ARCHITECTURES if model_type == "bert" else GPT2_ARCHITECTURES
    for arch in hf.get("architectures") or []:
        if arch in table:
            return table[arch]
    return "encoder" if model_type == "bert" else "causal_lm"


def _num_labels(hf):
    if hf.get("id2label"):
        return len(hf["id2label"])
    return hf.get("num_labels", 2)


def load_hf(directory, task=None, num_labels=None):
    """Build the kerasllm model for a Hugging Face BERT/GPT-2 folder and load its weights.

    ``task`` is a kerasllm task (``encoder``, ``pretraining``, ``masked_lm``,
    ``token_classification``, ``sequence_classification``, ``causal_lm``); by
    default it follows ``architectures`` in ``config.json``.
    """
    config_path = os.path.join(directory, "config.json")
    hf = read_config(directory)
    config = config_from_hf(hf, config_path)
    weights_path = find_weights(directory)
    check_vocab(directory, config.vocab_size, config_path)
    model_type = hf["model_type"]
    own_task = _task_from_architectures(hf, model_type)
    task = task or own_task
    info = {}
    if task == "masked_lm":
        task, info = "pretraining", {"next_sentence": False}
    elif task == "pretraining":
        info = {"next_sentence": True}
    elif task in ("token_classification", "sequence_classification"):
        info = {"num_labels": num_labels or _num_labels(hf)}
        if task == own_task and hf.get("id2label") and len(hf["id2label"]) == info["num_labels"]:
            info["labels"] = [hf["id2label"][str(i)] for i in range(info["num_labels"])]
    if (model_type == "gpt2") != (task == "causal_lm"):
        raise ValueError(f"task {task!r} does not fit a {model_type!r} checkpoint ({config_path})")

    tensors = _strip_prefix(read_tensors(weights_path), _PREFIX[model_type])
    table, ignored = (BERT_HF_TABLE, BERT_HF_IGNORED) if model_type == "bert" else (GPT2_HF_TABLE, GPT2_HF_IGNORED)
    values, origin = arrays_from_table(tensors, table, config.num_layers, weights_path)
    values = fit_classifier(values, weights_path, (own_task, _num_labels(hf)), (task, info.get("num_labels")))
    model = build_loaded(config, task, values, weights_path, origin, **info)
    report_unused(tensors, origin, weights_path, ignored)
    model.kerasllm_task = {"task": task, **info}
    model.kerasllm_source_config = hf
    return model


_ARCHITECTURE_OF_TASK = {
    "encoder": "BertModel",
    "token_classification": "BertForTokenClassification",
    "sequence_classification": "BertForSequenceClassification",
    "causal_lm": "GPT2LMHeadModel",
}
_HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
# Keys of the source config.json carried over on export (labels, special ids).
_KEPT_KEYS = ("bos_token_id", "eos_token_id", "id2label", "label2id", "tokenizer_class")


def config_to_hf(model):
    """The Hugging Face ``config.json`` dict of a kerasllm BERT or GPT model."""
    config = model.kerasllm_config
    task = dict(getattr(model, "kerasllm_task", {}) or {})
    name = task.get("task", "encoder")
    if name == "pretraining":
        arch = "BertForPreTraining" if task.get("next_sentence", True) else "BertForMaskedLM"
    elif name in _ARCHITECTURE_OF_TASK:
        arch = _ARCHITECTURE_OF_TASK[name]
    else:
        raise ValueError(f"save_hf supports BERT and GPT models; this model's task is {name!r}")
    if config.position_embedding != "learned":
        raise ValueError("save_hf needs position_embedding='learned' (Hugging Face BERT/GPT-2 learn positions)")
    activation = _HF_ACTIVATION[ACTIVATION_ALIASES.get(config.activation, config.activation)]
    if config.model_type == "bert":
        if config.normalize_first:
            raise ValueError("save_hf: Hugging Face BERT is post-LN; this config has normalize_first=True")
        out = {
            "architectures": [arch],
            "model_type": "bert",
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_layers,
            "num_attention_heads": config.num_heads,
            "intermediate_size": config.intermediate_size,
            "hidden_act": activation,
            "hidden_dropout_prob": config.dropout,
            "attention_probs_dropout_prob": config.attention_dropout,
            "max_position_embeddings": config.max_position,
            "type_vocab_size": config.type_vocab_size,
            "initializer_range": config.initializer_range,
            "layer_norm_eps": config.layer_norm_epsilon,
            "pad_token_id": config.pad_token_id,
            "position_embedding_type": "absolute",
        }
    elif config.model_type == "gpt":
        if not config.normalize_first or config.type_vocab_size:
            raise ValueError("save_hf: GPT-2 needs normalize_first=True and type_vocab_size=0")
        out = {
            "architectures": [arch],
            "model_type": "gpt2",
            "vocab_size": config.vocab_size,
            "n_positions": config.max_position,
            "n_embd": config.hidden_size,
            "n_layer": config.num_layers,
            "n_head": config.num_heads,
            "n_inner": config.intermediate_size,
            "activation_function": activation,
            "resid_pdrop": config.dropout,
            "embd_pdrop": config.dropout,
            "attn_pdrop": config.attention_dropout,
            "layer_norm_epsilon": config.layer_norm_epsilon,
            "initializer_range": config.initializer_range,
        }
    else:
        raise ValueError(f"save_hf supports model_type 'bert' and 'gpt', got {config.model_type!r}")
    source = getattr(model, "kerasllm_source_config", None) or {}
    out.update({k: source[k] for k in _KEPT_KEYS if k in source})
    if "num_labels" in task:
        labels = task.get("labels") or [f"LABEL_{i}" for i in range(task["num_labels"])]
        out["id2label"] = {str(i): str(label) for i, label in enumerate(labels)}
        out["label2id"] = {str(label): i for i, label in enumerate(labels)}
    return out


def _without_peft(model):
    """``model`` with LoRA folded into its kernels; a clear error for adapters, which cannot be."""
    config = model.kerasllm_config
    if getattr(config, "adapter_size", 0):
        raise ValueError(
            f"a Hugging Face folder cannot hold bottleneck adapters (adapter_size={config.adapter_size}): "
            "Transformers' BertModel has no such weights. Save the model in kerasllm's format "
            "(kerasllm.models.save_pretrained) instead"
        )
    if getattr(config, "lora_rank", 0):
        from kerasllm.models.peft import merge_peft

        return merge_peft(model)
    return model


def hf_tensors(model):
    """Hugging Face tensor name -> array for every weight of ``model`` (inverse of :func:`load_hf`).

    LoRA updates are merged into their kernels first (the folder holds the merged model);
    a model with adapters raises ``ValueError``.
    """
    model = _without_peft(model)
    config = model.kerasllm_config
    hf = config_to_hf(model)
    if config.model_type == "gpt":
        tensors = arrays_to_table(model, GPT2_HF_TABLE, config.num_layers)
        return {"transformer." + k: v for k, v in tensors.items()}, hf
    tensors = arrays_to_table(model, BERT_HF_TABLE, config.num_layers)
    if hf["architectures"][0] != "BertModel":
        tensors = {("bert." + k if k.startswith(BERT_HF_BACKBONE) else k): v for k, v in tensors.items()}
    return tensors, hf


def save_hf(model, out_dir, tokenizer=None):
    """Write ``model`` as a Hugging Face folder: ``config.json``, ``model.safetensors``.

    A LoRA model is written merged (``W + alpha / rank * A @ B``, see
    :func:`kerasllm.models.merge_peft`), which is what Transformers loads; a model
    with bottleneck adapters is refused, as a BERT folder has no place for them.

    With a kerasllm ``WordPieceTokenizer`` also ``vocab.txt`` and a
    ``tokenizer_config.json`` that Transformers' ``BertTokenizer`` reads; with a
    ``BytePairTokenizer`` ``vocab.json``, ``merges.txt`` and a ``tokenizer_config.json``
    for ``GPT2Tokenizer``. The folder is staged next to ``out_dir`` and renamed into
    place, so a failed save leaves no half-written model. Returns ``out_dir``.

    Example:

    >>> from kerasllm.models import get_preset, gpt_decoder  # doctest: +SKIP
    >>> from kerasllm.tokenizers import BytePairTokenizer  # doctest: +SKIP
    >>> tok = BytePairTokenizer.from_folder("tests/fixtures/tokenizers/bpe")  # doctest: +SKIP
    >>> model = gpt_decoder(get_preset("gpt-tiny", vocab_size=tok.vocab_size))  # doctest: +SKIP
    >>> sorted(os.listdir(save_hf(model, "/tmp/gpt_hf", tokenizer=tok)))  # doctest: +SKIP
    ['config.json', 'merges.txt', 'model.safetensors', 'tokenizer_config.json', 'vocab.json']
    """
    from safetensors.numpy import save_file

    tensors, hf = hf_tensors(model)
    def build(staging):
        atomic_write_json(os.path.join(staging, "config.json"), hf)
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                  os.path.join(staging, SAFETENSORS), metadata={"format": "pt"})
        if tokenizer is not None:
            _save_tokenizer(tokenizer, staging, model.kerasllm_config)

    atomic_replace_dir(build, out_dir)
    return out_dir


def _save_tokenizer(tokenizer, directory, config):
    """``tokenizer.save`` plus the ``tokenizer_config.json`` keys Transformers reads."""
    from kerasllm.tokenizers.bpe import BytePairTokenizer

    tokenizer.save(directory)
    path = os.path.join(directory, "tokenizer_config.json")
    with open(path, encoding="utf-8") as f:
        own = json.load(f)
    own["model_max_length"] = config.max_position
    if isinstance(tokenizer, BytePairTokenizer):
        # vocab.json may be smaller than the embedding (a padded table), never larger.
        size = max(tokenizer.get_vocabulary().values()) + 1
        if size > config.vocab_size:
            raise ValueError(
                f"the BPE tokenizer has ids up to {size - 1} but the model's vocab_size is {config.vocab_size}"
            )
        own["tokenizer_class"] = "GPT2Tokenizer"
        atomic_write_json(path, own)
        return
    # Hugging Face's keys next to kerasllm's own (WordPieceTokenizer.load reads either).
    own.update(
        {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": bool(own.get("lowercase", True)),
            "strip_accents": own.get("strip_accents"),
        }
    )
    for key in ("unk_token", "cls_token", "sep_token", "pad_token", "mask_token"):
        if own.get(key) is None:
            own.pop(key, None)
    atomic_write_json(path, own)
    with open(os.path.join(directory, "vocab.txt"), encoding="utf-8") as f:
        lines = len(f.read().splitlines())
    if lines != config.vocab_size:
        raise ValueError(f"tokenizer has {lines} tokens but the model's vocab_size is {config.vocab_size}")
