"""How fastlr opens a file it is given and reads a ``.npy`` array: once, and bounded by what the
file holds before any of the work.

- :func:`open_once` opens a path a single time. A regular file is returned open, with its size
  known; anything else (a FIFO, ``/dev/stdin``, a character device) is read whole, at most to
  a limit, into memory, because it can be read only once: a reader that looks at the first
  bytes and opens the path again would wait forever on a pipe whose writer is gone. A FIFO is
  opened without waiting for a writer, so one that nobody writes reads as empty, at once.
- :func:`read_npy` reads a ``.npy`` array from an open file: its header parsed by NumPy's
  parser (never unpickling: an object dtype is refused before its bytes are read), its declared
  size checked against the bytes the file holds and against a limit before a byte is
  allocated, then exactly those bytes read, a MiB at a time. A 128-byte file declaring 2**40
  floats is refused at once, in constant memory.
"""

import errno
import io
import math
import mmap
import os
import stat
import tokenize
import warnings

import numpy as np

from .errors import DataError

NPY_MAGIC = b"\x93NUMPY"
_CHUNK = 1 << 20
#: Reads past the page cache (O_DIRECT) go through a staging area of this many bytes, aligned
#: to DIRECT_ALIGN (O_DIRECT needs offsets, sizes and memory aligned to the disk's blocks).
DIRECT_PIECE_BYTES = 4 << 20
DIRECT_ALIGN = 4096


