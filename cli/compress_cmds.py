"""``kerasllm compress prune|qat|ptq|distill|lowrank|report``: compress a fine-tuned NER model, one report row each."""
import os
from typing import List, Optional

import typer

from ._common import console, run_user_errors

# Options every method shares (one definition, reused by each command).
MODEL = typer.Option(..., help="A fine-tuned NER folder (OUT/model of `kerasllm finetune ner`).")
OUT = typer.Option(..., help="Output folder: model/ (compressed Keras model), model.tflite, compression_row.json.")
TRAIN = typer.Option(None, help="Training CoNLL file (fine-tuning; int8 calibration). \\[default: none]")
DEV = typer.Option(None, help="Dev CoNLL file (scored if given). \\[default: none]")
TEST = typer.Option(None, help="Test CoNLL file: the report's entity F1. \\[default: none]")
EPOCHS = typer.Option(2, help="Fine-tuning epochs.")
LR = typer.Option(5e-5, help="Peak learning rate of the fine-tuning.")
# Pruning needs longer to recover: MiniLM/WNUT-17 at 50% scored 38.88 after 2 epochs at 5e-5,
# 40.00 after 4 at 5e-5 and 40.97 after 4 at 1e-4 (dense 40.82; bench/README.md).
PRUNE_EPOCHS = typer.Option(4, help="Fine-tuning epochs (the sparsity ramps up over the first 3/4 of them).")
PRUNE_LR = typer.Option(1e-4, help="Peak learning rate of the fine-tuning.")
BATCH_SIZE = typer.Option(32, help="Batch size.")
MAX_LENGTH = typer.Option(128, help="Sub-words per window (capped at the model's positions).")
SEED = typer.Option(0, help="Seed of the batch order.")
NAME = typer.Option(None, help="Row name in the report. \\[default: from the method]")
LATENCY_LENGTH = typer.Option(64, help="Sequence length of the batch-1 latency measurement.")
THREADS = typer.Option(1, help="TFLite interpreter threads for the latency measurement.")
DISTILL_ALPHA = typer.Option(
    None, help="Fine-tune towards the uncompressed model too: this weight on the label loss, 1 minus it on the "
    "KL to the model's own logits (x T^2), in [0, 1). \\[default: labels only]")
KD_TEMPERATURE = typer.Option(2.0, help="Softening temperature T of --distill-alpha.")
FLOAT_LAYER_NORM = typer.Option(
    True, "--float-layer-norm/--int8-layer-norm",
    help="int8 TFLite: keep the ops inside each layer norm in float (mean, variance, rsqrt; more accurate, same "
    "size) or make them int8 too (a full-integer file, for integer-only accelerators).")


def register(app):
    compress_app = typer.Typer(
        help="Compress a fine-tuned model (pruning, QAT, PTQ, distillation, low-rank) and report accuracy, size and latency.",
        no_args_is_help=True,
    )
    compress_app.command("prune")(prune)
    compress_app.command("qat")(qat)
    compress_app.command("ptq")(ptq)
    compress_app.command("distill")(distill)
    compress_app.command("lowrank")(lowrank)
    compress_app.command("report")(report)
    app.add_typer(compress_app, name="compress")


def _options(model, out, train, dev, test, epochs, lr, batch_size, max_length, seed, name, latency_length, threads):
    from kerasllm.compression.pipeline import CompressOptions

    return CompressOptions(
        model=model, out=out, train=train, dev=dev, test=test, epochs=epochs, lr=lr, batch_size=batch_size,
        max_length=max_length, seed=seed, name=name, latency_length=latency_length, latency_threads=threads,
    )


def _m_by_n(text):
    if text is None:
        return None
    try:
        m, n = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--m-by-n {text!r}: write it as M:N, such as 2:4") from None
    return (m, n)


def prune(
    model: str = MODEL, out: str = OUT, train: Optional[str] = TRAIN, dev: Optional[str] = DEV, test: Optional[str] = TEST,
    sparsity: float = typer.Option(0.5, help="Target fraction of zeros in each pruned weight tensor, in (0, 1)."),
    schedule: str = typer.Option("polynomial", help="polynomial (cubic ramp over the first 3/4 of the steps) or constant."),
    m_by_n: Optional[str] = typer.Option(None, "--m-by-n", help="Structured sparsity M:N, e.g. 2:4 (overrides --sparsity). \\[default: none]"),
    embeddings: bool = typer.Option(False, help="Also prune the token embedding table."),
    rounds: int = typer.Option(1, help="Iterative pruning: this many prune-then-fine-tune rounds of growing sparsity (each --epochs long)."),
    distill_alpha: Optional[float] = DISTILL_ALPHA, temperature: float = KD_TEMPERATURE,
    epochs: int = PRUNE_EPOCHS, lr: float = PRUNE_LR, batch_size: int = BATCH_SIZE, max_length: int = MAX_LENGTH, seed: int = SEED,
    name: Optional[str] = NAME, latency_length: int = LATENCY_LENGTH, threads: int = THREADS,
):
    """Magnitude pruning (TF-MOT) of attention and feed-forward kernels, with fine-tuning; per-weight sparsity report."""
    from kerasllm.compression.pipeline import run_prune

    options = _options(model, out, train, dev, test, epochs, lr, batch_size, max_length, seed, name, latency_length, threads)
    run_user_errors(
        lambda: run_prune(options, sparsity=sparsity, schedule=schedule, m_by_n=_m_by_n(m_by_n),
                          include_embeddings=embeddings, rounds=rounds, distill_alpha=distill_alpha,
                          temperature=temperature)
    )


