"""CoNLL reading and writing, tag schemes, and the tag <-> id map.

A CoNLL file holds one token per line, its tag in the last column, and a blank
line between sentences::

    EU      NNP  B-NP  B-ORG        (CoNLL-2003: token POS chunk tag)
    rejects VBZ  B-VP  O
    ...
    @paulwalk   O                   (WNUT-17: token TAB tag)

Inside kerasllm every tag sequence is BIO (IOB2). :func:`read_conll` detects
the file's own scheme (BIO, IOB1 or BIOES), converts to BIO and records the
scheme on the returned :class:`ConllDataset`, so :func:`write_conll` can write
predictions back in the scheme the data came in.
"""
import dataclasses
import json
import os
import re

from kerasllm._io import atomic_write_text
from kerasllm.evaluation.ner import extract_entities, split_tag

SCHEMES = ("BIO", "IOB1", "BIOES", "BILOU")
_SCHEME_ALIASES = {"BIO": "BIO", "IOB2": "BIO", "IOB1": "IOB1", "BIOES": "BIOES", "IOBES": "BIOES", "BILOU": "BILOU"}
# Prefixes a scheme may use; BIOES accepts BILOU's L-/U- as aliases of E-/S- and vice versa.
_SCHEME_PREFIXES = {
    "BIO": frozenset("BI"),
    "IOB1": frozenset("BI"),
    "BIOES": frozenset("BIESLU"),
    "BILOU": frozenset("BIESLU"),
}
DOCSTART = "-DOCSTART-"


class ConllFormatError(ValueError):
    """A CoNLL file that cannot be read; the message names the file and line.

    Attributes:
        path: the file.
        line: 1-based line number of the problem (``None`` for whole-file problems).
    """

    def __init__(self, message, path=None, line=None):
        super().__init__(message)
        self.path = path
        self.line = line


@dataclasses.dataclass
class Sentence:
    """One sentence: its tokens and their (BIO) tags.

    Args:
        tokens: the words.
        tags: one tag per token.
        line: 1-based line of the first token in the file it was read from, 0 if
            generated. Not part of equality: two sentences with the same tokens
            and tags are equal wherever they came from.

    Example:
        >>> s = Sentence(["Ada", "Lovelace", "wrote"], ["B-PER", "I-PER", "O"])
        >>> len(s), s == Sentence(["Ada", "Lovelace", "wrote"], ["B-PER", "I-PER", "O"], line=7)
        (3, True)
    """

    tokens: list
    tags: list
    line: int = dataclasses.field(default=0, compare=False)

    def __post_init__(self):
        self.tokens = list(self.tokens)
        self.tags = list(self.tags)
        if len(self.tokens) != len(self.tags):
            where = f" (line {self.line})" if self.line else ""
            raise ValueError(
                f"Sentence{where}: {len(self.tokens)} tokens but {len(self.tags)} tags; "
                "every token needs exactly one tag"
            )

    def __len__(self):
        return len(self.tokens)


class ConllDataset(list):
    """A list of :class:`Sentence` that also remembers where it came from.

    It is a plain ``list`` subclass (index it, slice it, compare it with a list);
    the extra attributes are:

    Attributes:
        scheme: the tag scheme of the source file (``"BIO"``, ``"IOB1"`` or
            ``"BIOES"``); the sentences themselves always hold BIO tags.
        path: the file it was read from (``None`` if built in memory).

    Example:
        >>> d = ConllDataset([Sentence(["Paris"], ["B-LOC"])], scheme="IOB1")
        >>> d.scheme, d.num_tokens, d[0].tags
        ('IOB1', 1, ['B-LOC'])
    """

    def __init__(self, sentences=(), scheme="BIO", path=None):
        super().__init__(sentences)
        self.scheme = scheme
        self.path = path

    @property
    def num_tokens(self):
        """Total number of tokens over all sentences."""
        return sum(len(s.tokens) for s in self)

    def __repr__(self):
        return f"ConllDataset({len(self)} sentences, {self.num_tokens} tokens, scheme={self.scheme!r}, path={self.path!r})"


def _canonical_scheme(scheme, argument="scheme"):
    name = _SCHEME_ALIASES.get(str(scheme).upper())
    if name is None:
        raise ValueError(
            f"unknown tag scheme {scheme!r} for argument {argument!r}; "
            f"use one of BIO (alias IOB2), IOB1, BIOES (alias IOBES) or BILOU"
        )
    return name


