"""The one way fastlr writes a file: the complete new file or the untouched old one, never a half.

Models, histories, downloaded data, figures and JSON reports all go through :func:`atomic_write`:
the bytes go to a temporary file in the destination's directory (so the final rename stays on
one file system and is atomic), are flushed and fsynced, and the temporary file is renamed over
the destination. On any failure, a KeyboardInterrupt included, the temporary file is removed
and the old file, if there was one, is left as it was. An OSError on the way (a full disk, a
read-only file system, a destination that is a directory or lies under a file) is raised as
:class:`fastlr.errors.WriteError`, one line that names the destination, which the CLI prints
as it prints every user error.
"""

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import WriteError


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """Open a temporary file to be renamed to ``path`` when the ``with`` block succeeds.

    Parameters
    ----------
    path : str or Path
        The destination; its parent directory is created if needed.
    mode : {"wb", "w"}, default "wb"
        Binary or text.
    encoding : str, optional
        For text mode; default UTF-8.

    Yields
    ------
    file object
        Write to it inside the block; it is closed when the block ends.

    Examples
    --------
    >>> with atomic_write("model.npz") as fh:       # doctest: +SKIP
    ...     np.savez(fh, coef=coef)
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write opens files for writing only ('wb' or 'w'), got {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None,
                       newline="" if text else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise _write_error(path, exc) from None
        raise


def make_directory(path):
    """Create the directory ``path`` and its parents if needed; returns it as a Path.

    Raises
    ------
    WriteError
        If it cannot be created (a file stands in its place or above it, no permission).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(path, exc) from None
    return path


def _write_error(path, exc):
    """The WriteError for ``exc``, naming ``path`` and, if one of its parents is a file, that
    file."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        nearest = next((p for p in Path(path).parents if p.exists()), None)
        if nearest is not None and not nearest.is_dir():
            return WriteError(f"cannot write {path}: {nearest} is a file, not a directory")
    return WriteError(f"cannot write {path}: {exc.strerror or exc}")


def write_bytes(path, raw):
    """Write ``raw`` to ``path`` atomically; returns ``path`` as a Path."""
    with atomic_write(path) as fh:
        fh.write(raw)
    return Path(path)


def write_text(path, text, encoding="utf-8"):
    """Write ``text`` to ``path`` atomically; returns ``path`` as a Path."""
    with atomic_write(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)
