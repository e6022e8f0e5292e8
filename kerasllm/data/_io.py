"""Small file helpers shared by the data readers and writers."""
import os
import tempfile


def atomic_write_text(path, text, encoding="utf-8"):
    """Write ``text`` to ``path`` so that readers never see a half-written file.

    The text goes to a temporary file in the same folder (so the final rename
    stays on one file system), is flushed to disk, and then replaces ``path``
    with :func:`os.replace`. On any error the temporary file is removed and the
    old ``path`` (if any) is left untouched.

    Args:
        path: destination file; its folder is created if missing.
        text: the full contents.
        encoding: text encoding (UTF-8 by default).

    Returns:
        ``path`` as given.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> _ = atomic_write_text(p, "hello\\n")
        >>> open(p).read()
        'hello\\n'
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding=encoding, newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the usual data-file mode,
        # or keep the mode of the file being replaced.
        try:
            mode = os.stat(path).st_mode & 0o777
        except OSError:
            mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return path
