"""MNIST data: the IDX file format, lookup of a local copy, and a checked download.

IDX format (big-endian): two zero bytes, a type code (0x08 = unsigned byte, the only type MNIST
uses), the number of dimensions ``ndim``, then ``ndim`` 32-bit sizes, then the payload of
``prod(sizes)`` bytes. Files may be gzip-compressed; the gzip magic bytes tell, not the name.
"""

import gzip
import hashlib
import io
import math
import os
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from .atomic import write_bytes
from .errors import DataError
from .validation import size_limit

UBYTE = 0x08
# The most dimensions a NumPy array can have (the IDX header allows 255).
MAX_IDX_DIMS = 64

# The four files, in MNIST's names, with their shapes and the SHA-256 of each file's decompressed
# content (as in data/mnist/SHA256SUMS). A file with one of these names is checked against the
# checksum only if it has MNIST's shape: any other IDX data set in MNIST's names works too.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_SHA256 = {
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
}
MNIST_SHAPES = {
    "train-images-idx3-ubyte": (60000, 28, 28),
    "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28),
    "t10k-labels-idx1-ubyte": (10000,),
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
DOWNLOAD_TIMEOUT_S = 30.0
# The whole download (four files, ~11 MB) gives up after this long, whatever the mirrors do: a
# mirror that sends a byte a second never trips the per-read timeout above.
DOWNLOAD_DEADLINE_S = 300.0

# The largest IDX payload read, unless FASTLR_MAX_IDX_BYTES says otherwise: five times MNIST's
# largest file (47 MB), so a header cannot make a reader inflate or allocate gigabytes.
MAX_IDX_BYTES = 256 << 20

CHECKOUT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"


def default_cache_dir():
    """``$XDG_CACHE_HOME/fastlr/mnist``, by default ``~/.cache/fastlr/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastlr" / "mnist"


# --- IDX ------------------------------------------------------------------------------------------

def max_idx_bytes():
    """The largest IDX payload a reader accepts: ``$FASTLR_MAX_IDX_BYTES``, else
    :data:`MAX_IDX_BYTES`."""
    return size_limit("FASTLR_MAX_IDX_BYTES", MAX_IDX_BYTES)


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
    if len(head) < 4:
        raise DataError(f"{source}: truncated: {len(head)} bytes, too short for an IDX header")
    if head[0] != 0 or head[1] != 0:
        raise DataError(f"{source}: wrong magic number 0x{head.hex()}: not an IDX file")
    if head[2] != UBYTE:
        raise DataError(f"{source}: IDX type code 0x{head[2]:02x} is not supported "
                        f"(only 0x08, unsigned byte)")
    ndim = head[3]
    if not 1 <= ndim <= MAX_IDX_DIMS:
        raise DataError(f"{source}: IDX header declares {ndim} dimensions; 1 to "
                        f"{MAX_IDX_DIMS} are supported")
    sizes = fh.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(f"{source}: truncated: the header declares {ndim} dimensions but the "
                        f"file ends after {4 + len(sizes)} bytes")
    shape = struct.unpack(f">{ndim}I", sizes)
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


def write_idx(path, array, compress=None):
    """Write a uint8 array as an IDX file, gzip-compressed when ``compress`` is true (by default
    when the name ends in ``.gz``)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise DataError(f"write_idx needs a uint8 array, got {array.dtype}")
    if not 1 <= array.ndim <= MAX_IDX_DIMS:
        raise DataError(f"write_idx needs 1 to {MAX_IDX_DIMS} dimensions, got {array.ndim}")
    path = Path(path)
    raw = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        raw = gzip.compress(raw, mtime=0)
    write_bytes(path, raw)


def _sha256_of_content(raw):
    """SHA-256 of the (decompressed) content, inflated chunk by chunk and at most to the IDX
    limit, so a downloaded decompression bomb costs neither memory nor much time."""
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


# --- locating MNIST -------------------------------------------------------------------------------

def _find_file(directory, stem):
    for name in (stem + ".gz", stem):
        path = Path(directory) / name
        if path.is_file():
            return path
    return None


def _has_all_files(directory):
    return all(_find_file(directory, stem) for stem in MNIST_FILES.values())


def _check_data_dir(directory, named_by):
    """``directory``, if it holds the four files; ``named_by`` says who named it, for messages."""
    if not directory.is_dir():
        what = "not a directory" if directory.exists() else "no such directory"
        raise DataError(f"{named_by}{directory}: {what}")
    missing = [stem for stem in MNIST_FILES.values() if not _find_file(directory, stem)]
    if missing:
        raise DataError(f"{named_by}{directory}: missing {', '.join(missing)} (plain or .gz); "
                        f"it needs the four files in MNIST's names")
    return directory


def find_mnist_dir(data_dir=None, download=True, mirrors=None):
    """Return a directory holding the four MNIST files.

    With ``data_dir`` given, that directory must hold them; else, with ``$FASTLR_DATA`` set,
    that one must (a user who names a directory means it: it is never passed over for another
    copy without a word). Otherwise look in the checkout's ``data/mnist``, the user cache, and
    last download into the cache.

    Raises
    ------
    DataError
        If ``data_dir`` or ``$FASTLR_DATA`` is not a directory or lacks a file, or nothing was
        found and the download failed.
    """
    if data_dir is not None:
        return _check_data_dir(Path(data_dir), "--data-dir ")
    if os.environ.get("FASTLR_DATA"):
        return _check_data_dir(Path(os.environ["FASTLR_DATA"]), "FASTLR_DATA=")
    candidates = [CHECKOUT_DATA_DIR, default_cache_dir()]
    for directory in candidates:
        if _has_all_files(directory):
            return directory
    looked = ", ".join(str(c) for c in candidates)
    if not download:
        raise DataError(f"MNIST not found (looked in {looked})")
    try:
        return download_mnist(default_cache_dir(), mirrors=mirrors)
    except DataError as exc:
        raise DataError(f"MNIST not found (looked in {looked}) and the download failed: {exc}. "
                        f"Put the four MNIST .gz files in one of those directories, or pass "
                        f"--data-dir DIR, or set FASTLR_DATA=DIR") from None


def download_mnist(dest, mirrors=None, timeout=DOWNLOAD_TIMEOUT_S, progress=True,
                   deadline=DOWNLOAD_DEADLINE_S):
    """Download the four MNIST files into ``dest``, checking each file's SHA-256.

    Each file is tried from each mirror in turn. A file is written only once its checksum
    matches, to a temporary name renamed into place, so an interrupted or corrupted download
    never lands in ``dest``. ``timeout`` bounds each connection and read; ``deadline`` (in
    seconds) the whole download. With ``progress``, a progress line on stderr names the file
    and the mirror from the moment the connection is opened.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    DataError
        If some file could not be fetched intact from any mirror.
    """
    dest = Path(dest)
    mirrors = list(mirrors or MNIST_MIRRORS)
    give_up_at = time.monotonic() + deadline
    for stem in MNIST_FILES.values():
        if _find_file(dest, stem):
            continue
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + stem + ".gz"
            try:
                raw = _fetch(url, timeout, progress, give_up_at)
                digest = _sha256_of_content(raw)
            except (OSError, EOFError, zlib.error, ValueError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
                continue
            if digest != MNIST_SHA256[stem]:
                errors.append(f"{url}: checksum mismatch (got sha256 {digest[:12]}...)")
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


def _check_mnist_checksum(path, raw_content):
    """If ``path`` has an MNIST name and MNIST's length, its content must be MNIST's."""
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    expected = MNIST_SHA256.get(stem)
    if expected is None:
        return
    if hashlib.sha256(raw_content).hexdigest() != expected:
        raise DataError(f"{path}: SHA-256 does not match MNIST's published checksum; the file "
                        f"is corrupted (delete it to download it again)")


def _load_checked(path):
    """Read an IDX file; a file with MNIST's name and shape must have MNIST's checksum."""
    array = read_idx(path)
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    if MNIST_SHAPES.get(stem) == array.shape:
        header = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        _check_mnist_checksum(path, header + array.tobytes())
    return array


def load_mnist(data_dir=None, dtype=np.float32):
    """Load MNIST (or any data set stored in MNIST's four file names and format).

    Parameters
    ----------
    data_dir : str or Path, optional
        A directory holding the four files (plain or .gz). When None: ``$FASTLR_DATA``, the
        checkout's ``data/mnist``, ``~/.cache/fastlr/mnist``, then a download into the cache.
    dtype : numpy dtype
        float32 or float64 scale pixels to [0, 1]; uint8 keeps the raw 0-255 values.

    Returns
    -------
    X_train : (N, D) dtype, y_train : (N,) int64, X_test : (M, D) dtype, y_test : (M,) int64
        D is the product of the image dimensions (784 for MNIST).

    Raises
    ------
    DataError
        If files are missing, malformed, inconsistent, or fail MNIST's checksum.
    """
    dtype = np.dtype(dtype)
    if dtype != np.uint8 and dtype.kind != "f":
        raise DataError(f"load_mnist: dtype must be uint8 or a float type, got {dtype}")
    directory = find_mnist_dir(data_dir)
    arrays = {key: _load_checked(_find_file(directory, stem))
              for key, stem in MNIST_FILES.items()}
    out = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if labels.ndim != 1:
            raise DataError(f"{directory}: {split} labels must be 1-D, got shape {labels.shape}")
        if images.ndim < 2 or images.shape[0] != labels.shape[0]:
            raise DataError(f"{directory}: {split} has {images.shape[0]} images but "
                            f"{labels.shape[0]} labels")
        X = images.reshape(images.shape[0], -1)
        if dtype == np.uint8:
            X = X.copy()
        else:
            X = X.astype(dtype) / dtype.type(255)
        out += [X, labels.astype(np.int64)]
    if out[0].shape[1] != out[2].shape[1]:
        raise DataError(f"{directory}: train images have {out[0].shape[1]} pixels, test images "
                        f"{out[2].shape[1]}")
    return tuple(out)
