"""``kerasllm pretrain mlm`` and ``kerasllm pretrain clm``: one option per pretraining config field.

The options are made from the fields of
:class:`~kerasllm.training.pretrain_config.MlmPretrainConfig` and
:class:`~kerasllm.training.pretrain_config.ClmPretrainConfig` (fine-tuning-only
fields left out), with the field defaults, as ``kerasllm finetune`` does.
"""
import dataclasses

import typer

from kerasllm.training.finetune_config import FinetuneConfig
from kerasllm.training.pretrain_config import FINETUNE_ONLY, ClmPretrainConfig, MlmPretrainConfig

from .finetune_cmds import _command

PRETRAIN_HELP = {
    "corpus": "Text files: a path, a glob such as 'data/*.txt' (quote it), or a comma list. Read lazily, never "
    "loaded whole.",
    "vocab": "Tokenizer folder from `kerasllm vocab`: vocab.txt (WordPiece) for mlm, vocab.json + merges.txt "
    "(byte-level BPE) for clm. Saved with the model.",
    "preset": "Model preset trained from scratch (bert-* for mlm, gpt-* for clm); max_position becomes --seq-length.",
    "steps": "Optimizer steps; the learning rate warms up then decays linearly to 0 at this step.",
    "max_minutes": "Stop training after this many minutes (the model is still saved and scored).",
    "seq_length": "Tokens per sequence ([CLS]/[SEP] included for mlm; the block size for clm).",
    "eval_every": "Steps between held-out evaluations and backups (--resume continues from the last one).",
    "documents": "How files split into documents: blank-line, file (one per file) or line.",
    "validation_every": "Hold out every k-th document for evaluation.",
    "out": "Output folder: model/ (model + tokenizer), pretrain_config.json, metrics.json, logs/.",
    "lr": "Peak learning rate.",
    "seed": "Seed for the initialisation, the data order, the next-sentence pairs and the masks.",
    "nsp": "Next-sentence prediction on [CLS] A [SEP] B [SEP] pairs; without it sequences are packed across "
    "documents to the full length.",
    "whole_word": "Mask whole words (every WordPiece of a word together).",
    "mask_rate": "Share of tokens selected for prediction (of those: 80% [MASK], 10% random, 10% unchanged).",
}


def _run():
    from kerasllm.training.pretrain import run_pretrain

    return run_pretrain


def _pretrain_command(config_class, name, doc):
    """The command of ``config_class``; the pretraining options (corpus, vocab, ...) listed first."""
    command = _command(config_class, PRETRAIN_HELP, _run, name, doc, skip=FINETUNE_ONLY)
    shared = {field.name for field in dataclasses.fields(FinetuneConfig)}
    parameters = sorted(command.__signature__.parameters.values(), key=lambda p: p.name in shared)
    command.__signature__ = command.__signature__.replace(parameters=parameters)
    return command


pretrain_mlm = _pretrain_command(
    MlmPretrainConfig, "pretrain_mlm",
    "Pretrain a BERT encoder from scratch: masked LM (+ next sentence); print held-out masked-token accuracy.",
)
pretrain_clm = _pretrain_command(
    ClmPretrainConfig, "pretrain_clm",
    "Pretrain a GPT decoder from scratch: causal LM; print held-out perplexity against a unigram model.",
)


def register(app):
    pretrain_app = typer.Typer(help="Pretrain a model from scratch on a text corpus.", no_args_is_help=True)
    pretrain_app.command("mlm")(pretrain_mlm)
    pretrain_app.command("clm")(pretrain_clm)
    app.add_typer(pretrain_app, name="pretrain")
