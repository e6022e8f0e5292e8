"""``kerasllm finetune ner`` and ``kerasllm finetune classify``: one option per config field.

Each command's options are made from the fields of its config dataclass
(:mod:`kerasllm.training.finetune_config`, which does not import TensorFlow),
with the field's default, and the help below; the options both tasks share are
defined once here.
"""
import dataclasses
import inspect
from typing import Optional

import typer

from kerasllm.training.finetune_config import (
    CLASSIFY_SELECT,
    FUSE_ELEMENTWISE,
    MIXED_PRECISION,
    QUANTIZE,
    STRATEGIES,
    ClassifyFinetuneConfig,
    NerFinetuneConfig,
)

from ._common import run_user_errors

SHARED_HELP = {
    "model": "A preset (trained from scratch with a WordPiece vocabulary learnt from --train) or a model folder: "
    "kerasllm, Hugging Face BERT or Google BERT (encoder weights loaded, head initialised fresh).",
    "epochs": "Maximum number of epochs.",
    "batch_size": "Global batch size (split over the replicas of --strategy).",
    "lr": "Peak learning rate (use ~5e-5 when starting from a pretrained checkpoint).",
    "seed": "Seed for initialisation, shuffling and the embedded corpus.",
    "warmup_ratio": "Fraction of steps of linear warm-up.",
    "weight_decay": "AdamW weight decay (not applied to biases and layer norms).",
    "vocab_size": "WordPiece vocabulary size when training from a preset.",
    "lowercase": "Lower-case text in the tokenizer trained from a preset.",
    "export": "Export the best model to TFLite and verify it.",
    "quantize": f"TFLite quantization: {', '.join(QUANTIZE)}.",
    "mixed_precision": f"{', '.join(MIXED_PRECISION)} (auto: bfloat16 on a TPU, and without --xla on a CPU with "
    "AMX for a model of hidden size >= 256; none elsewhere).",
    "fuse_elementwise": f"{', '.join(FUSE_ELEMENTWISE)}: compile the ops between matrix products with XLA and leave "
    "the products to TensorFlow (auto: on for bfloat16 on a CPU with AMX, without --xla, hidden size >= 256).",
    "xla": "Compile the train step with XLA; batches are padded to a few shapes (a multiple of 16 sub-words, or of max-length/8), one compiled program each.",
    "lazy_embedding_updates": "AdamW updates only the embedding rows a batch looked up (LazyAdam); graph mode only "
    "(under --xla the embedding gradient is dense).",
    "static_shapes": "Pad every batch to [batch-size, max-length] (the last one with rows that do not count) so "
    "XLA/TPU compile one step; always on with a TPU.",
    "steps_per_execution": "Training steps per tf.function call (0: 32 on a TPU, 1 elsewhere).",
    "resume": "Resume an interrupted run from OUT/backup (same options).",
    "strategy": f"tf.distribute strategy: {', '.join(STRATEGIES)}; the model, optimizer and compile are built "
    "in its scope.",
    "devices": "Comma list of devices for --strategy mirrored, e.g. /gpu:0,/gpu:1 (default: every GPU, else the CPU).",
    "tpu": "TPU name or grpc://host:port for --strategy tpu or auto ('local' on a TPU VM).",
    "worker_hosts": "Comma list of every worker's host:port for --strategy multiworker, the same on every worker; "
    "sets TF_CONFIG (when unset). Worker 0 is the chief and writes OUT.",
    "task_index": "This worker's index in --worker-hosts (0 = chief).",
    "lora_rank": "LoRA rank (0 = off). LoRA freezes the base weights; it is merged into them in the saved model.",
    "lora_alpha": "LoRA scale numerator: updates are scaled by alpha / rank.",
    "lora_targets": "Comma list of what LoRA adapts: query, key, value, output (attention), ffn.",
    "adapter_size": "Bottleneck width of Houlsby adapters after every attention and feed-forward sublayer "
    "(0 = off); adapters freeze the base weights.",
    "freeze_embeddings": "Freeze the embedding layer.",
    "freeze_layers": "Freeze the lowest N encoder layers.",
    "dropout": "Replace the model's dropout rates (hidden and attention) for this run; 0 makes seeded runs repeatable; none keeps the model's.",
}

