"""The model file format: an ``.npz`` archive of plain arrays and JSON metadata, never a pickle.

An archive holds four members:

- ``coef`` (C, D) and ``intercept`` (C,): float32 or float64 weights;
- ``classes`` (C,): the labels, numbers or fixed-width strings, sorted and distinct;
- ``metadata``: a 0-d unicode array holding JSON: the format and its version, the fastlr
  version, the hyperparameters, the preprocessing the weights expect of their input, the number
  of features, the backend and thread count used (``n_threads``, the most threads a step ran
  on, and ``thread_changes``, how many from which epoch and step and why: see
  :mod:`fastlr.threads`; None if unknown), the per-epoch training history, and the data set it
  was trained on (``dataset``: name, title, image shape, class names; None if unknown).

:func:`write_model` writes it through :func:`fastlr.atomic.atomic_write`, so a model file is
the complete new model or the untouched old one. :func:`read_model` reads member by member with
NumPy's header parser and never unpickles (the equivalent of ``allow_pickle=False``): an object
array is refused before its bytes are read, each member's declared size must match what the
archive holds, and the hyperparameters in the metadata must pass the same constraints as the
estimator's (:mod:`fastlr.validation`). Loading a model file never runs code.
"""

import io
import json
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._version import __version__
from .atomic import atomic_write
from .backends import AUTO_ORDER
from .errors import InvalidParameterError, ModelFileError, WriteError
from .reading import open_once, read_npy
from .validation import check_params, size_limit

MODEL_FORMAT = "fastlr-model"
MODEL_FORMAT_VERSION = 1

# What a model file says about the input its weights expect: the pixel scale, and the steps
# (``preprocessing``) applied to every X before the weights see it.
PIXEL_SCALE = "x / 255, in [0, 1]"

# Model files whose members declare more than this in all are refused before anything is read,
# unless FASTLR_MAX_MODEL_BYTES says otherwise: a softmax model over MNIST takes 60 kB, this
# holds 8 million float64 weights, and a hostile archive must not make the reader allocate
# gigabytes.
MAX_MODEL_BYTES = 64 << 20
MAX_MODEL_MEMBERS = 16


@dataclass
class ModelContents:
    """What a model file holds, checked: the arrays, the parameters and the training record."""

    coef: np.ndarray        # (C, D) float32 or float64
    intercept: np.ndarray   # (C,) same dtype
    classes: np.ndarray     # (C,) sorted distinct numbers or strings
    params: dict            # the estimator's constructor parameters
    backend: str            # the backend that trained it (numpy if unknown here)
    n_threads: int          # the most threads it trained on, or None
    history: list           # one dict per epoch
    metadata: dict          # the whole JSON metadata, as read
    dataset: dict = None    # the training data set's record (see _check_dataset), or None
    thread_changes: list = None  # the threads by epoch and step, and why; or None


