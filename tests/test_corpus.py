"""Text corpora streamed with tf.data: document modes, globs, the held-out split, sharding, laziness, errors."""
import os

import pytest
import tensorflow as tf

from kerasllm.data.corpus import TextCorpus, resolve_files


def _write(folder, name, text):
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return path


def _texts(dataset):
    return [t.decode("utf-8") for t in dataset.as_numpy_iterator()]


def test_blank_line_documents(tmp_path):
    # blank and whitespace-only lines separate documents; runs of them make no empty document;
    # CRLF line ends lose their \r; the last document needs no trailing newline.
    path = _write(tmp_path, "a.txt", "\n\nFirst line\r\nsecond line\r\n\r\n  \t\nThird\n\n\n\nlast one\nends here")
    corpus = TextCorpus(path, validation_every=0)
    assert _texts(corpus.documents()) == ["First line\nsecond line", "Third", "last one\nends here"]


def test_file_and_line_documents_and_glob_order(tmp_path):
    _write(tmp_path, "b.txt", "b one\n\nb two\n")
    _write(tmp_path, "a.txt", "a one\r\na two\n")
    _write(tmp_path, "c.md", "not matched\n")
    pattern = os.path.join(tmp_path, "*.txt")
    assert [os.path.basename(p) for p in resolve_files(pattern)] == ["a.txt", "b.txt"]
    by_file = TextCorpus(pattern, documents="file", validation_every=0, cycle_length=1)
    assert _texts(by_file.documents()) == ["a one\na two\n", "b one\n\nb two\n"]
    by_line = TextCorpus(pattern, documents="line", validation_every=0, cycle_length=1)
    assert _texts(by_line.documents()) == ["a one", "a two", "b one", "b two"]
    # a comma list keeps its order and reads a file named twice once
    listed = TextCorpus(f"{tmp_path}/b.txt, {pattern}", documents="line", validation_every=0, cycle_length=1)
    assert [os.path.basename(p) for p in listed.files] == ["b.txt", "a.txt"]


def test_split_is_every_kth_document_and_deterministic(tmp_path):
    for f in range(3):
        _write(tmp_path, f"f{f}.txt", "\n\n".join(f"file{f} doc{d}" for d in range(7)) + "\n")
    pattern = os.path.join(tmp_path, "f*.txt")
    k = 3
    expected_held_out = {f"file{f} doc{d}" for f in range(3) for d in range(7) if (f + d) % k == k - 1}
    everything = {f"file{f} doc{d}" for f in range(3) for d in range(7)}
    for cycle_length in (1, 2, 4):  # the reading order does not change the split
        corpus = TextCorpus(pattern, validation_every=k, cycle_length=cycle_length)
        train, held_out = _texts(corpus.documents("train")), _texts(corpus.documents("validation"))
        assert set(held_out) == expected_held_out
        assert set(train) == everything - expected_held_out
        assert len(train) + len(held_out) == len(everything)
    keyed = dict((t.decode(), int(key)) for key, t in corpus.documents("all", with_keys=True).as_numpy_iterator())
    assert keyed["file2 doc5"] == 2 * 2**32 + 5


def test_shards_partition_the_files(tmp_path):
    for f in range(5):
        _write(tmp_path, f"f{f}.txt", f"file{f} x\n\nfile{f} y\n")
    pattern = os.path.join(tmp_path, "*.txt")
    shards = [_texts(TextCorpus(pattern, validation_every=0, num_shards=2, shard_index=i).documents()) for i in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(_texts(TextCorpus(pattern, validation_every=0).documents()))
    assert {t.split()[0] for t in shards[0]} == {"file0", "file2", "file4"}


def test_reading_is_lazy(tmp_path):
    """The first document comes from the first file without opening the others."""
    for f in range(5):
        _write(tmp_path, f"f{f}.txt", f"file{f} first\n\nfile{f} second\n")
    corpus = TextCorpus(os.path.join(tmp_path, "*.txt"), validation_every=0)
    for f in range(1, 5):  # the later files disappear after the file list was made
        os.remove(os.path.join(tmp_path, f"f{f}.txt"))
    assert _texts(corpus.documents().take(1)) == ["file0 first"]
    with pytest.raises(tf.errors.NotFoundError):
        _texts(corpus.documents().take(2))


def test_errors_name_the_path(tmp_path):
    missing_glob = os.path.join(tmp_path, "nothing*.txt")
    with pytest.raises(FileNotFoundError, match="--corpus .*nothing\\*.txt: no file matches"):
        TextCorpus(missing_glob)
    with pytest.raises(FileNotFoundError, match="missing.txt: no such file"):
        TextCorpus(os.path.join(tmp_path, "missing.txt"))
    path = _write(tmp_path, "a.txt", "x\n")
    with pytest.raises(ValueError, match="--documents 'para'"):
        TextCorpus(path, documents="para")
    with pytest.raises(ValueError, match="--validation-every"):
        TextCorpus(path, validation_every=1)
    with pytest.raises(ValueError, match="no validation split"):
        TextCorpus(path, validation_every=0).documents("validation")
