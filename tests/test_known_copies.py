"""Known data sets recognised by their images, not their compression, and the decoded cache
trusted by its content, not its name.

A copy of MNIST decompressed or compressed again is MNIST, in the cache and in ``--data-dir``;
Debian's Fashion-MNIST (the published files compressed again) is Fashion-MNIST; a model
remembers the directory its data came from and ``evaluate`` finds it there; a decoded copy in
the cache that was swapped for other bytes of the same shape is decoded again.
"""

import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, run_cli, write_small_dataset

from fastlr import SoftmaxRegression, data, datasets, load_dataset, load_mnist

MNIST_DIR = ROOT / "data" / "mnist"
STEMS = tuple(datasets.FILE_STEMS.values())
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def mnist_copy(directory, how):
    """MNIST's four files in ``directory``: ``decompressed`` (plain IDX) or ``recompressed``
    (gzip at level 1, another stream than the published one)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in MNIST_DIR.glob("*.gz"):
        content = gzip.decompress(path.read_bytes())
        if how == "decompressed":
            (directory / path.name[:-3]).write_bytes(content)
        else:
            recompressed = gzip.compress(content, compresslevel=1, mtime=0)
            assert recompressed != path.read_bytes()
            (directory / path.name).write_bytes(recompressed)
    return directory


@pytest.fixture
def no_bundled_copy(tmp_path, monkeypatch):
    """No bundled MNIST and an empty user cache; returns the cache directory of MNIST."""
    monkeypatch.setattr(data, "BUNDLED_DATA_DIRS", ())
    monkeypatch.delenv("FASTLR_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return data.default_cache_dir("mnist")


@pytest.mark.parametrize("how", ["decompressed", "recompressed"])
def test_a_copy_of_mnist_in_another_compression_is_mnist_in_the_cache(no_bundled_copy, how):
    mnist_copy(no_bundled_copy, how)
    dataset = load_dataset("mnist")
    assert (dataset.name, dataset.title, dataset.class_names[7]) == ("mnist", "MNIST", "7")
    assert dataset.directory == no_bundled_copy.resolve()
    assert load_dataset().name == "mnist"  # and the default lookup takes it


@pytest.mark.parametrize("how", ["decompressed", "recompressed"])
def test_a_copy_of_mnist_in_another_compression_is_mnist_in_a_data_dir(tmp_path, how):
    copy = mnist_copy(tmp_path / how, how)
    dataset = load_dataset(data_dir=copy)
    assert (dataset.name, dataset.title) == ("mnist", "MNIST")
    expected = load_mnist(dtype=np.uint8)
    for got, want in zip(dataset.arrays(), load_mnist(copy, dtype=np.uint8)):
        assert got.shape == want.shape
    np.testing.assert_array_equal(load_mnist(copy, dtype=np.uint8)[3], expected[3])


def test_train_on_a_recompressed_copy_names_mnist(tmp_path):
    copy = mnist_copy(tmp_path / "copy", "recompressed")
    result = run_cli("train", "--data-dir", str(copy), "--epochs", "1", "--backend", "numpy",
                     "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "Trained softmax regression on MNIST:" in result.stdout


def test_the_content_digests_of_fashion_mnist_are_the_published_files():
    """Debian's files are the published ones compressed again: given back the published
    files' gzip header (their name, the time they were written), each deflate stream is the
    published .gz byte for byte, whose MD5 the publisher gives. Their decompressed content is
    then what the registry's SHA-256 digests say."""
    if not DEBIAN_FASHION.is_dir():
        pytest.skip(f"no Debian Fashion-MNIST at {DEBIAN_FASHION} "
                    f"(apt-get install dataset-fashion-mnist)")
    published_md5 = {"train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
                     "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
                     "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310"}
    written = {"train-images-idx3-ubyte": 1504176606, "train-labels-idx1-ubyte": 1504176606,
               "t10k-images-idx3-ubyte": 1504176627, "t10k-labels-idx1-ubyte": 1504176627}
    known = datasets.DATASETS["fashion-mnist"]
    assert known.checksum == "sha256-content"
    for stem in STEMS:
        debian = (DEBIAN_FASHION / f"{stem}.gz").read_bytes()
        # gzip header: magic, deflate, FNAME flag, mtime, XFL 0, OS 3 (Unix), then the name.
        header = b"\x1f\x8b\x08\x08" + struct.pack("<I", written[stem]) + b"\x00\x03"
        published = header + stem.encode() + b"\x00" + debian[10:]
        assert hashlib.md5(published).hexdigest() == published_md5[stem]
        assert hashlib.sha256(gzip.decompress(debian)).hexdigest() == known.digests[stem]


