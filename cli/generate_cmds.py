"""``kerasllm generate``: continue a prompt with a GPT (or encoder-decoder) model, streaming the text."""
import os
import sys
import time
from typing import List, Optional

import typer
from rich.console import Console

from ._common import run_user_errors

EARLY_STOPPING = {"false": False, "true": True, "never": "never"}


def register(app):
    app.command("generate")(generate)


def generate(
    model: str = typer.Option(..., help="Model folder (kerasllm or Hugging Face GPT-2) holding its tokenizer: vocab.json + merges.txt (or vocab.txt)."),
    prompt: List[str] = typer.Option(..., help="Prompt text; repeat the option for a batch (one prompt is streamed as it is generated)."),
    max_new_tokens: int = typer.Option(50, help="Tokens to generate after the prompt."),
    decoding: str = typer.Option("greedy", help="greedy, sample or beam."),
    temperature: Optional[float] = typer.Option(None, help="sample: divide the logits by this. \\[default: 1.0]"),
    top_k: Optional[int] = typer.Option(None, help="sample: keep the k most likely tokens (0 = all). \\[default: 50]"),
    top_p: Optional[float] = typer.Option(None, help="sample: keep the most likely tokens up to this probability. \\[default: 1.0]"),
    seed: Optional[int] = typer.Option(None, help="sample: random seed (same seed, same text). \\[default: random]"),
    num_beams: Optional[int] = typer.Option(None, help="beam: number of beams. \\[default: 4]"),
    length_penalty: float = typer.Option(1.0, help="beam: finished beams score sum(log p) / length ** this."),
    early_stopping: str = typer.Option("false", help="beam: true, false (Hugging Face's heuristic) or never."),
    repetition_penalty: float = typer.Option(1.0, help="Penalise tokens already in the text (> 1 discourages repeats)."),
    stop: List[str] = typer.Option([], help="Extra stop token (a token of the vocabulary, e.g. a newline); repeatable. The tokenizer's end-of-text token always stops."),
    truncate: bool = typer.Option(False, help="Drop the start of a prompt that does not fit the context window with --max-new-tokens, instead of failing."),
    echo: bool = typer.Option(True, help="Print the prompt before the generated text."),
    xla: bool = typer.Option(True, help="Compile the decoding loop with XLA (faster per token, a few seconds to compile)."),
):
    """Generate text from a prompt; the tokens are printed as they are produced."""
    run_user_errors(
        _generate, model, prompt, max_new_tokens=max_new_tokens, decoding=decoding, temperature=temperature,
        top_k=top_k, top_p=top_p, seed=seed, num_beams=num_beams, length_penalty=length_penalty,
        early_stopping=early_stopping, repetition_penalty=repetition_penalty, stop=stop, truncate=truncate, echo=echo,
        xla=xla,
    )


def _load(folder):
    from kerasllm.checkpoints import from_pretrained

    from .convert_cmds import _find_tokenizer

    if not os.path.exists(folder):
        raise FileNotFoundError(f"--model {folder}: no such folder")
    model = from_pretrained(folder)
    task = model.kerasllm_task.get("task")
    if task not in ("causal_lm", "seq2seq_lm"):
        raise ValueError(
            f"--model {folder} is a {task} model; generate needs a causal LM (GPT) or an encoder-decoder"
        )
    tokenizer = _find_tokenizer(folder)
    if tokenizer is None:
        raise FileNotFoundError(
            f"--model {folder} has no tokenizer: put vocab.json + merges.txt (GPT-2 BPE) or vocab.txt beside the "
            "model (kerasllm convert copies them from a Hugging Face folder)"
        )
    if tokenizer.vocab_size > model.kerasllm_config.vocab_size:
        raise ValueError(
            f"--model {folder}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
            f"{model.kerasllm_config.vocab_size}; the vocabulary does not belong to this model"
        )
    return model, tokenizer


def _stop_ids(tokenizer, stop):
    ids = [] if getattr(tokenizer, "eos_id", None) is None else [tokenizer.eos_id]
    for text in stop:
        encoded = tokenizer.encode(text).input_ids
        if len(encoded) != 1:
            raise ValueError(f"--stop {text!r} is {len(encoded)} tokens {encoded}; a stop token must be exactly one token")
        ids.append(encoded[0])
    return ids


def _generate(folder, prompts, *, early_stopping, stop, echo, xla, **options):
    from kerasllm.generation import GenerationConfig, TextStreamer, generate

    if early_stopping.lower() not in EARLY_STOPPING:
        raise ValueError(f"--early-stopping {early_stopping!r}: choose true, false or never")
    # Validate the options before the (slow) model load.
    config = GenerationConfig(early_stopping=EARLY_STOPPING[early_stopping.lower()], jit_compile=xla, **options)
    for i, text in enumerate(prompts):
        if not text:
            raise ValueError(
                f"--prompt {i + 1} is empty; give some text to continue (GPT-2 models can start from '<|endoftext|>')"
            )
    model, tokenizer = _load(folder)
    config = config.replace(eos_token_id=_stop_ids(tokenizer, stop) or None)
    info = Console(stderr=True)
    start = time.perf_counter()
    if len(prompts) == 1 and config.decoding != "beam":
        pending = [prompts[0] if echo else ""]  # the prompt is echoed with the first new text, once it is valid

        def write(text):
            sys.stdout.write(pending.pop() + text if pending else text)
            sys.stdout.flush()

        out = generate(model, prompts[0], config, tokenizer=tokenizer,
                       streamer=TextStreamer(tokenizer, write=write))
        write("\n")
    else:
        out = generate(model, list(prompts), config, tokenizer=tokenizer)
        for text, new in zip(prompts, out.texts):
            sys.stdout.write((text if echo else "") + new + "\n")
    sys.stdout.flush()
    seconds = time.perf_counter() - start
    count = sum(len(t) for t in out.tokens)
    info.print(
        f"{count} new tokens in {seconds:.1f} s ({count / seconds:.1f} tokens/s, compilation included), "
        f"decoding={config.decoding}",
        style="dim", highlight=False,
    )
