"""The one way fastlr writes a file: the complete new file or the untouched old one, never a half.

Models, histories, downloaded data, figures, reports, pages and JSON all go through
:func:`atomic_write`. It behaves like ``cp`` where a user can see it, and never leaves a half:

- **The old file or the new one.** The bytes go to a file in the destination's directory (so
  the final rename stays on one file system and is atomic), are flushed and fsynced, and the
  file is renamed over the destination; the directory is fsynced after. On any failure, a
  KeyboardInterrupt included, the new bytes are dropped and the old file is left as it was.
- **No temporary file that stays.** Where the file system supports it (Linux's ``O_TMPFILE``:
  ext4, XFS, Btrfs, tmpfs) the bytes are written to a file without a name, which the kernel
  drops when the process dies, SIGKILL included; it gets a name only once it is complete, for
  the rename. Elsewhere it is written under a temporary name ``.NAME.XXXXXXXX.part``. A
  temporary name is always held under an exclusive ``flock`` by the process writing it; a
  process killed at the wrong moment releases its lock with its life, and the next write to
  the same destination removes every temporary file of it that nobody holds.
- **The mode ``cp`` gives.** A new file gets the mode the umask allows (0644 under umask 022),
  a replaced file keeps its mode (and, where the process may set them, its owner and group).
- **A symlink is replaced, not written through**: the destination's name is what is written,
  and the file the link pointed to is left as it was (``cp`` would write through it).
- **A device or a pipe is written as it is.** A destination that exists and is a character
  device or a FIFO (``/dev/null``, ``/dev/stdout``, a named pipe with a reader) is written to
  directly, as ``cp`` does (the whole file at once, once it is complete), never replaced by a
  regular file; a directory, a block device or a socket is refused.
- **Names up to the file system's limit.** The temporary name is cut to fit ``NAME_MAX``.

An OSError on the way (a full disk, a read-only file system, a destination that is a directory
or lies under a file) is raised as :class:`fastlr.errors.WriteError`, one line that names the
destination, which the CLI prints as it prints every user error.
"""

import contextlib
import errno
import fcntl
import io
import os
import secrets
import stat
from pathlib import Path

from .errors import WriteError

