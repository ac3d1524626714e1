"""Training data larger than memory: a source read from disk a buffer at a time.

Shapes: N samples, D features, C classes, P parts (files), M <= ``buffer_size`` rows in one
shuffle buffer, B batch.

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
a class-ordered stream forgets the early classes. Every shuffle buffer therefore draws from all
parts in proportion to the rows each still has to give this epoch (a multivariate
hypergeometric draw of the buffer's M rows from the parts' remaining rows), so every buffer
holds every class in about its share of the data. Within a part, an epoch visits its chunks of
``chunk_size`` rows in a random order and reads them front to back, each buffer taking its
rows from where the last one stopped: the reads stay sequential runs of rows, which the page
cache and the disk's read-ahead serve well. The kernel then visits the buffer in a random
order (its ``perm``: nothing is copied to shuffle). Every sample is seen once per epoch, and
every buffer but the last holds exactly M rows, so an epoch has the same number of steps each
time and the learning-rate schedule is made one epoch at a time (``fastlr/sgd.py``).

Reading overlaps training: a reader thread fills the next shuffle buffer while the kernels
train on this one. The reads run without the GIL (``os.preadv``), and so do the Cython
kernels; the Numba kernels hold the GIL, so with them a read waits for the kernel's return.
Every random number is drawn in the caller's thread before the reads, so the model does not
depend on the threads' timing. Rows that could not all stay in the page cache (more than the
memory the process may use) are read past it (:attr:`fastlr.reading.RowFile.bypass_cache`).

Training runs through the one engine, :func:`fastlr.sgd.train`: ``SoftmaxRegression.fit``
hands it a :class:`StreamingSource` as it would an array. ``train --data-dir`` streams IDX
files by itself when loading them would not fit in the memory the process may use
(:func:`why_stream`).

Memory: two buffers, each M rows as uint8 (2 M D bytes in all; a backend that does not read
pixels gets the features of the one it trains on, 4 M D more), their labels, and the files'
pages in the page cache, which the operating system reclaims as it needs: bounded by
``buffer_size`` (itself capped by the data), not by N.
"""

import gzip
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .backends.contract import Samples
from .data import _find_file, idx_rows, parse_idx_header, read_idx
from .datasets import FILE_STEMS, image_shape_of
from .errors import DataError
from .machine import memory_available
from .pixels import Pixels, pixel_features
from .reading import RowFile, read_npy_header
from .sgd import Source, evaluate_sums

DEFAULT_CHUNK_SIZE = 4096
DEFAULT_BUFFER_SIZE = 65536
DEFAULT_TEST_SIZE = 10000


