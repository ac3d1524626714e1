"""Training data larger than memory: a source read from disk a chunk at a time, and the epochs
that stream it through the kernels.

Shapes: N samples, D features, C classes, K chunks of at most ``chunk_size`` rows, G chunks per
shuffle buffer (``buffer_size // chunk_size``, at most K), M <= G * chunk_size rows in one
buffer, B batch.

Two layouts on disk, both read a chunk of rows at a time with positioned reads
(:class:`fastlr.reading.RowFile`), never loaded whole and never memory-mapped (a mapped file
truncated during training would kill the process with SIGBUS; a short read is one error):

- **IDX**: MNIST's ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``, uncompressed
  (a gzip file cannot be read by rows), read from the header's offset; the test files
  (``t10k-*``, plain or .gz) are read whole as the test set.
- **One .npy per class** (Google's Quick, Draw! layout): ``NAME.npy`` holds the uint8 images
  (n, D) or (n, H, W) of class ``NAME``, in C or Fortran order; the classes are the file
  names, sorted. The last rows of each file are held out as the test set.

The shuffle. Data on disk is often in class order (every .npy file is one class), and SGD on
a class-ordered stream forgets the early classes. An epoch therefore draws a permutation of
the K chunks, cuts it into shuffle buffers of G chunks each, reads a buffer's chunks from
wherever they lie in the sources, and trains on the buffer in a random order (the kernel's
``perm``: nothing is copied to shuffle). Every sample is seen once per epoch; a buffer holds G
chunks from G random places, so class-ordered data is mixed G chunks at a time. With G = K it
is a full shuffle. What a smaller buffer costs in accuracy on MNIST is measured by
``bench/streaming.py`` (README, "Training on data larger than memory").

Memory: the buffer's rows as uint8 (M D bytes) and their float32 copy for the kernels
(4 M D bytes), the labels, and the files' pages in the page cache, which the operating
system reclaims as it needs: bounded by ``buffer_size`` (itself capped by the data), not by
N.

The uint8 kernels: a backend that reads uint8 rows itself (``takes_pixels``: all three of
fastlr's, the 1/255 scale folded into their arithmetic) gets the buffer's bytes as they are; for
any other :func:`_kernel_rows` converts each buffer to the loader's features in [0, 1].
"""

import os
import time
from pathlib import Path

import numpy as np

from . import sgd
from .backends import get_backend
from .data import _find_file, idx_rows, read_idx
from .datasets import FILE_STEMS, image_shape_of
from .errors import DataError
from .pixels import pixel_features
from .reading import RowFile, read_npy_header

DEFAULT_CHUNK_SIZE = 4096
DEFAULT_BUFFER_SIZE = 65536
DEFAULT_TEST_SIZE = 10000


