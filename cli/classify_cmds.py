"""``kerasllm predict classify`` and ``kerasllm evaluate classify`` on a fine-tuned model folder."""
import json
from typing import List, Optional

import typer
from rich.table import Table

from ._common import capped_max_length, console, read_texts, report_scores, require_file, run_user_errors

MODEL_HELP = "A fine-tuned classification folder (OUT/model from `kerasllm finetune classify`)."


def register(predict_app, evaluate_app):
    predict_app.command("classify")(predict_classify)
    evaluate_app.command("classify")(evaluate_classify)


def predict_classify(
    texts: Optional[List[str]] = typer.Argument(
        None, help="Texts to classify (or use --input). For a text-pair model each is 'first<TAB>second'."
    ),
    model: str = typer.Option(..., help=MODEL_HELP),
    input: Optional[str] = typer.Option(  # noqa: A002
        None, "--input", help="A UTF-8 file with one text per line (pair models: first<TAB>second). \\[default: none]"
    ),
    format: str = typer.Option("table", "--format", help="Output: table (readable) or jsonl (one JSON object per text)."),  # noqa: A002
    max_length: int = typer.Option(128, help="Sub-words per input (capped at the model's max_position); longer inputs are truncated."),
    batch_size: int = typer.Option(32, help="Texts per batch."),
):
    """The predicted label of each text, with its probability and every class's probability."""
    run_user_errors(_predict, texts or [], model, input, format, max_length, batch_size)


def _split_pairs(texts):
    firsts, seconds = [], []
    for number, text in enumerate(texts, start=1):
        if "\t" not in text:
            raise ValueError(
                f"text {number} ({text[:40]!r}) has no TAB: this model classifies text pairs; give each as 'first<TAB>second'"
            )
        first, second = text.split("\t", 1)
        firsts.append(first)
        seconds.append(second)
    return firsts, seconds


def _predict(texts, model_dir, input_path, fmt, max_length, batch_size):
    texts = read_texts(texts, input_path, fmt, verb="classify")
    from kerasllm.training.classify_finetune import load_classify_folder, predict_labels

    model, tokenizer, label_map = load_classify_folder(model_dir)
    pairs = None
    if model.kerasllm_task.get("text_pair_column"):
        texts, pairs = _split_pairs(texts)
    results = predict_labels(
        model, tokenizer, label_map, texts, pairs, capped_max_length(model, max_length), batch_size
    )
    if fmt == "jsonl":
        for i, (text, result) in enumerate(zip(texts, results)):
            record = {"text": text, **({"text_pair": pairs[i]} if pairs else {}), **result}
            typer.echo(json.dumps(record, ensure_ascii=False))
        return results
    table = Table(title=f"predictions ({len(texts)} texts)")
    for column in ("#", "label", "score", "text"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for i, (text, result) in enumerate(zip(texts, results)):
        shown = text if pairs is None else f"{text} | {pairs[i]}"
        table.add_row(str(i), result["label"], f"{result['score']:.3f}", shown)
    console.print(table)
    return results


def evaluate_classify(
    model: str = typer.Option(..., help=MODEL_HELP),
    test: str = typer.Option(..., help="Labelled .csv, .tsv (with a header row) or .jsonl file."),
    text_column: Optional[str] = typer.Option(None, help="Column of the text. \\[default: the model's]"),
    label_column: Optional[str] = typer.Option(None, help="Column of the label. \\[default: the model's]"),
    text_pair_column: Optional[str] = typer.Option(
        None, help="Column of the second text (pair models). \\[default: the model's]"
    ),
    out: Optional[str] = typer.Option(None, help="Also write the scores to this JSON file. \\[default: none]"),
    max_length: int = typer.Option(128, help="Sub-words per input (capped at the model's max_position)."),
    batch_size: int = typer.Option(32, help="Texts per batch."),
):
    """Accuracy, macro-F1 and per-class precision / recall / F1 of a fine-tuned classifier."""
    run_user_errors(_evaluate, model, test, text_column, label_column, text_pair_column, out, max_length, batch_size)


def _evaluate(model_dir, test, text_column, label_column, text_pair_column, out, max_length, batch_size):
    require_file(test, "--test")
    from kerasllm.data import read_classification
    from kerasllm.evaluation import format_classification_report
    from kerasllm.training.classify_finetune import encode_examples, evaluate_encoded, load_classify_folder, score_line

    model, tokenizer, label_map = load_classify_folder(model_dir)
    info = model.kerasllm_task
    examples, _ = read_classification(
        test,
        text_column or info.get("text_column", "text"),
        label_column or info.get("label_column", "label"),
        text_pair_column or info.get("text_pair_column"),
    )
    # unknown labels end here in one error naming the file and line
    encoded = encode_examples(examples, tokenizer, label_map, capped_max_length(model, max_length))
    scores = evaluate_encoded(model, encoded, label_map, batch_size)
    report_scores(
        f"{test}: {len(examples)} examples",
        format_classification_report(scores),
        score_line(scores),
        out,
        {"model": model_dir, "test": test, **scores},
    )
    return scores