def detect_scheme(tag_sequences):
    """Guess the tag scheme of some tag sequences.

    Rules, in order:

    * ``"BIOES"`` if any tag has an ``E-`` or ``S-`` prefix (or BILOU's ``L-``/``U-``);
    * ``"IOB1"`` if some entity starts with ``I-`` (at the start of a sentence,
      after ``O`` or after another type) **and** every ``B-X`` directly follows
      a token of type ``X`` (IOB1 uses ``B-`` only to split adjacent entities of
      one type);
    * ``"BIO"`` otherwise. A BIO file with a few stray ``I-`` starts (where
      ``B-`` also appears after ``O``) stays BIO; reading it repairs those
      starts the way conlleval does.

    Args:
        tag_sequences: an iterable of tag lists (one per sentence).

    Returns:
        ``"BIO"``, ``"IOB1"`` or ``"BIOES"``.

    Raises:
        ValueError: for a tag that is not ``O`` or ``<prefix>-<type>``.

    Example:
        >>> detect_scheme([["I-PER", "I-PER", "B-PER", "O", "I-LOC"]])
        'IOB1'
        >>> detect_scheme([["B-PER", "I-PER", "O", "B-LOC"]])
        'BIO'
    """
    has_end_single = i_start = b_start_after_other = False
    for index, tags in enumerate(tag_sequences):
        prev_type = None
        for position, tag in enumerate(tags):
            try:
                prefix, type_ = split_tag(tag)
            except ValueError as err:
                raise ValueError(f"detect_scheme: sequence {index}, tag {position}: {err}") from None
            if prefix in ("E", "S"):
                has_end_single = True
            elif prefix == "I" and prev_type != type_:
                i_start = True
            elif prefix == "B" and prev_type != type_:
                b_start_after_other = True
            prev_type = None if prefix == "O" else type_
    if has_end_single:
        return "BIOES"
    if i_start and not b_start_after_other:
        return "IOB1"
    return "BIO"


def _encode_entities(entities, length, scheme):
    """Write ``(type, start, end)`` entities as tags of ``scheme``."""
    tags = ["O"] * length
    prev_end, prev_type = None, None
    for type_, start, end in entities:
        if scheme in ("BIOES", "BILOU") and end - start == 1:
            tags[start] = ("S-" if scheme == "BIOES" else "U-") + type_
        else:
            for i in range(start, end):
                tags[i] = "I-" + type_
            if scheme == "IOB1":
                if prev_end == start and prev_type == type_:
                    tags[start] = "B-" + type_
            else:
                tags[start] = "B-" + type_
            if scheme in ("BIOES", "BILOU"):
                tags[end - 1] = ("E-" if scheme == "BIOES" else "L-") + type_
        prev_end, prev_type = end, type_
    return tags


def convert_tags(tags, source, target):
    """Convert one tag sequence between BIO, IOB1, BIOES (and BILOU).

    Entities are read with conlleval's rules (see :mod:`kerasllm.evaluation.ner`)
    and written again in ``target``. Well-formed sequences round-trip exactly
    (``convert_tags(convert_tags(t, "BIO", s), s, "BIO") == t``); an ill-formed
    one (``O I-PER`` in BIO) is repaired the way conlleval reads it.

    Args:
        tags: list of tags of one sentence.
        source: scheme of ``tags``: ``"BIO"`` (alias ``"IOB2"``), ``"IOB1"``,
            ``"BIOES"`` (alias ``"IOBES"``; ``L-``/``U-`` also accepted) or ``"BILOU"``.
        target: scheme to produce (same names).

    Returns:
        A new list of tags in ``target``.

    Raises:
        ValueError: for an unknown scheme name, or a tag whose prefix ``source``
            does not use (naming its position).

    Example:
        >>> convert_tags(["B-PER", "I-PER", "B-PER", "O", "B-LOC"], "BIO", "IOB1")
        ['I-PER', 'I-PER', 'B-PER', 'O', 'I-LOC']
        >>> convert_tags(["B-PER", "I-PER", "O", "B-LOC"], "BIO", "BIOES")
        ['B-PER', 'E-PER', 'O', 'S-LOC']
    """
    source = _canonical_scheme(source, "source")
    target = _canonical_scheme(target, "target")
    tags = list(tags)
    allowed = _SCHEME_PREFIXES[source]
    for position, tag in enumerate(tags):
        if tag != "O":
            split_tag(tag)  # raises for a malformed tag
            if tag[0] not in allowed:
                raise ValueError(
                    f"convert_tags: tag {position} {tag!r} is not a {source} tag "
                    f"(allowed prefixes: {', '.join(sorted(allowed))}); pass the right source= scheme"
                )
    return _encode_entities(extract_entities(tags), len(tags), target)


