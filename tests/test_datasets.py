"""Data sets by name and of any shape: the registry, recognition by checksum, the checked
download of a named data set from a local mirror, and every command on a 5-class data set of
28x20 images."""

import dataclasses
import gzip
import hashlib
import json
import shutil

import numpy as np
import pytest
from conftest import (ROOT, assert_one_line_error, run_cli, serve_directory, with_mirrors,
                      write_small_dataset)

from fastlr import DataError, SoftmaxRegression, data, datasets, load_dataset, load_mnist
from fastlr.cli import main
from fastlr.explain import explain

STEMS = tuple(datasets.FILE_STEMS.values())


def test_the_registry_names_files_checksums_classes_and_licenses():
    assert set(datasets.DATASETS) >= {"mnist", "fashion-mnist", "kmnist"}
    for name, known in datasets.DATASETS.items():
        assert known.name == name and set(known.digests) == set(STEMS)
        length = {"md5-gz": 32, "sha256-content": 64}[known.checksum]
        assert all(len(d) == length and int(d, 16) >= 0 for d in known.digests.values())
        assert known.image_shape == (28, 28) and len(known.class_names) == 10
        assert known.license and known.mirrors
    assert [k.name for k in datasets.DATASETS.values() if k.bundled] == ["mnist"]
    assert datasets.DATASETS["fashion-mnist"].class_names[9] == "Ankle boot"


def test_the_bundled_mnist_matches_its_published_checksums():
    lines = (ROOT / "data" / "mnist" / "SHA256SUMS").read_text().split("\n")
    published = dict(reversed(line.split()) for line in lines if line)
    assert published == datasets.DATASETS["mnist"].digests
    assert load_dataset().name == "mnist"


# --- a known data set published as .gz files with MD5s, served by a local mirror -------------------

@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A known data set "tiny" (MD5s of its .gz files, class names), its files served on
    127.0.0.1, and an empty cache; yields the served directory and the mirror's URL."""
    served = tmp_path / "served"
    served.mkdir()
    write_small_dataset(served, n_classes=3)
    digests = {stem: hashlib.md5((served / f"{stem}.gz").read_bytes()).hexdigest()
               for stem in STEMS}
    shapes = {stem: data.read_idx(served / f"{stem}.gz").shape for stem in STEMS}
    monkeypatch.setitem(datasets.DATASETS, "tiny", dataclasses.replace(
        datasets.DATASETS["fashion-mnist"], name="tiny", title="Tiny-MNIST",
        class_names=("cat", "dog", "T-shirt/top"), checksum="md5-gz", digests=digests,
        shapes=shapes))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FASTLR_DATA", raising=False)
    with serve_directory(served) as url:
        with_mirrors(monkeypatch, "tiny", "http://127.0.0.1:9/", url)
        yield served, url


def test_a_named_data_set_is_downloaded_checked_and_then_read_from_the_cache(tiny, tmp_path):
    served, _ = tiny
    loaded = load_dataset("tiny")
    cache = tmp_path / "xdg" / "fastlr" / "tiny"
    assert loaded.directory == cache and sorted(p.name for p in cache.iterdir()) == sorted(
        p.name for p in served.iterdir())
    assert (loaded.name, loaded.title, loaded.image_shape) == ("tiny", "Tiny-MNIST", (4, 4))
    assert loaded.record()["class_names"] == ["cat", "dog", "T-shirt/top"]
    shutil.rmtree(served)  # the next load needs no mirror
    np.testing.assert_array_equal(load_dataset("tiny").y_test, loaded.y_test)


def test_a_corrupted_download_is_refused_and_not_cached(tiny, tmp_path):
    served, _ = tiny
    data.write_idx(served / "t10k-labels-idx1-ubyte.gz", np.zeros(10, dtype=np.uint8))
    with pytest.raises(DataError, match="Tiny-MNIST not found.*checksum mismatch"):
        load_dataset("tiny")
    assert not (tmp_path / "xdg" / "fastlr" / "tiny" / "t10k-labels-idx1-ubyte.gz").exists()