def qat(
    model: str = MODEL, out: str = OUT, train: Optional[str] = TRAIN, dev: Optional[str] = DEV, test: Optional[str] = TEST,
    preserve_sparsity: bool = typer.Option(False, help="Keep a pruned model's zeros through QAT (pruning-preserving QAT)."),
    distill_alpha: Optional[float] = DISTILL_ALPHA, temperature: float = KD_TEMPERATURE,
    float_layer_norm: bool = FLOAT_LAYER_NORM,
    epochs: int = EPOCHS, lr: float = LR, batch_size: int = BATCH_SIZE, max_length: int = MAX_LENGTH, seed: int = SEED,
    name: Optional[str] = NAME, latency_length: int = LATENCY_LENGTH, threads: int = THREADS,
):
    """Quantization-aware fine-tuning (TF-MOT) on kerasllm's layers, then an int8 TFLite model."""
    from kerasllm.compression.pipeline import run_qat

    options = _options(model, out, train, dev, test, epochs, lr, batch_size, max_length, seed, name, latency_length, threads)
    run_user_errors(lambda: run_qat(options, preserve_sparsity=preserve_sparsity, distill_alpha=distill_alpha,
                                    temperature=temperature, float_layer_norm=float_layer_norm))


def ptq(
    model: str = MODEL, out: str = OUT, train: Optional[str] = TRAIN, dev: Optional[str] = DEV, test: Optional[str] = TEST,
    quantize: str = typer.Option("int8", help="none (the float32 baseline row), float16, dynamic, int8 or int16x8 (int16 activations; both calibrated on --train)."),
    calibration_steps: int = typer.Option(100, help="int8: calibration examples."),
    float_layer_norm: bool = FLOAT_LAYER_NORM,
    batch_size: int = BATCH_SIZE, max_length: int = MAX_LENGTH,
    name: Optional[str] = NAME, latency_length: int = LATENCY_LENGTH, threads: int = THREADS,
):
    """Post-training quantization: the same export as `kerasllm export tflite --quantize`, scored and timed."""
    from kerasllm.compression.pipeline import run_ptq
    from kerasllm.export import QUANTIZE_MODES

    def go():
        if quantize not in QUANTIZE_MODES:
            raise ValueError(f"--quantize {quantize!r}: choose one of {', '.join(QUANTIZE_MODES)}")
        options = _options(model, out, train, dev, test, 0, 5e-5, batch_size, max_length, 0, name, latency_length, threads)
        options.calibration_steps = calibration_steps
        return run_ptq(options, quantize=quantize, float_layer_norm=float_layer_norm)

    run_user_errors(go)


