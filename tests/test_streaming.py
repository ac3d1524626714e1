"""Streaming from disk (fastlr/streaming.py): the two layouts, the shuffle (seeded, every sample
once per epoch, class-ordered data mixed), fit and train on a source, and a data set twice the
size of a 1 GiB memory cgroup trained inside it."""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fastlr import Pixels, SoftmaxRegression, data, reading, streaming
from fastlr.backends import available_backends
from fastlr.errors import DataError

from conftest import ROOT, assert_one_line_error, run_cli, write_small_dataset


def write_class_files(directory, rows_per_class, n_features=6):
    """One uint8 .npy per class, ``class_k.npy``; row i of class k reads (k, i % 256, i // 256,
    ...): every row of the data set is distinct and names itself."""
    for k, n in enumerate(rows_per_class):
        index = np.arange(n)
        rows = np.zeros((n, n_features), dtype=np.uint8)
        rows[:, 0], rows[:, 1], rows[:, 2] = k, index % 256, index // 256
        np.save(Path(directory) / f"class_{k}.npy", rows)


def write_class_ordered_idx(directory, n_per_class, n_classes=10, side=4, test=True):
    """Uncompressed IDX files whose training rows are sorted by class; returns the labels."""
    labels = np.repeat(np.arange(n_classes, dtype=np.uint8), n_per_class)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (len(labels), side, side), dtype=np.uint8)
    data.write_idx(Path(directory) / "train-images-idx3-ubyte", images)
    data.write_idx(Path(directory) / "train-labels-idx1-ubyte", labels)
    if test:
        data.write_idx(Path(directory) / "t10k-images-idx3-ubyte.gz", images[:20])
        data.write_idx(Path(directory) / "t10k-labels-idx1-ubyte.gz", labels[:20])
    return labels


def epoch_buffers(source, rng):
    """The rows and labels of each shuffle buffer of one epoch, in the order trained on."""
    for samples, perm in source.epoch_blocks(rng):
        yield samples.X.data[perm], samples.y[perm]


def epoch_rows(source, rng):
    """The rows and labels of one epoch, in the order they are trained on."""
    rows, labels = zip(*epoch_buffers(source, rng))
    return np.concatenate(rows), np.concatenate(labels)


# --- the layouts -------------------------------------------------------------------------------

def test_idx_rows_read_as_read_idx(tmp_path):
    write_small_dataset(tmp_path, n_train=50, compress=False)
    rows = data.idx_rows(tmp_path / "train-images-idx3-ubyte")
    np.testing.assert_array_equal(rows.rows(0, 50), data.read_idx(
        tmp_path / "train-images-idx3-ubyte").reshape(50, -1))


def test_a_gzip_file_cannot_be_mapped(tmp_path):
    write_small_dataset(tmp_path, compress=True)
    with pytest.raises(DataError, match="gunzip"):
        streaming.open_source(tmp_path)


