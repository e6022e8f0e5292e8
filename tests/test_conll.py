"""CoNLL reading/writing, tag schemes and the label map (pure Python, no TensorFlow)."""
import os
import pathlib

import pytest

from kerasllm.data import (
    ConllFormatError,
    LabelMap,
    Sentence,
    convert_tags,
    detect_scheme,
    read_conll,
    write_conll,
)

WNUT_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wnut17"


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# The same two sentences in three schemes. Sentence 1 has two adjacent PER
# entities ("Anna Berg" and "Carl") and a one-word LOC; sentence 2 a two-word ORG.
TOKENS = [["Anna", "Berg", "Carl", "met", "in", "Oslo", "."], ["Bank", "of", "Oslo", "fell"]]
BIO = [["B-PER", "I-PER", "B-PER", "O", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "I-ORG", "O"]]
IOB1 = [["I-PER", "I-PER", "B-PER", "O", "O", "I-LOC", "O"], ["I-ORG", "I-ORG", "I-ORG", "O"]]
BIOES = [["B-PER", "E-PER", "S-PER", "O", "O", "S-LOC", "O"], ["B-ORG", "I-ORG", "E-ORG", "O"]]
BILOU = [["B-PER", "L-PER", "U-PER", "O", "O", "U-LOC", "O"], ["B-ORG", "I-ORG", "L-ORG", "O"]]


def _conll_text(tokens, tags, sep="\t"):
    return "\n\n".join("\n".join(f"{w}{sep}{t}" for w, t in zip(ws, ts)) for ws, ts in zip(tokens, tags)) + "\n"


@pytest.mark.parametrize("scheme,tags", [("BIO", BIO), ("IOB1", IOB1), ("BIOES", BIOES)])
def test_each_scheme_is_detected_and_read_as_bio(tmp_path, scheme, tags):
    path = _write(tmp_path, f"{scheme}.conll", _conll_text(TOKENS, tags))
    data = read_conll(path)
    assert data.scheme == scheme
    assert data.path == path
    assert [s.tokens for s in data] == TOKENS
    assert [s.tags for s in data] == BIO
    # Forcing the scheme gives the same result.
    assert [s.tags for s in read_conll(path, scheme=scheme)] == BIO


def test_bilou_is_read_as_bioes_alias(tmp_path):
    path = _write(tmp_path, "bilou.conll", _conll_text(TOKENS, BILOU))
    data = read_conll(path)
    assert data.scheme == "BIOES"
    assert [s.tags for s in data] == BIO


@pytest.mark.parametrize(
    "source,target,src,expected",
    [
        ("BIO", "IOB1", BIO[0], IOB1[0]),
        ("BIO", "BIOES", BIO[0], BIOES[0]),
        ("IOB1", "BIO", IOB1[0], BIO[0]),
        ("IOB1", "BIOES", IOB1[0], BIOES[0]),
        ("BIOES", "BIO", BIOES[0], BIO[0]),
        ("BIOES", "IOB1", BIOES[0], IOB1[0]),
        ("BIO", "BILOU", BIO[0], BILOU[0]),
        ("BILOU", "BIO", BILOU[0], BIO[0]),
        # Three adjacent one-word LOCs: IOB1 needs B- on the 2nd and 3rd only.
        ("BIO", "IOB1", ["B-LOC", "B-LOC", "B-LOC"], ["I-LOC", "B-LOC", "B-LOC"]),
        # Different types side by side need no B- in IOB1.
        ("BIO", "IOB1", ["B-LOC", "B-ORG", "I-ORG"], ["I-LOC", "I-ORG", "I-ORG"]),
        ("BIO", "BIOES", ["B-X", "I-X", "I-X", "I-X"], ["B-X", "I-X", "I-X", "E-X"]),
        ("BIO", "BIOES", [], []),
        ("BIO", "IOB1", ["O", "O"], ["O", "O"]),
        # An ill-formed BIO start (I- after O) is repaired as conlleval reads it.
        ("BIO", "BIO", ["O", "I-PER", "I-PER", "I-LOC"], ["O", "B-PER", "I-PER", "B-LOC"]),
    ],
)
def test_convert_tags_hand_cases(source, target, src, expected):
    assert convert_tags(src, source, target) == expected


def test_convert_tags_round_trips():
    cases = BIO + [
        ["B-A", "B-A", "I-A", "B-B", "I-B", "O", "B-A"],
        ["B-creative-work", "I-creative-work", "O", "B-person"],
        ["O"],
        ["B-X"],
        ["B-X", "I-X", "B-X", "I-X", "I-X", "B-Y", "B-Y"],
    ]
    for tags in cases:
        for scheme in ("IOB1", "BIOES", "BILOU"):
            there = convert_tags(tags, "BIO", scheme)
            assert convert_tags(there, scheme, "BIO") == tags, (tags, scheme)
            for other in ("IOB1", "BIOES", "BILOU"):
                assert convert_tags(convert_tags(there, scheme, other), other, scheme) == there


