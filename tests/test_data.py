"""IDX reading and writing, MNIST lookup, and the checked download (the other known data sets
and data sets of other shapes: tests/test_datasets.py)."""

import gzip
import http.server
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import serve_directory, with_mirrors, write_small_dataset

from fastlr import DataError, data, load_mnist

MNIST_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"


def idx_bytes(array):
    """A naive IDX encoder, independent of fastlr.data.write_idx."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
def test_idx_round_trip(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
    data.write_idx(tmp_path / name, array)
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = data.read_idx(tmp_path / name)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, array)


def test_reader_agrees_with_naive_encoder(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 12)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a"), array)


@pytest.mark.parametrize("mangle,message", [
    (lambda raw: raw[:-5], "truncated"),
    (lambda raw: raw[:6], "truncated"),
    (lambda raw: raw[:2], "truncated"),
    (lambda raw: raw + b"\x00\x01", "wrong length"),
    (lambda raw: b"\x12\x34" + raw[2:], "wrong magic"),
    (lambda raw: raw[:2] + b"\x0d" + raw[3:], "type code"),
    (lambda raw: gzip.compress(raw)[:-10], "bad gzip"),
    (lambda raw: b"\x1f\x8b" + b"not gzip at all", "bad gzip"),
])
def test_bad_idx_files_raise_data_error_naming_the_file(tmp_path, mangle, message):
    raw = idx_bytes(np.ones((4, 5), dtype=np.uint8))
    path = tmp_path / "broken-idx"
    path.write_bytes(mangle(raw))
    with pytest.raises(DataError) as excinfo:
        data.read_idx(path)
    assert str(path) in str(excinfo.value)
    assert message in str(excinfo.value)


def test_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        data.read_idx(tmp_path / "nope")


def test_load_mnist_shapes_scaling_and_labels():
    X_train, y_train, X_test, y_test = load_mnist(MNIST_DIR)
    assert X_train.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert X_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= X_train.min() and X_train.max() == 1.0
    # The sanity figures published with the data set.
    assert abs(float(X_train.mean()) - 0.1307) < 1e-4
    np.testing.assert_array_equal(np.bincount(y_test),
                                  [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    raw = load_mnist(MNIST_DIR, dtype=np.uint8)[0]
    assert raw.dtype == np.uint8 and raw.max() == 255
    np.testing.assert_array_equal(raw[:5] / np.float32(255), X_train[:5])
    # on a 64-byte cache line, so the kernels' vector loads of a row never straddle two
    assert all(a.ctypes.data % 64 == 0 and a.flags.c_contiguous for a in (X_train, X_test, raw))


@pytest.mark.parametrize("compress", [True, False])
def test_any_dataset_in_mnist_names_loads(tmp_path, compress):
    images, labels = write_small_dataset(tmp_path, compress=compress)
    X_train, y_train, X_test, y_test = load_mnist(tmp_path)
    assert X_train.shape == (30, 16) and X_test.shape == (10, 16)
    np.testing.assert_allclose(X_train * 255, images["train"].reshape(30, 16), atol=1e-4)
    np.testing.assert_array_equal(y_test, labels["t10k"])


def test_data_dir_missing_a_file_names_it(tmp_path):
    write_small_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)


def test_images_and_labels_must_agree(tmp_path):
    write_small_dataset(tmp_path)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29, dtype=np.uint8))
    with pytest.raises(DataError, match="30 images but 29 labels"):
        load_mnist(tmp_path)


def _altered_mnist_copy(directory):
    """A copy of MNIST whose first test label is changed: MNIST's names and shapes, not its
    content."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in MNIST_DIR.glob("*.gz"):
        shutil.copy(path, directory)
    labels = data.read_idx(directory / "t10k-labels-idx1-ubyte.gz").copy()
    labels[0] = (labels[0] + 1) % 10
    data.write_idx(directory / "t10k-labels-idx1-ubyte.gz", labels)
    return labels


def test_a_user_directory_is_read_as_given_and_named_by_its_checksums(tmp_path):
    labels = _altered_mnist_copy(tmp_path / "other")
    other = data.load_dataset(data_dir=tmp_path / "other")
    assert other.name is None and other.title == f"IDX data set at {tmp_path / 'other'}"
    assert other.class_names is None and other.image_shape == (28, 28)
    np.testing.assert_array_equal(other.y_test, labels)
    mnist = data.load_dataset(data_dir=MNIST_DIR)
    assert (mnist.name, mnist.title, mnist.class_names[3]) == ("mnist", "MNIST", "3")


def test_decompressed_mnist_is_still_mnist(tmp_path):
    for path in MNIST_DIR.glob("*.gz"):
        (tmp_path / path.name[:-3]).write_bytes(gzip.decompress(path.read_bytes()))
    assert data.load_dataset(data_dir=tmp_path).name == "mnist"


def test_a_corrupted_cache_file_fails_its_published_checksum(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTLR_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "BUNDLED_DATA_DIRS", ())
    _altered_mnist_copy(tmp_path / "xdg" / "fastlr" / "mnist")
    with pytest.raises(DataError, match="does not match MNIST's published checksum .SHA-256.*"
                                        "delete it to download it again"):
        load_mnist()