def test_a_truncated_idx_file_is_a_data_error(tmp_path):
    write_small_dataset(tmp_path, n_train=50, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        data.idx_rows(path)


def test_idx_source_labels_and_test_set(tmp_path):
    images, labels = write_small_dataset(tmp_path, n_train=50, n_test=10, compress=False)
    source = streaming.open_source(tmp_path, chunk_size=8, buffer_size=16)
    assert (source.n_samples, source.n_features, source.image_shape) == (50, 16, (4, 4))
    np.testing.assert_array_equal(source.classes, np.unique(labels["train"]))
    X_test, y_test = source.test
    np.testing.assert_array_equal(X_test * 255, images["t10k"].reshape(10, -1))
    np.testing.assert_array_equal(y_test, labels["t10k"])
    rows, encoded = epoch_rows(source, np.random.default_rng(0))
    train = images["train"].reshape(50, -1)
    index = [np.flatnonzero((train == row).all(axis=1))[0] for row in rows]
    np.testing.assert_array_equal(source.classes[encoded], labels["train"][index])


def test_class_files_hold_out_their_last_rows_as_the_test_set(tmp_path):
    write_class_files(tmp_path, [300, 100])
    source = streaming.open_source(tmp_path, chunk_size=32, buffer_size=64, test_size=40)
    np.testing.assert_array_equal(source.classes, ["class_0", "class_1"])
    assert source.n_samples == 400 - 40
    X_test, y_test = source.test
    np.testing.assert_array_equal(np.unique(y_test, return_counts=True)[1], [30, 10])
    # The held-out rows are the last of each file, and never trained on.
    assert (X_test[y_test == "class_0"][:, 1] * 255).round().min() == (270 % 256)
    rows, _ = epoch_rows(source, np.random.default_rng(0))
    trained = {tuple(row[:3]) for row in rows}
    held_out = {tuple(row[:3]) for row in (X_test * 255).round().astype(np.uint8)}
    assert not trained & held_out


def test_a_directory_of_neither_layout_says_what_it_needs(tmp_path):
    with pytest.raises(DataError, match="npy"):
        streaming.open_source(tmp_path)


def test_buffers_and_chunks_are_capped_by_the_data(tmp_path):
    write_class_files(tmp_path, [10, 30])
    source = streaming.open_source(tmp_path, chunk_size=10**12, buffer_size=10**15,
                                   test_size=2)
    assert (source.buffer_size, source.chunk_size) == (38, 29)
    rows, _ = epoch_rows(source, np.random.default_rng(0))
    assert len(rows) == 38
    with pytest.raises(DataError, match="at least one row"):
        streaming.open_source(tmp_path, chunk_size=0)


# --- the shuffle -------------------------------------------------------------------------------

def test_the_shuffle_is_seeded(tmp_path):
    write_class_files(tmp_path, [500, 300, 200])
    source = streaming.open_source(tmp_path, chunk_size=16, buffer_size=64)
    first, _ = epoch_rows(source, np.random.default_rng(5))
    again, _ = epoch_rows(source, np.random.default_rng(5))
    other, _ = epoch_rows(source, np.random.default_rng(6))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("chunk_size, buffer_size", [(16, 64), (7, 7), (50, 10000), (1, 3)])
def test_every_sample_is_trained_on_once_per_epoch(tmp_path, chunk_size, buffer_size):
    write_class_files(tmp_path, [130, 61, 9])
    source = streaming.open_source(tmp_path, chunk_size=chunk_size, buffer_size=buffer_size,
                                   test_size=3)
    rng = np.random.default_rng(0)
    for _ in range(2):
        rows, labels = epoch_rows(source, rng)
        assert len(rows) == source.n_samples
        assert len({tuple(row[:3]) for row in rows}) == source.n_samples
        np.testing.assert_array_equal(rows[:, 0], labels)  # each row keeps its own label


@pytest.mark.parametrize("chunk_size", [7, 64, 4096])
def test_every_buffer_draws_every_class_in_its_share(tmp_path, chunk_size):
    """Class-per-file data: each buffer draws from every file in proportion to what is left
    in it, so a buffer of 400 rows from 120 classes holds each class about 400 / 120 times,
    whatever the chunk size (with chunks of one file each, a buffer would hold a few classes
    only)."""
    sizes = np.random.default_rng(2).integers(50, 150, 120)
    write_class_files(tmp_path, sizes, n_features=4)
    source = streaming.open_source(tmp_path, chunk_size=chunk_size, buffer_size=400,
                                   test_size=120)
    shares = source.part_rows / source.n_samples
    buffers = list(epoch_buffers(source, np.random.default_rng(1)))
    assert [len(labels) for _, labels in buffers[:-1]] == [400] * (len(buffers) - 1)
    for _, labels in buffers[:-1]:
        counts = np.bincount(labels, minlength=120)
        # A hypergeometric draw of about 3.3 rows per class: most classes present, none
        # crowding the buffer (16 is more than 6 standard deviations above the mean).
        assert np.count_nonzero(counts) > 100 and counts.max() <= 16
    # Over the epoch, each buffer's share of a class follows its share of the data.
    halves = [np.concatenate([labels for _, labels in part])
              for part in (buffers[:len(buffers) // 2], buffers[len(buffers) // 2:])]
    for half in halves:
        assert np.abs(np.bincount(half, minlength=120) / len(half) - shares).max() < 0.01


def test_class_ordered_data_is_mixed(tmp_path):
    labels = write_class_ordered_idx(tmp_path, n_per_class=2000)
    source = streaming.open_source(tmp_path, chunk_size=50, buffer_size=400)
    _, trained = epoch_rows(source, np.random.default_rng(0))
    # Each half of the epoch sees every class near its share, where the file holds five
    # classes per half.
    for half in np.array_split(trained, 2):
        share = np.bincount(half, minlength=10) / len(half)
        assert share.min() > 0.05 and share.max() < 0.15
    # Within a buffer too: consecutive samples rarely share a class.
    assert np.mean(trained[1:] == trained[:-1]) < 0.3
    assert np.mean(labels[1:] == labels[:-1]) > 0.99


# --- training ----------------------------------------------------------------------------------

def write_mnist_uncompressed(directory, n_train):
    """The first ``n_train`` MNIST training images and the test set, uncompressed."""
    X, y, X_test, y_test = data.load_dataset("mnist", dtype=np.uint8).arrays()
    data.write_idx(directory / "train-images-idx3-ubyte", X[:n_train].reshape(-1, 28, 28))
    data.write_idx(directory / "train-labels-idx1-ubyte", y[:n_train].astype(np.uint8))
    data.write_idx(directory / "t10k-images-idx3-ubyte", X_test.reshape(-1, 28, 28))
    data.write_idx(directory / "t10k-labels-idx1-ubyte", y_test.astype(np.uint8))
    return X[:n_train] / np.float32(255), y[:n_train], X_test / np.float32(255), y_test


def test_fit_on_a_source_learns_as_in_memory(tmp_path):
    X, y, X_test, y_test = write_mnist_uncompressed(tmp_path, 10000)
    source = streaming.open_source(tmp_path, chunk_size=500, buffer_size=2000)
    params = dict(epochs=3, batch_size=64, backend="numpy", n_threads=1)
    streamed = SoftmaxRegression(**params).fit(source, eval_set=source.test)
    in_memory = SoftmaxRegression(**params).fit(X, y)
    assert abs(streamed.score(X_test, y_test) - in_memory.score(X_test, y_test)) < 0.01
    assert [r["epoch"] for r in streamed.history_] == [1, 2, 3]
    assert streamed.history_[-1]["val_accuracy"] == pytest.approx(
        streamed.score(X_test, y_test))
    assert streamed.history_[-1]["lr"] < 0.01  # the linear schedule ran over the whole fit
    again = SoftmaxRegression(**params).fit(source)
    np.testing.assert_array_equal(again.coef_, streamed.coef_)


def write_learnable_class_files(directory, n_classes=100, n_features=64, seed=0):
    """One .npy per class of a learnable set: a random pattern per class plus noise, classes
    of 150 to 250 rows, within a file in no order; a linear model reads it short of 100%."""
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((n_classes, n_features))
    for k, pattern in enumerate(patterns):
        n = int(rng.integers(150, 251))
        rows = 128 + 25 * pattern + 45 * rng.standard_normal((n, n_features))
        np.save(Path(directory) / f"class_{k:03d}.npy", np.clip(rows, 0, 255).astype(np.uint8))


def test_streamed_class_files_learn_as_a_full_shuffle_in_memory(tmp_path):
    """100 class files, each buffer a twentieth of the data: the stream's model scores within
    a point of the model fitted on the same rows in memory, fully shuffled (92%). Buffers that
    took the files in order, a few classes at a time, scored 4 points lower: the model drifts
    to the classes seen last."""
    write_learnable_class_files(tmp_path)
    source = streaming.open_source(tmp_path, chunk_size=64, buffer_size=1024, test_size=3000)
    assert source.n_samples // source.buffer_size >= 15
    X = np.concatenate([images.rows(0, images.shape[0]) for images, _ in source.parts])
    y = np.repeat(source.classes, source.part_rows)
    X_test, y_test = source.test
    streamed = SoftmaxRegression(random_state=0).fit(source).score(X_test, y_test)
    in_memory = SoftmaxRegression(random_state=0).fit(Pixels(X), y).score(X_test, y_test)
    assert 0.85 < in_memory < 0.97  # learnable, and not trivially
    assert abs(streamed - in_memory) < 0.01


def test_fit_on_class_files_predicts_their_names(tmp_path):
    rng = np.random.default_rng(0)
    for name, level in (("cat", 40), ("dog", 200)):
        np.save(tmp_path / f"{name}.npy",
                rng.integers(level - 30, level + 30, (300, 5, 5)).astype(np.uint8))
    source = streaming.open_source(tmp_path, chunk_size=32, buffer_size=64, test_size=50)
    model = SoftmaxRegression(epochs=2, backend="numpy").fit(source)
    assert model.score(*source.test) == 1.0
    assert set(model.predict(source.test[0])) == {"cat", "dog"}
    assert source.image_shape == (5, 5)


def test_fit_on_a_source_refuses_what_does_not_stream(tmp_path):
    write_class_files(tmp_path, [10, 10])
    source = streaming.open_source(tmp_path)
    with pytest.raises(DataError, match="own labels"):
        SoftmaxRegression().fit(source, np.zeros(20))
    with pytest.raises(DataError, match="early_stopping"):
        SoftmaxRegression(early_stopping=True).fit(source)
    with pytest.raises(DataError, match="deskew"):
        SoftmaxRegression(preprocessing="deskew").fit(source)


def test_train_streams_a_directory_of_class_files(tmp_path):
    write_class_files(tmp_path, [200, 200], n_features=16)
    result = run_cli("train", "--data-dir", str(tmp_path), "--epochs", "1", "--backend",
                     "numpy", "--chunk-size", "16", "--shuffle-buffer", "64", "--test-size",
                     "20", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["dataset"]["title"] == f"2 class files at {tmp_path}"
    assert summary["epochs"] == 1


def test_train_stream_flag_errors_are_one_line(tmp_path):
    assert_one_line_error(run_cli("train", "--stream"), "--stream needs --data-dir")
    write_small_dataset(tmp_path, compress=True)
    assert_one_line_error(run_cli("train", "--stream", "--data-dir", str(tmp_path)),
                          "gunzip")


# --- a data set larger than the memory it trains in --------------------------------------------

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
CGROUP_LIMIT = 1 << 30
BIG_CLASSES = 10


def write_big_idx(directory, rng, n_rows):
    """Class prototypes plus noise, in class order, written a block at a time as uncompressed
    IDX; a small test set of the same kind. Returns the training file's size in bytes."""
    prototypes = (rng.integers(0, 2, (BIG_CLASSES, 784)) * 160).astype(np.uint8)
    # Noise rows drawn from a bank: gathering rows is many times faster than drawing 2 GB.
    noise = rng.integers(0, 96, (1 << 16, 784), dtype=np.uint8)

    def samples(labels):
        return prototypes[labels] + noise[rng.integers(0, len(noise), len(labels))]

    labels = np.repeat(np.arange(BIG_CLASSES, dtype=np.uint8), n_rows // BIG_CLASSES)
    images_path = directory / "train-images-idx3-ubyte"
    with images_path.open("wb") as file:
        file.write(bytes([0, 0, data.UBYTE, 3]) + struct.pack(">3I", len(labels), 28, 28))
        for block in np.array_split(labels, 40):
            file.write(samples(block).tobytes())
    data.write_idx(directory / "train-labels-idx1-ubyte", labels)
    test_labels = rng.integers(0, BIG_CLASSES, 2000).astype(np.uint8)
    data.write_idx(directory / "t10k-images-idx3-ubyte", samples(test_labels).reshape(-1, 28, 28))
    data.write_idx(directory / "t10k-labels-idx1-ubyte", test_labels)
    return images_path.stat().st_size


@pytest.fixture
def memory_cgroup(request):
    """A cgroup v1 memory cgroup limited to ``request.param`` bytes (default 1 GiB); skips where
    one cannot be made."""
    limit = getattr(request, "param", CGROUP_LIMIT)
    cgroup = CGROUP_ROOT / f"fastlr-test-{os.getpid()}"
    try:
        cgroup.mkdir()
        (cgroup / "memory.limit_in_bytes").write_text(str(limit))
    except OSError as exc:
        if cgroup.is_dir():
            cgroup.rmdir()
        pytest.skip(f"cannot make a cgroup v1 memory cgroup at {CGROUP_ROOT} ({exc}); the "
                    f"test needs root and the v1 memory controller")
    try:
        yield cgroup
    finally:
        cgroup.rmdir()


@pytest.mark.parametrize("memory_cgroup, n_rows", [
    (384 << 20, 520_000),  # 0.41 GB of images in 384 MiB
    pytest.param(CGROUP_LIMIT, 2_800_000, marks=pytest.mark.extended),  # 2.2 GB in 1 GiB
], indirect=["memory_cgroup"])
def test_a_data_set_larger_than_the_memory_limit_streams_by_itself_in_it(memory_cgroup,
                                                                        n_rows):
    """No flag: ``train`` reads the cgroup's limit, sees the images would not fit, says so in
    one line and streams them inside the limit."""
    limit = int((memory_cgroup / "memory.limit_in_bytes").read_text())
    big = Path(tempfile.mkdtemp(prefix="fastlr-streaming-"))
    try:
        assert write_big_idx(big, np.random.default_rng(0), n_rows) > limit
        # The compiled backends: the Numba compilation would dominate a one-epoch run.
        backend = "cython" if "cython" in available_backends() else "numpy"
        procs = memory_cgroup / "cgroup.procs"

        def join_cgroup():
            procs.write_text(str(os.getpid()))

        result = subprocess.run(
            [sys.executable, "-m", "fastlr", "train", "--data-dir", str(big),
             "--epochs", "1", "--batch-size", "1024", "--backend", backend, "--json",
             "--no-progress"],
            capture_output=True, text=True, cwd=ROOT, timeout=600, preexec_fn=join_cgroup,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))
        peak = int((memory_cgroup / "memory.max_usage_in_bytes").read_text())
    finally:
        shutil.rmtree(big)
    assert result.returncode == 0, result.stderr
    assert 0 < peak <= limit  # it ran in the cgroup, and fit under its limit
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["streamed"] and summary["test_accuracy"] > 0.98
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastlr: streaming the training images")
    assert f"the memory cgroup's limit of {limit / 2 ** 30:.2f} GiB" in lines[0]


# --- streaming by itself when the data would not fit -------------------------------------------

def fake_system(root, meminfo_kb, cgroup_lines, mounts, files):
    """A fake /proc and /sys under ``root``: this process's cgroups, the mounts, /proc/meminfo
    and the cgroup files ``files`` (path under root -> text)."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/meminfo").write_text(f"MemTotal: 99999999 kB\nMemAvailable: {meminfo_kb} kB\n")
    (root / "proc/self/cgroup").write_text("\n".join(cgroup_lines) + "\n")
    (root / "proc/self/mountinfo").write_text("\n".join(mounts) + "\n")
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


def test_memory_available_is_the_tightest_cgroup_less_its_working_set(tmp_path):
    from fastlr.machine import memory_available
    gib = 2 ** 30
    v1 = tmp_path / "v1"
    fake_system(v1, 8 * 2 ** 20, ["4:memory:/jobs/one", "1:cpu:/", "0::/"],
                ["35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
                 "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw"],
                {"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
                 "sys/fs/cgroup/memory/jobs/memory.limit_in_bytes": f"{4 * gib}\n",
                 "sys/fs/cgroup/memory/jobs/memory.usage_in_bytes": f"{gib}\n",
                 "sys/fs/cgroup/memory/jobs/one/memory.limit_in_bytes": f"{2 * gib}\n",
                 "sys/fs/cgroup/memory/jobs/one/memory.usage_in_bytes": f"{gib}\n",
                 # Inactive file pages are dropped at once: they are not in the working set.
                 "sys/fs/cgroup/memory/jobs/one/memory.stat":
                     f"cache 5\ntotal_inactive_file {gib // 2}\n"})
    assert memory_available(v1) == (gib + gib // 2, "the memory cgroup's limit of 2.00 GiB")
    v2 = tmp_path / "v2"
    fake_system(v2, 2 ** 20, ["0::/user/job"],
                ["30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw"],
                {"sys/fs/cgroup/user/memory.max": "max\n",
                 "sys/fs/cgroup/user/job/memory.max": f"{8 * gib}\n",
                 "sys/fs/cgroup/user/job/memory.current": f"{gib}\n"})
    # The machine's available memory (1 GiB) is tighter than the cgroup's 7 GiB left.
    assert memory_available(v2) == (gib, "available memory")
    assert memory_available(tmp_path / "nothing") == (None, "available memory")


def test_the_decision_to_stream_reads_the_header_only(tmp_path):
    write_small_dataset(tmp_path, n_train=1000, side=10, compress=False)
    need = streaming.in_memory_bytes(1000, 100)
    assert need == 3 * 1000 * 100 + 16 * 1000
    plenty, reader_limit = need + streaming.LOAD_MARGIN_BYTES, 10 ** 9
    assert streaming.why_stream(tmp_path, plenty, "available memory", reader_limit) is None
    assert streaming.why_stream(tmp_path, None, "available memory", reader_limit) is None
    why = streaming.why_stream(tmp_path, plenty - 1, "the memory cgroup's limit of 0.25 GiB",
                               reader_limit)
    assert why.startswith(f"streaming the training images of {tmp_path}")
    assert "the memory cgroup's limit of 0.25 GiB" in why and "--no-stream" in why
    assert "reader accepts" in streaming.why_stream(tmp_path, plenty, "", 1000 * 100 - 1)
    gz = tmp_path / "gz"
    gz.mkdir()
    write_small_dataset(gz, n_train=1000, side=10, compress=True)
    with pytest.raises(DataError, match="gunzip train-images-idx3-ubyte.gz"):
        streaming.why_stream(gz, plenty - 1, "available memory", reader_limit)


def test_train_streams_by_itself_when_loading_would_not_fit(tmp_path, monkeypatch, capsys):
    from fastlr.cli import main, train
    write_small_dataset(tmp_path, n_train=400, side=8, compress=False)
    need = streaming.in_memory_bytes(400, 64)
    flags = ["train", "--data-dir", str(tmp_path), "--epochs", "1", "--backend", "numpy",
             "--json"]

    def run(*extra, available):
        monkeypatch.setattr(train, "memory_available", lambda: (
            available, "the memory cgroup's limit of 0.25 GiB"))
        assert main(flags + list(extra)) == 0
        out, err = capsys.readouterr()
        return json.loads(out.splitlines()[-1])["streamed"], err.strip().splitlines()

    short = need + streaming.LOAD_MARGIN_BYTES - 1
    streamed, lines = run(available=short)
    assert streamed and len(lines) == 1
    assert lines[0].startswith("fastlr: streaming the training images of ")
    assert "0.25 GiB" in lines[0]
    assert run(available=short + 1) == (False, [])
    assert run("--no-stream", available=short) == (False, [])
    assert run("--stream", available=10 ** 12) == (True, [])


@pytest.mark.parametrize("o_direct", [True, False])
def test_rows_larger_than_memory_bypass_the_page_cache(tmp_path, monkeypatch, o_direct):
    """Rows larger than the memory left are read past the page cache (O_DIRECT through an
    aligned staging area, or buffered reads that drop their pages where there is no
    O_DIRECT): the same rows in the same order; a file cut short since is one DataError."""
    write_class_files(tmp_path, [3000, 2000], n_features=100)
    kept = streaming.open_source(tmp_path, chunk_size=160, buffer_size=640, test_size=50)
    monkeypatch.setattr(streaming, "memory_available", lambda: (1000, "available memory"))
    monkeypatch.setattr(reading, "DIRECT_PIECE_BYTES", 8192)  # several pieces a run
    if not o_direct:
        monkeypatch.delattr(streaming.os, "O_DIRECT", raising=False)
    bypassed = streaming.open_source(tmp_path, chunk_size=160, buffer_size=640, test_size=50)
    assert bypassed.bypass_cache and not kept.bypass_cache
    first, _ = epoch_rows(kept, np.random.default_rng(3))
    again, _ = epoch_rows(bypassed, np.random.default_rng(3))
    np.testing.assert_array_equal(first, again)
    path = tmp_path / "class_0.npy"
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match="class_0.npy: the file changed while it was read: it ends before row"):
        epoch_rows(bypassed, np.random.default_rng(3))
