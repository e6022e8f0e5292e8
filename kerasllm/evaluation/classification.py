"""Text-classification scores: accuracy, per-class precision / recall / F1, macro-F1 (NumPy)."""
import numpy as np


def _ratio(numerator, denominator):
    """Element-wise ``numerator / denominator`` with 0.0 where the denominator is 0."""
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def classification_scores(gold, predicted, labels=None):
    """Accuracy, per-class precision / recall / F1 and their macro and weighted averages.

    Args:
        gold: the gold label of every example (strings or anything hashable).
        predicted: the predicted label of every example, same length.
        labels: the classes in report order (e.g. a model's label list);
            default: every label seen in ``gold`` or ``predicted``, sorted. Gold
            or predicted labels outside ``labels`` raise ``ValueError``.

    Returns:
        A dict with ``accuracy``, ``macro_precision``, ``macro_recall``,
        ``macro_f1``, ``weighted_f1`` (per-class F1 weighted by support),
        ``num_examples``, ``num_correct``, ``labels``, ``confusion``
        (``confusion[i][j]``: examples of gold class ``labels[i]`` predicted as
        ``labels[j]``) and ``per_class``:
        ``{label: {"precision", "recall", "f1", "support", "predicted", "correct"}}``.
        A quotient with a zero denominator is 0.0 (as scikit-learn's
        ``zero_division=0``). Macro averages run over the classes that occur
        in ``gold`` or ``predicted`` (classes of ``labels`` seen in neither are
        listed with support 0 but do not pull the average down), as
        scikit-learn does without ``labels=``.

    Raises:
        ValueError: if the lists differ in length or a label is not in ``labels``.

    Example:
        >>> s = classification_scores(["a", "a", "b", "c"], ["a", "b", "b", "c"])
        >>> s["accuracy"], round(s["macro_f1"], 4), s["per_class"]["a"]["recall"]
        (0.75, 0.7778, 0.5)
    """
    gold, predicted = list(gold), list(predicted)
    if len(gold) != len(predicted):
        raise ValueError(f"classification_scores: {len(gold)} gold labels but {len(predicted)} predicted")
    if labels is None:
        labels = sorted(set(gold) | set(predicted), key=str)
    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    for name, values in (("gold", gold), ("predicted", predicted)):
        unknown = sorted({str(v) for v in values if v not in index})
        if unknown:
            raise ValueError(f"classification_scores: {name} label(s) {unknown} are not among the labels {labels}")
    k = len(labels)
    confusion = np.zeros((k, k), np.int64)
    if gold:
        np.add.at(confusion, ([index[g] for g in gold], [index[p] for p in predicted]), 1)
    correct = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted_counts = confusion.sum(axis=0)
    precision = _ratio(correct, predicted_counts)
    recall = _ratio(correct, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    seen = (support + predicted_counts) > 0
    n = len(gold)

    def mean(values):
        return float(values[seen].mean()) if seen.any() else 0.0

    return {
        "accuracy": float(correct.sum() / n) if n else 0.0,
        "macro_precision": mean(precision),
        "macro_recall": mean(recall),
        "macro_f1": mean(f1),
        "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
        "num_examples": n,
        "num_correct": int(correct.sum()),
        "labels": [str(label) for label in labels],
        "confusion": confusion.tolist(),
        "per_class": {
            str(label): {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "predicted": int(predicted_counts[i]),
                "correct": int(correct[i]),
            }
            for i, label in enumerate(labels)
        },
    }


def format_classification_report(scores, digits=4):
    """Format :func:`classification_scores` output as a fixed-width table.

    One row per class, then the macro and support-weighted averages (over the
    classes that occur, as in :func:`classification_scores`), then accuracy.

    Example:
        >>> s = classification_scores(["pos", "neg"], ["pos", "pos"])
        >>> print(format_classification_report(s, digits=2))  # doctest: +NORMALIZE_WHITESPACE
                      precision    recall  f1-score   support
        <BLANKLINE>
                 neg       0.00      0.00      0.00         1
                 pos       0.50      1.00      0.67         1
        <BLANKLINE>
           macro avg       0.25      0.50      0.33         2
        weighted avg       0.25      0.50      0.33         2
        <BLANKLINE>
        accuracy 0.50 (1 of 2 examples)
    """
    per_class = scores["per_class"]
    averages = ["macro avg", "weighted avg"]
    width = max([len(name) for name in per_class] + [len(a) for a in averages])
    row = "{:>{w}}  {:>9.{d}f} {:>9.{d}f} {:>9.{d}f} {:>9}"
    lines = [f"{'':>{width}}  {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
    for name, s in per_class.items():
        lines.append(row.format(name, s["precision"], s["recall"], s["f1"], s["support"], w=width, d=digits))
    n = scores["num_examples"]
    seen = [s for s in per_class.values() if s["support"] or s["predicted"]]
    weighted = [sum(s[k] * s["support"] for s in seen) / n if n else 0.0 for k in ("precision", "recall", "f1")]
    macro = [scores["macro_precision"], scores["macro_recall"], scores["macro_f1"]]
    lines.append("")
    for name, values in zip(averages, (macro, weighted)):
        lines.append(row.format(name, *values, n, w=width, d=digits))
    lines.append("")
    lines.append(f"accuracy {scores['accuracy']:.{digits}f} ({scores['num_correct']} of {n} examples)")
    return "\n".join(lines)
