"""Entity-level NER scores, compatible with conlleval and seqeval's default mode.

An entity (a "chunk") is a maximal run of tokens of one type. Where it starts
and ends follows the rules of the CoNLL shared-task script ``conlleval``:

* ``B-X`` and ``S-X`` always start a new entity;
* ``I-X`` or ``E-X`` continue an entity of type ``X`` that is still open, and
  start a new one after ``O``, after a different type, or after an entity that
  was closed by ``E-``/``S-``;
* an entity ends before ``O``, before ``B-``/``S-``, before a change of type,
  and after ``E-``/``S-``.

So the BIO sequence ``O I-PER I-PER`` holds one person (conlleval's reading),
and IOB1 and BIOES sequences are read correctly too. BILOU's ``L-``/``U-`` are
read as ``E-``/``S-``.

Precision, recall and F1 are micro-averaged over entities: an entity counts as
correct only if its type, start and end all match a gold entity.
"""
import dataclasses

PREFIX_ALIASES = {"L": "E", "U": "S"}
_PREFIXES = ("B", "I", "E", "S", "L", "U")


def split_tag(tag):
    """Split a tag into ``(prefix, type)``: ``"B-PER"`` -> ``("B", "PER")``, ``"O"`` -> ``("O", "")``.

    The type is everything after the first ``-``, so ``"I-creative-work"`` has
    type ``"creative-work"``. ``L``/``U`` prefixes are returned as ``E``/``S``.

    Args:
        tag: one tag string.

    Raises:
        ValueError: if the tag is neither ``"O"`` nor ``<prefix>-<type>`` with a
            prefix among B, I, E, S, L, U and a non-empty type.

    Example:
        >>> split_tag("B-creative-work")
        ('B', 'creative-work')
    """
    if tag == "O":
        return "O", ""
    if not isinstance(tag, str) or len(tag) < 3 or tag[1] != "-" or tag[0] not in _PREFIXES:
        raise ValueError(
            f"invalid tag {tag!r}: expected 'O' or '<prefix>-<type>' with prefix one of "
            f"B, I, E, S (or BILOU's L, U), e.g. 'B-PER'"
        )
    return PREFIX_ALIASES.get(tag[0], tag[0]), tag[2:]


def _ends_chunk(prev_prefix, prev_type, prefix, type_):
    """True if the entity open at the previous token ends before this token."""
    if prev_prefix == "O":
        return False
    if prev_prefix in ("E", "S"):
        return True
    if prefix in ("B", "S", "O"):
        return True
    return prev_type != type_


def _starts_chunk(prev_prefix, prev_type, prefix, type_):
    """True if this token starts a new entity."""
    if prefix == "O":
        return False
    if prefix in ("B", "S"):
        return True
    # I- or E-: a continuation only of an open entity of the same type.
    if prev_prefix in ("O", "E", "S"):
        return True
    return prev_type != type_


def extract_entities(tags):
    """Return the entities of one tag sequence as ``(type, start, end_exclusive)``.

    Args:
        tags: a list of tags (BIO, IOB1, BIOES or BILOU prefixes) for one sentence.

    Returns:
        A list of ``(type, start, end)`` tuples in order of ``start``; tokens
        ``start .. end - 1`` belong to the entity.

    Raises:
        ValueError: naming the position of the first invalid tag.

    Example:
        >>> extract_entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"])
        [('PER', 0, 2), ('LOC', 3, 4), ('LOC', 4, 5)]
    """
    entities = []
    prev_prefix, prev_type, start = "O", "", 0
    for i, tag in enumerate(list(tags) + ["O"]):
        try:
            prefix, type_ = split_tag(tag)
        except ValueError as err:
            raise ValueError(f"tag {i} of the sequence: {err}") from None
        if _ends_chunk(prev_prefix, prev_type, prefix, type_):
            entities.append((prev_type, start, i))
        if _starts_chunk(prev_prefix, prev_type, prefix, type_):
            start = i
        prev_prefix, prev_type = prefix, type_
    return entities


@dataclasses.dataclass
class _Counts:
    gold: int = 0
    predicted: int = 0
    correct: int = 0


def _prf(counts):
    precision = counts.correct / counts.predicted if counts.predicted else 0.0
    recall = counts.correct / counts.gold if counts.gold else 0.0
    denom = precision + recall
    f1 = 2 * precision * recall / denom if denom else 0.0
    return precision, recall, f1


