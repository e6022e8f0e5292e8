"""``kerasllm convert`` (checkpoint folders between formats) and ``kerasllm tokenize`` (inspect a vocabulary)."""
import os
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from ._common import console, run_user_errors

TARGETS = ("kerasllm", "hf")


def register(app):
    app.command("convert")(convert)
    app.command("tokenize")(tokenize)


# ------------------------------------------------------------------ convert
def convert(
    path: str = typer.Argument(..., help="A model folder: kerasllm, Hugging Face BERT/GPT-2, or Google BERT."),
    out: str = typer.Option(..., help="The folder to write (replaced if it exists)."),
    to: str = typer.Option("kerasllm", help=f"Output format: {', '.join(TARGETS)}."),
):
    """Convert a checkpoint folder to a kerasllm folder (default) or a Hugging Face folder, tokenizer included."""
    run_user_errors(_convert, path, out, to)


def _find_tokenizer(path):
    """The tokenizer stored beside a checkpoint: WordPiece (vocab.txt), BPE (vocab.json + merges.txt) or None."""
    if os.path.isfile(os.path.join(path, "vocab.txt")):
        from kerasllm.tokenizers import WordPieceTokenizer

        return WordPieceTokenizer.load(path)
    if os.path.isfile(os.path.join(path, "vocab.json")) and os.path.isfile(os.path.join(path, "merges.txt")):
        from kerasllm.tokenizers import BytePairTokenizer

        return BytePairTokenizer.from_folder(path)
    return None


def _convert(path, out, to):
    if to not in TARGETS:
        raise ValueError(f"--to {to!r}: unknown output format; choose {' or '.join(TARGETS)}")
    from kerasllm.checkpoints import detect_format, from_pretrained, save_hf
    from kerasllm.models import save_pretrained

    kind = detect_format(path)
    if os.path.abspath(path) == os.path.abspath(out):
        raise ValueError(f"--out {out} is the input folder; write the conversion somewhere else")
    model = from_pretrained(path)
    tokenizer = _find_tokenizer(path)
    config, task = model.kerasllm_config, model.kerasllm_task
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{config.vocab_size}; the vocabulary does not belong to this checkpoint"
        )
    console.print(
        f"loaded {path}: format {kind}, model type {config.model_type}, task {task['task']}"
        + (f" ({task['num_labels']} labels)" if task.get("num_labels") else "")
        + f", {model.count_params():,} parameters, vocab {config.vocab_size}",
        highlight=False, soft_wrap=True,
    )
    if tokenizer is not None:
        console.print(f"tokenizer: {type(tokenizer).__name__} with {tokenizer.vocab_size} tokens", highlight=False)
    else:
        console.print("tokenizer: none found (no vocab.txt, no vocab.json + merges.txt)", highlight=False)

    if to == "kerasllm":
        save_pretrained(model, out)
        if tokenizer is not None:
            tokenizer.save(out)
    else:  # WordPiece: vocab.txt; BPE: vocab.json + merges.txt; each with Transformers' tokenizer_config.json
        save_hf(model, out, tokenizer=tokenizer)
    console.print(f"wrote {to} folder {out}: {', '.join(sorted(os.listdir(out)))}", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------ tokenize
def tokenize(
    texts: List[str] = typer.Argument(..., help="Texts to tokenize."),
    vocab: str = typer.Option(..., help="A vocab.txt, or a folder with vocab.txt (WordPiece) or vocab.json + merges.txt (BPE)."),
    lowercase: Optional[bool] = typer.Option(
        None, "--lowercase/--no-lowercase",
        help="WordPiece only: lower-case and strip accents. \\[default: the folder's tokenizer_config.json, else lower-case]",
    ),
):
    """Table of tokens, ids, character offsets and word ids for each text."""
    run_user_errors(_tokenize, texts, vocab, lowercase)


def _load_for_tokenize(vocab, lowercase):
    from kerasllm.tokenizers import BytePairTokenizer, WordPieceTokenizer

    if not os.path.exists(vocab):
        raise FileNotFoundError(f"--vocab {vocab}: no such file or folder")
    extra = {} if lowercase is None else {"lowercase": lowercase}
    if os.path.isfile(vocab):
        if vocab.endswith(".json"):
            raise ValueError(f"--vocab {vocab}: pass the folder holding vocab.json and merges.txt")
        return WordPieceTokenizer(vocab, **extra)
    if os.path.isfile(os.path.join(vocab, "vocab.txt")):
        return WordPieceTokenizer.load(vocab, **extra)
    if os.path.isfile(os.path.join(vocab, "vocab.json")):
        if lowercase is not None:
            raise ValueError("--lowercase/--no-lowercase apply to WordPiece vocabularies only, not to BPE")
        return BytePairTokenizer.from_folder(vocab)
    raise FileNotFoundError(f"--vocab {vocab}: the folder has neither vocab.txt nor vocab.json + merges.txt")


def _tokenize(texts, vocab, lowercase):
    tokenizer = _load_for_tokenize(vocab, lowercase)
    console.print(f"{type(tokenizer).__name__} from {vocab} ({tokenizer.vocab_size} tokens)", highlight=False)
    for text in texts:
        enc = tokenizer.encode(text)
        table = Table(title=repr(text), title_justify="left")
        for column in ("#", "token", "id", "start", "end", "text", "word"):
            table.add_column(column, justify="right" if column in ("#", "id", "start", "end", "word") else "left", no_wrap=True)
        for i, (token, id_, (start, end), word) in enumerate(zip(enc.tokens, enc.input_ids, enc.offsets, enc.word_ids)):
            cells = (str(i), token, str(id_), str(start), str(end),
                     repr(text[start:end]) if end > start else "", "-" if word is None else str(word))
            table.add_row(*(Text(c) for c in cells))  # Text: "[CLS]"-like tokens are not rich markup
        console.print(table, highlight=False)