# --- the decoded copy in the user cache ----------------------------------------------------------

@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty user cache; returns the directory the decoded copies go to."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return data.decoded_cache_dir()


def test_first_read_keeps_a_decoded_copy_that_later_reads_map(tmp_path, empty_cache,
                                                             monkeypatch):
    write_small_dataset(tmp_path / "set")
    first = load_mnist(tmp_path / "set")
    assert len(list(empty_cache.glob("*.npy"))) == 4
    assert not list(empty_cache.glob(".*"))  # written atomically: no temporary files left

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data, "parse_idx", no_decoding)
    for a, b in zip(first, load_mnist(tmp_path / "set")):
        np.testing.assert_array_equal(a, b)


def test_a_changed_source_is_never_served_the_old_copy(tmp_path, empty_cache):
    """Same size, same name, same modification time: only the content differs."""
    images, _ = write_small_dataset(tmp_path, compress=False)
    source = tmp_path / "train-images-idx3-ubyte"
    before = load_mnist(tmp_path, dtype=np.uint8)[0]
    stat = source.stat()
    changed = images["train"].copy()
    changed[0, 0, 0] ^= 0xFF
    data.write_idx(source, changed)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size
    after = load_mnist(tmp_path, dtype=np.uint8)[0]
    assert after[0, 0] == before[0, 0] ^ 0xFF
    np.testing.assert_array_equal(after, changed.reshape(30, 16))


def test_a_damaged_copy_is_decoded_again(tmp_path, empty_cache):
    write_small_dataset(tmp_path)
    expected = load_mnist(tmp_path)
    for copy in empty_cache.glob("*.npy"):
        copy.write_bytes(copy.read_bytes()[:-7])
    for a, b in zip(expected, load_mnist(tmp_path)):
        np.testing.assert_array_equal(a, b)


def test_an_unwritable_cache_only_costs_the_decoding(tmp_path, monkeypatch):
    write_small_dataset(tmp_path)
    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-dir"))
    assert load_mnist(tmp_path)[0].shape == (30, 16)


def test_a_corrupted_copy_of_mnist_is_refused_on_every_read(tmp_path, empty_cache,
                                                            monkeypatch):
    """The decoded cache never stands in for the checksum: a damaged MNIST in fastlr's own
    cache fails the second read as it failed the first."""
    monkeypatch.setattr(data, "BUNDLED_DATA_DIRS", ())
    cache = data.default_cache_dir("mnist")
    cache.mkdir(parents=True)
    for path in MNIST_DIR.glob("*.gz"):
        shutil.copy(path, cache)
    labels = data.read_idx(cache / "t10k-labels-idx1-ubyte.gz").copy()
    labels[0] = (labels[0] + 1) % 10
    data.write_idx(cache / "t10k-labels-idx1-ubyte.gz", labels)
    for _ in range(2):
        with pytest.raises(DataError, match="SHA-256"):
            data.load_dataset("mnist")


# --- download ------------------------------------------------------------------------------------

@pytest.fixture
def mirror(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a copy of the MNIST files from a temp dir."""
    served = tmp_path / "served"
    served.mkdir()
    for path in MNIST_DIR.glob("*.gz"):
        shutil.copy(path, served)
    with serve_directory(served) as url:
        yield served, url


def test_download_verifies_and_caches(tmp_path, mirror):
    served, url = mirror
    cache = tmp_path / "cache"
    assert data.download_dataset(cache, "mnist", mirrors=[url], progress=False) == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in served.iterdir())
    assert not list(cache.glob(".*"))  # no temporary files left behind
    np.testing.assert_array_equal(load_mnist(cache)[3], load_mnist(MNIST_DIR)[3])


def test_corrupted_download_is_rejected_and_not_cached(tmp_path, mirror):
    served, url = mirror
    target = served / "train-labels-idx1-ubyte.gz"
    labels = data.read_idx(target).copy()
    labels[:100] = 0
    data.write_idx(target, labels)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="checksum mismatch"):
        data.download_dataset(cache, "mnist", mirrors=[url], progress=False)
    assert not (cache / "train-labels-idx1-ubyte.gz").exists()
    assert not list(cache.glob(".*"))


def test_lookup_falls_back_to_download(tmp_path, mirror, monkeypatch):
    _, url = mirror
    monkeypatch.delenv("FASTLR_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "BUNDLED_DATA_DIRS", ())
    with_mirrors(monkeypatch, "mnist", url)
    directory, known, _ = data.find_data_dir()
    assert directory == tmp_path / "xdg" / "fastlr" / "mnist" and known.name == "mnist"
    assert len(list((tmp_path / "xdg" / "fastlr" / "mnist").glob("*.gz"))) == 4


def test_no_data_and_no_network_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTLR_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "BUNDLED_DATA_DIRS", (tmp_path / "no-checkout",))
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    with_mirrors(monkeypatch, "mnist", "http://127.0.0.1:9/")
    with pytest.raises(DataError) as excinfo:
        load_mnist()
    message = str(excinfo.value)
    assert "xdg" in message and "no-checkout" in message and "--data-dir" in message
