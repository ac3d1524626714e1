"""Data in MNIST's format: the IDX file format, lookup of a local copy, and a checked download.

A data set is four IDX files in MNIST's names (:data:`fastlr.datasets.FILE_STEMS`). Where
fastlr knows what the files must be (the bundled copy, the cache, a download of a data set
named in :mod:`fastlr.datasets`) it checks them against the published checksums; a directory
the user gives is read as given, and a known data set in it is recognised by its checksums.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import datasets
from .atomic import write_bytes
from .errors import DataError

UBYTE = 0x08

DOWNLOAD_TIMEOUT_S = 30.0

# Where the bundled data sets are: inside the installed package (``fastlr/_data/NAME``, the
# wheel's copy of the checkout's ``data/``) and in the checkout itself (``data/NAME``).
BUNDLED_DATA_DIRS = (Path(__file__).resolve().parent / "_data",
                     Path(__file__).resolve().parent.parent / "data")


def default_cache_dir(name="mnist"):
    """``$XDG_CACHE_HOME/fastlr/NAME``, by default ``~/.cache/fastlr/NAME``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastlr" / name


# --- IDX ------------------------------------------------------------------------------------------

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
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{source}: truncated: the header declares {ndim} dimensions but the "
                        f"file ends after {len(raw)} bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    return shape, header_len


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
    shape, header_len = parse_idx_header(raw, source)
    _check_payload(shape, len(raw) - header_len, source)
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def _check_payload(shape, payload, source):
    """A payload of ``payload`` bytes must be exactly the ``prod(shape)`` the header declares."""
    expected = int(np.prod(shape, dtype=object))
    if payload < expected:
        raise DataError(f"{source}: truncated: shape {shape} needs {expected} bytes of data, "
                        f"found {payload}")
    if payload > expected:
        raise DataError(f"{source}: wrong length: shape {shape} needs {expected} bytes of data, "
                        f"found {payload}")


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