def distill(
    model: str = MODEL, out: str = OUT, train: Optional[str] = TRAIN, dev: Optional[str] = DEV, test: Optional[str] = TEST,
    every: Optional[int] = typer.Option(None, help="Student = every k-th block of the teacher (k=3 on 6 blocks keeps blocks 3 and 6). \\[default: 2]"),
    layers: Optional[str] = typer.Option(None, help="Student = these teacher blocks, comma-separated (0-based). \\[default: none]"),
    preset: Optional[str] = typer.Option(None, help="Student = a fresh model of this preset (random weights). \\[default: none]"),
    temperature: float = typer.Option(2.0, help="Softmax temperature T of the soft targets."),
    alpha: float = typer.Option(0.5, help="Weight of the hard-label loss (in the module-replacing epochs too); 1.0 = fine-tune the student without the teacher's logits."),
    hidden: bool = typer.Option(False, help="Also match each student block's output to its source teacher block (MSE through a learned projection)."),
    hidden_weight: float = typer.Option(1.0, help="Weight of the hidden-state loss."),
    hidden_map: str = typer.Option("group-end", help="--hidden: the teacher block each student block matches: group-end (the last of the teacher blocks it stands in for; blocks 3 and 6 for 2 of 6) or source (the block it was copied from)."),
    replace_epochs: int = typer.Option(0, help="First train the student's blocks in the teacher's place for this many epochs (progressive module replacing, BERT-of-Theseus; needs --every or --layers); the --epochs of distillation follow (0: none)."),
    replace_start_rate: float = typer.Option(0.3, help="Module replacing: probability of running a student block instead of its teacher blocks at the first step; it rises to 1 over 80% of --replace-epochs."),
    replace_lr: float = typer.Option(5e-4, help="Peak learning rate of the module-replacing epochs (--lr is the distillation's)."),
    replace_alpha: Optional[float] = typer.Option(None, help="Weight of the hard-label loss in the module-replacing epochs (1.0: labels only). \\[default: --alpha]"),
    augment: int = typer.Option(0, help="Add this many augmented copies of --train (mentions swapped for other training mentions of the type, tokens for training tokens of the same tag) for the teacher and labels to train on (0: none)."),
    augment_mentions: float = typer.Option(0.5, help="--augment: probability of swapping each mention."),
    augment_tokens: float = typer.Option(0.15, help="--augment: probability of replacing each token."),
    augment_names: str = typer.Option("train", help="--augment: swap a mention for another training mention of its type (train) or for invented words (invented)."),
    augment_phase: str = typer.Option("both", help="--augment: the training phases that see the copies: both, replace (the --replace-epochs only) or distill (the --epochs of distillation only)."),
    keep_best: bool = typer.Option(True, "--keep-best/--keep-last", help="Score the student on --dev after every epoch (both phases) and keep the best epoch's; --keep-last keeps the last. Without --dev: the last."),
    average_last: int = typer.Option(0, help="With --dev: also score the mean of the last N epochs' weights (of the last phase) and keep it if it beats every single epoch (0: off)."),
    freeze_embeddings: Optional[bool] = typer.Option(None, "--freeze-embeddings/--train-embeddings", help="Keep the student's embedding tables frozen while it trains, or train them. \\[default: frozen when copied from the teacher (--every/--layers), trained for --preset]"),
    epochs: int = EPOCHS, lr: float = typer.Option(1e-4, help="Peak learning rate."), batch_size: int = BATCH_SIZE,
    max_length: int = MAX_LENGTH, seed: int = SEED,
    name: Optional[str] = NAME, latency_length: int = LATENCY_LENGTH, threads: int = THREADS,
):
    """Knowledge distillation (KL to the teacher's logits x T^2 + alpha x hard loss) into a smaller student."""
    from kerasllm.compression.pipeline import run_distill

    def go():
        chosen = None
        if layers:
            try:
                chosen = [int(v) for v in layers.split(",")]
            except ValueError:
                raise ValueError(f"--layers {layers!r}: write block indices separated by commas, such as 2,5") from None
        options = _options(model, out, train, dev, test, epochs, lr, batch_size, max_length, seed, name, latency_length, threads)
        options.augment, options.augment_mentions, options.augment_tokens = augment, augment_mentions, augment_tokens
        options.augment_names, options.augment_phase = augment_names, augment_phase
        return run_distill(options, every=every, layers=chosen, preset=preset, temperature=temperature, alpha=alpha,
                           hidden=hidden, hidden_weight=hidden_weight, hidden_map=hidden_map, replace_epochs=replace_epochs,
                           replace_start_rate=replace_start_rate, replace_lr=replace_lr,
                           replace_alpha=replace_alpha, keep_best=keep_best, average_last=average_last,
                           freeze_embeddings=freeze_embeddings)

    run_user_errors(go)


def lowrank(
    model: str = MODEL, out: str = OUT, train: Optional[str] = TRAIN, dev: Optional[str] = DEV, test: Optional[str] = TEST,
    param_fraction: Optional[float] = typer.Option(None, help="Keep this fraction of each FFN kernel's parameters (0.5 halves them). \\[default: 0.5 if no other criterion]"),
    energy: Optional[float] = typer.Option(None, help="Rank that keeps this fraction of the squared singular values. \\[default: none]"),
    rank: Optional[int] = typer.Option(None, help="A fixed rank for every FFN kernel. \\[default: none]"),
    epochs: int = typer.Option(1, help="Fine-tuning epochs after the factorisation (0: none)."),
    lr: float = LR, batch_size: int = BATCH_SIZE, max_length: int = MAX_LENGTH, seed: int = SEED,
    name: Optional[str] = NAME, latency_length: int = LATENCY_LENGTH, threads: int = THREADS,
):
    """Low-rank (truncated SVD) factorisation of the feed-forward kernels into two smaller layers, then a short fine-tune."""
    from kerasllm.compression.pipeline import run_lowrank

    options = _options(model, out, train, dev, test, epochs, lr, batch_size, max_length, seed, name, latency_length, threads)
    run_user_errors(lambda: run_lowrank(options, param_fraction=param_fraction, energy=energy, rank=rank))


def report(
    dirs: List[str] = typer.Argument(..., help="Output folders of `kerasllm compress` commands (or row JSON files), in table order."),
    out: str = typer.Option("compression_report", help="Prefix of the files written: PREFIX.md, PREFIX.json, PREFIX.png."),
    baseline: Optional[str] = typer.Option(None, help="Row name the Δ and size ratio compare with. \\[default: the float32 row, else the first]"),
    title: Optional[str] = typer.Option(None, help="Plot title. \\[default: metric against size]"),
):
    """Merge report rows into one markdown table, a JSON file and a PNG plot (F1 against gzip size, latency as labels)."""

    def go():
        from kerasllm.compression.report import markdown_table, read_rows, write_report

        rows = read_rows(dirs)
        paths = write_report(rows, out, baseline=baseline, title=title)
        console.print(markdown_table(rows, baseline), highlight=False, markup=False, soft_wrap=True)
        console.print("wrote " + ", ".join(os.path.abspath(p) for p in paths.values()), highlight=False, soft_wrap=True)

    run_user_errors(go)
