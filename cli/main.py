"""The ``kerasllm`` command line (Typer).

Heavy imports (TensorFlow) happen inside commands so ``kerasllm --help`` is quick.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Optional  # noqa: E402

import typer  # noqa: E402
from rich.table import Table  # noqa: E402

import kerasllm  # noqa: E402

from ._common import console, run_user_errors as _run_user_errors  # noqa: E402,F401
app = typer.Typer(
    name="kerasllm",
    help="Transformer language models on TensorFlow/Keras: build, fine-tune, compress, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool):
    if value:
        typer.echo(f"kerasllm {kerasllm.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
):
    """kerasllm: from the attention layer to a phone."""


PACKAGES = [
    "tensorflow",
    "tf-keras",
    "tensorflow-text",
    "tensorflow-model-optimization",
    "keras-hub",
    "keras",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "ai-edge-litert",
    "typer",
    "rich",
    "numpy",
]


@app.command()
def info():
    """Versions of TensorFlow and the packages kerasllm uses, devices, and XLA availability."""
    from importlib import metadata

    table = Table(title=f"kerasllm {kerasllm.__version__}")
    table.add_column("package")
    table.add_column("version")
    for name in PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        table.add_row(name, version)
    console.print(table)

    import tensorflow as tf

    devices = tf.config.list_physical_devices()
    console.print("devices: " + ", ".join(f"{d.device_type}:{d.name.split(':')[-1]}" for d in devices))
    try:
        tf.function(lambda x: x * 2.0, jit_compile=True)(tf.constant(1.0))
        xla = "available (jit_compile works on this machine)"
    except Exception as err:  # pragma: no cover - depends on the TF build
        xla = f"not available ({type(err).__name__})"
    console.print(f"XLA: {xla}")


@app.command()
def presets(
    seq_len: int = typer.Option(128, help="Sequence length used for the attention FLOPs."),
):
    """Table of model presets with parameters and FLOPs per token."""
    from kerasllm.models import PRESET_DESCRIPTIONS, PRESETS, summary

    table = Table(title=f"kerasllm presets (FLOPs per token at length {seq_len}, forward)")
    for column in ("preset", "type", "layers", "hidden", "heads", "parameters", "GFLOPs/token"):
        table.add_column(column, justify="left" if column in ("preset", "type") else "right", no_wrap=True)
    for name, config in PRESETS.items():
        s = summary(config, seq_len=seq_len)
        layers = str(config.num_layers)
        if config.model_type == "encoder_decoder":
            layers = f"{config.num_layers}+{config.num_decoder_layers}"
        table.add_row(
            name,
            config.model_type.replace("encoder_decoder", "enc-dec"),
            layers,
            str(config.hidden_size),
            str(config.num_heads),
            f"{s['parameters']:,}",
            f"{s['flops_per_token'] / 1e9:.3f}",
        )
    console.print(table)
    for name in PRESETS:
        console.print(f"  {name}: {PRESET_DESCRIPTIONS[name]}", highlight=False)


finetune_app = typer.Typer(help="Fine-tune a model on a downstream task.", no_args_is_help=True)
app.add_typer(finetune_app, name="finetune")


@finetune_app.command("ner")
def finetune_ner(
    train: Optional[str] = typer.Option(None, help="Training CoNLL file (2- or 4-column). Omit all data options to use the embedded corpus. \\[default: none]"),
    dev: Optional[str] = typer.Option(None, help="Dev CoNLL file: early stopping and best checkpoint by entity F1. \\[default: none]"),
    test: Optional[str] = typer.Option(None, help="Test CoNLL file, scored with the best checkpoint. \\[default: none]"),
    model: str = typer.Option("bert-tiny", help="A preset (trained from scratch with a vocabulary learnt from --train) or a kerasllm model folder."),
    out: str = typer.Option(os.path.join("saved_models", "ner-default"), help="Output folder: model/, metrics.json, logs/, model.tflite."),
    epochs: int = typer.Option(12, help="Maximum number of epochs."),
    batch_size: int = typer.Option(32, help="Global batch size."),
    lr: float = typer.Option(5e-4, help="Peak learning rate (use ~5e-5 when starting from a pretrained checkpoint)."),
    max_length: int = typer.Option(128, help="Sub-words per input incl. [CLS]/[SEP]; longer sentences are split into overlapping windows."),
    seed: int = typer.Option(0, help="Seed for initialisation, shuffling and the embedded corpus."),
    warmup_ratio: float = typer.Option(0.1, help="Fraction of steps of linear warm-up."),
    weight_decay: float = typer.Option(0.01, help="AdamW weight decay (not applied to biases and layer norms)."),
    patience: int = typer.Option(3, help="Early stopping: epochs without dev-F1 improvement."),
    vocab_size: int = typer.Option(1000, help="WordPiece vocabulary size when training from a preset."),
    lowercase: bool = typer.Option(False, help="Lower-case text in the tokenizer trained from a preset."),
    augment: Optional[float] = typer.Option(None, help="Mention-replacement probability for training sentences (default 0.5 on the embedded corpus, 0 otherwise)."),
    export: bool = typer.Option(True, help="Export the best model to TFLite and verify it."),
    quantize: str = typer.Option("dynamic", help="TFLite quantization: none, float16, dynamic, int8."),
    mixed_precision: str = typer.Option("none", help="none, float16 or bfloat16."),
    xla: bool = typer.Option(False, help="Compile the train step with XLA."),
    resume: bool = typer.Option(False, help="Resume an interrupted run from OUT/backup."),
):
    """Fine-tune a token classifier for named-entity recognition; print entity F1; export TFLite."""
    from kerasllm.training.ner_finetune import NerFinetuneConfig, run_ner_finetune

    cfg = NerFinetuneConfig(
        train=train, dev=dev, test=test, model=model, out=out, epochs=epochs, batch_size=batch_size,
        lr=lr, max_length=max_length, seed=seed, warmup_ratio=warmup_ratio, weight_decay=weight_decay,
        patience=patience, vocab_size=vocab_size, lowercase=lowercase, augment=augment, export=export, quantize=quantize,
        mixed_precision=mixed_precision, xla=xla, resume=resume,
    )
    _run_user_errors(run_ner_finetune, cfg)


from . import bench_cmd, export_cmd, ner_cmds  # noqa: E402  (each adds its commands to ``app``)
from . import convert_cmds  # noqa: E402

convert_cmds.register(app)

export_cmd.register(app)
bench_cmd.register(app)
ner_cmds.register(app)


def main():
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