def test_convert_tags_rejects_foreign_prefix_and_unknown_scheme():
    with pytest.raises(ValueError, match=r"tag 1 'E-PER' is not a BIO tag"):
        convert_tags(["B-PER", "E-PER"], "BIO", "IOB1")
    with pytest.raises(ValueError, match="unknown tag scheme 'XYZ'"):
        convert_tags(["O"], "XYZ", "BIO")


def test_detect_scheme_rules():
    assert detect_scheme(BIO) == "BIO"
    assert detect_scheme(IOB1) == "IOB1"
    assert detect_scheme(BIOES) == "BIOES"
    assert detect_scheme(BILOU) == "BIOES"
    assert detect_scheme([["O", "O"]]) == "BIO"
    # An I- start, but also B- after O: a BIO file with a stray error, not IOB1.
    assert detect_scheme([["O", "I-PER"], ["O", "B-LOC"]]) == "BIO"


def test_docstart_blank_and_whitespace_only_lines(tmp_path):
    text = (
        "-DOCSTART-\tO\n"
        "\n"
        "Ada\tB-PER\n"
        "Lovelace\tI-PER\n"
        "\t\n"  # whitespace-only line ends the sentence (as in WNUT-17)
        "   \n"  # and another, which must not create an empty sentence
        "wrote\tO\n"
        "-DOCSTART-\tO\n"  # DOCSTART without a blank line before it also ends a sentence
        "Paris\tB-LOC\n"
        "\n\n\n"
        "Rome\tB-LOC"  # no trailing newline
    )
    path = _write(tmp_path, "doc.conll", text)
    data = read_conll(path)
    assert [s.tokens for s in data] == [["Ada", "Lovelace"], ["wrote"], ["Paris"], ["Rome"]]
    assert [s.line for s in data] == [3, 7, 9, 13]


def test_four_column_conll2003_file_with_spaces(tmp_path):
    text = (
        "-DOCSTART- -X- -X- O\n"
        "\n"
        "EU NNP B-NP I-ORG\n"
        "rejects VBZ B-VP O\n"
        "German JJ B-NP I-MISC\n"
        "call NN I-NP O\n"
        ". . O O\n"
        "\n"
        "Peter NNP B-NP I-PER\n"
        "Blackburn NNP I-NP I-PER\n"
    )
    path = _write(tmp_path, "eng.train", text)
    data = read_conll(path)
    assert data.scheme == "IOB1"  # the original CoNLL-2003 files are IOB1
    assert data[0].tokens == ["EU", "rejects", "German", "call", "."]
    assert data[0].tags == ["B-ORG", "O", "B-MISC", "O", "O"]
    assert data[1].tags == ["B-PER", "I-PER"]
    # Another column can serve as the tag (here the chunk column).
    chunks = read_conll(path, tag_column=2)
    assert chunks[0].tags == ["B-NP", "B-VP", "B-NP", "I-NP", "O"]


def test_long_sentence_is_read_intact(tmp_path):
    tokens = [f"w{i}" for i in range(600)]
    tags = ["B-LOC" if i % 7 == 0 else "O" for i in range(600)]
    path = _write(tmp_path, "long.conll", _conll_text([tokens], [tags]))
    data = read_conll(path)
    assert len(data) == 1
    assert data[0].tokens == tokens and data[0].tags == tags


def test_malformed_line_names_file_and_line(tmp_path):
    text = "Ada\tB-PER\nLovelace\tI-PER\n\nwrote\tO\tEXTRA\nit\tO\n"
    path = _write(tmp_path, "bad.conll", text)
    with pytest.raises(ConllFormatError) as info:
        read_conll(path)
    message = str(info.value)
    assert path in message
    assert "line 4" in message
    assert "expected 2 columns" in message and "found 3" in message
    assert "wrote\\tO\\tEXTRA" in message  # the offending line is shown
    assert info.value.line == 4 and info.value.path == path
    assert isinstance(info.value, ValueError)


def test_invalid_tag_and_forced_scheme_errors_name_the_line(tmp_path):
    path = _write(tmp_path, "tag.conll", "a\tO\nb\tX-PER\n")
    with pytest.raises(ConllFormatError, match=r"tag\.conll, line 2: invalid tag 'X-PER'"):
        read_conll(path)
    path = _write(tmp_path, "es.conll", "a\tO\nb\tS-PER\n")
    with pytest.raises(ConllFormatError, match=r"es\.conll, line 2: tag 'S-PER' is not a BIO tag"):
        read_conll(path, scheme="BIO")


@pytest.mark.parametrize("text", ["", "\n\n  \n", "-DOCSTART- -X- -X- O\n\n"])
def test_empty_file_error_names_file(tmp_path, text):
    path = _write(tmp_path, "empty.conll", text)
    with pytest.raises(ConllFormatError, match="no sentences found") as info:
        read_conll(path)
    assert path in str(info.value)


