"""Data in MNIST's format: the IDX file format, lookup of a local copy, and a checked download.

A data set is four IDX files in MNIST's names (:data:`fastlr.datasets.FILE_STEMS`). Where
fastlr knows what the files must be (the bundled copy, the cache, a download of a data set
named in :mod:`fastlr.datasets`) it checks them against the published checksums; a directory
the user gives is read as given, and a known data set in it is recognised by its checksums.

IDX format (big-endian): two zero bytes, a type code (0x08 = unsigned byte, the only type MNIST
uses), the number of dimensions ``ndim``, then ``ndim`` 32-bit sizes, then the payload of
``prod(sizes)`` bytes. Files may be gzip-compressed; the gzip magic bytes tell, not the name.

Decoding a ``.gz`` file and checking it costs more than a whole training run's SGD, so the
first read of a file keeps its decoded, checked array in the user cache (``decoded_cache_dir``)
as a ``.npy`` file named after the SHA-256 of the source's bytes and the SHA-256 of the decoded
content; later reads hash the source (a few milliseconds for MNIST's 11 MB) and memory-map that
copy. A changed source has another hash, so it is never served a stale copy. The copy is
trusted by its content, not its name: the first time a process maps it, its array is hashed
and must give the content SHA-256 its name claims (some tens of milliseconds for MNIST's
training images, a fraction of decoding them); a copy that does not, or is no whole ``.npy``
of bytes, is decoded again from the source and replaced.
"""

import gzip
import hashlib
import io
import math
import os
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import datasets
from .atomic import atomic_write, write_bytes
from .errors import DataError, WriteError
from .pixels import pixel_features
from .reading import RowFile
from .validation import size_limit

UBYTE = 0x08
# The most dimensions a NumPy array can have (the IDX header allows 255).
MAX_IDX_DIMS = 64

DOWNLOAD_TIMEOUT_S = 30.0
# The whole download (four files, ~11 MB) gives up after this long, whatever the mirrors do: a
# mirror that sends a byte a second never trips the per-read timeout above.
DOWNLOAD_DEADLINE_S = 300.0

# The largest IDX payload read, unless FASTLR_MAX_IDX_BYTES says otherwise: five times MNIST's
# largest file (47 MB), so a header cannot make a reader inflate or allocate gigabytes.
MAX_IDX_BYTES = 256 << 20

# Where the bundled data sets are: inside the installed package (``fastlr/_data/NAME``, the
# wheel's copy of the checkout's ``data/``) and in the checkout itself (``data/NAME``).
BUNDLED_DATA_DIRS = (Path(__file__).resolve().parent / "_data",
                     Path(__file__).resolve().parent.parent / "data")