class StreamingSource:
    """Training rows on disk, read a chunk at a time.

    Make one with :func:`open_source`; ``SoftmaxRegression.fit(source)`` trains on it.

    Parameters
    ----------
    parts : list of (images, labels)
        images : a :class:`~fastlr.reading.RowFile` of (n_p, D) uint8 rows; labels : one int,
        the class index of every row of the part, or anything whose slice ``[start:stop]``
        gives those rows' class indices (int64, into ``classes``).
    classes : (C,) array, the sorted labels the indices stand for
    chunk_size, buffer_size : int
        Rows per chunk read from disk, and rows per shuffle buffer (at least one chunk); a
        chunk is capped at a part's rows, a buffer at all the chunks.
    title : str, directory : Path, image_shape : (H, W)
    test : (X_test (M, D) uint8, y_test (M,)), or None
        The test set, with its labels as values of ``classes``; kept in memory as float32 in
        [0, 1], as :func:`fastlr.data.load_dataset` gives it.

    Attributes
    ----------
    n_samples, n_features : int
    chunks : (K, 3) int64
        Each chunk's part, first row and end row.
    """

    def __init__(self, parts, classes, *, chunk_size=DEFAULT_CHUNK_SIZE,
                 buffer_size=DEFAULT_BUFFER_SIZE, title, directory, image_shape, test=None):
        if chunk_size < 1 or buffer_size < chunk_size:
            raise DataError(f"the shuffle buffer ({buffer_size} rows) must hold at least one "
                            f"chunk ({chunk_size} rows)")
        self.parts = parts
        self.classes = np.asarray(classes)
        self.n_features = int(parts[0][0].shape[1])
        self.n_samples = int(sum(images.shape[0] for images, _ in parts))
        self.title = title
        self.directory = Path(directory)
        self.image_shape = tuple(int(n) for n in image_shape)
        self.test = None if test is None else (pixel_features(test[0]), test[1])
        # The buffers are allocated by these sizes, so they are capped by the data (a chunk or
        # a buffer of 10**12 rows costs what one of the data's rows costs) without changing
        # which rows a chunk or a buffer holds: a chunk is at most a whole part, and a buffer
        # of G >= K chunks holds all K, whatever G.
        self.chunk_size = max(1, min(int(chunk_size), max(images.shape[0] for images, _ in parts)))
        self.chunks = np.array([(p, start, min(start + self.chunk_size, images.shape[0]))
                                for p, (images, _) in enumerate(parts)
                                for start in range(0, images.shape[0], self.chunk_size)],
                               dtype=np.int64).reshape(-1, 3)
        #: G, the chunks one shuffle buffer holds.
        self.chunks_per_buffer = max(1, min(int(buffer_size) // int(chunk_size),
                                            len(self.chunks)))
        self.buffer_size = self.chunks_per_buffer * self.chunk_size

    def record(self):
        """What a model file and ``--json`` record of the data set (as
        :meth:`fastlr.data.Dataset.record`)."""
        return {"name": None, "title": self.title, "image_shape": list(self.image_shape),
                "class_names": None}

    def epoch_plan(self, rng):
        """The shuffle buffers of one epoch, in order: a list of arrays of chunk indices, G
        chunks each (the last may hold fewer), together a permutation of the K chunks."""
        order = rng.permutation(len(self.chunks))
        per = self.chunks_per_buffer
        return [order[i:i + per] for i in range(0, len(order), per)]

    def buffer_rows(self, chunk_ids):
        """The number of rows the chunks ``chunk_ids`` hold."""
        chunks = self.chunks[chunk_ids]
        return int((chunks[:, 2] - chunks[:, 1]).sum())

    def read_buffer(self, chunk_ids, X_out, y_out):
        """Read the chunks ``chunk_ids`` into the top rows of X_out (>= M, D) uint8 and
        y_out (>= M,) int64, in the order given; returns M, the rows read."""
        m = 0
        for part, start, stop in self.chunks[chunk_ids]:
            images, labels = self.parts[part]
            rows = stop - start
            images.read_into(start, stop, X_out[m:m + rows])
            y_out[m:m + rows] = labels if np.isscalar(labels) else labels[start:stop]
            m += rows
        return m


def is_streaming_dir(directory):
    """True if ``directory`` holds .npy files: the per-class layout, which only streams."""
    return any(Path(directory).glob("*.npy"))