def test_a_corrupted_cache_file_names_the_check_and_the_remedy(tiny, tmp_path):
    load_dataset("tiny")
    cached = tmp_path / "xdg" / "fastlr" / "tiny" / "train-labels-idx1-ubyte.gz"
    data.write_idx(cached, np.zeros(30, dtype=np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: does not match "
                                        r"Tiny-MNIST's published checksum \(MD5 of the .gz "
                                        r"file\).*delete it"):
        load_dataset("tiny")


def test_a_copy_is_recognised_by_its_checksums_unless_recompressed(tiny, tmp_path):
    served, _ = tiny
    assert load_dataset(data_dir=served).title == "Tiny-MNIST"
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in served.iterdir():
        (plain / path.name[:-3]).write_bytes(gzip.decompress(path.read_bytes()))
    assert load_dataset(data_dir=plain).name is None


def test_dataset_flag_without_network_is_one_line_that_says_where_it_looked(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with_mirrors(monkeypatch, "fashion-mnist", "http://127.0.0.1:9/")
    assert main(["train", "--dataset", "fashion-mnist", "--no-progress"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "Fashion-MNIST not found (looked in" in lines[0]
    assert str(tmp_path / "xdg" / "fastlr" / "fashion-mnist") in lines[0]
    assert "127.0.0.1:9" in lines[0] and "--data-dir" in lines[0]


def test_a_name_and_a_directory_together_are_refused(tmp_path):
    with pytest.raises(DataError, match="not both"):
        load_dataset("mnist", data_dir=tmp_path)
    assert_one_line_error(run_cli("train", "--dataset", "mnist", "--data-dir", str(tmp_path)),
                          "not allowed with")
    assert_one_line_error(run_cli("train", "--dataset", "cifar"), "invalid choice")


# --- other shapes and class counts through every command -----------------------------------------

def test_a_three_class_model_on_mnist_is_explained(tmp_path):
    X_train, y_train, X_test, y_test = load_mnist()
    train, test = y_train[:3000] < 3, y_test[:600] < 3
    X_train, y_train = X_train[:3000][train], y_train[:3000][train]
    X_test, y_test = X_test[:600][test], y_test[:600][test]
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(X_train, y_train)
    numbers = explain(model, X_train, y_train, X_test, y_test, tmp_path, pair_epochs=1,
                      backend="numpy")
    assert "the three-class model" in numbers["paragraph"]
    assert "the two others" in numbers["paragraph"] and "ten-" not in numbers["paragraph"]


@pytest.fixture(scope="module")
def five_by_28x20(tmp_path_factory):
    """A 5-class data set of 28x20 images in MNIST's names, and a model trained on it by the
    CLI."""
    directory = tmp_path_factory.mktemp("five")
    write_small_dataset(directory, n_train=300, n_test=60, image_shape=(28, 20), n_classes=5)
    model = directory / "model.npz"
    result = run_cli("train", "--data-dir", str(directory), "--epochs", "2", "--backend",
                     "numpy", "--no-progress", "--out", str(model))
    assert result.returncode == 0, result.stderr
    return directory, model, result.stdout


def test_train_names_the_data_set_and_its_shape(five_by_28x20):
    directory, model_path, stdout = five_by_28x20
    assert (f"Trained softmax regression on IDX data set at {directory}: 300 images of "
            f"28x20 pixels, 5 classes.") in stdout
    record = SoftmaxRegression.load(model_path).dataset_
    assert record == {"name": None, "title": f"IDX data set at {directory}",
                      "image_shape": (28, 20), "class_names": None,
                      "directory": str(directory.resolve())}
    summary = json.loads(run_cli("train", "--data-dir", str(directory), "--epochs", "1",
                                 "--backend", "numpy", "--json").stdout.splitlines()[-1])
    assert summary["dataset"]["image_shape"] == [28, 20]


def test_evaluate_reads_the_directory_a_model_was_trained_on(five_by_28x20):
    directory, model_path, _ = five_by_28x20
    for flags in ([], ["--data-dir", str(directory)]):
        result = run_cli("evaluate", str(model_path), *flags)
        assert result.returncode == 0, result.stderr
        assert f"on 60 test images of IDX data set at {directory}" in result.stdout
        assert "  4: " in result.stdout


def test_predict_takes_the_models_image_shape(five_by_28x20, tmp_path):
    _, model_path, _ = five_by_28x20
    three = (np.arange(3 * 28 * 20) % 256).astype(np.uint8).reshape(3, 28, 20)
    np.save(tmp_path / "three.npy", three)
    result = run_cli("predict", str(model_path), str(tmp_path / "three.npy"), "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["predictions"]) == 3
    np.save(tmp_path / "square.npy", np.zeros((28, 28), dtype=np.uint8))
    assert_one_line_error(run_cli("predict", str(model_path), str(tmp_path / "square.npy")),
                          "560 pixels", "expected (28, 20)")


def test_plots_and_explain_draw_28x20_images_of_5_classes(five_by_28x20, tmp_path):
    directory, model_path, _ = five_by_28x20
    for figure in ("weights", "curves"):
        out = tmp_path / f"{figure}.png"
        result = run_cli("plot", figure, str(model_path), "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert out.stat().st_size > 1000
    result = run_cli("explain", str(model_path), "--data-dir", str(directory), "--out",
                     str(tmp_path / "report"), "--pair-epochs", "1", "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    assert "the five-class model" in report and "the four others" in report
    assert "560 weights drawn as the 28x20 image" in report
    assert "of the 10 pairs" in report and "ten-class" not in report and "digit" not in report


def test_class_names_title_the_figures_and_the_predictions(tmp_path):
    X = np.random.default_rng(0).random((60, 12), dtype=np.float32)
    y = np.arange(60) % 3
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(X, y)
    record = {"name": "tiny", "title": "Tiny-MNIST", "image_shape": [3, 4],
              "class_names": ["cat", "dog", "T-shirt/top"]}
    model.save(tmp_path / "model.npz", dataset=record)
    np.save(tmp_path / "x.npy", X[:1].reshape(3, 4))
    predicted = json.loads(run_cli("predict", str(tmp_path / "model.npz"),
                                   str(tmp_path / "x.npy"), "--json").stdout)
    top = predicted["predictions"][0]
    assert top["name"] == ["cat", "dog", "T-shirt/top"][top["label"]]
    from fastlr import plots
    figure = plots.weights_figure(model.coef_, record["class_names"], image_shape=(3, 4))
    titles = [ax.get_title() for ax in figure.axes]
    assert "T-shirt/top" in titles
    assert figure.axes[0].images[0].get_array().shape == (3, 4)


def test_an_installed_copy_reads_the_mnist_it_ships(tmp_path, monkeypatch):
    # A non-editable install holds data/mnist as the package data fastlr/_data/mnist (see
    # setup.py); checked by hand with `pip install .` into a fresh venv, run from elsewhere.
    package_data = tmp_path / "site-packages" / "fastlr" / "_data"
    shutil.copytree(ROOT / "data" / "mnist", package_data / "mnist")
    monkeypatch.setattr(data, "BUNDLED_DATA_DIRS", (package_data,))
    monkeypatch.delenv("FASTLR_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    assert load_dataset().directory == package_data / "mnist"


def test_the_model_file_checks_its_data_set_record(tmp_path):
    from fastlr import ModelFileError
    from fastlr.model_file import read_model, write_model
    arrays = dict(coef=np.zeros((3, 12)), intercept=np.zeros(3), classes=np.arange(3),
                  params=SoftmaxRegression().get_params(), backend="numpy", n_threads=1,
                  history=[])
    record = {"name": None, "title": "IDX data set at d", "image_shape": [3, 4],
              "class_names": None}
    write_model(tmp_path / "good.npz", **arrays, dataset=record)
    assert read_model(tmp_path / "good.npz").dataset["image_shape"] == (3, 4)
    write_model(tmp_path / "old.npz", **arrays)
    assert read_model(tmp_path / "old.npz").dataset is None
    # Nothing is saved that could not be loaded again: refused at the save ...
    from fastlr import WriteError
    with pytest.raises(WriteError, match="data set record"):
        write_model(tmp_path / "bad.npz", **arrays, dataset=dict(record, image_shape=[5, 5]))
    assert not (tmp_path / "bad.npz").exists()
    # ... and at the load of a file written otherwise.
    from test_safety import rewrite_metadata
    rewrite_metadata(tmp_path / "good.npz", tmp_path / "bad.npz",
                     dataset=dict(record, image_shape=[5, 5]))
    with pytest.raises(ModelFileError, match="data set record"):
        read_model(tmp_path / "bad.npz")


def test_a_relative_xdg_cache_home_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative-cache")
    assert data.default_cache_dir("tiny") == tmp_path / "home" / ".cache" / "fastlr" / "tiny"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_cache_dir("tiny") == tmp_path / "xdg" / "fastlr" / "tiny"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert data.default_cache_dir() == tmp_path / "home" / ".cache" / "fastlr" / "mnist"