def default_cache_dir(name="mnist"):
    """``$XDG_CACHE_HOME/fastlr/NAME``, by default ``~/.cache/fastlr/NAME``. A relative
    ``XDG_CACHE_HOME`` is ignored, as the XDG base directory specification asks: the cache
    would move with the working directory."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = Path.home() / ".cache"
    return Path(base) / "fastlr" / name


def decoded_cache_dir():
    """``$XDG_CACHE_HOME/fastlr/decoded``, where decoded IDX files are kept: the arrays of
    :func:`load_mnist`'s sources as ``.npy`` files, named after each source's SHA-256."""
    return default_cache_dir().parent / "decoded"


# --- IDX ------------------------------------------------------------------------------------------

def max_idx_bytes():
    """The largest IDX payload a reader accepts: ``$FASTLR_MAX_IDX_BYTES``, else
    :data:`MAX_IDX_BYTES`."""
    return size_limit("FASTLR_MAX_IDX_BYTES", MAX_IDX_BYTES)


def parse_idx_header(raw, source="<bytes>"):
    """The shape an IDX file's header declares and where its payload starts.

    Parameters
    ----------
    raw : bytes
        The start of the uncompressed file: at least the header, ``4 + 4 * ndim`` bytes.
    source : str
        Named in error messages.

    Returns
    -------
    shape : tuple of int
    header_len : int
        The payload's offset in the file.

    Raises
    ------
    DataError
        For a wrong magic number or type code, or a header cut short.
    """
    if len(raw) < 4:
        raise DataError(f"{source}: truncated: {len(raw)} bytes, too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{source}: wrong magic number 0x{raw[:4].hex()}: not an IDX file")
    if raw[2] != UBYTE:
        raise DataError(f"{source}: IDX type code 0x{raw[2]:02x} is not supported "
                        f"(only 0x08, unsigned byte)")
    ndim = raw[3]
    if not 1 <= ndim <= MAX_IDX_DIMS:
        raise DataError(f"{source}: IDX header declares {ndim} dimensions; 1 to "
                        f"{MAX_IDX_DIMS} are supported")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{source}: truncated: the header declares {ndim} dimensions but the "
                        f"file ends after {len(raw)} bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    return shape, header_len



def _check_payload(shape, payload, source):
    """A payload of ``payload`` bytes must be exactly the ``prod(shape)`` the header declares."""
    expected = int(np.prod(shape, dtype=object))
    if payload < expected:
        raise DataError(f"{source}: truncated: shape {shape} needs {expected} bytes of data, "
                        f"found {payload}")
    if payload > expected:
        raise DataError(f"{source}: wrong length: shape {shape} needs {expected} bytes of data, "
                        f"found {payload}")


def parse_idx(raw, source="<bytes>", max_bytes=None):
    """Decode IDX bytes (plain or gzip) into a uint8 array; see :func:`read_idx_stream`."""
    return read_idx_stream(io.BytesIO(raw), source, max_bytes)


def read_idx(path, max_bytes=None):
    """Read an IDX file (plain or gzip) into a uint8 array; see :func:`read_idx_stream`.

    Raises
    ------
    DataError
        If the file cannot be read or is not a valid unsigned-byte IDX file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return read_idx_stream(fh, str(path), max_bytes)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_idx_stream(fh, source, max_bytes=None):
    """Decode an IDX stream (plain or gzip) into a uint8 array, reading no more than it declares.

    The header is read first, and the payload size it declares is checked against
    ``max_bytes`` before a byte of the payload is read or inflated: a small gzip file that
    inflates to gigabytes (a decompression bomb) is refused at once, in constant memory.

    Parameters
    ----------
    fh : binary file object
    source : str
        Named in error messages.
    max_bytes : int, optional
        The largest payload accepted; default :func:`max_idx_bytes`.

    Returns
    -------
    numpy.ndarray of uint8, shaped as the header says.

    Raises
    ------
    DataError
        For bad gzip data, a wrong magic number or type code, a payload larger than
        ``max_bytes``, or a payload whose length is not the product of the dimensions.
    """
    max_bytes = max_idx_bytes() if max_bytes is None else max_bytes
    if fh.read(2) == b"\x1f\x8b":
        fh.seek(0)
        fh = gzip.GzipFile(fileobj=fh, mode="rb")
    else:
        fh.seek(0)
    try:
        return _read_idx_payload(fh, source, max_bytes)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{source}: bad gzip data ({exc})") from None