_SPACES = re.compile(r" +")


def _split_fields(line):
    """Split one CoNLL line into columns: on tabs if it has any, else on runs of spaces."""
    if "\t" in line:
        return [field.strip(" ") for field in line.strip(" \t").split("\t")]
    return _SPACES.split(line.strip(" "))


def _resolve_column(index, num_columns, argument, path, line):
    if not -num_columns <= index < num_columns:
        raise ConllFormatError(
            f"{path}: {argument}={index} is out of range: the file has {num_columns} columns "
            f"(see line {line}); use an index from {-num_columns} to {num_columns - 1}",
            path,
            line,
        )
    return index % num_columns


def read_conll(path, scheme=None, token_column=0, tag_column=-1):
    """Read a CoNLL file into sentences with BIO tags.

    Handles 2-column (``token TAB tag``, WNUT-17) and multi-column
    (``token POS chunk tag``, CoNLL-2003) files separated by tabs or spaces
    (a line with a tab is split on tabs, so tokens may contain spaces there).
    Blank and whitespace-only lines end a sentence; ``-DOCSTART-`` lines are
    skipped and also end a sentence; no trailing blank line is needed. The file
    is UTF-8 (a leading byte-order mark is ignored).

    Args:
        path: the file.
        scheme: the file's tag scheme (``"BIO"``, ``"IOB1"``, ``"BIOES"``,
            ``"BILOU"``); detected with :func:`detect_scheme` when ``None``.
        token_column: column of the token (0 = first).
        tag_column: column of the tag (-1 = last).

    Returns:
        A :class:`ConllDataset` (a list of :class:`Sentence` with BIO tags) whose
        ``.scheme`` is the file's scheme and ``.path`` the file.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ConllFormatError: naming the file and 1-based line for a line whose
            number of columns differs from the file's first token line, an
            invalid tag, a tag the forced ``scheme`` does not use, bytes that
            are not UTF-8; or naming the file when it holds no sentence.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "x.conll")
        >>> _ = open(p, "w").write("-DOCSTART- O\\n\\nNew\\tI-LOC\\nYork\\tI-LOC\\nrocks\\tO\\n")
        >>> data = read_conll(p)
        >>> data.scheme, data[0].tags, data[0].line
        ('IOB1', ['B-LOC', 'I-LOC', 'O'], 3)
    """
    path = os.fspath(path)
    if scheme is not None:
        scheme = _canonical_scheme(scheme)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CoNLL file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()

    raw_sentences = []  # (first line, tokens, tags)
    tokens, tags, first_line = [], [], 0
    num_columns = columns_line = None
    token_index = tag_index = None

    def flush():
        if tokens:
            raw_sentences.append((first_line, list(tokens), list(tags)))
            tokens.clear()
            tags.clear()

    for lineno, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConllFormatError(
                f"{path}, line {lineno}: not valid UTF-8 ({err.reason} at byte {err.start} of the line); "
                "re-save the file as UTF-8",
                path,
                lineno,
            ) from None
        if lineno == 1:
            line = line.lstrip("\ufeff")
        line = line.rstrip("\r")
        if not line.strip():
            flush()
            continue
        fields = _split_fields(line)
        if fields[0] == DOCSTART:
            flush()
            continue
        if num_columns is None:
            num_columns, columns_line = len(fields), lineno
            if num_columns < 2:
                raise ConllFormatError(
                    f"{path}, line {lineno}: found 1 column but a CoNLL file needs at least a token and a tag "
                    f"column:\n    {line!r}",
                    path,
                    lineno,
                )
            token_index = _resolve_column(token_column, num_columns, "token_column", path, lineno)
            tag_index = _resolve_column(tag_column, num_columns, "tag_column", path, lineno)
            if token_index == tag_index:
                raise ConllFormatError(
                    f"{path}: token_column={token_column} and tag_column={tag_column} name the same column",
                    path,
                    lineno,
                )
        elif len(fields) != num_columns:
            raise ConllFormatError(
                f"{path}, line {lineno}: expected {num_columns} columns (as on line {columns_line}, the first "
                f"token line) but found {len(fields)}:\n    {line!r}",
                path,
                lineno,
            )
        if not tokens:
            first_line = lineno
        tokens.append(fields[token_index])
        tags.append(fields[tag_index])
    flush()

    if not raw_sentences:
        raise ConllFormatError(
            f"{path}: no sentences found (the file is empty or holds only blank and {DOCSTART} lines)", path
        )

    for first, _, sentence_tags in raw_sentences:
        for offset, tag in enumerate(sentence_tags):
            try:
                split_tag(tag)
            except ValueError as err:
                raise ConllFormatError(f"{path}, line {first + offset}: {err}", path, first + offset) from None
    if scheme is None:
        scheme = detect_scheme(t for _, _, t in raw_sentences)
    allowed = _SCHEME_PREFIXES[scheme]
    sentences = []
    for first, sentence_tokens, sentence_tags in raw_sentences:
        for offset, tag in enumerate(sentence_tags):
            if tag != "O" and tag[0] not in allowed:
                raise ConllFormatError(
                    f"{path}, line {first + offset}: tag {tag!r} is not a {scheme} tag "
                    f"(allowed prefixes: {', '.join(sorted(allowed))}); pass the file's scheme to read_conll(scheme=...)",
                    path,
                    first + offset,
                )
        bio = sentence_tags if scheme == "BIO" else convert_tags(sentence_tags, scheme, "BIO")
        sentences.append(Sentence(sentence_tokens, bio, line=first))
    return ConllDataset(sentences, scheme=scheme, path=path)


