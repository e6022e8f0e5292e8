"""Text-classification reader: CSV, TSV, JSON Lines, pairs and error messages."""
import json

import pytest

from kerasllm.data import ClassificationExamples, read_classification


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_csv_with_quotes_commas_and_newlines(tmp_path):
    path = _write(
        tmp_path,
        "reviews.csv",
        'id,text,label\n'
        '1,"Great, really great",pos\n'
        '2,"He said ""meh""",neg\n'
        '\n'
        '3,"two\nlines",pos\n',
    )
    examples, labels = read_classification(path)
    assert isinstance(examples, ClassificationExamples)
    assert examples.texts == ["Great, really great", 'He said "meh"', "two\nlines"]
    assert examples.labels == ["pos", "neg", "pos"]
    assert examples.pairs is None
    assert labels == ["neg", "pos"]
    assert examples.lines == [2, 3, 5]
    assert examples.path == path and len(examples) == 3


def test_tsv_pairs_and_numeric_label_order(tmp_path):
    path = _write(
        tmp_path,
        "nli.tsv",
        "premise\thypothesis\tgold\n"
        'A man "plays" guitar\tSomeone makes music\t10\n'
        "A cat sleeps\tThe cat runs\t2\n"
        "Kids play\tChildren are playing\t2\n",
    )
    examples, labels = read_classification(path, text_column="premise", label_column="gold", text_pair_column="hypothesis")
    assert examples.texts[0] == 'A man "plays" guitar'  # quotes are literal in TSV
    assert examples.pairs == ["Someone makes music", "The cat runs", "Children are playing"]
    assert labels == ["2", "10"]  # integer labels sort numerically


def test_jsonl_with_numeric_labels_and_pairs(tmp_path):
    rows = [
        {"sentence1": "It rains", "sentence2": "It is wet", "label": 1},
        {"sentence1": "Sunny", "sentence2": "Snowing", "label": 0, "extra": [1, 2]},
    ]
    path = _write(tmp_path, "pairs.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    examples, labels = read_classification(path, text_column="sentence1", text_pair_column="sentence2")
    assert examples.texts == ["It rains", "Sunny"]
    assert examples.pairs == ["It is wet", "Snowing"]
    assert examples.labels == ["1", "0"]
    assert labels == ["0", "1"]


def test_unknown_extension(tmp_path):
    path = _write(tmp_path, "data.parquet", "x")
    with pytest.raises(ValueError, match=r"data\.parquet: unknown extension '\.parquet'.*\.csv, \.jsonl, \.tsv"):
        read_classification(path)


def test_missing_column_lists_existing_columns(tmp_path):
    path = _write(tmp_path, "d.csv", "sentence,label\nhello,a\n")
    with pytest.raises(ValueError) as info:
        read_classification(path)
    message = str(info.value)
    assert path in message and "'text'" in message and "['sentence', 'label']" in message
    path = _write(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n{"txt": "b", "label": "y"}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl: line 2 has no column 'text'; the columns are \['txt', 'label'\]"):
        read_classification(path)


def test_bad_json_line_names_file_and_line(tmp_path):
    path = _write(tmp_path, "bad.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", "label": }\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 3: not valid JSON"):
        read_classification(path)
    path = _write(tmp_path, "list.jsonl", '["a", "x"]\n')
    with pytest.raises(ValueError, match=r"list\.jsonl, line 1: expected a JSON object"):
        read_classification(path)


@pytest.mark.parametrize("name,text", [("e.csv", ""), ("e.tsv", "\n\n"), ("e.jsonl", ""), ("h.csv", "text,label\n")])
def test_empty_files(tmp_path, name, text):
    path = _write(tmp_path, name, text)
    with pytest.raises(ValueError, match="empty|no examples") as info:
        read_classification(path)
    assert path in str(info.value)


def test_wrong_field_count_and_empty_label(tmp_path):
    path = _write(tmp_path, "r.tsv", "text\tlabel\nfine\tpos\nbroken line without tab\n")
    with pytest.raises(ValueError, match=r"r\.tsv, line 3: expected 2 fields"):
        read_classification(path)
    path = _write(tmp_path, "l.csv", "text,label\nfine,pos\nno label,\n")
    with pytest.raises(ValueError, match=r"l\.csv, line 3: the label .* is empty"):
        read_classification(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        read_classification(tmp_path / "nothing.csv")