def _read_idx_payload(fh, source, max_bytes):
    """The header, then exactly the payload it declares, then a check that nothing follows."""
    head = fh.read(4)
    if len(head) == 4:
        head += fh.read(4 * head[3])
    shape, _ = parse_idx_header(head, source)
    expected = math.prod(shape)
    # An empty shape's other sizes count too: (0, 2**32 - 1, 2**32 - 1) is no array NumPy makes.
    if math.prod(n for n in shape if n) > max_bytes:
        raise DataError(f"{source}: the header declares shape {shape}, {expected:,} bytes of "
                        f"data, beyond the limit of {max_bytes:,} bytes; set "
                        f"FASTLR_MAX_IDX_BYTES to read larger data")
    payload = fh.read(expected)
    if len(payload) < expected:
        raise DataError(f"{source}: truncated: shape {shape} needs {expected} bytes of data, "
                        f"found {len(payload)}")
    if fh.read(1):
        raise DataError(f"{source}: wrong length: shape {shape} needs {expected} bytes of data, "
                        f"and the file holds more")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def idx_rows(path):
    """An uncompressed IDX file, checked, as a :class:`~fastlr.reading.RowFile`: its rows
    (the first dimension) read on demand with positioned reads, never memory-mapped, so a file
    truncated while it is read is a DataError, not a SIGBUS.

    Raises
    ------
    DataError
        If the file cannot be read, is gzip-compressed (a compressed file cannot be read by
        rows), or is not a valid unsigned-byte IDX file of the length its header declares.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            head = file.read(4 + 4 * 255)
            size = os.fstat(file.fileno()).st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if head[:2] == b"\x1f\x8b":
        raise DataError(f"{path}: gzip-compressed; a compressed file cannot be read a chunk at "
                        f"a time: decompress it first (gunzip {path.name})")
    shape, header_len = parse_idx_header(head, str(path))
    _check_payload(shape, size - header_len, str(path))
    return RowFile(path, header_len, shape)


def write_idx(path, array, compress=None):
    """Write a uint8 array as an IDX file, gzip-compressed when ``compress`` is true (by default
    when the name ends in ``.gz``)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise DataError(f"write_idx needs a uint8 array, got {array.dtype}")
    if not 1 <= array.ndim <= MAX_IDX_DIMS:
        raise DataError(f"write_idx needs 1 to {MAX_IDX_DIMS} dimensions, got {array.ndim}")
    path = Path(path)
    raw = _idx_header(array) + array.tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        raw = gzip.compress(raw, mtime=0)
    write_bytes(path, raw)


# --- checksums ------------------------------------------------------------------------------------

def _idx_header(array):
    return bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)


def _digest_of_download(raw, kind):
    """The digest of kind ``kind`` (see :class:`~fastlr.datasets.KnownDataset`) of file bytes.

    A SHA-256 of the content is taken as the content inflates, chunk by chunk and at most to
    the IDX limit, so a downloaded decompression bomb costs neither memory nor much time."""
    if kind == "md5-gz":
        return hashlib.md5(raw, usedforsecurity=False).hexdigest()
    stream = io.BytesIO(raw)
    if raw[:2] == b"\x1f\x8b":
        stream = gzip.GzipFile(fileobj=stream, mode="rb")
    digest, size, limit = hashlib.sha256(), 0, max_idx_bytes() + 4 + 4 * MAX_IDX_DIMS
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        size += len(chunk)
        if size > limit:
            raise ValueError(f"the content inflates to more than {limit:,} bytes")
        digest.update(chunk)
    return digest.hexdigest()


CHECKSUM_WORDS = {"sha256-content": "SHA-256 of the decompressed file",
                  "md5-gz": "MD5 of the .gz file"}


def _check_known(files, known, advice):
    """Every file (stem -> :class:`_IdxFile`) must be the one ``known`` publishes; ``advice``
    ends the error message."""
    for stem, file in files.items():
        if file.digest(known.checksum) != known.digests[stem]:
            raise DataError(f"{file.path}: does not match {known.title}'s published checksum "
                            f"({CHECKSUM_WORDS[known.checksum]}); the file is corrupted "
                            f"({advice})")


def identify(files):
    """The known data set whose published checksums all four files (stem ->
    :class:`_IdxFile`) match, or None.

    Only data sets of the same shapes are candidates, and the small label files are compared
    first, so an unknown data set costs a hash of its labels at most.
    """
    stems = sorted(files, key=lambda stem: files[stem].array.size)
    for known in datasets.DATASETS.values():
        if all(files[stem].array.shape == known.shapes[stem] for stem in stems) and all(
                files[stem].digest(known.checksum) == known.digests[stem] for stem in stems):
            return known
    return None


# --- locating a data set --------------------------------------------------------------------------

def _find_file(directory, stem):
    for name in (stem + ".gz", stem):
        path = Path(directory) / name
        if path.is_file():
            return path
    return None


def _has_all_files(directory):
    return all(_find_file(directory, stem) for stem in datasets.FILE_STEMS.values())


