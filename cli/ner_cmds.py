"""``kerasllm predict ner`` and ``kerasllm evaluate ner`` on a fine-tuned model folder."""
import json
from typing import List, Optional

import typer
from rich.table import Table

from ._common import capped_max_length, console, read_texts, report_scores, require_file, run_user_errors


def register(predict_app, evaluate_app):
    predict_app.command("ner")(predict_ner)
    evaluate_app.command("ner")(evaluate_ner)


def predict_ner(
    texts: Optional[List[str]] = typer.Argument(None, help="Texts to tag (or use --input)."),
    model: str = typer.Option(..., help="A fine-tuned NER model folder (OUT/model from `kerasllm finetune ner`)."),
    input: Optional[str] = typer.Option(None, "--input", help="A UTF-8 file with one text per line. \\[default: none]"),  # noqa: A002
    format: str = typer.Option("table", "--format", help="Output: table (readable) or jsonl (one JSON object per text)."),  # noqa: A002
    max_length: int = typer.Option(128, help="Sub-words per window (capped at the model's max_position); longer texts are windowed as in training."),
    batch_size: int = typer.Option(32, help="Windows per batch."),
):
    """Entity spans in raw text: character start/end, type, text and score (mean label probability)."""
    run_user_errors(_predict, texts or [], model, input, format, max_length, batch_size)


def _predict(texts, model_dir, input_path, fmt, max_length, batch_size):
    texts = read_texts(texts, input_path, fmt, verb="tag")
    from kerasllm.training.ner_finetune import load_ner_folder, predict_entities

    model, tokenizer, label_map = load_ner_folder(model_dir)
    results = predict_entities(model, tokenizer, label_map, texts, capped_max_length(model, max_length), batch_size=batch_size)
    if fmt == "jsonl":
        for text, entities in zip(texts, results):
            typer.echo(json.dumps({"text": text, "entities": entities}, ensure_ascii=False))
        return results
    table = Table(title=f"entities ({sum(map(len, results))} in {len(texts)} texts)")
    for column in ("#", "start", "end", "type", "text", "score"):
        table.add_column(column, justify="right" if column in ("#", "start", "end", "score") else "left")
    for index, entities in enumerate(results):
        for e in entities:
            table.add_row(str(index), str(e["start"]), str(e["end"]), e["type"], e["text"], f"{e['score']:.3f}")
    console.print(table)
    return results


def evaluate_ner(
    model: str = typer.Option(..., help="A fine-tuned NER model folder (OUT/model from `kerasllm finetune ner`)."),
    test: str = typer.Option(..., help="Labelled CoNLL file (BIO, IOB1 or BIOES; scored as BIO)."),
    out: Optional[str] = typer.Option(None, help="Also write the scores to this JSON file. \\[default: none]"),
    max_length: int = typer.Option(128, help="Sub-words per window (capped at the model's max_position)."),
    batch_size: int = typer.Option(32, help="Windows per batch."),
):
    """Entity-level precision, recall and F1 (conlleval rules), overall and per type."""
    run_user_errors(_evaluate, model, test, out, max_length, batch_size)


def _evaluate(model_dir, test, out, max_length, batch_size):
    require_file(test, "--test")
    from kerasllm.data import read_conll
    from kerasllm.data.ner_dataset import encode_sentences
    from kerasllm.evaluation import format_report
    from kerasllm.training.ner_finetune import evaluate_windows, load_ner_folder

    sentences = read_conll(test)
    model, tokenizer, label_map = load_ner_folder(model_dir)
    # encoding with the label map checks every gold tag against the model's labels (file and line named)
    windows = encode_sentences(sentences, tokenizer, label_map, capped_max_length(model, max_length), path=test)
    scores = evaluate_windows(model, sentences, windows, label_map, batch_size)
    report_scores(
        f"{test}: {len(sentences)} sentences, {scores['num_tokens']} tokens",
        format_report(scores),
        f"entity F1: {scores['f1'] * 100:.2f}",
        out,
        {"model": model_dir, "test": test, **scores},
    )
    return scores