def open_source(directory, chunk_size=DEFAULT_CHUNK_SIZE, buffer_size=DEFAULT_BUFFER_SIZE,
                test_size=DEFAULT_TEST_SIZE):
    """Open the training data in ``directory`` for streaming; the layout is detected.

    Parameters
    ----------
    directory : str or Path
        Uncompressed IDX files in MNIST's names, or one uint8 ``.npy`` per class.
    chunk_size, buffer_size : int
        Rows per chunk read from disk and per shuffle buffer.
    test_size : int
        For the .npy layout: how many rows to hold out as the test set, taken from the end of
        every class file in proportion to its size (at least one row each).

    Returns
    -------
    StreamingSource

    Raises
    ------
    DataError
        If the directory holds neither layout, a file is compressed or malformed, or the
        files disagree on the image size.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"--data-dir {directory}: no such directory")
    sizes = {"chunk_size": chunk_size, "buffer_size": buffer_size}
    if is_streaming_dir(directory):
        return _open_npy_classes(directory, test_size, sizes)
    return _open_idx(directory, sizes)


def _open_idx(directory, sizes):
    """The IDX layout: the training files mapped, the test files read whole."""
    images_path = directory / FILE_STEMS["train_images"]
    labels_path = directory / FILE_STEMS["train_labels"]
    for path in (images_path, labels_path):
        if not path.is_file():
            gz = " (only a .gz, which cannot be memory-mapped: gunzip it)" if \
                path.with_name(path.name + ".gz").is_file() else ""
            raise DataError(f"--data-dir {directory}: no uncompressed {path.name}{gz}, and no "
                            f".npy files; streaming needs one of the two")
    images = idx_rows(images_path)
    labels = idx_rows(labels_path)
    if (len(labels.stored_shape) != 1 or len(images.stored_shape) < 2
            or images.shape[0] != labels.shape[0]):
        raise DataError(f"{directory}: {images.shape[0]} training images but labels of shape "
                        f"{labels.stored_shape}")
    n_features = images.shape[1]
    counts = labels.bincount()  # one pass over N bytes, a MiB at a time
    classes = np.flatnonzero(counts).astype(np.int64)
    if len(classes) < 2:
        raise DataError(f"{labels_path}: one class only; a classifier needs at least two")
    encode = np.zeros(256, dtype=np.int64)
    encode[classes] = np.arange(len(classes))
    test_images, test_labels = (_find_file(directory, FILE_STEMS[role])
                                for role in ("test_images", "test_labels"))
    if test_images is None or test_labels is None:
        raise DataError(f"--data-dir {directory}: missing the test set's "
                        f"{FILE_STEMS['test_images']} or {FILE_STEMS['test_labels']} (plain "
                        f"or .gz)")
    X_test = read_idx(test_images)
    test = (X_test.reshape(X_test.shape[0], -1), read_idx(test_labels).astype(np.int64))
    if test[0].shape[1] != n_features:
        raise DataError(f"{directory}: training images have {n_features} pixels, test images "
                        f"{test[0].shape[1]}")
    stored = images.stored_shape
    image_shape = (stored[1], n_features // stored[1]) if len(stored) >= 3 else (1, n_features)
    return StreamingSource([(images, _EncodedLabels(labels, encode))], classes,
                           title=f"IDX data set at {directory}", directory=directory,
                           image_shape=image_shape, test=test, **sizes)


class _EncodedLabels:
    """Raw label bytes on disk, read as indices into the classes a slice at a time."""

    def __init__(self, labels, encode):
        self.labels = labels  # a RowFile of (N, 1) bytes
        self.encode = encode

    def __getitem__(self, rows):
        return self.encode[self.labels.rows(rows.start, rows.stop)[:, 0]]


def _open_npy_classes(directory, test_size, sizes):
    """The per-class .npy layout: every file mapped; its last rows held out as the test set."""
    paths = sorted(directory.glob("*.npy"))
    if len(paths) < 2:
        raise DataError(f"--data-dir {directory}: one .npy file only; a classifier needs at "
                        f"least two classes, one file each")
    arrays, image_shape = [], None
    for path in paths:
        array = _npy_rows(path)
        arrays.append(array)
        stored = array.stored_shape
        image_shape = image_shape or (stored[1:] if len(stored) == 3 else None)
    n_features = arrays[0].shape[1]
    for path, array in zip(paths, arrays):
        if array.shape[1] != n_features:
            raise DataError(f"{path}: images of {array.shape[1]} pixels, but {paths[0].name} "
                            f"has {n_features}")
    total = sum(array.shape[0] for array in arrays)
    held_out = [min(array.shape[0] - 1, max(1, test_size * array.shape[0] // total))
                for array in arrays]
    classes = np.array([path.stem for path in paths])
    test = (np.concatenate([array.rows(array.shape[0] - k, array.shape[0])
                            for array, k in zip(arrays, held_out)]),
            np.repeat(classes, held_out))
    parts = [(array.head(array.shape[0] - k), label)
             for label, (array, k) in enumerate(zip(arrays, held_out))]
    return StreamingSource(parts, classes, title=f"{len(paths)} class files at {directory}",
                           directory=directory,
                           image_shape=image_shape or image_shape_of(n_features), test=test,
                           **sizes)


def _npy_rows(path):
    """A per-class ``.npy`` file's images (n, D) uint8 as a :class:`~fastlr.reading.RowFile`,
    in C or Fortran order, its header checked against the file's size."""
    try:
        with open(path, "rb") as fh:
            shape, fortran_order, dtype, n_bytes = read_npy_header(fh, path)
            offset, size = fh.tell(), os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if dtype != np.uint8 or len(shape) < 2 or shape[0] < 2:
        raise DataError(f"{path}: needs uint8 images, at least two, of shape (n, D) or "
                        f"(n, H, W); got {dtype} {shape}")
    if offset + n_bytes != size:
        raise DataError(f"{path}: the header declares {n_bytes:,} bytes of {shape} images, "
                        f"and the file holds {size - offset:,}")
    return RowFile(path, offset, shape, fortran_order)


def _kernel_rows(rows_uint8, out):
    """The buffer's rows as the kernels read them: the bytes themselves for a backend that
    reads pixels (``out`` is None), else their features in [0, 1], the loader's, written into
    ``out``."""
    if out is None:
        return rows_uint8
    return pixel_features(rows_uint8, out.dtype, out=out)