def _check_data_dir(directory, named_by):
    """``directory``, if it holds the four files; ``named_by`` says who named it, for messages."""
    if not directory.is_dir():
        what = "not a directory" if directory.exists() else "no such directory"
        raise DataError(f"{named_by}{directory}: {what}")
    missing = [stem for stem in datasets.FILE_STEMS.values() if not _find_file(directory, stem)]
    if missing:
        raise DataError(f"{named_by}{directory}: missing {', '.join(missing)} (plain or .gz); "
                        f"it needs the four files in MNIST's names")
    return directory



def known_dataset(name):
    """The :class:`~fastlr.datasets.KnownDataset` called ``name``.

    Raises
    ------
    DataError
        If fastlr knows no data set of that name.
    """
    try:
        return datasets.DATASETS[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; fastlr knows "
                        f"{', '.join(datasets.DATASETS)} (or pass --data-dir DIR for any "
                        f"other in MNIST's format)") from None


def _bundled_dirs(known):
    return [root / known.name for root in BUNDLED_DATA_DIRS] if known.bundled else []


def local_copy(known):
    """Where the files of the known data set ``known`` are on this machine: its bundled copy,
    else the user cache; with the advice for a file that fails its checksum.

    Returns
    -------
    directory : pathlib.Path, or None if there is no complete copy
    advice : str
    """
    for directory in _bundled_dirs(known):
        if _has_all_files(directory):
            return directory, "the bundled copy is damaged: reinstall fastlr"
    cache = default_cache_dir(known.name)
    if _has_all_files(cache):
        return cache, "delete it to download it again"
    return None, ""


def find_data_dir(name=None, data_dir=None, download=True, mirrors=None, progress=True):
    """Where the four files are, and which data set they must be.

    With ``data_dir``, that directory, read as given (None: no checksum is required). Without
    it, ``$FASTLR_DATA`` if set (also read as given) and ``name`` is None; otherwise the data
    set ``name`` (default ``"mnist"``): its bundled copy, the user cache, and last a download
    into the cache, all checked against the data set's published checksums.

    Returns
    -------
    directory : pathlib.Path
    known : KnownDataset or None
        The data set the files must be, None for a directory given by the user.
    advice : str
        What to do if a file fails its checksum.

    Raises
    ------
    DataError
        If ``data_dir`` or ``$FASTLR_DATA`` is not a directory or lacks a file, ``name`` is
        unknown, or nothing was found and the download failed (the message says where fastlr looked).
    """
    if data_dir is not None:
        return _check_data_dir(Path(data_dir), "--data-dir "), None, ""
    # A user who names a directory means it: it is never passed over for another copy.
    if name is None and os.environ.get("FASTLR_DATA"):
        return _check_data_dir(Path(os.environ["FASTLR_DATA"]), "FASTLR_DATA="), None, ""
    known = known_dataset(name or "mnist")
    directory, advice = local_copy(known)
    if directory is not None:
        return directory, known, advice
    cache = default_cache_dir(known.name)
    looked = ", ".join(str(c) for c in _bundled_dirs(known) + [cache])
    if not download:
        raise DataError(f"{known.title} not found (looked in {looked})")
    try:
        return (download_dataset(cache, known, mirrors=mirrors, progress=progress), known,
                "delete it to download it again")
    except DataError as exc:
        raise DataError(f"{known.title} not found (looked in {looked}) and the download "
                        f"failed: {exc}. Download its four .gz files from {known.homepage} "
                        f"into {cache}, or pass --data-dir DIR, or set FASTLR_DATA=DIR") from None


