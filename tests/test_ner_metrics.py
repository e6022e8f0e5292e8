"""Entity-level NER metric: hand-worked answers and agreement with seqeval (the reference)."""
import random
import warnings

import pytest

from kerasllm.evaluation import extract_entities, format_report, ner_scores

seqeval_metrics = pytest.importorskip("seqeval.metrics", reason="seqeval (the reference implementation) is not installed")
from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support  # noqa: E402


def test_extract_entities_conlleval_rules():
    assert extract_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    # I- after O starts an entity; I- of another type starts a new one.
    assert extract_entities(["O", "I-PER", "I-PER", "I-LOC"]) == [("PER", 1, 3), ("LOC", 3, 4)]
    # B- always starts a new entity, even after the same type.
    assert extract_entities(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 1), ("PER", 1, 3)]
    # Entity at the very end, and a multi-dash type.
    assert extract_entities(["O", "B-creative-work", "I-creative-work"]) == [("creative-work", 1, 3)]
    # BIOES: E- closes, S- is a single token, I- after E- starts again.
    assert extract_entities(["B-X", "E-X", "S-X", "I-X", "E-X"]) == [("X", 0, 2), ("X", 2, 3), ("X", 3, 5)]
    assert extract_entities([]) == []
    with pytest.raises(ValueError, match="tag 1 of the sequence: invalid tag 'PER'"):
        extract_entities(["O", "PER"])


def test_ner_scores_hand_worked():
    gold = [
        ["B-PER", "I-PER", "O", "B-LOC", "O"],  # PER(0,2) LOC(3,4)
        ["B-ORG", "I-ORG", "I-ORG", "O", "B-MISC"],  # ORG(0,3) MISC(4,5)
    ]
    pred = [
        ["B-PER", "I-PER", "O", "B-ORG", "O"],  # PER(0,2) right, ORG(3,4) wrong type
        ["B-ORG", "I-ORG", "O", "O", "B-MISC"],  # ORG(0,2) wrong end, MISC(4,5) right
    ]
    s = ner_scores(gold, pred)
    # 4 gold, 4 predicted, 2 correct: P = 2/4 = 0.5, R = 2/4 = 0.5, F1 = 2*.5*.5/(.5+.5) = 0.5
    assert (s["num_gold"], s["num_predicted"], s["num_correct"]) == (4, 4, 2)
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5
    # Tokens: sentence 1 differs at position 3, sentence 2 at position 2 -> 8/10 = 0.8
    assert s["accuracy"] == 0.8 and s["num_tokens"] == 10 and s["num_sentences"] == 2
    pt = s["per_type"]
    assert list(pt) == ["LOC", "MISC", "ORG", "PER"]
    # PER: 1 gold, 1 predicted, 1 correct -> 1, 1, 1
    assert (pt["PER"]["precision"], pt["PER"]["recall"], pt["PER"]["f1"], pt["PER"]["support"]) == (1.0, 1.0, 1.0, 1)
    # LOC: 1 gold, 0 predicted -> P = 0 (0/0 taken as 0), R = 0/1 = 0, F1 = 0
    assert (pt["LOC"]["precision"], pt["LOC"]["recall"], pt["LOC"]["f1"], pt["LOC"]["support"]) == (0.0, 0.0, 0.0, 1)
    # ORG: 1 gold, 2 predicted (ORG(3,4) in s1, ORG(0,2) in s2), 0 correct -> 0, 0, 0
    assert (pt["ORG"]["predicted"], pt["ORG"]["correct"], pt["ORG"]["f1"]) == (2, 0, 0.0)


def test_ner_scores_unequal_precision_recall():
    # gold A(0,1) B(2,3) A(4,5); pred A(0,1) B(4,5) -> 1 correct of 2 predicted and 3 gold
    # P = 1/2, R = 1/3, F1 = 2*(1/2)*(1/3) / (1/2 + 1/3) = (1/3) / (5/6) = 2/5
    s = ner_scores([["B-A", "O", "B-B", "O", "B-A"]], [["B-A", "O", "O", "O", "B-B"]])
    assert s["precision"] == pytest.approx(0.5, abs=1e-15)
    assert s["recall"] == pytest.approx(1 / 3, abs=1e-15)
    assert s["f1"] == pytest.approx(0.4, abs=1e-15)
    # tokens 0, 1, 3 match -> 3/5
    assert s["accuracy"] == pytest.approx(0.6, abs=1e-15)


