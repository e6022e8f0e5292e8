"""Atomic file writes shared by every kerasllm module that writes files.

Each writer goes through a temporary file (or folder) beside the destination and a
rename, so a reader never sees a half-written file and a failed write leaves the
previous file (if any) untouched.
"""
import json
import os
import shutil
import tempfile


def _temp_path(path, suffix=""):
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.tmp-", suffix=suffix)
    os.close(fd)
    return tmp


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_with(path, write, suffix=""):
    """Call ``write(tmp_path)`` then move the result onto ``path``; nothing is left on failure."""
    tmp = _temp_path(path, suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_replace_dir(build, out_dir):
    """Build a folder with ``build(tmp_dir)`` beside ``out_dir``, then rename it into place.

    An existing ``out_dir`` is moved aside first and deleted only after the new folder
    is in place, so a failure at any point leaves either the old folder or nothing new.
    """
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"{out_dir} exists and is not a folder")
    base = os.path.basename(out_dir)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{base}.tmp-")
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(dir=parent, prefix=f".{base}.old-")
        os.rmdir(old)
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def atomic_write_text(path, text, encoding="utf-8"):
    """Write ``text`` (UTF-8, ``\\n`` newlines) to ``path`` atomically; the file is mode 0644.

    Example:

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> atomic_write_text(p, "hello\\n") == p, open(p).read()
    (True, 'hello\\n')
    """

    def write(tmp):
        with open(tmp, "w", encoding=encoding, newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private

    atomic_write_with(path, write)
    return path


def atomic_write_json(path, data):
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