def fit(model, source, eval_set=None, on_epoch=None):
    """Train ``model`` (a SoftmaxRegression) from zero weights on a :class:`StreamingSource`.

    Each epoch follows the source's :meth:`~StreamingSource.epoch_plan`: one call of the
    backend's ``sgd_epoch`` per shuffle buffer, with the buffer's permutation and its slice of
    the run's learning-rate schedule, so a linear schedule decays to 0 over the whole run as it
    does in memory. The plans of all epochs are drawn first, to know the number of steps.

    The history's ``train_loss`` and ``train_accuracy`` are running figures, as in memory: each
    sample's loss and whether its highest score is its label, at the weights of its step, summed
    over the epoch by the kernel itself (a second pass over the data to score the final weights
    would cost as much as the epoch). ``time_s`` is the SGD pass, reading and conversion
    included.

    Parameters
    ----------
    model : SoftmaxRegression
    source : StreamingSource
    eval_set : (X_eval, y_eval), optional; scored after every epoch
    on_epoch : callable(record), optional

    Returns
    -------
    model

    Raises
    ------
    DataError
        For options that do not stream (``early_stopping``, ``preprocessing``).
    DivergenceError
        If the loss stops being finite; the model keeps the weights of the last epoch that
        finished.
    """
    model._check_hyperparameters()
    if model.early_stopping:
        raise DataError("early_stopping does not work on a streamed data set; pass eval_set "
                        "to follow the accuracy per epoch instead")
    if model.preprocessing is not None:
        raise DataError(f"preprocessing={model.preprocessing!r} does not work on a streamed "
                        f"data set")
    dtype = np.dtype(np.float32)
    validation = None
    if eval_set is not None:
        X_eval, y_eval, _ = model._prepare(*eval_set, classes=source.classes,
                                           known_as="the training labels", dtype=dtype,
                                           n_features=source.n_features)
        validation = (X_eval, y_eval)
    model._initialize(source.classes, source.n_features, dtype)
    backend = get_backend(model.backend_)
    rng = model._rng
    batch_size = int(model.batch_size)
    plans = [source.epoch_plan(rng) for _ in range(int(model.epochs))]
    steps = [[-(-source.buffer_rows(ids) // batch_size) for ids in plan] for plan in plans]
    lr_all = sgd.learning_rates(model.lr_schedule, float(model.learning_rate),
                                sum(map(sum, steps)))

    rows = source.chunks_per_buffer * source.chunk_size
    X_raw = np.empty((rows, source.n_features), dtype=np.uint8)
    X_buffer = (None if getattr(backend, "takes_pixels", False)
                else np.empty((rows, source.n_features), dtype=dtype))
    y_buffer = np.empty(rows, dtype=np.int64)
    ones = np.ones(rows, dtype=dtype)
    W, b = model.coef_, model.intercept_
    vel_W, vel_b = model._velocity
    parts_W, parts_b = sgd.allocate_parts(model.n_threads_, *W.shape, dtype)
    step = 0
    for epoch, (plan, plan_steps) in enumerate(zip(plans, steps)):
        start = time.perf_counter()
        last_W, last_b = W.copy(), b.copy()
        loss_sum = correct = 0.0
        for chunk_ids, n_steps in zip(plan, plan_steps):
            m = source.read_buffer(chunk_ids, X_raw, y_buffer)
            X = _kernel_rows(X_raw[:m], None if X_buffer is None else X_buffer[:m])
            y = y_buffer[:m]
            perm = rng.permutation(m)
            lr_steps = lr_all[step:step + n_steps]
            step += n_steps
            with np.errstate(over="ignore", invalid="ignore"):
                buffer_loss, buffer_correct = backend.sgd_epoch(
                    X, y, ones[:m], perm, W, b, vel_W, vel_b, lr_steps, batch_size,
                    float(model.momentum), float(model.alpha), parts_W, parts_b)
            loss_sum += buffer_loss
            correct += buffer_correct
            if not np.isfinite(loss_sum):
                break
        elapsed = time.perf_counter() - start
        if not (np.isfinite(loss_sum) and np.isfinite(W).all() and np.isfinite(b).all()):
            W[...], b[...] = last_W, last_b
            vel_W[...], vel_b[...] = 0, 0
            raise sgd.divergence_error(epoch, float(model.learning_rate), np.isnan(loss_sum))
        record = {"epoch": epoch + 1, "train_loss": loss_sum / source.n_samples,
                  "train_accuracy": correct / source.n_samples, "lr": float(lr_steps[-1]),
                  "time_s": elapsed}
        if validation is not None:
            val_loss, val_acc = sgd.evaluate(backend, *validation, W, b, model.n_threads_)
            record.update(val_loss=val_loss, val_accuracy=val_acc)
        model.history_.append(record)
        if model.verbose:
            model._print_epoch(record)
        if on_epoch is not None:
            on_epoch(record)
    return model
