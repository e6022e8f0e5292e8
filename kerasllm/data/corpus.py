"""Plain-text corpora for pretraining, streamed from their files with ``tf.data``.

A corpus is a list of text files (paths or globs). Its documents are:

- ``"blank-line"`` (default): runs of non-blank lines; blank (or whitespace-only)
  lines separate documents, and a file's end closes its last document;
- ``"file"``: each file is one document;
- ``"line"``: each non-blank line is one document.

The text is never loaded into memory as a whole: documents are read lazily,
file by file, with ``tf.data.Dataset.interleave`` over the file list (a reader
opens a file only when the stream reaches it). Within a document the lines keep
their ``\\n`` separators; a trailing ``\\r`` (Windows line ends) is dropped.

Train/validation split: document ``j`` of file ``i`` (files in the order of
:attr:`TextCorpus.files`) is held out when ``(i + j) % validation_every ==
validation_every - 1``: every k-th document of each file, staggered across
files, so one-document-per-file corpora hold out every k-th file. The split
depends only on the file list and the documents, never on reading order,
sharding or a random seed.

Sharding: with ``num_shards > 1`` each shard reads every ``num_shards``-th file
(the file list is sharded before any file is opened), which is also the shape
``tf.data``'s ``AutoShardPolicy.FILE`` rewrites for multi-worker training.
"""
import os

import tensorflow as tf

DOCUMENT_MODES = ("blank-line", "file", "line")
_GLOB_CHARS = set("*?[")


def resolve_files(corpus, option="--corpus"):
    """The files of ``corpus``: one path or glob, a comma-separated list of them, or a list.

    Each pattern's matches are sorted; patterns keep their order; a file named
    twice is read once; folders are skipped.

    Raises:
        FileNotFoundError: a path that does not exist, or a glob that matches
            no file (the message names it and ``option``).

    Example:
        >>> import os, tempfile
        >>> d = tempfile.mkdtemp()
        >>> for name in ("b.txt", "a.txt"):
        ...     _ = open(os.path.join(d, name), "w").write("text")
        >>> [os.path.basename(p) for p in resolve_files(os.path.join(d, "*.txt"))]
        ['a.txt', 'b.txt']
    """
    if corpus is None:
        raise ValueError(f"{option} is required: a text file, a glob such as 'data/*.txt', or a comma list")
    patterns = corpus.split(",") if isinstance(corpus, str) else [os.fspath(p) for p in corpus]
    patterns = [p.strip() for p in patterns if p.strip()]
    if not patterns:
        raise ValueError(f"{option} is empty: give a text file or a glob")
    files, seen = [], set()
    for pattern in patterns:
        if _GLOB_CHARS & set(pattern):
            matches = sorted(p for p in tf.io.gfile.glob(pattern) if not tf.io.gfile.isdir(p))
            if not matches:
                raise FileNotFoundError(f"{option} {pattern}: no file matches")
        else:
            if not tf.io.gfile.exists(pattern) or tf.io.gfile.isdir(pattern):
                raise FileNotFoundError(f"{option} {pattern}: no such file")
            matches = [pattern]
        for path in matches:
            if path not in seen:
                seen.add(path)
                files.append(path)
    return files


def _strip_cr(lines):
    return lines.map(lambda line: tf.strings.regex_replace(line, "\r$", ""))


def _is_blank(line):
    return tf.equal(tf.strings.length(tf.strings.strip(line)), 0)


def _blank_line_documents(path):
    """Documents of one file: runs of non-blank lines joined with newlines."""
    # A final blank line flushes the last document of the file.
    lines = _strip_cr(tf.data.TextLineDataset(path)).concatenate(tf.data.Dataset.from_tensors(tf.constant("")))

    def step(state, line):
        text, count = state
        blank = _is_blank(line)
        emitted = (blank & (count > 0), text)
        joined = tf.where(count > 0, tf.strings.join([text, line], separator="\n"), line)
        new_text = tf.where(blank, tf.constant(""), joined)
        new_count = tf.where(blank, tf.constant(0, tf.int64), count + 1)
        return (new_text, new_count), emitted

    def finished(done, text):
        return done

    def text_of(done, text):
        return text

    documents = lines.scan((tf.constant(""), tf.constant(0, tf.int64)), step)
    return documents.filter(finished).map(text_of)


def _file_document(path):
    text = tf.strings.regex_replace(tf.io.read_file(path), "\r\n", "\n")
    return tf.data.Dataset.from_tensors(text).filter(lambda t: tf.logical_not(_is_blank(t)))