def _check_token(token, sep, sentence_index, token_index):
    """Refuse a token that would not read back as the same single column."""
    ok = (
        isinstance(token, str)
        and token != ""
        and not any(c in token for c in "\t\n\r")
        and token == token.strip(" ")
        and (sep == "\t" or " " not in token)
    )
    if not ok:
        hint = "; a token with inner spaces needs sep='\\t'" if isinstance(token, str) and " " in token.strip(" ") else ""
        raise ValueError(
            f"write_conll: sentence {sentence_index}, token {token_index} is {token!r}, which cannot be "
            f"written as one CoNLL column with sep={sep!r}{hint}"
        )


def write_conll(path, sentences, predicted_tags=None, scheme="BIO", sep=" "):
    """Write sentences as a CoNLL file, atomically.

    Each token line is ``token tag`` or, with predictions, ``token gold pred``
    (the input format of conlleval); a blank line follows every sentence. The
    text goes to a temporary file beside ``path`` that then replaces it, so a
    crash never leaves a half-written file. Empty sentences are skipped.

    Args:
        path: the output file (its folder is created if missing).
        sentences: :class:`Sentence` objects whose tags are BIO.
        predicted_tags: optional list of BIO tag lists, one per sentence.
        scheme: scheme to write the tags in (``"BIO"`` writes them unchanged;
            use ``dataset.scheme`` to write back a file's own scheme).
        sep: column separator, ``" "`` (conlleval) or ``"\\t"``.

    Returns:
        ``path``.

    Raises:
        ValueError: if ``predicted_tags`` does not match the sentences (naming
            the sentence), or a token is empty or contains the separator or a
            line break.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "out.conll")
        >>> _ = write_conll(p, [Sentence(["Oslo", "."], ["B-LOC", "O"])], [["B-LOC", "O"]])
        >>> open(p).read()
        'Oslo B-LOC B-LOC\\n. O O\\n\\n'
    """
    scheme = _canonical_scheme(scheme)
    if sep not in (" ", "\t"):
        raise ValueError(f"write_conll: sep must be ' ' or '\\t', got {sep!r}")
    sentences = list(sentences)
    if predicted_tags is not None:
        predicted_tags = list(predicted_tags)
        if len(predicted_tags) != len(sentences):
            raise ValueError(
                f"write_conll: {len(sentences)} sentences but {len(predicted_tags)} predicted tag lists"
            )
    lines = []
    for index, sentence in enumerate(sentences):
        if not sentence.tokens:
            continue
        columns = [sentence.tags]
        if predicted_tags is not None:
            pred = list(predicted_tags[index])
            if len(pred) != len(sentence.tokens):
                raise ValueError(
                    f"write_conll: sentence {index} has {len(sentence.tokens)} tokens but "
                    f"{len(pred)} predicted tags"
                )
            columns.append(pred)
        if scheme != "BIO":
            columns = [convert_tags(c, "BIO", scheme) for c in columns]
        for position, token in enumerate(sentence.tokens):
            _check_token(token, sep, index, position)
            lines.append(sep.join([token] + [c[position] for c in columns]))
        lines.append("")
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