def download_dataset(dest, dataset="mnist", mirrors=None, timeout=DOWNLOAD_TIMEOUT_S,
                     progress=True, deadline=DOWNLOAD_DEADLINE_S):
    """Download the four files of a known data set into ``dest``, checking each one.

    Each file is tried from each mirror in turn. A file is written only once it matches its
    published checksum, to a temporary name renamed into place, so an interrupted or corrupted
    download never lands in ``dest``. ``timeout`` bounds each connection and read; ``deadline``
    (in seconds) the whole download. With ``progress``, a progress line on stderr names the file
    and the mirror from the moment the connection is opened.

    Parameters
    ----------
    dest : path
    dataset : str or KnownDataset
    mirrors : sequence of base URLs, default the data set's own

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    DataError
        If some file could not be fetched intact from any mirror.
    """
    known = known_dataset(dataset) if isinstance(dataset, str) else dataset
    dest = Path(dest)
    mirrors = list(mirrors or known.mirrors)
    give_up_at = time.monotonic() + deadline
    for stem in datasets.FILE_STEMS.values():
        if _find_file(dest, stem):
            continue
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + stem + ".gz"
            try:
                raw = _fetch(url, timeout, progress, give_up_at)
                digest = _digest_of_download(raw, known.checksum)
            except (OSError, EOFError, zlib.error, ValueError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
                continue
            if digest != known.digests[stem]:
                errors.append(f"{url}: checksum mismatch (got {known.checksum} "
                              f"{digest[:12]}...)")
                continue
            write_bytes(dest / (stem + ".gz"), raw)
            break
        else:
            raise DataError(f"could not download {stem}: " + "; ".join(errors))
    return dest


def _fetch(url, timeout, progress, give_up_at):
    """GET ``url`` into memory before the monotonic time ``give_up_at``, with a tqdm bar when
    ``progress``.

    ``read1`` returns what one socket read brings, so the deadline is checked however slowly
    the bytes come (``read(n)`` would wait for all n of them).
    """
    import urllib.parse  # only a download needs urllib: tens of ms of start-up otherwise
    import urllib.request

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False,
                   file=sys.stderr)
        bar.set_postfix_str(f"connecting to {urllib.parse.urlsplit(url).netloc}")
    try:
        remaining = give_up_at - time.monotonic()
        if remaining <= 0:
            raise OSError("the download's deadline has passed")
        with urllib.request.urlopen(url, timeout=min(timeout, remaining)) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            if bar is not None:
                bar.reset(total=total)
                bar.set_postfix_str("")
            chunks = []
            while chunk := response.read1(1 << 16):
                chunks.append(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                if time.monotonic() > give_up_at:
                    raise OSError(f"gave up after {sum(map(len, chunks)):,} bytes: the "
                                  f"download's deadline has passed")
    finally:
        if bar is not None:
            bar.close()
    raw = b"".join(chunks)
    if total is not None and len(raw) != total:
        raise OSError(f"connection closed after {len(raw)} of {total} bytes")
    return raw


# --- loading --------------------------------------------------------------------------------------

@dataclass
class Dataset:
    """A data set in MNIST's format, loaded: its arrays and what it is.

    Shapes: N training images, M test images, D = H * W pixels per image.

    Attributes
    ----------
    X_train : (N, D), y_train : (N,) int64, X_test : (M, D), y_test : (M,) int64
    name : str or None
        The known data set's name (``"fashion-mnist"``), None if the files are no known one.
    title : str
        How output names it: ``"Fashion-MNIST"``, or ``"IDX data set at DIR"``.
    directory : pathlib.Path
        Where the files were read (absolute).
    image_shape : (H, W)
        The shape of one image (the trailing dimensions of the image files, as rows x rest).
    class_names : tuple of str or None
        The meaning of label k, for a known data set.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: object
    title: str
    directory: Path
    image_shape: tuple
    class_names: object

    def arrays(self):
        """``X_train, y_train, X_test, y_test``, as :func:`load_mnist` returns them."""
        return self.X_train, self.y_train, self.X_test, self.y_test

    def record(self):
        """What a model file and ``--json`` record of the data set, as plain JSON values: with
        the ``directory`` it was read from, where :func:`load_recorded` finds it again."""
        return {"name": self.name, "title": self.title,
                "image_shape": list(self.image_shape),
                "class_names": list(self.class_names) if self.class_names else None,
                "directory": str(self.directory)}


@dataclass
class _IdxFile:
    """An IDX file as read: its bytes, its array, and the SHA-256 of its decompressed content
    (the header and the array), from which :meth:`digest` answers for a published checksum."""

    path: Path
    raw: bytes
    array: np.ndarray
    content_sha256: str

    def digest(self, kind):
        """The digest of kind ``kind`` (see :class:`~fastlr.datasets.KnownDataset`); None for
        the MD5 of a ``.gz`` when the file is not gzip-compressed."""
        if kind == "sha256-content":
            return self.content_sha256
        return _digest_of_download(self.raw, kind) if self.raw[:2] == b"\x1f\x8b" else None


def _content_sha256(array):
    """The SHA-256 of the IDX file that holds ``array`` uncompressed: its header, then its
    bytes."""
    content = hashlib.sha256(_idx_header(array))
    content.update(np.ascontiguousarray(array).data)
    return content.hexdigest()


# The decoded copies whose content this process has hashed and found to be what their names
# claim, by (path, device, inode, size, modification time): a copy replaced since is hashed
# again.
_VERIFIED_COPIES = set()


def _verified_copy(decoded, content_sha256):
    """The array of the decoded copy ``decoded``, memory-mapped, if it is a whole ``.npy`` of
    bytes whose content has the SHA-256 ``content_sha256`` (the one its name claims); else
    None."""
    try:
        stat = decoded.stat()
        array = np.load(decoded, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):  # not a whole .npy file
        return None
    if (array.dtype != np.uint8 or not 1 <= array.ndim <= MAX_IDX_DIMS
            or not array.flags.c_contiguous):
        return None
    identity = (str(decoded), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if identity not in _VERIFIED_COPIES:
        if _content_sha256(array) != content_sha256:
            del array
            try:  # a copy that lies is never worth hashing again
                decoded.unlink()
            except OSError:
                pass
            return None
        _VERIFIED_COPIES.add(identity)
    return array


def _read_decoded(path):
    """Read an IDX file through the decoded cache, as an :class:`_IdxFile`.

    The array is memory-mapped (read-only) from :func:`decoded_cache_dir` when a copy of these
    exact bytes is there and its content is the one its name claims (hashed once per process),
    else decoded (and checked as :func:`read_idx` does) and kept there for the next time,
    replacing a copy that failed. The copy's name holds the SHA-256 of the source's bytes and
    of the decoded content. A cache that cannot be written only means decoding again next
    time."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    key = f"{stem}-{hashlib.sha256(raw).hexdigest()[:32]}"
    for decoded in decoded_cache_dir().glob(f"{key}-*.npy"):
        content_sha256 = decoded.stem[len(key) + 1:]
        array = _verified_copy(decoded, content_sha256)
        if array is not None:
            return _IdxFile(path, raw, array, content_sha256)
    array = parse_idx(raw, str(path))
    file = _IdxFile(path, raw, array, _content_sha256(array))
    try:
        with atomic_write(decoded_cache_dir() / f"{key}-{file.content_sha256}.npy") as fh:
            np.save(fh, array)
    except (OSError, WriteError):
        pass
    return file


def _aligned_empty(shape, dtype, alignment=64):
    """An empty C-contiguous array that starts on a cache line: the kernels' 64-byte vector
    loads of its rows then never straddle two lines (on Intel cores such a load costs two;
    the Numba score tile ran faster on aligned rows, docs/journal/)."""
    dtype = np.dtype(dtype)
    n_bytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(n_bytes + alignment, np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw[start:start + n_bytes].view(dtype).reshape(shape)



def load_dataset(name=None, data_dir=None, dtype=np.float32, progress=True):
    """Load a known data set by name, or any data set in MNIST's four file names and format.

    Parameters
    ----------
    name : str, optional
        A data set fastlr knows (``fastlr.datasets.DATASETS``: ``"mnist"``,
        ``"fashion-mnist"``, ``"kmnist"``), found in the bundled copy or the user cache or
        downloaded into the cache, and checked against its published checksums.
    data_dir : str or Path, optional
        Instead of ``name``: a directory holding the four files (plain or .gz), read as given;
        a known data set is recognised by its checksums.
        With neither: ``$FASTLR_DATA`` (read as given), else ``"mnist"``.
    dtype : numpy dtype
        float32 or float64 scale pixels to [0, 1]; uint8 keeps the raw 0-255 values.
    progress : bool
        Show a progress line on stderr while a download runs.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        If both ``name`` and ``data_dir`` are given, the name is unknown, files are missing,
        malformed or inconsistent, or a known data set's file fails its checksum.
    """
    if name is not None and data_dir is not None:
        raise DataError("give a data set name or a data directory, not both")
    dtype = np.dtype(dtype)
    if dtype != np.uint8 and dtype.kind != "f":
        raise DataError(f"load_dataset: dtype must be uint8 or a float type, got {dtype}")
    directory, known, advice = find_data_dir(name, data_dir, progress=progress)
    files = {stem: _read_decoded(_find_file(directory, stem))
             for stem in datasets.FILE_STEMS.values()}
    arrays = {stem: file.array for stem, file in files.items()}
    if known is not None:
        _check_known(files, known, advice)
    else:
        known = identify(files)
    out = []
    for split in ("train", "t10k"):
        images = arrays[f"{split}-images-idx3-ubyte"]
        labels = arrays[f"{split}-labels-idx1-ubyte"]
        split = "test" if split == "t10k" else split
        if labels.ndim != 1:
            raise DataError(f"{directory}: {split} labels must be 1-D, got shape {labels.shape}")
        if images.ndim < 2 or images.shape[0] != labels.shape[0]:
            raise DataError(f"{directory}: {split} has {images.shape[0]} images but "
                            f"{labels.shape[0]} labels")
        pixels = images.reshape(images.shape[0], -1)
        X = _aligned_empty(pixels.shape, dtype)
        if dtype == np.uint8:
            X[...] = pixels
        else:
            pixel_features(pixels, dtype, out=X)
        out += [X, labels.astype(np.int64)]
    if out[0].shape[1] != out[2].shape[1]:
        raise DataError(f"{directory}: train images have {out[0].shape[1]} pixels, test images "
                        f"{out[2].shape[1]}")
    # Rows by the rest: (H, W) for images, (1, D) for a file of flat rows.
    images = arrays["train-images-idx3-ubyte"]
    image_shape = ((images.shape[1], out[0].shape[1] // images.shape[1]) if images.ndim >= 3
                   else (1, out[0].shape[1]))
    return Dataset(*out, name=known.name if known else None,
                   title=known.title if known else f"IDX data set at {directory}",
                   directory=directory.resolve(),
                   image_shape=tuple(int(n) for n in image_shape),
                   class_names=known.class_names if known else None)


def load_recorded(record, dtype=np.float32, progress=True):
    """Load the data set a model was trained on, from the record its file keeps
    (:meth:`Dataset.record`).

    A known data set comes from its usual local copy (bundled or cached) when there is one,
    else from the directory it was read from, else it is downloaded; any other data set comes
    from the directory it was read from, which must still hold its four files.

    Raises
    ------
    DataError
        If the record names no known data set and its directory no longer holds the files.
    """
    name, directory = record.get("name"), record.get("directory")
    here = directory is not None and _has_all_files(directory)
    if name in datasets.DATASETS and (local_copy(datasets.DATASETS[name])[0] is not None
                                      or not here):
        return load_dataset(name, dtype=dtype, progress=progress)
    if here:
        return load_dataset(data_dir=directory, dtype=dtype, progress=progress)
    where = f" read from {directory}, which no longer holds its four files" if directory else ""
    raise DataError(f"the model was trained on {record['title']}{where}; pass --data-dir DIR "
                    f"(or --dataset NAME) for the data to use")


def load_mnist(data_dir=None, dtype=np.float32):
    """Load MNIST, or any data set in MNIST's four file names and format: the arrays of
    :func:`load_dataset` with ``data_dir``.

    Returns
    -------
    X_train : (N, D) dtype, y_train : (N,) int64, X_test : (M, D) dtype, y_test : (M,) int64
        D is the product of the image dimensions (784 for MNIST).
    """
    return load_dataset(data_dir=data_dir, dtype=dtype).arrays()
