"""Reader for text-classification data in CSV, TSV or JSON Lines files.

Every format has named columns: a header row for ``.csv`` / ``.tsv``, keys of
one JSON object per line for ``.jsonl``. Labels are kept as strings (a JSON
label ``1`` becomes ``"1"``) so one label list serves every format.
"""
import csv
import dataclasses
import json
import os

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}


@dataclasses.dataclass
class ClassificationExamples:
    """Texts (optionally text pairs) with string labels.

    Args:
        texts: the first text of every example.
        labels: the label of every example, as a string.
        pairs: the second text of every example (sentence-pair tasks such as
            NLI), or ``None``.
        path: the file the examples came from (``None`` if built in memory).
        lines: 1-based line on which each example starts in that file.

    Example:
        >>> ex = ClassificationExamples(["good", "bad"], ["pos", "neg"])
        >>> len(ex), ex.label_names
        (2, ['neg', 'pos'])
    """

    texts: list
    labels: list
    pairs: list = None
    path: str = None
    lines: list = None

    def __post_init__(self):
        self.texts = list(self.texts)
        self.labels = [str(label) for label in self.labels]
        if len(self.texts) != len(self.labels):
            raise ValueError(f"ClassificationExamples: {len(self.texts)} texts but {len(self.labels)} labels")
        if self.pairs is not None:
            self.pairs = list(self.pairs)
            if len(self.pairs) != len(self.texts):
                raise ValueError(f"ClassificationExamples: {len(self.texts)} texts but {len(self.pairs)} pairs")

    def __len__(self):
        return len(self.texts)

    @property
    def label_names(self):
        """The distinct labels, sorted (see :func:`sorted_labels`)."""
        return sorted_labels(self.labels)


def sorted_labels(labels):
    """Distinct labels in a stable order: numerically if all are integers, else as strings.

    Example:
        >>> sorted_labels(["10", "2", "2", "1"])
        ['1', '2', '10']
    """
    unique = set(labels)

    def as_int(text):
        try:
            return int(text)
        except ValueError:
            return None

    if unique and all(as_int(label) is not None for label in unique):
        return sorted(unique, key=lambda label: (int(label), label))
    return sorted(unique)


def _missing_columns_error(path, wanted, available, where):
    return ValueError(
        f"{path}: {where} has no column {wanted!r}; the columns are {list(available)}. "
        "Pass text_column= / label_column= / text_pair_column= with the right names"
    )


def _read_delimited(path, delimiter, columns):
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        if delimiter == "\t":
            # GLUE-style TSV: quotes are ordinary characters, fields never span lines.
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(f)
        try:
            header = next(reader, None)
            while header is not None and not any(cell.strip() for cell in header):
                header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}: the file is empty (expected a header row naming the columns)")
            header = [cell.strip() for cell in header]
            for name in columns:
                if name not in header:
                    raise _missing_columns_error(path, name, header, "the header row")
            index = {name: header.index(name) for name in columns}
            start = reader.line_num + 1
            for row in reader:
                line = start
                start = reader.line_num + 1
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise ValueError(
                        f"{path}, line {line}: expected {len(header)} fields (as in the header) but found "
                        f"{len(row)}: {row!r}"
                    )
                rows.append((line, {name: row[i] for name, i in index.items()}))
        except csv.Error as err:
            raise ValueError(f"{path}, line {reader.line_num}: malformed {('TSV' if delimiter == chr(9) else 'CSV')} ({err})") from None
    return rows


def _read_jsonl(path, columns):
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}, line {line_number}: not valid JSON ({err.msg} at column {err.colno}): {line.strip()[:80]!r}"
                ) from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}")
            for name in columns:
                if name not in record:
                    raise _missing_columns_error(path, name, record.keys(), f"line {line_number}")
            values = {}
            for name in columns:
                value = record[name]
                if value is None or isinstance(value, (dict, list)):
                    raise ValueError(
                        f"{path}, line {line_number}: column {name!r} is {json.dumps(value)}; expected a string or number"
                    )
                values[name] = value if isinstance(value, str) else json.dumps(value)
            rows.append((line_number, values))
    return rows


def read_classification(path, text_column="text", label_column="label", text_pair_column=None):
    """Read a text-classification file.

    The format follows the extension: ``.csv`` (comma-separated with a header,
    standard quoting), ``.tsv`` (tab-separated with a header, quotes taken
    literally as in the GLUE files) or ``.jsonl`` (one JSON object per line).
    Blank lines are skipped. Files are UTF-8.

    Args:
        path: the file.
        text_column: column (key) of the text.
        label_column: column (key) of the label.
        text_pair_column: column (key) of the second text for pair tasks, or ``None``.

    Returns:
        ``(examples, label_names)``: a :class:`ClassificationExamples` and the
        sorted distinct labels (numeric order when every label is an integer).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file for an unknown extension, an empty file, a
            missing column (listing the columns that exist), a bad JSON line or
            a row with the wrong number of fields (naming the line), or an
            empty label.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "d.jsonl")
        >>> _ = open(p, "w").write('{"text": "fine", "label": 1}\\n{"text": "awful", "label": 0}\\n')
        >>> examples, labels = read_classification(p)
        >>> examples.texts, examples.labels, labels
        (['fine', 'awful'], ['1', '0'], ['0', '1'])
    """
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in _FORMATS:
        raise ValueError(
            f"{path}: unknown extension {extension or '(none)'!r}; read_classification reads "
            f"{', '.join(sorted(_FORMATS))}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"classification file not found: {path}")
    columns = [text_column, label_column] + ([text_pair_column] if text_pair_column is not None else [])
    if len(set(columns)) != len(columns):
        raise ValueError(f"read_classification: text, label and pair columns must differ, got {columns}")
    fmt = _FORMATS[extension]
    if fmt == "jsonl":
        rows = _read_jsonl(path, columns)
    else:
        rows = _read_delimited(path, "\t" if fmt == "tsv" else ",", columns)
    if not rows:
        raise ValueError(f"{path}: no examples found (the file is empty or holds only a header / blank lines)")
    for line, values in rows:
        if not values[label_column].strip():
            raise ValueError(f"{path}, line {line}: the label (column {label_column!r}) is empty")
    examples = ClassificationExamples(
        texts=[values[text_column] for _, values in rows],
        labels=[values[label_column].strip() for _, values in rows],
        pairs=[values[text_pair_column] for _, values in rows] if text_pair_column is not None else None,
        path=path,
        lines=[line for line, _ in rows],
    )
    return examples, examples.label_names
