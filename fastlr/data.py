"""MNIST data: the IDX file format, lookup of a local copy, and a checked download.

IDX format (big-endian): two zero bytes, a type code (0x08 = unsigned byte, the only type MNIST
uses), the number of dimensions ``ndim``, then ``ndim`` 32-bit sizes, then the payload of
``prod(sizes)`` bytes. Files may be gzip-compressed; the gzip magic bytes tell, not the name.
"""

import gzip
import hashlib
import os
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from .atomic import write_bytes
from .errors import DataError

UBYTE = 0x08

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

CHECKOUT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"


def default_cache_dir():
    """``$XDG_CACHE_HOME/fastlr/mnist``, by default ``~/.cache/fastlr/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastlr" / "mnist"


# --- IDX ------------------------------------------------------------------------------------------

def parse_idx(raw, source="<bytes>"):
    """Decode IDX bytes (plain or gzip) into a uint8 array.

    Parameters
    ----------
    raw : bytes
    source : str
        Named in error messages.

    Returns
    -------
    numpy.ndarray of uint8, shaped as the header says.

    Raises
    ------
    DataError
        For bad gzip data, a wrong magic number or type code, or a payload whose length is not
        the product of the dimensions.
    """
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{source}: bad gzip data ({exc})") from None
    if len(raw) < 4:
        raise DataError(f"{source}: truncated: {len(raw)} bytes, too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{source}: wrong magic number 0x{raw[:4].hex()}: not an IDX file")
    if raw[2] != UBYTE:
        raise DataError(f"{source}: IDX type code 0x{raw[2]:02x} is not supported "
                        f"(only 0x08, unsigned byte)")
    ndim = raw[3]
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{source}: truncated: the header declares {ndim} dimensions but the "
                        f"file ends after {len(raw)} bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    expected = int(np.prod(shape, dtype=object))
    payload = len(raw) - header_len
    if payload < expected:
        raise DataError(f"{source}: truncated: shape {shape} needs {expected} bytes of data, "
                        f"found {payload}")
    if payload > expected:
        raise DataError(f"{source}: wrong length: shape {shape} needs {expected} bytes of data, "
                        f"found {payload}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def read_idx(path):
    """Read an IDX file (plain or gzip) into a uint8 array; see :func:`parse_idx`.

    Raises
    ------
    DataError
        If the file cannot be read or is not a valid unsigned-byte IDX file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_idx(raw, str(path))


def write_idx(path, array, compress=None):
    """Write a uint8 array as an IDX file, gzip-compressed when ``compress`` is true (by default
    when the name ends in ``.gz``)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise DataError(f"write_idx needs a uint8 array, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise DataError(f"write_idx needs 1 to 255 dimensions, got {array.ndim}")
    path = Path(path)
    raw = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        raw = gzip.compress(raw, mtime=0)
    write_bytes(path, raw)


def _sha256_of_content(raw):
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return hashlib.sha256(raw).hexdigest()


# --- locating MNIST -------------------------------------------------------------------------------

def _find_file(directory, stem):
    for name in (stem + ".gz", stem):
        path = Path(directory) / name
        if path.is_file():
            return path
    return None


def _has_all_files(directory):
    return all(_find_file(directory, stem) for stem in MNIST_FILES.values())


def find_mnist_dir(data_dir=None, download=True, mirrors=None):
    """Return a directory holding the four MNIST files.

    With ``data_dir`` given, that directory must hold them. Otherwise look in ``$FASTLR_DATA``,
    the checkout's ``data/mnist``, the user cache, and last download into the cache.

    Raises
    ------
    DataError
        If ``data_dir`` lacks a file, or nothing was found and the download failed.
    """
    if data_dir is not None:
        directory = Path(data_dir)
        if not directory.is_dir():
            raise DataError(f"--data-dir {directory}: no such directory")
        missing = [stem for stem in MNIST_FILES.values() if not _find_file(directory, stem)]
        if missing:
            raise DataError(f"--data-dir {directory}: missing {', '.join(missing)} "
                            f"(plain or .gz); it needs the four files in MNIST's names")
        return directory
    candidates = []
    if os.environ.get("FASTLR_DATA"):
        candidates.append(Path(os.environ["FASTLR_DATA"]))
    candidates += [CHECKOUT_DATA_DIR, default_cache_dir()]
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


def download_mnist(dest, mirrors=None, timeout=DOWNLOAD_TIMEOUT_S, progress=True):
    """Download the four MNIST files into ``dest``, checking each file's SHA-256.

    Each file is tried from each mirror in turn. A file is written only once its checksum
    matches, to a temporary name renamed into place, so an interrupted or corrupted download
    never lands in ``dest``.

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
    for stem in MNIST_FILES.values():
        if _find_file(dest, stem):
            continue
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + stem + ".gz"
            try:
                raw = _fetch(url, timeout, progress)
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


def _fetch(url, timeout, progress):
    """GET ``url`` into memory, with a tqdm bar when ``progress``."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        chunks = []
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                       leave=False)
        try:
            while True:
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                if bar is not None:
                    bar.update(len(chunk))
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


def _aligned_empty(shape, dtype, alignment=64):
    """An empty C-contiguous array that starts on a cache line: the kernels' 64-byte vector
    loads of its rows then never straddle two lines (on Intel cores such a load costs two;
    the Numba score tile ran 1.37x faster on aligned rows, docs/kernels.md)."""
    dtype = np.dtype(dtype)
    n_bytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(n_bytes + alignment, np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw[start:start + n_bytes].view(dtype).reshape(shape)


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
        D is the product of the image dimensions (784 for MNIST). X_train and X_test start
        on a 64-byte cache line.

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
        pixels = images.reshape(images.shape[0], -1)
        X = _aligned_empty(pixels.shape, dtype)
        if dtype == np.uint8:
            X[...] = pixels
        else:
            np.divide(pixels, dtype.type(255), out=X, dtype=dtype)
        out += [X, labels.astype(np.int64)]
    if out[0].shape[1] != out[2].shape[1]:
        raise DataError(f"{directory}: train images have {out[0].shape[1]} pixels, test images "
                        f"{out[2].shape[1]}")
    return tuple(out)
