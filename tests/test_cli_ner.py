"""`kerasllm predict ner` and `kerasllm evaluate ner` on a tiny fine-tuned model."""
import json
import re
import unicodedata

import numpy as np
import pytest
from typer.testing import CliRunner

from kerasllm.cli.main import app
from kerasllm.data import Sentence, read_conll, write_conll
from kerasllm.data.synthetic_ner import generate_ner_corpus

runner = CliRunner()
_BUILT = {}


def tiny_ner_model(tmp_path_factory):
    """A model folder from `kerasllm finetune ner` on small files, built once per test session.

    The learning rate is tiny on purpose: the nearly untrained classifier predicts
    many (random) entities, which exercises span building far more than a model
    that has collapsed to all-``O``.
    """
    if "paths" not in _BUILT:
        folder = tmp_path_factory.mktemp("cli_ner")
        corpus = generate_ner_corpus(seed=3, num_train=200, num_dev=40, num_test=40)
        paths = {}
        for split, sentences in corpus.items():
            paths[split] = str(folder / f"{split}.conll")
            write_conll(paths[split], sentences)
        out = folder / "run"
        result = runner.invoke(
            app,
            ["finetune", "ner", "--train", paths["train"], "--epochs", "1", "--lr", "1e-5", "--max-length", "32",
             "--vocab-size", "300", "--no-export", "--out", str(out)],
        )
        assert result.exit_code == 0, result.output
        paths["model"] = str(out / "model")
        _BUILT["paths"] = paths
    return _BUILT["paths"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_ner_model(tmp_path_factory)


@pytest.fixture(scope="module")
def loaded(files):
    from kerasllm.training.ner_finetune import load_ner_folder

    return load_ner_folder(files["model"])


def _jsonl(result):
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


TRICKY = [
    "Marco Castellano said the Atlas Pro had sold out within hours .",
    "  Zoë   went to São-Paulo,  (U.S.)!!  ",
    "Cafe\u0301 e\u0301te\u0301 -- Ålesund/Tromsø; naïve \"quotes\" and émigrés...",
    "Dr.Smith\tmet\u00a0Ms. O'Neil at 9:30 in St. John's , N.Y.",
    "a\u200db x 😀 y ﬁne ｆｕｌｌ",
    "",
]


def test_predict_spans_are_slices_of_the_input(files, tmp_path):
    rng = np.random.default_rng(0)
    words = [s.tokens for s in read_conll(files["test"])]
    texts = list(TRICKY)
    for _ in range(6):  # random spacing and punctuation glued to words
        sentence = words[int(rng.integers(len(words)))]
        glue = ["", " ", "  ", ",", " - ", "\t"]
        texts.append("".join(w + glue[int(rng.integers(len(glue)))] for w in sentence))
    texts.append(" ".join(" ".join(s) for s in words[:8]))  # long: many windows at --max-length 16
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    records = _jsonl(runner.invoke(app, ["predict", "ner", "--model", files["model"], "--input", str(path),
                                         "--format", "jsonl", "--max-length", "16"]))
    assert [r["text"] for r in records] == texts
    total = 0
    for record in records:
        text = record["text"]
        previous_end = 0
        for e in record["entities"]:
            assert set(e) == {"start", "end", "type", "text", "score"}
            assert previous_end <= e["start"] < e["end"] <= len(text)
            assert e["text"] == text[e["start"]:e["end"]]
            assert e["text"] == e["text"].strip() and e["text"]
            assert not unicodedata.category(text[e["end"]] if e["end"] < len(text) else " ").startswith("M")
            assert 0.0 < e["score"] <= 1.0
            previous_end = e["end"]
            total += 1
    assert total > 10  # the nearly untrained model tags plenty of words


def test_predict_matches_predict_tags_on_the_same_words(files, loaded):
    """Independent path: words from str.split(), windows and tags from the library, spans by regex."""
    from kerasllm.data.ner_dataset import encode_sentences
    from kerasllm.evaluation import extract_entities
    from kerasllm.training.ner_finetune import predict_tags

    model, tokenizer, label_map = loaded
    plain = [[t for t in s.tokens if t.isalnum()] for s in read_conll(files["test"])]  # one basic word each
    texts = ["  ".join(words) for words in plain[:6]] + [" ".join(t for words in plain[:5] for t in words)]
    result = runner.invoke(app, ["predict", "ner", "--model", files["model"], "--format", "jsonl",
                                 "--max-length", "32", *texts])
    records = _jsonl(result)
    sentences = [Sentence(t.split(), ["O"] * len(t.split())) for t in texts]
    windows = encode_sentences(sentences, tokenizer, None, 32)
    assert len(windows) > len(sentences)  # the long text was windowed
    tags, scores = predict_tags(model, sentences, windows, label_map)
    for text, record, sentence_tags, sentence_scores in zip(texts, records, tags, scores):
        spans = [m.span() for m in re.finditer(r"\S+", text)]
        want = []
        for type_, start, end in extract_entities(sentence_tags):
            score = float(np.mean(sentence_scores[start:end].max(-1)))
            want.append((spans[start][0], spans[end - 1][1], type_, score))
        have = [(e["start"], e["end"], e["type"], e["score"]) for e in record["entities"]]
        assert [h[:3] for h in have] == [w[:3] for w in want]
        np.testing.assert_allclose([h[3] for h in have], [w[3] for w in want], rtol=1e-5)


def test_predict_table_and_user_errors(files, tmp_path):
    result = runner.invoke(app, ["predict", "ner", "--model", files["model"], "Ada Lovelace visited Paris ."],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "entities (" in result.output and "start" in result.output
    result = runner.invoke(app, ["predict", "ner", "--model", files["model"]])
    assert result.exit_code == 2 and "no text to tag" in result.output
    result = runner.invoke(app, ["predict", "ner", "--model", str(tmp_path / "nope"), "x"])
    assert result.exit_code == 2 and "nope" in result.output


def test_evaluate_f1_equals_ner_scores_of_predict_tags(files, loaded, tmp_path):
    from kerasllm.data.ner_dataset import encode_sentences
    from kerasllm.evaluation import ner_scores
    from kerasllm.training.ner_finetune import predict_tags

    model, tokenizer, label_map = loaded
    out = tmp_path / "metrics.json"
    result = runner.invoke(app, ["evaluate", "ner", "--model", files["model"], "--test", files["test"],
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    test = read_conll(files["test"])
    tags, _ = predict_tags(model, test, encode_sentences(test, tokenizer, None, 128), label_map)
    want = ner_scores([s.tags for s in test], tags)
    written = json.loads(out.read_text())
    assert written["f1"] == pytest.approx(want["f1"], abs=1e-12)
    assert written["per_type"].keys() == want["per_type"].keys()
    assert f"entity F1: {want['f1'] * 100:.2f}" in result.output
    assert "micro avg" in result.output


def test_evaluate_unknown_tag_names_file_and_line(files, tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("Paris\tB-LOC\nis\tO\n\nnice\tO\nZorg\tB-ALIEN\n")
    result = runner.invoke(app, ["evaluate", "ner", "--model", files["model"], "--test", str(bad)])
    assert result.exit_code == 2, result.output
    assert "bad.conll" in result.output and "line 5" in result.output and "B-ALIEN" in result.output
    assert "Traceback" not in result.output