def _line_documents(path):
    return _strip_cr(tf.data.TextLineDataset(path)).filter(lambda line: tf.logical_not(_is_blank(line)))


_READERS = {"blank-line": _blank_line_documents, "file": _file_document, "line": _line_documents}


class TextCorpus:
    """Text files read as a stream of documents, split into train and validation.

    Args:
        files: a path, a glob, a comma-separated list of them, or a list
            (see :func:`resolve_files`).
        documents: how files are cut into documents: ``"blank-line"``,
            ``"file"`` or ``"line"`` (see the module docstring).
        validation_every: hold out every k-th document for validation
            (``0``: no validation split; every document is training data).
        num_shards, shard_index: read only the files of one shard.
        cycle_length: files read at the same time (interleaved document by document).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "c.txt")
        >>> _ = open(path, "w").write("one\\nline two\\n\\nthree\\n\\n\\nfour\\n")
        >>> corpus = TextCorpus(path, validation_every=3)
        >>> [t.decode() for t in corpus.documents("train").as_numpy_iterator()]
        ['one\\nline two', 'three']
        >>> [t.decode() for t in corpus.documents("validation").as_numpy_iterator()]
        ['four']
    """

    def __init__(self, files, documents="blank-line", validation_every=10, num_shards=1, shard_index=0, cycle_length=4):
        if documents not in DOCUMENT_MODES:
            raise ValueError(f"--documents {documents!r}: choose one of {', '.join(DOCUMENT_MODES)}")
        if validation_every < 0 or validation_every == 1:
            raise ValueError(
                f"--validation-every must be 0 (no validation split) or >= 2, got {validation_every}"
            )
        if num_shards < 1 or not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
        self.files = resolve_files(files)
        self.source = files if isinstance(files, str) else ",".join(map(os.fspath, files))
        self.document_mode = documents
        self.validation_every = int(validation_every)
        self.num_shards, self.shard_index = int(num_shards), int(shard_index)
        self.cycle_length = max(1, int(cycle_length))

    def _keyed(self):
        """``(file_index, document_index, text)`` for every document of this shard."""
        read = _READERS[self.document_mode]
        files = tf.data.Dataset.from_tensor_slices(
            (tf.constant(self.files), tf.range(len(self.files), dtype=tf.int64))
        )
        if self.num_shards > 1:
            files = files.shard(self.num_shards, self.shard_index)

        def per_file(path, file_index):
            return read(path).enumerate().map(lambda j, text: (file_index, j, text))

        return files.interleave(per_file, cycle_length=min(self.cycle_length, len(self.files)), block_length=1)

    def in_validation(self, file_index, document_index):
        """True for documents of the validation split (works on ints and tensors)."""
        k = self.validation_every
        if not k:
            return False if isinstance(file_index, int) else tf.zeros_like(file_index, tf.bool)
        return (file_index + document_index) % k == k - 1

    def held_out(self, key):
        """True for the key of a validation document (a key of ``documents(with_keys=True)``; tensors too)."""
        return self.in_validation(key // (1 << 32), key % (1 << 32))

    def documents(self, split="train", with_keys=False):
        """A ``tf.data.Dataset`` of documents (scalar ``tf.string``).

        Args:
            split: ``"train"``, ``"validation"`` or ``"all"``.
            with_keys: yield ``(key, text)`` with ``key = file_index * 2**32 +
                document_index`` (int64), which tells documents apart.
        """
        if split not in ("train", "validation", "all"):
            raise ValueError(f"split must be 'train', 'validation' or 'all', got {split!r}")
        docs = self._keyed()
        if split != "all":
            held_out = split == "validation"
            if held_out and not self.validation_every:
                raise ValueError("this corpus has no validation split (validation_every=0)")
            if self.validation_every:
                docs = docs.filter(lambda i, j, text: tf.equal(self.in_validation(i, j), held_out))
        if with_keys:
            return docs.map(lambda i, j, text: (i * (1 << 32) + j, text))
        return docs.map(lambda i, j, text: text)

    def describe(self):
        """One line: files, bytes, document mode and split."""
        size = sum(tf.io.gfile.stat(p).length for p in self.files)
        split = f"1 document in {self.validation_every} held out" if self.validation_every else "no held-out split"
        return (
            f"{len(self.files)} file{'s' if len(self.files) != 1 else ''}, {size / 1e6:.2f} MB, "
            f"documents by {self.document_mode}, {split}"
        )

    def __repr__(self):
        return f"TextCorpus({self.source!r}, files={len(self.files)}, documents={self.document_mode!r})"