def test_missing_file_and_bad_column_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.conll"):
        read_conll(tmp_path / "nope.conll")
    path = _write(tmp_path, "two.conll", "a\tO\n")
    with pytest.raises(ConllFormatError, match="tag_column=5 is out of range"):
        read_conll(path, tag_column=5)


def test_unknown_tag_at_evaluation_names_file_and_line(tmp_path):
    train = read_conll(_write(tmp_path, "train.conll", "Ada\tB-PER\nin\tO\nOslo\tB-LOC\n"))
    test_path = _write(tmp_path, "test.conll", "Kim\tB-PER\n\nvisited\tO\nAcme\tB-ORG\n")
    test = read_conll(test_path)
    labels = LabelMap.from_sentences(train)
    assert labels.labels == ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]
    assert labels.encode_sentence(test[0], test_path) == [2]
    with pytest.raises(ValueError) as info:
        labels.encode_dataset(test)
    message = str(info.value)
    assert "unknown tag 'B-ORG'" in message
    assert f"{test_path}, line 4" in message
    with pytest.raises(ValueError, match=r"unknown tag 'B-ORG' at my place"):
        labels.encode("B-ORG", where="my place")


def test_label_map_json_round_trip(tmp_path):
    labels = LabelMap.from_sentences([Sentence(["a", "b"], ["B-ORG", "B-LOC"])])
    path = labels.to_json(str(tmp_path / "labels.json"))
    again = LabelMap.from_json(path)
    assert again == labels
    assert again.label_to_id == {"O": 0, "B-LOC": 1, "B-ORG": 2, "I-LOC": 3, "I-ORG": 4}
    assert again.id_to_label[4] == "I-ORG"
    assert again.decode([0, 2]) == ["O", "B-ORG"]
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json"):
        LabelMap.from_json(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="appears twice"):
        LabelMap(["O", "B-X", "O"])


def test_write_conll_is_atomic_and_reads_back(tmp_path):
    sentences = [Sentence(t, g) for t, g in zip(TOKENS, BIO)]
    out = tmp_path / "out" / "gold.conll"
    assert write_conll(str(out), sentences) == str(out)
    assert os.listdir(out.parent) == ["gold.conll"]  # no temporary file left behind
    assert read_conll(out) == sentences

    # Written back in the source scheme, the file holds that scheme's tags.
    write_conll(str(out), sentences, scheme="IOB1")
    again = read_conll(out)
    assert again.scheme == "IOB1" and again == sentences
    assert out.read_text().splitlines()[0] == "Anna I-PER"

    # Gold and predicted columns (conlleval input).
    predicted = [["B-PER", "I-PER", "O", "O", "O", "B-LOC", "O"], ["B-ORG", "O", "B-LOC", "O"]]
    write_conll(str(out), sentences, predicted_tags=predicted)
    lines = out.read_text().split("\n")
    assert lines[:3] == ["Anna B-PER B-PER", "Berg I-PER I-PER", "Carl B-PER O"]
    assert lines[7] == ""
    assert [s.tags for s in read_conll(out, tag_column=1)] == BIO
    assert [s.tags for s in read_conll(out, tag_column=2)] == predicted


def test_write_conll_failure_keeps_old_file(tmp_path):
    out = tmp_path / "keep.conll"
    write_conll(str(out), [Sentence(["a"], ["O"])])
    before = out.read_bytes()
    with pytest.raises(ValueError, match="sentence 0 has 1 tokens but 2 predicted"):
        write_conll(str(out), [Sentence(["b"], ["O"])], predicted_tags=[["O", "O"]])
    with pytest.raises(ValueError, match="needs sep="):
        write_conll(str(out), [Sentence(["New York"], ["B-LOC"])])
    assert out.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.conll"]
    # With a tab separator a token may contain a space.
    write_conll(str(out), [Sentence(["New York"], ["B-LOC"])], sep="\t")
    assert read_conll(out)[0].tokens == ["New York"]


def test_wnut17_train_counts():
    path = WNUT_DIR / "train.conll"
    if not path.exists():
        pytest.skip(f"WNUT-17 data not found at {path} (optional shared data)")
    # Measured independently with awk (whitespace-only lines separate sentences):
    #   awk '/^[ \t]*$/ {if (n>0) s++; n=0; next} {n++; t++} END {if (n>0) s++; print s, t}' train.conll
    #   -> 3394 62730
    data = read_conll(path)
    assert len(data) == 3394
    assert data.num_tokens == 62730
    assert data.scheme == "BIO"
    # The file is BIO already, so tags are kept exactly as written:
    #   cut -f2 train.conll | grep -c '^B-'  -> 1975
    assert sum(t.startswith("B-") for s in data for t in s.tags) == 1975
    assert data[0].tokens[:2] == ["@paulwalk", "It"] and data[0].line == 1