@dataclasses.dataclass
class LabelMap:
    """Ordered tag <-> id map for token classification.

    Args:
        labels: the tags, id = position. :meth:`from_sentences` builds the usual
            order: ``"O"`` first, then the other tags sorted.

    Example:
        >>> m = LabelMap.from_sentences([Sentence(["Rome"], ["B-LOC"])])
        >>> m.labels, m.encode("I-LOC"), m.id_to_label[1]
        (['O', 'B-LOC', 'I-LOC'], 2, 'B-LOC')
    """

    labels: list
    _index: dict = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self.labels = list(self.labels)
        if not self.labels:
            raise ValueError("LabelMap: labels is empty")
        index = {}
        for i, label in enumerate(self.labels):
            if not isinstance(label, str):
                raise ValueError(f"LabelMap: label {i} is {label!r}, not a string")
            if label in index:
                raise ValueError(f"LabelMap: label {label!r} appears twice (positions {index[label]} and {i})")
            index[label] = i
        self._index = index

    @classmethod
    def from_sentences(cls, sentences):
        """Build the map of every tag in ``sentences`` (BIO).

        For each entity type seen, both ``B-`` and ``I-`` are included (a model
        must be able to predict ``I-X`` even if the data only had one-word
        ``X`` entities). Order: ``"O"``, then the rest sorted.

        Args:
            sentences: :class:`Sentence` objects (e.g. the training set).

        Raises:
            ValueError: for an invalid tag, naming the sentence's line.
        """
        types = set()
        for index, sentence in enumerate(sentences):
            for offset, tag in enumerate(sentence.tags):
                try:
                    prefix, type_ = split_tag(tag)
                except ValueError as err:
                    where = f"line {sentence.line + offset}" if sentence.line else f"sentence {index}"
                    raise ValueError(f"LabelMap.from_sentences: {where}: {err}") from None
                if prefix != "O":
                    types.add(type_)
        return cls(["O"] + sorted([f"B-{t}" for t in types] + [f"I-{t}" for t in types]))

    def __len__(self):
        return len(self.labels)

    @property
    def num_labels(self):
        """Number of labels."""
        return len(self.labels)

    @property
    def label_to_id(self):
        """``{tag: id}`` (a copy)."""
        return dict(self._index)

    @property
    def id_to_label(self):
        """``{id: tag}``."""
        return dict(enumerate(self.labels))

    def encode(self, tag, where=None):
        """Return the id of ``tag``.

        Args:
            tag: a tag string.
            where: where the tag was found, e.g. ``"test.conll, line 12"``;
                shown in the error message.

        Raises:
            ValueError: naming the unknown tag, ``where`` and the known labels.
        """
        try:
            return self._index[tag]
        except (KeyError, TypeError):
            location = f" at {where}" if where else ""
            raise ValueError(
                f"unknown tag {tag!r}{location}: it is not in the label map, which has "
                f"{len(self.labels)} labels ({', '.join(self.labels)}). The tag was not seen in the "
                "training data; fix the file or build the label map from data that contains it"
            ) from None

    def encode_sentence(self, sentence, path=None):
        """Encode the tags of a :class:`Sentence`; an unknown tag's error names ``path`` and its line.

        Example:
            >>> LabelMap(["O", "B-PER", "I-PER"]).encode_sentence(Sentence(["Kim"], ["B-PER"]))
            [1]
        """
        ids = []
        for offset, tag in enumerate(sentence.tags):
            if tag in self._index:
                ids.append(self._index[tag])
                continue
            parts = [path] if path else []
            if sentence.line:
                parts.append(f"line {sentence.line + offset}")
            else:
                parts.append(f"token {offset} of the sentence")
            ids.append(self.encode(tag, where=", ".join(parts)))
        return ids

    def encode_dataset(self, sentences, path=None):
        """Encode every sentence; ``path`` defaults to ``sentences.path`` of a :class:`ConllDataset`."""
        path = path if path is not None else getattr(sentences, "path", None)
        return [self.encode_sentence(s, path) for s in sentences]

    def decode(self, ids):
        """Map ids back to tags.

        Raises:
            ValueError: for an id outside ``0 .. num_labels - 1``.
        """
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.labels):
                raise ValueError(f"LabelMap.decode: id {i} is outside 0..{len(self.labels) - 1}")
            out.append(self.labels[i])
        return out

    def to_json(self, path):
        """Write ``{"labels": [...]}`` to ``path`` atomically; returns ``path``."""
        atomic_write_text(path, json.dumps({"labels": self.labels}, indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def from_json(cls, path):
        """Read a map written by :meth:`to_json` (a bare JSON list of labels is accepted too).

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: naming the file if it is not valid JSON or has no ``labels`` list.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"label map file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                payload = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
        labels = payload.get("labels") if isinstance(payload, dict) else payload
        if not isinstance(labels, list):
            raise ValueError(f"{path}: expected a JSON object with a 'labels' list (or a JSON list of labels)")
        try:
            return cls(labels)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
