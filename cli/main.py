"""The ``kerasllm`` command line (Typer).

Heavy imports (TensorFlow) happen inside commands so ``kerasllm --help`` is quick.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Optional  # noqa: E402

import typer  # noqa: E402
from rich.table import Table  # noqa: E402

import kerasllm  # noqa: E402

from ._common import console  # noqa: E402

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


from . import bench_cmd, classify_cmds, convert_cmds, export_cmd, finetune_cmds, ner_cmds  # noqa: E402

# each module adds its commands to ``app`` (or to the predict / evaluate groups)
finetune_cmds.register(app)
predict_app = typer.Typer(help="Run a fine-tuned model on raw text.", no_args_is_help=True)
evaluate_app = typer.Typer(help="Score a fine-tuned model on labelled data.", no_args_is_help=True)
ner_cmds.register(predict_app, evaluate_app)
classify_cmds.register(predict_app, evaluate_app)
app.add_typer(predict_app, name="predict")
app.add_typer(evaluate_app, name="evaluate")
convert_cmds.register(app)
export_cmd.register(app)
bench_cmd.register(app)
from . import compress_cmds  # noqa: E402
compress_cmds.register(app)
from . import generate_cmds  # noqa: E402
generate_cmds.register(app)
from . import pretrain_cmds, vocab_cmds  # noqa: E402
pretrain_cmds.register(app)
vocab_cmds.register(app)


def main():
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