def write_model(path, *, coef, intercept, classes, params, backend, n_threads, history,
                dataset=None, thread_changes=None):
    """Write a model file to ``path``, atomically; returns ``path`` as a Path.

    ``dataset`` is the record of the training data (:meth:`fastlr.data.Dataset.record`), or
    None when it is not known; ``thread_changes`` the threads' records
    (:attr:`fastlr.threads.ThreadPlan.changes`), or None.

    Raises
    ------
    WriteError
        If the file cannot be written, or if what it would hold could not be loaded again (the
        checks of :func:`read_model`: classes that are neither numbers nor strings, weights
        that are not finite, hyperparameters outside their constraints, a broken history, more
        than the size limit); nothing is written then.
    """
    plain_classes = classes
    if classes.dtype.kind == "O":  # labels given as Python objects: store them plainly
        plain_classes = np.array(classes.tolist())
    if plain_classes.dtype.kind not in "biufU" or plain_classes.shape != classes.shape:
        raise WriteError(f"cannot save {path}: classes of dtype {classes.dtype}; use numbers "
                         f"or strings")
    preprocessing = params.get("preprocessing")
    metadata = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "fastlr_version": __version__,
        "params": params,
        "preprocessing": {"pixel_scale": PIXEL_SCALE,
                          "steps": [preprocessing] if preprocessing else []},
        "n_features_in": int(coef.shape[1]),
        "backend": backend,
        "n_threads": n_threads,
        "thread_changes": thread_changes,
        "history": history,
        "dataset": dataset,
    }
    try:
        text = json.dumps(metadata, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:  # a NaN or an object in the parameters or history
        raise WriteError(f"cannot save {path}: its parameters or history hold a value a model "
                         f"file cannot (JSON: {exc})") from None
    buffer = io.BytesIO()
    np.savez(buffer, coef=coef, intercept=intercept, classes=plain_classes,
             metadata=np.array(text))
    # Nothing is saved that cannot be loaded again: the bytes are read back as a file would be.
    where = f"cannot save {path} (it could not be loaded again)"
    try:
        contents = _contents(_read_archive(io.BytesIO(buffer.getvalue()), where), where)
    except ModelFileError as exc:
        raise WriteError(str(exc)) from None
    if not (np.array_equal(contents.classes, plain_classes)
            and np.array_equal(contents.coef, coef) and contents.coef.dtype == coef.dtype):
        raise WriteError(f"{where}: its classes or weights would read back changed")
    with atomic_write(path) as fh:
        fh.write(buffer.getvalue())
    return Path(path)


def read_model(path):
    """Read and check the model file at ``path``; returns its :class:`ModelContents`.

    Raises
    ------
    ModelFileError
        If the file is missing, truncated, not a fastlr model, of a newer format, holds
        anything but plain arrays, or its hyperparameters are not allowed values.
    """
    path = Path(path)
    return _contents(_read_npz(path), path)


def _contents(arrays, path):
    """The :class:`ModelContents` of a model file's arrays, checked; ``path`` names it in
    errors."""
    missing = {"coef", "intercept", "classes", "metadata"} - set(arrays)
    if missing:
        raise ModelFileError(f"{path}: not a fastlr model file (missing "
                             f"{', '.join(sorted(missing))})")
    metadata = _parse_metadata(arrays["metadata"], path)
    coef, intercept, classes = arrays["coef"], arrays["intercept"], arrays["classes"]
    if (coef.ndim != 2 or coef.dtype not in (np.float32, np.float64)
            or intercept.shape != (coef.shape[0],) or intercept.dtype != coef.dtype
            or classes.shape != (coef.shape[0],) or coef.shape[0] < 2
            or coef.shape[1] < 1 or metadata.get("n_features_in") != coef.shape[1]):
        raise ModelFileError(f"{path}: inconsistent model arrays (coef {coef.shape}, "
                             f"intercept {intercept.shape}, classes {classes.shape})")
    if classes.dtype.kind not in "biufU" or not np.array_equal(np.unique(classes), classes):
        raise ModelFileError(f"{path}: the classes must be distinct sorted numbers or strings")
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise ModelFileError(f"{path}: the weights are not finite")
    params = metadata.get("params")
    history = metadata.get("history", [])
    if not isinstance(params, dict) or not isinstance(history, list):
        raise ModelFileError(f"{path}: the metadata lacks the hyperparameters or history")
    _check_history(history, path)
    try:
        check_params(params)
    except InvalidParameterError as exc:
        raise ModelFileError(f"{path}: the metadata holds a bad hyperparameter: {exc}") from None
    backend = metadata.get("backend")
    n_threads = metadata.get("n_threads")
    return ModelContents(
        coef=np.ascontiguousarray(coef), intercept=np.ascontiguousarray(intercept),
        classes=classes, params=params, history=history, metadata=metadata,
        backend=backend if backend in AUTO_ORDER else "numpy",
        n_threads=n_threads if isinstance(n_threads, int) and n_threads >= 1 else None,
        dataset=_check_dataset(metadata.get("dataset"), coef.shape, path),
        thread_changes=_thread_changes(metadata.get("thread_changes")))


def _thread_changes(records):
    """The metadata's thread records if each is one (whole epoch >= 1, step >= 0, threads >= 1,
    a reason that is a string or None), else None: they only inform, so a file without them,
    or with malformed ones, still loads."""
    def whole(value, least):
        return type(value) is int and value >= least

    if not isinstance(records, list) or not all(
            isinstance(r, dict) and whole(r.get("epoch"), 1) and whole(r.get("step"), 0)
            and whole(r.get("threads"), 1) and isinstance(r.get("reason"), (str, type(None)))
            for r in records):
        return None
    return [{key: r[key] for key in ("epoch", "step", "threads", "reason")} for r in records]


def _check_dataset(record, coef_shape, path):
    """The data set record of the metadata, checked against the weights (C, D): a title, an
    image shape of D pixels, class names or none; None if the file records no data set."""
    if record is None:
        return None
    if not isinstance(record, dict):
        raise ModelFileError(f"{path}: the metadata's data set record is malformed")
    name, title = record.get("name"), record.get("title")
    shape, names = record.get("image_shape"), record.get("class_names")
    directory = record.get("directory")
    shape_ok = (isinstance(shape, list) and len(shape) == 2
                and all(isinstance(n, int) and n >= 1 for n in shape)
                and shape[0] * shape[1] == coef_shape[1])
    names_ok = names is None or (isinstance(names, list)
                                 and all(isinstance(n, str) for n in names))
    if not (isinstance(title, str) and (name is None or isinstance(name, str)) and shape_ok
            and names_ok and (directory is None or isinstance(directory, str))):
        raise ModelFileError(f"{path}: the metadata's data set record is malformed")
    checked = {"name": name, "title": title, "image_shape": tuple(shape),
               "class_names": tuple(names) if names else None}
    if directory is not None:  # where the data was read (files written before: none)
        checked["directory"] = directory
    return checked


# What every per-epoch record of a model file's history holds, and what it may hold beside.
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy")
OPTIONAL_HISTORY_FIELDS = ("end_train_loss", "end_train_accuracy", "test_loss",
                           "test_accuracy", "val_loss", "val_accuracy", "lr", "time_s")


def _check_history(history, path):
    """Each record a dict with a whole ``epoch`` >= 1 and finite numbers for the other fields,
    so that what reads the history (``plot curves``) finds what it needs."""
    for number, record in enumerate(history, 1):
        fine = (isinstance(record, dict) and all(field in record for field in HISTORY_FIELDS)
                and type(record["epoch"]) is int and record["epoch"] >= 1
                and all(type(record[field]) in (int, float) and math.isfinite(record[field])
                        for field in (*HISTORY_FIELDS, *OPTIONAL_HISTORY_FIELDS)
                        if field in record))
        if not fine:
            raise ModelFileError(f"{path}: record {number} of the training history is not an "
                                 f"epoch's record (it needs {', '.join(HISTORY_FIELDS)} as "
                                 f"numbers): {str(record)[:80]}")


def max_model_bytes():
    """The most a model file's members may declare: ``$FASTLR_MAX_MODEL_BYTES``, else
    :data:`MAX_MODEL_BYTES`."""
    return size_limit("FASTLR_MAX_MODEL_BYTES", MAX_MODEL_BYTES)


def _parse_metadata(metadata_array, path):
    """The JSON metadata of a model file, checked for the format and its version."""
    if metadata_array.dtype.kind != "U" or metadata_array.ndim != 0:
        raise ModelFileError(f"{path}: not a fastlr model file (no JSON metadata)")
    try:
        metadata = json.loads(str(metadata_array))
    except (ValueError, RecursionError):
        raise ModelFileError(f"{path}: the metadata is not valid JSON") from None
    if not isinstance(metadata, dict) or metadata.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: not a fastlr model file")
    version = metadata.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format version {version!r} is not supported "
                             f"(this fastlr reads version {MODEL_FORMAT_VERSION})")
    return metadata


