"""The command line, run as a user runs it: in a subprocess, reading stdout, stderr and the exit
code."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, assert_one_line_error, run_cli, write_small_dataset


def test_train_one_epoch_json(tmp_path):
    out = tmp_path / "model.npz"
    result = run_cli("train", "--epochs", "1", "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("test_accuracy", "train_accuracy", "train_time_s", "epochs", "batch_size",
                "backend", "threads"):
        assert key in summary
    assert summary["epochs"] == 1 and summary["batch_size"] == 64
    assert summary["dataset"]["name"] == "mnist" and summary["dataset"]["title"] == "MNIST"
    assert summary["test_accuracy"] >= 0.90
    assert out.is_file()

    evaluated = run_cli("evaluate", str(out), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert sorted(result["per_class_accuracy"]) == [str(d) for d in range(10)]
    assert result["dataset"]["name"] == "mnist"  # the data set the model file records


def test_train_prints_a_summary():
    result = run_cli("train", "--epochs", "1", "--backend", "numpy", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "backend         numpy" in result.stdout


def test_bad_data_dir_is_one_line_without_traceback(tmp_path):
    assert_one_line_error(run_cli("train", "--data-dir", str(tmp_path / "nowhere")),
                          "nowhere")
    assert_one_line_error(run_cli("train", "--data-dir", str(tmp_path)),
                          "missing", "train-images-idx3-ubyte")


@pytest.mark.parametrize("args,fragment", [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--batch-size", "many"], "--batch-size"),
    (["train", "--backend", "gpu"], "--backend"),
    (["evaluate", "missing-model.npz"], "missing-model.npz"),
    (["frobnicate"], "frobnicate"),
])
def test_user_errors_are_one_line(args, fragment):
    assert_one_line_error(run_cli(*args), fragment)


def test_info_lists_backends():
    result = run_cli("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert "numpy" in info["backends"] and info["cores"] >= 1


# --- predict -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory):
    import numpy as np

    from fastlr import SoftmaxRegression, load_mnist
    X_train, y_train, X_test, y_test = load_mnist(ROOT / "data" / "mnist")
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(X_train[:20000], y_train[:20000])
    path = model.save(tmp_path_factory.mktemp("model") / "model.npz")
    return path, X_test, y_test, np


def draw_seven(path, size=(200, 150)):
    """A thick dark '7' on white paper, at an odd size, as a user would draw it."""
    from PIL import Image, ImageDraw
    image = Image.new("RGB", size, "white")
    w, h = size
    ImageDraw.Draw(image).line([(0.35 * w, 0.15 * h), (0.65 * w, 0.15 * h),
                                (0.45 * w, 0.88 * h)], fill="black", width=14, joint="curve")
    image.save(path)


def test_predict_reads_a_drawn_digit(tmp_path, mnist_model):
    model_path = mnist_model[0]
    draw_seven(tmp_path / "seven.png")
    result = run_cli("predict", str(model_path), str(tmp_path / "seven.png"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{tmp_path / 'seven.png'}: 7 ")
    assert result.stdout.count("%") == 3


def test_predict_npy_batch_and_idx_json(tmp_path, mnist_model):
    from fastlr.data import write_idx
    model_path, X_test, y_test, np = mnist_model
    raw = np.round(X_test[:5] * 255).astype(np.uint8).reshape(5, 28, 28)
    np.save(tmp_path / "batch.npy", X_test[:5])
    write_idx(tmp_path / "one-idx", raw[0])
    result = run_cli("predict", str(model_path), str(tmp_path / "batch.npy"),
                     str(tmp_path / "one-idx"), "--json")
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)["predictions"]
    assert [p["input"].rsplit("/", 1)[-1] for p in predictions] == \
        [f"batch.npy[{i}]" for i in range(5)] + ["one-idx"]
    assert predictions[0]["label"] == predictions[5]["label"]
    assert sum(p["label"] == y for p, y in zip(predictions, y_test[:5])) >= 4
    assert len(predictions[0]["top"]) == 3


def test_predict_bad_inputs_are_one_line(tmp_path, mnist_model):
    import numpy as np
    model_path = mnist_model[0]
    (tmp_path / "notes.png").write_text("this is not an image\n")
    assert_one_line_error(run_cli("predict", str(model_path), str(tmp_path / "notes.png")),
                          "notes.png", "not an image")
    draw_seven(tmp_path / "seven.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "seven.png").read_bytes()[:300])
    assert_one_line_error(run_cli("predict", str(model_path), str(tmp_path / "cut.png")),
                          "cut.png", "truncated")
    np.save(tmp_path / "small.npy", np.zeros((3, 10, 10), dtype=np.uint8))
    assert_one_line_error(run_cli("predict", str(model_path), str(tmp_path / "small.npy")),
                          "small.npy", "784 pixels")
    np.save(tmp_path / "scaled.npy", np.full((28, 28), 200.0))
    assert_one_line_error(run_cli("predict", str(model_path), str(tmp_path / "scaled.npy")),
                          "[0, 1]")
    # A blank array holds no digit, as a blank picture does not: refused, not read as one.
    np.save(tmp_path / "blank.npy", np.zeros((28, 28), dtype=np.uint8))
    assert_one_line_error(run_cli("predict", str(model_path), str(tmp_path / "blank.npy")),
                          "blank.npy", "the image is blank")
    batch = np.random.default_rng(0).integers(0, 256, (5, 784)).astype(np.uint8)
    batch[3] = 17
    np.save(tmp_path / "batch.npy", batch)
    assert_one_line_error(run_cli("predict", str(model_path), str(tmp_path / "batch.npy")),
                          "image 3 of 5 is blank")
    (tmp_path / "model.npz").write_bytes(b"PK\x03\x04 truncated")
    assert_one_line_error(run_cli("predict", str(tmp_path / "model.npz"),
                                  str(tmp_path / "seven.png")), "not a fastlr model file")


# --- training mishaps ----------------------------------------------------------------------------

def test_diverging_learning_rate_is_one_line(tmp_path):
    write_small_dataset(tmp_path)
    result = run_cli("train", "--data-dir", str(tmp_path), "--lr", "1e39", "--backend", "numpy",
                     "--no-progress")
    assert_one_line_error(result, "diverged", "--lr")


def test_corrupt_idx_in_data_dir_is_one_line(tmp_path):
    write_small_dataset(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    assert_one_line_error(run_cli("train", "--data-dir", str(tmp_path)), "wrong magic",
                          "train-images-idx3-ubyte")


def test_ctrl_c_during_training_saves_the_model(tmp_path):
    import signal
    import time

    out = tmp_path / "interrupted.npz"
    # Under a shell without job control (a script's `cmd &`) the tests start with SIGINT
    # ignored, and a child inherits an ignored signal: the training would never see the
    # Ctrl-C. A caught signal is reset to its default at exec, so catch it while starting it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "fastlr", "train", "--epochs", "200", "--backend", "numpy",
             "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    finally:  # None: a handler installed outside Python, which cannot be put back
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
    # tqdm redraws the bar on stderr after each epoch; wait for the first one to finish.
    seen = b""
    deadline = time.monotonic() + 300
    while b"1/200" not in seen and time.monotonic() < deadline:
        chunk = os.read(process.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    assert b"1/200" in seen, seen
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    stderr = (seen + stderr).decode()
    assert process.returncode == 130, stderr
    assert "the model trained so far is saved to" in stderr and "Traceback" not in stderr
    from fastlr import SoftmaxRegression
    model = SoftmaxRegression.load(out)
    assert len(model.history_) >= 1 and model.coef_.shape == (10, 784)


def test_help_and_version_load_no_heavy_module():
    code = ("import sys\nfrom fastlr.cli import build_parser, main\n"
            "build_parser().format_help()\n"
            "print(sorted(m for m in ('numba', 'matplotlib', 'tqdm', 'PIL', 'sklearn') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    from fastlr._version import __version__
    assert run_cli("--version").stdout.strip() == f"fastlr {__version__}"


def test_the_compile_notice_asks_the_backend():
    from types import SimpleNamespace

    from fastlr.cli.train import _compiles_on_first_run
    assert _compiles_on_first_run(SimpleNamespace(first_run_compiles=lambda: True))
    assert not _compiles_on_first_run(SimpleNamespace(first_run_compiles=lambda: False))
    assert not _compiles_on_first_run(SimpleNamespace())


def test_train_and_evaluate_import_only_the_backend_they_use(tmp_path):
    """With the extension built, auto takes it: neither command imports Numba, nor matplotlib."""
    from fastlr.backends import available_backends
    if "cython" not in available_backends():
        pytest.skip("the Cython extension is not built")
    write_small_dataset(tmp_path / "data", side=28)
    code = (f"import sys\nfrom fastlr.cli import main\n"
            f"assert main(['train', '--epochs', '1', '--no-progress', '--data-dir', "
            f"{str(tmp_path / 'data')!r}, '--out', {str(tmp_path / 'm.npz')!r}]) == 0\n"
            f"assert main(['evaluate', {str(tmp_path / 'm.npz')!r}, '--data-dir', "
            f"{str(tmp_path / 'data')!r}]) == 0\n"
            "print(sorted(m for m in ('numba', 'matplotlib', 'fastlr.backends.numba') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_summary_counts_one_epoch_and_one_batch_in_words(tmp_path):
    write_small_dataset(tmp_path)
    result = run_cli("train", "--data-dir", str(tmp_path), "--epochs", "1", "--batch-size",
                     "1000000", "--backend", "numpy", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "(1 epoch of one batch of all 30 images, median" in result.stdout
