"""Google's original BERT TensorFlow checkpoints (``bert_config.json``, ``bert_model.ckpt.*``), both ways."""
import glob
import json
import os

import tensorflow as tf

from kerasllm._io import atomic_replace_dir, atomic_write_json
from kerasllm.checkpoints._common import arrays_from_table, arrays_to_table, build_loaded, check_vocab
from kerasllm.checkpoints._common import fit_classifier, report_unused
from kerasllm.checkpoints.tables import BERT_GOOGLE_TABLE
from kerasllm.checkpoints.hf import config_from_hf

CONFIG_NAME = "bert_config.json"
CKPT_NAME = "bert_model.ckpt"
# Optimizer slots and counters stored next to the weights by run_pretraining.py.
_IGNORED_SUFFIXES = ("/adam_m", "/adam_v", "global_step", "good_steps", "loss_scale")


def find_checkpoint(directory):
    """The checkpoint prefix in ``directory`` (``bert_model.ckpt`` or the one ``checkpoint`` names)."""
    preferred = os.path.join(directory, CKPT_NAME)
    if os.path.isfile(preferred + ".index"):
        return preferred
    latest = tf.train.latest_checkpoint(directory)
    if latest:
        return latest
    found = sorted(glob.glob(os.path.join(directory, "*.ckpt*.index")))
    if found:
        return found[0][: -len(".index")]
    raise FileNotFoundError(f"no TensorFlow checkpoint in {directory}: looked for {CKPT_NAME}.index and a 'checkpoint' file")


def is_google_folder(directory):
    return os.path.isfile(os.path.join(directory, CONFIG_NAME)) or bool(
        glob.glob(os.path.join(directory, "*.ckpt*.index"))
    )


def config_from_google(raw, path):
    """A :class:`TransformerConfig` from Google's ``bert_config.json`` (Hugging Face BERT's field names)."""
    return config_from_hf({**raw, "model_type": "bert"}, path)


def load_google(directory, task=None, num_labels=None):
    """Build a kerasllm BERT for a Google BERT checkpoint folder and load its weights.

    Default task: ``pretraining`` when the checkpoint has the ``cls/`` heads (with
    next-sentence prediction when ``cls/seq_relationship`` is there),
    ``sequence_classification`` when it has ``output_weights`` (run_classifier.py),
    else ``encoder``.
    """
    config_path = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{directory} has a TensorFlow checkpoint but no {CONFIG_NAME}")
    with open(config_path, encoding="utf-8") as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path}: not valid JSON ({err})") from None
    config = config_from_google(raw, config_path)
    prefix = find_checkpoint(directory)
    check_vocab(directory, config.vocab_size, config_path)
    reader = tf.train.load_checkpoint(prefix)
    names = [n for n in reader.get_variable_to_shape_map() if not n.endswith(_IGNORED_SUFFIXES)]
    tensors = {n: reader.get_tensor(n) for n in names}
    info = {}
    if "cls/predictions/output_bias" in tensors:
        own_task = "pretraining"
    elif "output_weights" in tensors:
        own_task = "sequence_classification"  # run_classifier.py
    else:
        own_task = "encoder"
    own_labels = tensors["output_bias"].shape[0] if "output_bias" in tensors else 2
    task = task or own_task
    if task == "masked_lm":
        task, info = "pretraining", {"next_sentence": False}
    elif task == "pretraining":
        info = {"next_sentence": "cls/seq_relationship/output_bias" in tensors}
    elif task in ("token_classification", "sequence_classification"):
        info = {"num_labels": num_labels or own_labels}
    values, origin = arrays_from_table(tensors, BERT_GOOGLE_TABLE, config.num_layers, prefix)
    # output_weights do not say which task they were trained for (run_classifier.py is
    # sequence classification, save_google_checkpoint writes any classifier): only the
    # number of labels decides whether they are kept.
    if own_task == "sequence_classification" and task == "token_classification":
        own_task = task
    values = fit_classifier(values, prefix, (own_task, own_labels), (task, info.get("num_labels")))
    model = build_loaded(config, task, values, prefix, origin, **info)
    report_unused(tensors, origin, prefix)
    model.kerasllm_task = {"task": task, **info}
    return model


def save_google_checkpoint(model, directory, tokenizer=None):
    """Write a kerasllm BERT as a Google BERT checkpoint folder.

    Writes ``bert_config.json``, ``bert_model.ckpt.index``/``.data-00000-of-00001``
    (plain variable names such as ``bert/encoder/layer_0/attention/self/query/kernel``),
    a ``checkpoint`` file and, with a ``WordPieceTokenizer``, ``vocab.txt``.
    Staged next to ``directory`` and renamed into place. Returns ``directory``.
    """
    config = model.kerasllm_config
    if config.model_type != "bert" or config.normalize_first or config.position_embedding != "learned":
        raise ValueError("save_google_checkpoint needs a post-LN BERT with learned positions")
    tensors = arrays_to_table(model, BERT_GOOGLE_TABLE, config.num_layers)
    raw = {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.activation.replace("gelu_tanh", "gelu_new"),
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "max_position_embeddings": config.max_position,
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range,
    }
    if config.layer_norm_epsilon != 1e-12:
        raw["layer_norm_eps"] = config.layer_norm_epsilon  # Google's code fixes 1e-12
    def build(staging):
        atomic_write_json(os.path.join(staging, CONFIG_NAME), raw)
        names = sorted(tensors)
        tf.raw_ops.SaveV2(
            prefix=os.path.join(staging, CKPT_NAME),
            tensor_names=names,
            shape_and_slices=[""] * len(names),
            tensors=[tf.constant(tensors[n]) for n in names],
        )
        with open(os.path.join(staging, "checkpoint"), "w", encoding="utf-8") as f:
            f.write(f'model_checkpoint_path: "{CKPT_NAME}"\nall_model_checkpoint_paths: "{CKPT_NAME}"\n')
        if tokenizer is not None:
            tokenizer.save(staging)

    atomic_replace_dir(build, directory)
    return directory