def test_ner_scores_i_start_and_split_entities():
    # conlleval reads "I-PER I-PER" as one PER(0,2): it matches gold exactly.
    s = ner_scores([["B-PER", "I-PER"]], [["I-PER", "I-PER"]])
    assert (s["precision"], s["recall"], s["f1"], s["accuracy"]) == (1.0, 1.0, 1.0, 0.5)
    # "B-PER B-PER" is two one-word entities, neither equal to PER(0,2).
    s = ner_scores([["B-PER", "I-PER"]], [["B-PER", "B-PER"]])
    assert (s["num_predicted"], s["num_correct"], s["f1"]) == (2, 0, 0.0)
    # No predictions at all -> everything 0, no division error.
    s = ner_scores([["B-PER"]], [["O"]])
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)


def test_ner_scores_input_errors():
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        ner_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 1 has 2 gold tags but 1 predicted"):
        ner_scores([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="predicted sentence 0"):
        ner_scores([["O"]], [["BAD"]])


def _random_sequences(rng, prefixes, count):
    types = ["PER", "LOC", "ORG", "MISC"]
    gold, pred = [], []
    for _ in range(count):
        length = rng.randint(0, 25)
        g = [rng.choice(["O"] * 4 + [f"{p}-{t}" for p in prefixes for t in types]) for _ in range(length)]
        # Predictions: mostly the gold tag, sometimes a random tag, sometimes B->I (an IOB-style start).
        p = []
        for tag in g:
            r = rng.random()
            if r < 0.6:
                p.append(tag)
            elif r < 0.75 and tag.startswith("B-"):
                p.append("I-" + tag[2:])
            else:
                p.append(rng.choice(["O"] + [f"{x}-{t}" for x in prefixes for t in types]))
        gold.append(g)
        pred.append(p)
    return gold, pred


@pytest.mark.parametrize("prefixes,seed", [("BI", 0), ("BI", 1), ("BIES", 2)])
def test_agrees_with_seqeval(prefixes, seed):
    rng = random.Random(seed)
    gold, pred = _random_sequences(rng, prefixes, 400)
    # Make sure the generated data really contains I- starts (after O or another type).
    assert any(
        tag.startswith("I-") and (i == 0 or seq[i - 1] == "O" or seq[i - 1][2:] != tag[2:])
        for seq in pred
        for i, tag in enumerate(seq)
    )
    ours = ner_scores(gold, pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ours["precision"] == pytest.approx(seqeval_metrics.precision_score(gold, pred), abs=1e-12)
        assert ours["recall"] == pytest.approx(seqeval_metrics.recall_score(gold, pred), abs=1e-12)
        assert ours["f1"] == pytest.approx(seqeval_metrics.f1_score(gold, pred), abs=1e-12)
        assert ours["accuracy"] == pytest.approx(seqeval_metrics.accuracy_score(gold, pred), abs=1e-12)
        p, r, f, support = precision_recall_fscore_support(gold, pred, average=None)
    # seqeval orders types alphabetically, as ner_scores does.
    assert list(ours["per_type"]) == ["LOC", "MISC", "ORG", "PER"]
    for i, scores in enumerate(ours["per_type"].values()):
        assert scores["precision"] == pytest.approx(p[i], abs=1e-12)
        assert scores["recall"] == pytest.approx(r[i], abs=1e-12)
        assert scores["f1"] == pytest.approx(f[i], abs=1e-12)
        assert scores["support"] == support[i]
    # Entity extraction agrees sentence by sentence (seqeval's end is inclusive).
    for seq in gold + pred:
        assert extract_entities(seq) == [(t, s, e + 1) for t, s, e in get_entities(seq)]


def test_format_report_table():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "I-ORG", "O", "B-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG", "O"], ["B-ORG", "I-ORG", "O", "O", "B-MISC"]]
    report = format_report(ner_scores(gold, pred), digits=2)
    lines = report.split("\n")
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    rows = {line[:12].strip(): line[12:].split() for line in lines if line.strip() and "accuracy" not in line}
    assert rows["PER"] == ["1.00", "1.00", "1.00", "1"]
    assert rows["ORG"] == ["0.00", "0.00", "0.00", "1"]
    assert rows["micro avg"] == ["0.50", "0.50", "0.50", "4"]
    # macro: mean of per-type P = (0 + 1 + 0 + 1)/4 = 0.5
    assert rows["macro avg"] == ["0.50", "0.50", "0.50", "4"]
    assert lines[-1].startswith("accuracy 0.80")
    # Every table row has the same width.
    assert len({len(line) for line in lines[:-1] if line.strip()}) == 1