def _read_npz(path):
    """The arrays of an .npz archive, read without pickle and checked against their sizes."""
    with open_once(path, max_model_bytes(), ModelFileError) as opened:
        return _read_archive(opened.fh, path)


def _read_archive(fh, path):
    """The arrays of the .npz archive open in ``fh`` (binary, seekable); see :func:`_read_npz`."""
    limit = max_model_bytes()
    try:
        _check_directory(fh, path)
        with zipfile.ZipFile(fh) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_MODEL_MEMBERS:
                raise ModelFileError(f"{path}: not a fastlr model file ({len(infos)} members)")
            declared = sum(info.file_size for info in infos)
            if declared > limit:
                raise ModelFileError(f"{path}: its members declare {declared:,} bytes, "
                                     f"more than the limit of {limit:,} for a model file; "
                                     f"set FASTLR_MAX_MODEL_BYTES to read larger models")
            arrays = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise ModelFileError(f"{path}: not a fastlr model file (member "
                                         f"{info.filename!r} is not an array)")
                with archive.open(info) as member:
                    arrays[info.filename[:-4]] = read_npy(
                        member, f"{path}: member {info.filename!r}", info.file_size, limit,
                        ModelFileError)
            return arrays
    except ModelFileError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error,
            NotImplementedError, RuntimeError, ValueError, struct.error, OverflowError,
            UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not a fastlr model file, or truncated "
                             f"({type(exc).__name__}: {exc})") from None


# A fastlr model's central directory takes some 400 bytes; a larger one is not read.
MAX_DIRECTORY_BYTES = 64 << 10


def _check_directory(fh, path):
    """Refuse an archive whose end record declares more members or a larger directory than a
    model has, before ``zipfile`` reads the directory (hundreds of thousands of entries would
    cost seconds and hundreds of MB before the count could be checked)."""
    end = zipfile._EndRecData(fh)
    if end is None:
        raise ModelFileError(f"{path}: not a fastlr model file (not a zip archive)")
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if entries > MAX_MODEL_MEMBERS or size > MAX_DIRECTORY_BYTES:
        raise ModelFileError(f"{path}: not a fastlr model file ({entries:,} members in a "
                             f"directory of {size:,} bytes)")
    fh.seek(0)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.random.Generator):
        return None
    raise TypeError(f"cannot store {type(value).__name__} in a model file")