def ner_scores(gold_sequences, pred_sequences):
    """Entity-level precision, recall and F1 (micro-averaged) plus token accuracy.

    Args:
        gold_sequences: list of gold tag lists, one per sentence.
        pred_sequences: list of predicted tag lists, same shape as ``gold_sequences``.

    Returns:
        A dict with ``precision``, ``recall``, ``f1`` (over all entities),
        ``accuracy`` (fraction of tokens whose tag is exactly right),
        the counts ``num_gold``, ``num_predicted``, ``num_correct``,
        ``num_tokens``, ``num_sentences``, and ``per_type``:
        ``{type: {"precision", "recall", "f1", "support", "predicted", "correct"}}``
        where ``support`` is the number of gold entities of that type. Types
        that occur only in the predictions are listed too (support 0). A
        quotient with a zero denominator is 0.0, as in conlleval and seqeval.

    Raises:
        ValueError: if the two lists differ in length, a sentence's gold and
            predicted lengths differ, or a tag is invalid (naming the sentence).

    Example:
        >>> s = ner_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
        >>> s["f1"], s["accuracy"]
        (0.0, 0.6666666666666666)
    """
    gold_sequences = list(gold_sequences)
    pred_sequences = list(pred_sequences)
    if len(gold_sequences) != len(pred_sequences):
        raise ValueError(
            f"ner_scores: {len(gold_sequences)} gold sentences but {len(pred_sequences)} predicted"
        )
    total = _Counts()
    per_type = {}
    tokens = same = 0
    for index, (gold, pred) in enumerate(zip(gold_sequences, pred_sequences)):
        gold, pred = list(gold), list(pred)
        if len(gold) != len(pred):
            raise ValueError(
                f"ner_scores: sentence {index} has {len(gold)} gold tags but {len(pred)} predicted tags"
            )
        try:
            gold_entities = set(extract_entities(gold))
        except ValueError as err:
            raise ValueError(f"ner_scores: gold sentence {index}, {err}") from None
        try:
            pred_entities = set(extract_entities(pred))
        except ValueError as err:
            raise ValueError(f"ner_scores: predicted sentence {index}, {err}") from None
        tokens += len(gold)
        same += sum(g == p for g, p in zip(gold, pred))
        for entity in gold_entities:
            per_type.setdefault(entity[0], _Counts()).gold += 1
        for entity in pred_entities:
            per_type.setdefault(entity[0], _Counts()).predicted += 1
        for entity in gold_entities & pred_entities:
            per_type[entity[0]].correct += 1
        total.gold += len(gold_entities)
        total.predicted += len(pred_entities)
        total.correct += len(gold_entities & pred_entities)
    precision, recall, f1 = _prf(total)
    type_scores = {}
    for name in sorted(per_type):
        counts = per_type[name]
        p, r, f = _prf(counts)
        type_scores[name] = {
            "precision": p,
            "recall": r,
            "f1": f,
            "support": counts.gold,
            "predicted": counts.predicted,
            "correct": counts.correct,
        }
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": same / tokens if tokens else 0.0,
        "num_gold": total.gold,
        "num_predicted": total.predicted,
        "num_correct": total.correct,
        "num_tokens": tokens,
        "num_sentences": len(gold_sequences),
        "per_type": type_scores,
    }


def format_report(scores, digits=4):
    """Format :func:`ner_scores` output as a fixed-width table.

    One row per entity type, then micro, macro and support-weighted averages,
    in the layout of seqeval's ``classification_report``, followed by a line
    with token accuracy and entity counts.

    Args:
        scores: the dict returned by :func:`ner_scores`.
        digits: decimals shown for precision, recall and F1.

    Returns:
        The report as one string (no trailing newline).

    Example:
        >>> s = ner_scores([["B-PER", "O"]], [["B-PER", "O"]])
        >>> print(format_report(s, digits=2))  # doctest: +NORMALIZE_WHITESPACE
                      precision    recall  f1-score   support
        <BLANKLINE>
                 PER       1.00      1.00      1.00         1
        <BLANKLINE>
           micro avg       1.00      1.00      1.00         1
           macro avg       1.00      1.00      1.00         1
        weighted avg       1.00      1.00      1.00         1
        <BLANKLINE>
        accuracy 1.00 (tokens 2, gold entities 1, predicted 1, correct 1)
    """
    per_type = scores["per_type"]
    averages = ["micro avg", "macro avg", "weighted avg"]
    width = max([len(name) for name in per_type] + [len(a) for a in averages])
    header = f"{'':>{width}}  {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    row = "{:>{w}}  {:>9.{d}f} {:>9.{d}f} {:>9.{d}f} {:>9}"
    lines = [header, ""]
    for name, s in per_type.items():
        lines.append(row.format(name, s["precision"], s["recall"], s["f1"], s["support"], w=width, d=digits))
    lines.append("")
    support = sum(s["support"] for s in per_type.values())
    n = len(per_type)
    macro = [sum(s[k] for s in per_type.values()) / n if n else 0.0 for k in ("precision", "recall", "f1")]
    weighted = [
        sum(s[k] * s["support"] for s in per_type.values()) / support if support else 0.0
        for k in ("precision", "recall", "f1")
    ]
    micro = [scores["precision"], scores["recall"], scores["f1"]]
    for name, values in zip(averages, (micro, macro, weighted)):
        lines.append(row.format(name, *values, support, w=width, d=digits))
    lines.append("")
    lines.append(
        f"accuracy {scores['accuracy']:.{digits}f} (tokens {scores['num_tokens']}, "
        f"gold entities {scores['num_gold']}, predicted {scores['num_predicted']}, "
        f"correct {scores['num_correct']})"
    )
    return "\n".join(lines)