# Whether to try O_TMPFILE first (a file system without it falls back to a named temporary);
# the unnamed file is named through /proc/self/fd, so /proc must be there.
USE_O_TMPFILE = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
TEMPORARY_SUFFIX = ".part"
_TOKEN_CHARS = 8  # hex digits of the random part of a temporary name


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """Open a file to be renamed to ``path`` when the ``with`` block succeeds.

    Parameters
    ----------
    path : str or Path
        The destination; its parent directory is created if needed.
    mode : {"wb", "w"}, default "wb"
        Binary or text. Text is written with ``encoding`` (default UTF-8); a character it
        cannot encode (a file name's undecodable byte, say) is written as a backslash escape.
    encoding : str, optional

    Yields
    ------
    file object
        Write to it inside the block; it is closed when the block ends.

    Raises
    ------
    WriteError
        If the file cannot be written; the old file, if any, is left as it was.

    Examples
    --------
    >>> with atomic_write("model.npz") as fh:       # doctest: +SKIP
    ...     np.savez(fh, coef=coef)
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write opens files for writing only ('wb' or 'w'), got {mode!r}")
    path = Path(path)
    text = mode == "w"
    options = {"encoding": encoding or "utf-8", "errors": "backslashreplace",
               "newline": ""} if text else {}
    try:
        existing = _existing(path)
        if existing is not None and (stat.S_ISCHR(existing.st_mode)
                                     or stat.S_ISFIFO(existing.st_mode)):
            # Held until the block succeeds, then written whole: a zip (a model) needs a file
            # it can seek in, and a failed block writes nothing.
            buffer = io.StringIO(newline="") if text else io.BytesIO()
            yield buffer
            with os.fdopen(_open_stream(path), mode, **options) as fh:
                fh.write(buffer.getvalue())
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        fd, temporary = _open_temporary(path)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        if existing is not None:
            _keep_mode_and_owner(fd, existing)
        with os.fdopen(fd, mode, closefd=False, **options) as fh:
            yield fh
            fh.flush()
            os.fsync(fd)
        temporary = _commit(fd, temporary, path)
    except BaseException as exc:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise _write_error(path, exc) from None
        raise
    finally:
        os.close(fd)


def _existing(path):
    """The ``os.stat`` of what ``path`` names (through a symlink), None if nothing; OSError
    (a WriteError's cause) if it is a directory or a kind of file that cannot be written."""
    try:
        existing = os.stat(path)
    except FileNotFoundError:  # also a dangling symlink: it is replaced
        return None
    kind = existing.st_mode
    if stat.S_ISDIR(kind):
        raise IsADirectoryError(errno.EISDIR, "Is a directory")
    if not (stat.S_ISREG(kind) or stat.S_ISCHR(kind) or stat.S_ISFIFO(kind)):
        raise OSError(errno.EINVAL, "not a regular file, a character device or a pipe")
    return existing


def _open_stream(path):
    """A character device or a FIFO, opened for writing as ``cp`` would (no rename). A FIFO
    that no process reads is an error at once, not a wait."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OSError(errno.ENXIO, "a named pipe that no process reads") from None
        raise
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    return fd


def temporary_prefix(path):
    """The start of every temporary name of ``path``: ``.NAME.``, NAME cut so that the whole
    temporary name fits the file system's limit on a name's bytes (``NAME_MAX``)."""
    path = Path(path)
    try:
        name_max = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    room = name_max - len(f"..{'0' * _TOKEN_CHARS}{TEMPORARY_SUFFIX}")
    # Bytes cut mid-character decode to surrogate escapes, which encode back to those bytes.
    return "." + os.fsdecode(os.fsencode(path.name)[:room]) + "."


def _is_temporary_of(name, prefix):
    token = name[len(prefix):-len(TEMPORARY_SUFFIX)]
    return (name.startswith(prefix) and name.endswith(TEMPORARY_SUFFIX)
            and len(token) == _TOKEN_CHARS and all(c in "0123456789abcdef" for c in token))


def _open_temporary(path):
    """A file to write the new bytes to, umask applied: without a name where the file system
    allows (returns ``fd, None``), else under a temporary name held under ``flock``
    (``fd, name``)."""
    if USE_O_TMPFILE:
        try:
            fd = os.open(path.parent, os.O_TMPFILE | os.O_WRONLY, 0o666)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                raise
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd, None
    opened = []
    name = _new_name(path, lambda name: opened.append(
        os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)))
    fcntl.flock(opened[0], fcntl.LOCK_EX)
    return opened[0], name


def _new_name(path, make):
    """A fresh temporary name of ``path``, on which ``make(name)`` succeeded (it raises
    FileExistsError for a name that is taken)."""
    prefix = temporary_prefix(path)
    while True:
        name = path.parent / f"{prefix}{secrets.token_hex(_TOKEN_CHARS // 2)}{TEMPORARY_SUFFIX}"
        try:
            make(name)
        except FileExistsError:
            continue
        return name


def _commit(fd, temporary, path):
    """Give the complete file its name: rename the temporary over ``path``; a file without a
    name is first linked to a temporary name (or straight to ``path`` if nothing is there).
    Returns None, the temporary name that is left to remove."""
    if temporary is None:
        # linkat(AT_SYMLINK_FOLLOW) of the descriptor's entry in /proc: os.link calls plain
        # link() unless a directory descriptor is given, which would link the entry itself.
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
        try:
            def link(name):
                os.link(str(fd), name, src_dir_fd=proc, follow_symlinks=True)

            try:
                link(path)
            except FileExistsError:
                temporary = _new_name(path, link)
            else:
                _sync_directory(path.parent)
                return None
        finally:
            os.close(proc)
    try:
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _sync_directory(path.parent)
    return None


def _keep_mode_and_owner(fd, existing):
    """Give the new file the replaced file's permission bits and, where allowed, its owner and
    group, as ``cp`` onto an existing file leaves them."""
    if (existing.st_uid, existing.st_gid) != (os.getuid(), os.getgid()):
        with contextlib.suppress(OSError):
            os.fchown(fd, existing.st_uid, existing.st_gid)
    os.fchmod(fd, stat.S_IMODE(existing.st_mode))


def _remove_stale_temporaries(path):
    """Remove the temporary files of ``path`` that no process holds: those of a writer killed
    between naming its file and renaming it."""
    prefix = temporary_prefix(path)
    try:
        names = [entry.name for entry in os.scandir(path.parent)
                 if _is_temporary_of(entry.name, prefix)]
    except OSError:
        return
    for name in names:
        candidate = path.parent / name
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held, now = os.fstat(fd), os.lstat(candidate)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                os.unlink(candidate)
        except OSError:  # held by a live writer, or already gone
            pass
        finally:
            os.close(fd)


def _sync_directory(directory):
    """fsync a directory, so that a rename in it survives a power cut; best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
