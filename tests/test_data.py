"""IDX reading and writing, MNIST lookup, and the checked download."""

import functools
import gzip
import http.server
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import write_small_dataset

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


def test_corrupted_mnist_file_fails_its_checksum(tmp_path):
    for path in MNIST_DIR.glob("*.gz"):
        shutil.copy(path, tmp_path)
    labels = data.read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz").copy()
    labels[0] = (labels[0] + 1) % 10
    data.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match="SHA-256"):
        load_mnist(tmp_path)


# --- download ------------------------------------------------------------------------------------

@pytest.fixture
def mirror(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a copy of the MNIST files from a temp dir."""
    served = tmp_path / "served"
    served.mkdir()
    for path in MNIST_DIR.glob("*.gz"):
        shutil.copy(path, served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_verifies_and_caches(tmp_path, mirror):
    served, url = mirror
    cache = tmp_path / "cache"
    assert data.download_mnist(cache, mirrors=[url], progress=False) == cache
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
        data.download_mnist(cache, mirrors=[url], progress=False)
    assert not (cache / "train-labels-idx1-ubyte.gz").exists()
    assert not list(cache.glob(".*"))


def test_lookup_falls_back_to_download(tmp_path, mirror, monkeypatch):
    _, url = mirror
    monkeypatch.delenv("FASTLR_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "CHECKOUT_DATA_DIR", tmp_path / "no-checkout")
    monkeypatch.setattr(data, "MNIST_MIRRORS", (url,))
    assert data.find_mnist_dir() == tmp_path / "xdg" / "fastlr" / "mnist"
    assert len(list((tmp_path / "xdg" / "fastlr" / "mnist").glob("*.gz"))) == 4


def test_no_data_and_no_network_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTLR_DATA", str(tmp_path / "env-dir"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "CHECKOUT_DATA_DIR", tmp_path / "no-checkout")
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    monkeypatch.setattr(data, "MNIST_MIRRORS", ("http://127.0.0.1:9/",))
    with pytest.raises(DataError) as excinfo:
        load_mnist()
    message = str(excinfo.value)
    assert "env-dir" in message and "no-checkout" in message and "--data-dir" in message