class StreamingSource(Source):
    """Training rows on disk, read a shuffle buffer at a time.

    Make one with :func:`open_source`; ``SoftmaxRegression.fit(source)`` trains on it.

    Parameters
    ----------
    parts : list of (images, labels)
        images : a :class:`~fastlr.reading.RowFile` of (n_p, D) uint8 rows; labels : one int,
        the class index of every row of the part, or anything whose slice ``[start:stop]``
        gives those rows' class indices (int64, into ``classes``).
    classes : (C,) array, the sorted labels the indices stand for
    chunk_size, buffer_size : int
        Rows per chunk (the unit of the random order within a part) and rows per shuffle
        buffer; each is capped by the rows there are.
    title : str, directory : Path, image_shape : (H, W)
    test : (X_test (M, D) uint8, y_test (M,)), or None
        The test set, with its labels as values of ``classes``; kept in memory as float32 in
        [0, 1], as :func:`fastlr.data.load_dataset` gives it.

    Attributes
    ----------
    n_samples, n_features : int
    part_rows : (P,) int64, the rows of each part
    bypass_cache : bool
        Whether the rows are read past the page cache: they are more than the memory the
        process may use (:func:`fastlr.machine.memory_available`), so they could not stay
        cached for the next epoch anyway (:class:`fastlr.reading.RowFile`).
    """

    def __init__(self, parts, classes, *, chunk_size=DEFAULT_CHUNK_SIZE,
                 buffer_size=DEFAULT_BUFFER_SIZE, title, directory, image_shape, test=None):
        if chunk_size < 1 or buffer_size < 1:
            raise DataError(f"the chunk ({chunk_size} rows) and the shuffle buffer "
                            f"({buffer_size} rows) must hold at least one row")
        self.parts = parts
        self.classes = np.asarray(classes)
        self.title = title
        self.directory = Path(directory)
        self.image_shape = tuple(int(n) for n in image_shape)
        self.test = None if test is None else (pixel_features(test[0]), test[1])
        self.n_features = int(parts[0][0].shape[1])
        self.part_rows = np.array([images.shape[0] for images, _ in parts], dtype=np.int64)
        self.n_samples = int(self.part_rows.sum())
        self.weight_total = float(self.n_samples)
        self.buffer_size = int(min(buffer_size, self.n_samples))
        self.chunk_size = int(min(chunk_size, self.part_rows.max()))
        self._buffers = None
        # Rows that cannot all stay in the page cache bypass it; rows that fit stay cached
        # for the next epoch.
        available, _ = memory_available()
        self.bypass_cache = available is not None and self.n_samples * self.n_features > available
        for images, _ in parts:
            images.bypass_cache = self.bypass_cache

    def record(self):
        """What a model file and ``--json`` record of the data set (as
        :meth:`fastlr.data.Dataset.record`)."""
        return {"name": None, "title": self.title, "image_shape": list(self.image_shape),
                "class_names": None}

    def steps_per_epoch(self, batch_size):
        full, last = divmod(self.n_samples, self.buffer_size)
        return full * -(-self.buffer_size // batch_size) + -(-last // batch_size)

    def epoch_plan(self, rng):
        """One epoch's shuffle buffers: a list of (P,) int64 arrays, how many rows each buffer
        takes from each part, drawn in proportion to what the parts have left; every buffer
        holds ``buffer_size`` rows but the last."""
        remaining = self.part_rows.copy()
        plan = []
        while remaining.sum() > 0:
            take = rng.multivariate_hypergeometric(remaining, min(self.buffer_size,
                                                                  int(remaining.sum())))
            plan.append(take)
            remaining -= take
        return plan

    def _chunk_orders(self, rng):
        """Each part's chunks in this epoch's random order, as the (start, stop) rows of its
        runs: a list of P (n_chunks_p, 2) int64 arrays."""
        orders = []
        for rows in self.part_rows:
            starts = np.arange(0, rows, self.chunk_size, dtype=np.int64)
            starts = starts[rng.permutation(len(starts))]
            orders.append(np.stack([starts, np.minimum(starts + self.chunk_size, rows)], 1))
        return orders

    def _buffers_for(self):
        """The two shuffle buffers, each the rows (uint8) and labels of up to M samples, and
        the unit sample weights (float32, the dtype a streamed model trains in) they share;
        allocated at the first use."""
        if self._buffers is None:
            self._buffers = ([(np.empty((self.buffer_size, self.n_features), dtype=np.uint8),
                               np.empty(self.buffer_size, dtype=np.int64)) for _ in range(2)],
                             np.ones(self.buffer_size, dtype=np.float32))
        return self._buffers

    def _read_rows(self, part, start, stop, X_out, y_out):
        """Rows start..stop-1 of part ``part`` into the top rows of X_out and y_out.

        The rows are read with positioned reads into X_out (:class:`~fastlr.reading.RowFile`),
        not copied out of a memory map: a page fault per page touched, and the unmapping of
        each page again as the page cache turns over (which interrupts the kernel's threads to
        flush their TLBs), cost several times the CPU of the reads (measured in
        docs/scale.md), and a mapped file truncated meanwhile kills the process with SIGBUS."""
        images, labels = self.parts[part]
        images.read_into(start, stop, X_out[:stop - start])
        y_out[:stop - start] = labels if np.isscalar(labels) else labels[start:stop]

    def _fill(self, buffer, runs):
        """Read the runs (part, start, stop) of one shuffle buffer into ``buffer`` (X, y), one
        after the other; returns the rows read."""
        X_out, y_out = buffer
        m = 0
        for part, start, stop in runs:
            self._read_rows(part, start, stop, X_out[m:], y_out[m:])
            m += stop - start
        return m

    def epoch_runs(self, rng):
        """The reads of one epoch: per shuffle buffer, the runs (part, start, stop) of
        consecutive rows it reads, as :meth:`epoch_plan` draws them from the parts' chunks
        in this epoch's random order."""
        orders = self._chunk_orders(rng)
        cursor = [[0, 0] for _ in orders]  # per part: the chunk being read, the rows read
        epoch = []
        for take in self.epoch_plan(rng):
            runs = []
            for part in np.flatnonzero(take):
                need = int(take[part])
                while need:
                    chunk, done = cursor[part]
                    start, stop = orders[part][chunk]
                    rows = min(need, stop - start - done)
                    runs.append((int(part), int(start + done), int(start + done + rows)))
                    need -= rows
                    cursor[part] = [chunk + 1, 0] if done + rows == stop - start else \
                        [chunk, done + rows]
            epoch.append(runs)
        return epoch

    def epoch_blocks(self, rng):
        """One block per shuffle buffer (see :meth:`fastlr.sgd.Source.epoch_blocks`): the
        buffer's rows as :class:`~fastlr.pixels.Pixels` (bytes for a backend that reads them,
        features for any other), their labels and unit weights, and a random order over
        them.

        A reader thread fills the next buffer while the kernels train on this one; every
        random number is drawn here, in the caller's thread, so the blocks do not depend on
        how the two threads interleave."""
        buffers, ones = self._buffers_for()
        epoch = self.epoch_runs(rng)
        with ThreadPoolExecutor(1, thread_name_prefix="fastlr-reader") as reader:
            pending = reader.submit(self._fill, buffers[0], epoch[0])
            for k in range(len(epoch)):
                m = pending.result()
                if k + 1 < len(epoch):
                    # The buffer the block before this one trained on: the caller asked for
                    # this block, so it is done with that one.
                    pending = reader.submit(self._fill, buffers[(k + 1) % 2], epoch[k + 1])
                X, y = buffers[k % 2]
                yield Samples(Pixels(X[:m]), y[:m], ones[:m]), rng.permutation(m)

    def score(self, backend, W, b, n_threads):
        """The mean loss and accuracy of (W, b) on every training row, read in order a buffer
        at a time."""
        buffers, _ = self._buffers_for()
        X_raw, y_raw = buffers[0]
        sums = np.zeros(3)
        for part, rows in enumerate(self.part_rows):
            for start in range(0, rows, self.buffer_size):
                stop = min(start + self.buffer_size, rows)
                self._read_rows(part, start, stop, X_raw, y_raw)
                sums += evaluate_sums(backend, Pixels(X_raw[:stop - start]),
                                      y_raw[:stop - start], W, b, n_threads)
        return sums[0] / self.n_samples, sums[1] / self.n_samples


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
    """The IDX layout: the training files read by rows, the test files read whole."""
    images_path = directory / FILE_STEMS["train_images"]
    labels_path = directory / FILE_STEMS["train_labels"]
    for path in (images_path, labels_path):
        if not path.is_file():
            gz = " (only a .gz, which cannot be read by rows: gunzip it)" if \
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
    """The per-class .npy layout: every file read by rows; its last rows held out as the test
    set."""
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

#: What ``train`` sets aside from the memory it may use before it loads a data set: the
#: interpreter, the kernels, the test set and the evaluation's blocks.
LOAD_MARGIN_BYTES = 256 << 20


def _training_images_shape(directory):
    """The training images file of an IDX directory (plain or .gz) and the shape its header
    declares; None if there is none, or it cannot be read (loading it will say why)."""
    path = _find_file(directory, FILE_STEMS["train_images"])
    if path is None:
        return None
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as file:
            head = file.read(4 + 4 * 255)
        shape, _ = parse_idx_header(head, str(path))
    except (OSError, EOFError, zlib.error, DataError):
        return None
    return path, shape


def in_memory_bytes(n_samples, n_features):
    """About how much memory loading N training images of D pixels from IDX files and
    training on them in memory takes at its peak: three copies of their N D bytes live at
    once while they load (the file as read, the decoded array, the training copy), and 16
    bytes a sample stay (the labels and each epoch's order, int64)."""
    return 3 * n_samples * n_features + 16 * n_samples


def why_stream(directory, available, bound, max_bytes):
    """Why ``train --data-dir DIRECTORY`` should stream its IDX files rather than load them, as
    one sentence, or None if they load; decided from the images file's header alone.

    They stream when loading them (:func:`in_memory_bytes`) would not fit in the memory the
    process may use, ``available`` bytes less :data:`LOAD_MARGIN_BYTES` (``bound`` says what
    sets it, see :func:`fastlr.machine.memory_available`; None: unknown), or when the images
    are larger than the in-memory reader accepts, ``max_bytes`` (``$FASTLR_MAX_IDX_BYTES``).

    Raises
    ------
    DataError
        If they should stream but are compressed: a gzip file cannot be memory-mapped.
    """
    found = _training_images_shape(directory)
    if found is None:
        return None
    path, shape = found
    n_samples = int(shape[0]) if shape else 0
    images = int(np.prod(shape, dtype=np.int64))
    need = in_memory_bytes(n_samples, images // max(n_samples, 1))
    if available is not None and need > available - LOAD_MARGIN_BYTES:
        why = (f"in memory they would take about {need / 1e9:.1f} GB, more than the "
               f"{max(0, available - LOAD_MARGIN_BYTES) / 1e9:.1f} GB this process may use "
               f"for them ({bound})")
        override = "--no-stream loads them anyway"
    elif images > max_bytes:
        why = (f"their {images / 1e9:.1f} GB are more than the in-memory reader accepts "
               f"({max_bytes / 1e9:.2f} GB)")
        override = "--no-stream with a larger FASTLR_MAX_IDX_BYTES loads them"
    else:
        return None
    if path.name.endswith(".gz"):
        raise DataError(f"--data-dir {directory}: {why}, and streaming needs them uncompressed: "
                        f"gunzip {path.name}")
    return (f"streaming the training images of {directory} a shuffle buffer at a time: {why}; "
            f"{override}")