def memmap_idx(path):
    """Memory-map an uncompressed IDX file: a read-only uint8 array shaped as the header says,
    whose pages are read from disk only when touched.

    Raises
    ------
    DataError
        If the file cannot be read, is gzip-compressed (a compressed file cannot be mapped),
        or is not a valid unsigned-byte IDX file.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            head = file.read(4 + 4 * 255)
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if head[:2] == b"\x1f\x8b":
        raise DataError(f"{path}: gzip-compressed; a compressed file cannot be memory-mapped: "
                        f"decompress it first (gunzip {path.name})")
    shape, header_len = parse_idx_header(head, str(path))
    _check_payload(shape, size - header_len, str(path))
    return np.memmap(path, dtype=np.uint8, mode="r", offset=header_len, shape=shape)


def write_idx(path, array, compress=None):
    """Write a uint8 array as an IDX file, gzip-compressed when ``compress`` is true (by default
    when the name ends in ``.gz``)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise DataError(f"write_idx needs a uint8 array, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise DataError(f"write_idx needs 1 to 255 dimensions, got {array.ndim}")
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
    """The digest of kind ``kind`` (see :class:`~fastlr.datasets.KnownDataset`) of file bytes."""
    if kind == "md5-gz":
        return hashlib.md5(raw, usedforsecurity=False).hexdigest()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return hashlib.sha256(raw).hexdigest()


def _digest_of_file(path, array, kind):
    """The digest of kind ``kind`` of the IDX file at ``path``, whose content is ``array``; None
    for the MD5 of a ``.gz`` when the file is not gzip-compressed."""
    if kind == "sha256-content":
        # The decompressed content is the header and the array: no second decompression.
        digest = hashlib.sha256(_idx_header(array))
        digest.update(np.ascontiguousarray(array).data)
        return digest.hexdigest()
    raw = path.read_bytes()
    return _digest_of_download(raw, kind) if raw[:2] == b"\x1f\x8b" else None


CHECKSUM_WORDS = {"sha256-content": "SHA-256 of the decompressed file",
                  "md5-gz": "MD5 of the .gz file"}


def _check_known(files, arrays, known, advice):
    """Every file must be the one ``known`` publishes; ``advice`` ends the error message."""
    for stem, path in files.items():
        if _digest_of_file(path, arrays[stem], known.checksum) != known.digests[stem]:
            raise DataError(f"{path}: does not match {known.title}'s published checksum "
                            f"({CHECKSUM_WORDS[known.checksum]}); the file is corrupted "
                            f"({advice})")


def identify(files, arrays):
    """The known data set whose published checksums all four files match, or None.

    Only data sets of the same shapes are candidates, and the small label files are compared
    first, so an unknown data set costs a hash of its labels at most.
    """
    stems = sorted(files, key=lambda stem: arrays[stem].size)
    for known in datasets.DATASETS.values():
        if all(arrays[stem].shape == known.shapes[stem] for stem in stems) and all(
                _digest_of_file(files[stem], arrays[stem], known.checksum)
                == known.digests[stem] for stem in stems):
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


def find_data_dir(name=None, data_dir=None, download=True, mirrors=None):
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
        If ``data_dir`` lacks a file, ``name`` is unknown, or nothing was found and the
        download failed (the message says where fastlr looked).
    """
    if data_dir is not None:
        directory = Path(data_dir)
        if not directory.is_dir():
            raise DataError(f"--data-dir {directory}: no such directory")
        missing = [stem for stem in datasets.FILE_STEMS.values()
                   if not _find_file(directory, stem)]
        if missing:
            raise DataError(f"--data-dir {directory}: missing {', '.join(missing)} "
                            f"(plain or .gz); it needs the four files in MNIST's names")
        return directory, None, ""
    candidates = []
    if name is None and os.environ.get("FASTLR_DATA"):
        user_dir = Path(os.environ["FASTLR_DATA"])
        if _has_all_files(user_dir):
            return user_dir, None, ""
        candidates.append(user_dir)
    known = known_dataset(name or "mnist")
    directory, advice = local_copy(known)
    if directory is not None:
        return directory, known, advice
    cache = default_cache_dir(known.name)
    looked = ", ".join(str(c) for c in candidates + _bundled_dirs(known) + [cache])
    if not download:
        raise DataError(f"{known.title} not found (looked in {looked})")
    try:
        return (download_dataset(cache, known, mirrors=mirrors), known,
                "delete it to download it again")
    except DataError as exc:
        raise DataError(f"{known.title} not found (looked in {looked}) and the download "
                        f"failed: {exc}. Download its four .gz files from {known.homepage} "
                        f"into {cache}, or pass --data-dir DIR, or set FASTLR_DATA=DIR") from None


def download_dataset(dest, dataset="mnist", mirrors=None, timeout=DOWNLOAD_TIMEOUT_S,
                     progress=True):
    """Download the four files of a known data set into ``dest``, checking each one.

    Each file is tried from each mirror in turn. A file is written only once it matches its
    published checksum, to a temporary name renamed into place, so an interrupted or corrupted
    download never lands in ``dest``.

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
    for stem in datasets.FILE_STEMS.values():
        if _find_file(dest, stem):
            continue
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + stem + ".gz"
            try:
                raw = _fetch(url, timeout, progress)
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
        Where the files were read.
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
        """What a model file and ``--json`` record of the data set, as plain JSON values."""
        return {"name": self.name, "title": self.title,
                "image_shape": list(self.image_shape),
                "class_names": list(self.class_names) if self.class_names else None}


def load_dataset(name=None, data_dir=None, dtype=np.float32):
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
    directory, known, advice = find_data_dir(name, data_dir)
    files = {stem: _find_file(directory, stem) for stem in datasets.FILE_STEMS.values()}
    arrays = {stem: read_idx(path) for stem, path in files.items()}
    if known is not None:
        _check_known(files, arrays, known, advice)
    else:
        known = identify(files, arrays)
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
        X = images.reshape(images.shape[0], -1)
        if dtype == np.uint8:
            X = X.copy()
        else:
            X = X.astype(dtype) / dtype.type(255)
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
                   directory=directory, image_shape=tuple(int(n) for n in image_shape),
                   class_names=known.class_names if known else None)


def load_mnist(data_dir=None, dtype=np.float32):
    """Load MNIST, or any data set in MNIST's four file names and format: the arrays of
    :func:`load_dataset` with ``data_dir``.

    Returns
    -------
    X_train : (N, D) dtype, y_train : (N,) int64, X_test : (M, D) dtype, y_test : (M,) int64
        D is the product of the image dimensions (784 for MNIST).
    """
    return load_dataset(data_dir=data_dir, dtype=dtype).arrays()