def test_debian_fashion_mnist_is_fashion_mnist_in_a_data_dir_and_in_the_cache(
        tmp_path, monkeypatch):
    if not DEBIAN_FASHION.is_dir():
        pytest.skip(f"no Debian Fashion-MNIST at {DEBIAN_FASHION} "
                    f"(apt-get install dataset-fashion-mnist)")
    monkeypatch.delenv("FASTLR_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    given = load_dataset(data_dir=DEBIAN_FASHION, dtype=np.uint8)
    assert (given.name, given.title, given.class_names[9]) == (
        "fashion-mnist", "Fashion-MNIST", "Ankle boot")
    shutil.copytree(DEBIAN_FASHION, data.default_cache_dir("fashion-mnist"))
    cached = load_dataset("fashion-mnist", dtype=np.uint8)
    assert cached.title == "Fashion-MNIST"
    np.testing.assert_array_equal(cached.y_train, given.y_train)


# --- a model remembers where its data came from ------------------------------------------------

@pytest.fixture(scope="module")
def directory_model(tmp_path_factory):
    """A model trained by the CLI on a data set in a directory of no known data set."""
    directory = tmp_path_factory.mktemp("three")
    write_small_dataset(directory, n_train=60, n_test=20, side=4, n_classes=3)
    model = directory.parent / f"{directory.name}-model.npz"
    result = run_cli("train", "--data-dir", str(directory), "--epochs", "2", "--backend",
                     "numpy", "--no-progress", "--out", str(model))
    assert result.returncode == 0, result.stderr
    return directory, model


def test_the_model_file_records_the_directory_and_evaluate_reads_it(directory_model):
    directory, model = directory_model
    assert SoftmaxRegression.load(model).dataset_["directory"] == str(directory.resolve())
    result = run_cli("evaluate", str(model))
    assert result.returncode == 0, result.stderr
    assert f"on 20 test images of IDX data set at {directory}" in result.stdout


def test_evaluate_names_a_recorded_directory_that_is_gone(directory_model, tmp_path):
    directory, model = directory_model
    moved = tmp_path / "moved"
    shutil.move(directory, moved)
    try:
        assert_one_line_error(run_cli("evaluate", str(model)), f"read from {directory}",
                              "no longer holds", "--data-dir")
        result = run_cli("evaluate", str(model), "--data-dir", str(moved))
        assert result.returncode == 0, result.stderr
    finally:
        shutil.move(moved, directory)


def test_a_known_data_set_read_from_a_directory_is_found_there_again(tmp_path, monkeypatch):
    """Fashion-MNIST trained from a directory (not in the cache): evaluate reads that
    directory rather than download it."""
    copy = tmp_path / "fashion"
    write_small_dataset(copy, n_classes=3)
    record = dict(load_dataset(data_dir=copy).record(), name="fashion-mnist",
                  title="Fashion-MNIST")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # no copy in the cache
    assert data.load_recorded(record, progress=False).directory == copy.resolve()


# --- the decoded cache is trusted by its content ---------------------------------------------------

def test_a_cache_file_swapped_for_other_bytes_of_the_same_shape_is_decoded_again(
        tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    images, labels = write_small_dataset(tmp_path / "set", n_classes=3)
    first = load_mnist(tmp_path / "set", dtype=np.uint8)
    (copy,) = data.decoded_cache_dir().glob("train-images-idx3-ubyte-*.npy")
    other = 255 - np.load(copy)
    np.save(copy, other)  # same name, same shape and dtype, other pixels
    # A new process would meet the swapped file cold: forget what this one verified.
    monkeypatch.setattr(data, "_VERIFIED_COPIES", set())
    again = load_mnist(tmp_path / "set", dtype=np.uint8)
    np.testing.assert_array_equal(again[0], images["train"].reshape(30, 16))
    np.testing.assert_array_equal(again[0], first[0])
    # ... and the copy is replaced by a true one, which the next read maps.
    (copy,) = data.decoded_cache_dir().glob("train-images-idx3-ubyte-*.npy")
    np.testing.assert_array_equal(np.load(copy), images["train"])


def test_a_swapped_cache_file_never_passes_for_mnist(tmp_path, monkeypatch):
    """A decoded copy of MNIST's test labels swapped for other labels of the same shape:
    the accuracy "on MNIST" would be wrong; the labels read are MNIST's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    truth = load_dataset("mnist", dtype=np.uint8).y_test
    (copy,) = data.decoded_cache_dir().glob("t10k-labels-idx1-ubyte-*.npy")
    np.save(copy, (np.load(copy) + 1) % 10)
    monkeypatch.setattr(data, "_VERIFIED_COPIES", set())
    np.testing.assert_array_equal(load_dataset("mnist", dtype=np.uint8).y_test, truth)


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY garbage", b"not a npy at all"])
def test_a_malformed_cache_file_is_decoded_again(tmp_path, monkeypatch, content):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    images, _ = write_small_dataset(tmp_path / "set")
    load_mnist(tmp_path / "set")
    for copy in data.decoded_cache_dir().glob("*.npy"):
        copy.write_bytes(content)
    monkeypatch.setattr(data, "_VERIFIED_COPIES", set())
    np.testing.assert_array_equal(load_mnist(tmp_path / "set", dtype=np.uint8)[0],
                                  images["train"].reshape(30, 16))
