"""``kerasllm vocab wordpiece|bpe``: learn a tokenizer vocabulary from a text corpus."""
import os
import time

import typer

from ._common import console, run_user_errors

CORPUS_HELP = "Text files: a path, a glob such as 'data/*.txt' (quote it), or a comma list."
OUT_HELP = "Folder to write the tokenizer files into (created if needed)."
DOCUMENTS_HELP = "How files split into documents: blank-line, file (one per file) or line."
VALIDATION_HELP = (
    "Leave out every k-th document, the ones `kerasllm pretrain` holds out with the same value, so held-out "
    "scores use text the vocabulary never saw (0: learn from every document)."
)


def register(app):
    vocab_app = typer.Typer(help="Learn a tokenizer vocabulary from a text corpus.", no_args_is_help=True)
    vocab_app.command("wordpiece")(vocab_wordpiece)
    vocab_app.command("bpe")(vocab_bpe)
    app.add_typer(vocab_app, name="vocab")


def vocab_wordpiece(
    corpus: str = typer.Option(..., help=CORPUS_HELP),
    out: str = typer.Option(..., help=OUT_HELP),
    size: int = typer.Option(8000, help="Vocabulary size, the special tokens [PAD] [UNK] [CLS] [SEP] [MASK] included."),
    lowercase: bool = typer.Option(False, help="Lower-case the text (and strip accents): an uncased vocabulary."),
    documents: str = typer.Option("blank-line", help=DOCUMENTS_HELP),
    validation_every: int = typer.Option(10, help=VALIDATION_HELP),
):
    """Learn a WordPiece vocabulary (TF Text's learner): writes vocab.txt + tokenizer_config.json (for pretrain mlm)."""
    run_user_errors(_vocab, "wordpiece", corpus, out, size, lowercase, documents, validation_every)


def vocab_bpe(
    corpus: str = typer.Option(..., help=CORPUS_HELP),
    out: str = typer.Option(..., help=OUT_HELP),
    size: int = typer.Option(8000, help="Vocabulary size, the 256 byte tokens and <|endoftext|> included."),
    lowercase: bool = typer.Option(False, help="Not available for byte-level BPE (it keeps the text as is)."),
    documents: str = typer.Option("blank-line", help=DOCUMENTS_HELP),
    validation_every: int = typer.Option(10, help=VALIDATION_HELP),
):
    """Learn a GPT-2 byte-level BPE vocabulary: writes vocab.json + merges.txt + tokenizer_config.json (for pretrain clm)."""
    run_user_errors(_vocab, "bpe", corpus, out, size, lowercase, documents, validation_every)


def _vocab(kind, corpus, out, size, lowercase, documents, validation_every):
    if kind == "bpe" and lowercase:
        raise ValueError("--lowercase applies to wordpiece vocabularies only; byte-level BPE keeps the text as is")
    if size < 1:
        raise ValueError(f"--size must be >= 1, got {size}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file; give a folder")
    from kerasllm.data.corpus import TextCorpus
    from kerasllm.tokenizers import WordPieceTokenizer, train_bpe_vocab, train_wordpiece_vocab

    text = TextCorpus(corpus, documents=documents, validation_every=validation_every)
    if not any(True for _ in text.documents("all").take(1)):
        raise ValueError(f"--corpus {corpus}: no text in {len(text.files)} file(s) (empty or blank)")
    console.print(
        f"learning a {kind} vocabulary of {size} tokens from {corpus} ({text.describe()}; "
        f"{'held-out documents left out' if validation_every else 'every document'}) ...",
        highlight=False, soft_wrap=True,
    )
    started = time.time()
    documents_seen = text.documents("train")
    if kind == "wordpiece":
        vocab = train_wordpiece_vocab(documents_seen, size, lowercase=lowercase)
        tokenizer = WordPieceTokenizer(vocab, lowercase=lowercase)
    else:
        tokenizer = train_bpe_vocab(documents_seen, size)
    tokenizer.save(out)
    files = "vocab.txt" if kind == "wordpiece" else "vocab.json + merges.txt"
    console.print(
        f"wrote {files} (+ tokenizer_config.json) to {out}: {tokenizer.vocab_size} tokens in {time.time() - started:.1f} s",
        highlight=False, soft_wrap=True,
    )