class OpenedFile:
    """A file opened once: ``fh`` (binary, seekable) and ``size``, the bytes it holds."""

    def __init__(self, fh, size):
        self.fh, self.size = fh, size

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def open_once(path, limit, error=DataError):
    """Open ``path`` for reading, once; see the module docstring.

    Parameters
    ----------
    path : str or Path
    limit : int
        The most bytes read from a file that is not a regular one (a larger one is an error).
    error : exception class
        Raised, naming ``path``, if the file cannot be opened or is too large.

    Returns
    -------
    OpenedFile
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        kind = os.fstat(fd).st_mode
        if stat.S_ISDIR(kind):
            raise error(f"{path}: is a directory")
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    if stat.S_ISREG(kind):
        return OpenedFile(fh, os.fstat(fd).st_size)
    with fh:
        try:
            raw = _read_at_most(fh, limit + 1)
        except OSError as exc:
            raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise error(f"{path}: holds more than the limit of {limit:,} bytes")
    return OpenedFile(io.BytesIO(raw), len(raw))


def _read_at_most(fh, n_bytes):
    chunks, total = [], 0
    while total < n_bytes:
        chunk = fh.read(min(_CHUNK, n_bytes - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_npy_header(fh, source, error=DataError):
    """Parse a ``.npy`` header at the file's position.

    Returns
    -------
    shape : tuple of int
    fortran_order : bool
    dtype : numpy.dtype, never an object, structured or sub-array dtype
    n_bytes : int, the size of the data the header declares

    Raises
    ------
    ``error``
        For a file that is not a ``.npy`` array, of an unknown version, with a broken header or
        a header only Python 2 writes, of an object dtype (loading it could run code), or of
        records or sub-arrays.
    """
    try:
        version = np.lib.format.read_magic(fh)
    except ValueError:
        raise error(f"{source}: not a .npy array") from None
    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is None:
        raise error(f"{source}: unsupported .npy version {version}")
    # NumPy warns of a header only Python 2 writes, then parses it another way: refused here
    # rather than leak a warning to stderr.
    # A dtype alias NumPy deprecates ('a4' for 'S4', found by fuzzing) still parses: the
    # header is read, and the dtype judged below, without a warning on the way.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            shape, fortran_order, dtype = read_header(fh)
        except UserWarning:
            raise error(f"{source}: a .npy header of Python 2, not read") from None
        except (ValueError, SyntaxError, TypeError, EOFError, OverflowError, MemoryError,
                UnicodeDecodeError, tokenize.TokenError) as exc:
            raise error(f"{source}: a broken .npy header ({type(exc).__name__}: "
                        f"{str(exc)[:120]})") from None
    if dtype.hasobject:
        raise error(f"{source}: holds a pickled object array; refused, since loading it could "
                    f"run code")
    if any(n < 0 for n in shape):  # found by fuzzing: NumPy's parser takes (-1, 8)
        raise error(f"{source}: the header declares shape {shape}, of a negative size")
    if dtype.names is not None or dtype.subdtype is not None:
        # Found by fuzzing: '2f4' is a subarray dtype, whose elements are arrays themselves.
        raise error(f"{source}: holds records or sub-arrays ({dtype}), not an array of numbers "
                    f"or strings")
    return shape, fortran_order, dtype, math.prod(shape) * dtype.itemsize


def read_npy(fh, source, available, limit, error=DataError, limit_hint=""):
    """Read a ``.npy`` array from ``fh``, bounded before the work.

    Parameters
    ----------
    fh : binary file object at the start of the array
    source : str, named in errors
    available : int or None
        The bytes the file holds from the array's start, if known: a header that declares more
        is refused before anything is allocated.
    limit : int
        The largest array in bytes.
    error : exception class
    limit_hint : str, appended to the message of an array over the limit (how to raise it)

    Returns
    -------
    numpy.ndarray, of the shape, dtype and order the header declares.
    """
    start = fh.tell() if available is not None else 0
    shape, fortran_order, dtype, n_bytes = read_npy_header(fh, source, error)
    if available is not None:
        held = available - (fh.tell() - start)
        if n_bytes > held:
            raise error(f"{source}: truncated: the header declares shape {shape} of {dtype}, "
                        f"{n_bytes:,} bytes, but the file holds {max(held, 0):,}")
    # An empty shape's other sizes count too: (0, 2**31, 2**31) is no array NumPy makes.
    if max(n_bytes, math.prod(n for n in shape if n) * dtype.itemsize) > limit:
        raise error(f"{source}: the header declares shape {shape} of {dtype}, {n_bytes:,} "
                    f"bytes, beyond the limit of {limit:,}{limit_hint}")
    raw = bytearray(n_bytes)  # filled a chunk at a time: the bytes are held once
    view, n_read = memoryview(raw), 0
    while n_read < n_bytes:
        chunk = fh.read(min(n_bytes - n_read, _CHUNK))
        if not chunk:
            raise error(f"{source}: truncated: the data ends after {n_read:,} of {n_bytes:,} "
                        f"bytes")
        view[n_read:n_read + len(chunk)] = chunk
        n_read += len(chunk)
    array = np.frombuffer(raw, dtype=dtype)
    if fortran_order:
        return array.reshape(shape[::-1]).T
    return array.reshape(shape)


class RowFile:
    """Rows of uint8 pixels in a file, read on demand with positioned reads (``pread``) into
    the caller's buffer, never memory-mapped.

    A memory map of a file that is truncated while it is read kills the process with SIGBUS; a
    positioned read returns short instead, and that is one :class:`DataError`. A file replaced
    (renamed over) meanwhile is read as it was: the descriptor holds the file that was opened.

    Shapes: n rows of D = prod(shape[1:]) pixels, stored from byte ``offset`` in C order, or in
    Fortran order (a column of n bytes per pixel), as a ``.npy`` file may hold them.

    Rows that could not all stay in the page cache until they are read again (a data set
    larger than the memory the process may use) are better read past it: set
    ``bypass_cache``. The disk then writes with ``O_DIRECT`` straight into an aligned staging
    area of :data:`DIRECT_PIECE_BYTES`, copied from there into place: the least CPU and the
    shortest wait of the ways measured (``bench/read_paths.py``, docs/scale.md), and no page
    cache to reclaim. Where the file system refuses O_DIRECT, buffered reads that drop their
    pages after them.

    Parameters
    ----------
    path : str or Path
    offset : int, where the pixels start
    shape : tuple of int, (n, ...) as stored
    fortran_order : bool

    Attributes
    ----------
    bypass_cache : bool, default False
    """

    bypass_cache = False

    def __init__(self, path, offset, shape, fortran_order=False):
        self.path, self.offset, self.stored_shape = path, int(offset), tuple(shape)
        self.shape = (int(shape[0]), math.prod(shape[1:]))
        self.fortran_order = bool(fortran_order) and len(shape) > 1
        self._direct_fd = self._stage = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None

    def __del__(self):
        for fd in (getattr(self, "_fd", None), getattr(self, "_direct_fd", None)):
            if fd is not None and fd >= 0:
                os.close(fd)

    def _ended(self, stop):
        raise DataError(f"{self.path}: the file changed while it was read: it ends before row "
                        f"{stop:,}, and it held {self.shape[0]:,} rows when it was opened")

    def _pread(self, view, position, stop):
        """Fill ``view`` from ``position``; a file that ends first has changed since it was
        opened."""
        try:
            if self.bypass_cache and self._direct(view, position, stop):
                return
            done = 0
            while done < len(view):
                n = os.preadv(self._fd, [view[done:]], position + done)
                if n == 0:
                    self._ended(stop)
                done += n
            if self.bypass_cache:
                os.posix_fadvise(self._fd, position, len(view), os.POSIX_FADV_DONTNEED)
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read: {exc.strerror or exc}") from None

    def _direct(self, view, position, stop):
        """Fill ``view`` from ``position`` with O_DIRECT reads; False where the file system
        (or the platform) refuses them, and from then on."""
        if self._direct_fd is None:
            self._direct_fd = -1
            if hasattr(os, "O_DIRECT"):
                try:
                    self._direct_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
                except OSError:
                    pass
        if self._direct_fd < 0:
            return False
        if self._stage is None:
            self._stage = mmap.mmap(-1, DIRECT_PIECE_BYTES + 2 * DIRECT_ALIGN)
        stage = memoryview(self._stage)
        done = 0
        try:
            while done < len(view):
                first = position + done
                aligned = first - first % DIRECT_ALIGN
                want = min(len(view) - done, DIRECT_PIECE_BYTES)
                need = first + want - aligned
                length = -(-need // DIRECT_ALIGN) * DIRECT_ALIGN
                got = 0
                while got < need:
                    n = os.preadv(self._direct_fd, [stage[got:length]], aligned + got)
                    if n == 0:
                        self._ended(stop)
                    got += n
                view[done:done + want] = stage[first - aligned:need]
                done += want
        except OSError as exc:
            if exc.errno != errno.EINVAL or done:
                raise
            os.close(self._direct_fd)  # refused here: buffered reads from now on
            self._direct_fd = -1
            return False
        return True

    def read_into(self, start, stop, out):
        """Read rows ``start:stop`` into ``out`` ((stop - start, D) uint8, C-contiguous)."""
        rows, n_features = stop - start, self.shape[1]
        if not self.fortran_order:
            self._pread(memoryview(out).cast("B"), self.offset + start * n_features, stop)
            return out
        # Fortran order: pixel p of every row is one run of n bytes; C-order pixel p is
        # (j_1, ..., j_k) of the trailing shape, stored at n * (j_1 + s_1 (j_2 + ...)).
        trailing = self.stored_shape[1:]
        columns = np.ravel_multi_index(np.unravel_index(np.arange(n_features), trailing),
                                       trailing, order="F")
        by_pixel = np.empty((n_features, rows), dtype=np.uint8)
        stride = self.stored_shape[0]
        for p, column in enumerate(columns.tolist()):
            self._pread(memoryview(by_pixel[p]), self.offset + column * stride + start, stop)
        out[...] = by_pixel.T
        return out

    def rows(self, start, stop):
        """Rows ``start:stop`` as a new (stop - start, D) uint8 array."""
        return self.read_into(start, stop, np.empty((stop - start, self.shape[1]), np.uint8))

    def head(self, n_rows):
        """The same file limited to its first ``n_rows`` rows."""
        head = RowFile.__new__(RowFile)
        head.__dict__.update(self.__dict__, shape=(int(n_rows), self.shape[1]))
        head._fd = os.dup(self._fd)
        head._direct_fd = head._stage = None
        return head

    def bincount(self, minlength=256):
        """Counts of each byte value over all the rows (for label files), a MiB at a time."""
        counts = np.zeros(minlength, dtype=np.int64)
        per_read = max(1, _CHUNK // max(self.shape[1], 1))
        for start in range(0, self.shape[0], per_read):
            stop = min(start + per_read, self.shape[0])
            counts += np.bincount(self.rows(start, stop).ravel(), minlength=minlength)
        return counts