NER_HELP = {
    "train": "Training CoNLL file (2- or 4-column). Omit all data options to use the embedded corpus.",
    "dev": "Dev CoNLL file: early stopping and best checkpoint by entity F1.",
    "test": "Test CoNLL file, scored with the best checkpoint.",
    "out": "Output folder: model/, finetune_config.json, metrics.json, logs/, model.tflite.",
    "max_length": "Sub-words per input incl. [CLS]/[SEP]; longer sentences are split into overlapping windows.",
    "stride": "Sub-words shared by consecutive windows of a long sentence (default: a quarter of --max-length).",
    "patience": "Early stopping: epochs without dev-F1 improvement.",
    "augment": "Mention-replacement probability for training sentences (default 0.5 on the embedded corpus, "
    "0 otherwise).",
}

CLASSIFY_HELP = {
    "train": "Training file: .csv, .tsv (with a header row) or .jsonl. Omit all data options to use the "
    "embedded topic corpus.",
    "dev": "Dev file (same format): early stopping and best checkpoint by --select.",
    "test": "Test file, scored with the best checkpoint.",
    "out": "Output folder: model/, finetune_config.json, metrics.json, logs/, model.tflite.",
    "max_length": "Sub-words per input incl. [CLS]/[SEP]; longer inputs are truncated (pairs: longest first).",
    "patience": "Early stopping: epochs without improvement of the --select dev metric.",
    "text_column": "Column (JSONL key) of the text.",
    "label_column": "Column (JSONL key) of the label.",
    "text_pair_column": "Column of a second text for pair tasks, encoded [CLS] a [SEP] b [SEP] with segment ids.",
    "select": f"Dev metric for the best checkpoint and early stopping: {', '.join(CLASSIFY_SELECT)}.",
}


def _parameters(config_class, task_help, skip=()):
    """One keyword-only ``typer.Option`` parameter per field of ``config_class`` (but ``skip``), with its default."""
    parameters = []
    for field in dataclasses.fields(config_class):
        if field.name in skip:
            continue
        help_text = task_help.get(field.name) or SHARED_HELP.get(field.name)
        if help_text is None:
            raise KeyError(f"no help text for the {config_class.__name__} field {field.name!r}")
        annotation = field.type
        if field.default is None:
            annotation = Optional[field.type]
            help_text += " \\[default: none]"
        parameters.append(
            inspect.Parameter(
                field.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(field.default, help=help_text),
                annotation=annotation,
            )
        )
    return parameters


def _command(config_class, task_help, run, name, doc, skip=()):
    """A Typer command that builds ``config_class`` from its options and calls ``run(cfg)``."""

    def command(**options):
        run_user_errors(lambda: run()(config_class(**options)))

    command.__signature__ = inspect.Signature(_parameters(config_class, task_help, skip))
    command.__name__ = name
    command.__doc__ = doc
    return command


def _run_ner():
    from kerasllm.training.ner_finetune import run_ner_finetune

    return run_ner_finetune


def _run_classify():
    from kerasllm.training.classify_finetune import run_classify_finetune

    return run_classify_finetune


finetune_ner = _command(
    NerFinetuneConfig, NER_HELP, _run_ner, "finetune_ner",
    "Fine-tune a token classifier for named-entity recognition; print entity F1; export TFLite.",
)
finetune_classify = _command(
    ClassifyFinetuneConfig, CLASSIFY_HELP, _run_classify, "finetune_classify",
    "Fine-tune a text (or text-pair) classifier; print accuracy, macro-F1 and per-class scores; export TFLite.",
)


def register(app):
    finetune_app = typer.Typer(help="Fine-tune a model on a downstream task.", no_args_is_help=True)
    finetune_app.command("ner")(finetune_ner)
    finetune_app.command("classify")(finetune_classify)
    app.add_typer(finetune_app, name="finetune")
