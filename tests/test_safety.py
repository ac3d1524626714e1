"""Nothing lost, nothing hangs: interrupts, failed writes, oversized input, hostile metadata.

Each test is one way a run could lose a user's file or results, or hang on hostile input; the
commands run in this process through ``fastlr.cli.main``, on a small data set, with the numpy
backend.
"""

import errno
import io
import json
import stat
import zipfile

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli, write_small_dataset
from test_atomic import umask

from fastlr import DataError, ModelFileError, SoftmaxRegression, atomic
from fastlr.cli import main


@pytest.fixture
def data_dir(tmp_path):
    directory = tmp_path / "data"
    write_small_dataset(directory)
    return directory


def train(data_dir, *args):
    return main(["train", "--data-dir", str(data_dir), "--backend", "numpy", "--epochs", "1",
                 "--no-progress", *args])


def one_error_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastlr: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


# --- 4. a failed write is one line, after the results ---------------------------------------------

def full_disk(fd):
    raise OSError(errno.ENOSPC, "No space left on device")


def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")


@pytest.mark.parametrize("flag", ["--out", "--history"])
@pytest.mark.parametrize("where", ["directory", "under a file", "full disk", "read-only"])
def test_a_failed_write_in_train_is_one_line_after_the_summary(tmp_path, data_dir, capsys,
                                                               monkeypatch, flag, where):
    target = tmp_path / ("out.npz" if flag == "--out" else "history.json")
    if where == "directory":
        target.mkdir()
    elif where == "under a file":
        (tmp_path / "file").write_text("a file")
        target = tmp_path / "file" / target.name
    elif where == "full disk":
        monkeypatch.setattr(atomic.os, "fsync", full_disk)
    else:
        monkeypatch.setattr(atomic, "_open_temporary", read_only)
    assert train(data_dir, flag, str(target)) == 1
    out, err = capsys.readouterr()
    assert "test accuracy" in out
    assert "model saved to" not in out and "history  " not in out
    reason = {"directory": "Is a directory", "under a file": "file is a file, not a directory",
              "full disk": "No space left", "read-only": "Read-only"}[where]
    one_error_line(err, f"cannot write {target}: ", reason)
    assert [p.name for p in tmp_path.rglob(".*.part")] == []


def test_a_failed_model_save_keeps_the_history_and_the_json_summary(tmp_path, data_dir, capsys):
    (tmp_path / "out.npz").mkdir()
    history = tmp_path / "history.json"
    assert train(data_dir, "--out", str(tmp_path / "out.npz"), "--history", str(history),
                 "--json") == 1
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["model"] is None and summary["test_accuracy"] > 0
    assert json.loads(history.read_text())[0]["epoch"] == 1
    one_error_line(err, "out.npz", "Is a directory")


@pytest.fixture
def model_path(tmp_path, data_dir):
    assert train(data_dir, "--out", str(tmp_path / "model.npz")) == 0
    return tmp_path / "model.npz"


@pytest.mark.parametrize("command", [["plot", "weights"], ["plot", "curves"]])
def test_a_failed_figure_write_is_one_line(tmp_path, model_path, capsys, command):
    (tmp_path / "file").write_text("a file")
    capsys.readouterr()
    assert main([*command, str(model_path), "--out", str(tmp_path / "file" / "x.png")]) == 1
    one_error_line(capsys.readouterr().err, "cannot write", "x.png")


def test_a_failed_report_write_is_one_line(tmp_path, data_dir, model_path, capsys):
    (tmp_path / "file").write_text("a file")
    capsys.readouterr()
    assert main(["explain", str(model_path), "--data-dir", str(data_dir), "--backend", "numpy",
                 "--out", str(tmp_path / "file")]) == 1
    one_error_line(capsys.readouterr().err, "cannot write", "file")


def test_a_failed_bench_json_is_one_line_after_the_table(tmp_path, capsys, monkeypatch):
    from fastlr import bench
    monkeypatch.setattr(bench, "run_bench", lambda **kwargs: {"results": []})
    monkeypatch.setattr(bench, "format_report", lambda report: "the table")
    (tmp_path / "bench.json").mkdir()
    assert main(["bench", "--json", str(tmp_path / "bench.json")]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == "the table"
    one_error_line(err, "bench.json")


# --- 1. Ctrl-C in the first epoch keeps the old model -------------------------------------------

def interrupt_epoch(monkeypatch, number):
    """Make the numpy backend's epoch ``number`` (from 1) raise KeyboardInterrupt halfway."""
    from fastlr.backends import reference
    real_epoch, calls = reference.sgd_epoch, []

    def epoch(samples, state, *rest):
        calls.append(1)
        if len(calls) == number:
            state.W[...] += 1.0  # part of an epoch's steps done
            raise KeyboardInterrupt
        return real_epoch(samples, state, *rest)

    monkeypatch.setattr(reference, "sgd_epoch", epoch)


def test_ctrl_c_in_the_first_epoch_leaves_the_old_model_untouched(tmp_path, data_dir, capsys,
                                                                  monkeypatch):
    out = tmp_path / "model.npz"
    assert train(data_dir, "--out", str(out)) == 0
    before = out.read_bytes()
    interrupt_epoch(monkeypatch, 1)
    assert train(data_dir, "--out", str(out), "--epochs", "3") == 130
    assert out.read_bytes() == before
    assert "no epoch finished" in capsys.readouterr().err


def test_ctrl_c_after_an_epoch_saves_the_model_and_its_history(tmp_path, data_dir, capsys,
                                                               monkeypatch):
    out, history = tmp_path / "model.npz", tmp_path / "history.csv"
    interrupt_epoch(monkeypatch, 2)
    assert train(data_dir, "--out", str(out), "--history", str(history), "--epochs", "3") == 130
    assert len(SoftmaxRegression.load(out).history_) == 1
    assert len(history.read_text().splitlines()) == 2
    assert "saved to" in capsys.readouterr().err


# --- 5. the history never takes the model's place ----------------------------------------------

def test_history_and_out_naming_one_file_is_refused_before_training(tmp_path, data_dir, capsys):
    out = tmp_path / "model.json"
    out.write_text("the old model")
    assert train(data_dir, "--out", str(out), "--history", str(tmp_path / "." / "model.json")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--history and --out both name" in lines[0]
    assert out.read_text() == "the old model"


# --- 2. decompression bombs are refused by their declared size --------------------------------

def gzip_bomb(header, n_zeros, chunk=1 << 24):
    """A gzip stream of ``header`` and ``n_zeros`` zero bytes, made without holding them."""
    import zlib
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts, zeros = [compressor.compress(header)], bytes(chunk)
    for _ in range(n_zeros // chunk):
        parts.append(compressor.compress(zeros))
    return b"".join(parts) + compressor.flush()


def idx_header(*shape):
    return bytes([0, 0, 8, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)


def peak_of_refusal(read, error, match):
    """The peak memory Python allocates while ``read()`` raises ``error`` matching ``match``."""
    import tracemalloc
    tracemalloc.start()
    try:
        with pytest.raises(error, match=match):
            read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_idx_bomb_fails_on_its_declared_length_in_small_memory(tmp_path):
    from fastlr.data import read_idx
    from fastlr.images import read_inputs
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip_bomb(idx_header(600, 28, 28), 256 << 20))
    assert peak_of_refusal(lambda: read_idx(path), DataError, "wrong length") < 16 << 20
    assert peak_of_refusal(lambda: read_inputs(path, 784), DataError, "wrong length") < 16 << 20


def test_an_idx_header_over_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    from fastlr.data import parse_idx
    raw = idx_header(1000, 28, 28) + bytes(1000 * 784)
    assert parse_idx(raw).shape == (1000, 28, 28)
    monkeypatch.setenv("FASTLR_MAX_IDX_BYTES", "1000")
    with pytest.raises(DataError, match="784,000 bytes of data, beyond the limit of 1,000"):
        parse_idx(raw)
    assert parse_idx(raw, max_bytes=1 << 20).shape == (1000, 28, 28)
    monkeypatch.setenv("FASTLR_MAX_IDX_BYTES", "lots")
    with pytest.raises(DataError, match="FASTLR_MAX_IDX_BYTES must be"):
        parse_idx(raw)


def test_a_downloaded_bomb_is_hashed_in_small_memory():
    from fastlr.data import _digest_of_download
    bomb = gzip_bomb(idx_header(600, 28, 28), 512 << 20)
    assert peak_of_refusal(lambda: _digest_of_download(bomb, "sha256-content"), ValueError,
                           "inflates to more than") < 16 << 20


def model_with_member(tmp_path, n_bytes):
    """A model file whose coef member declares and holds ``n_bytes`` of zeros (compressed)."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (%d,), }" % (n_bytes // 8)
    header = header.ljust(118) + "\n"
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("coef.npy", "w", force_zip64=True) as member:
            member.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") +
                         header.encode())
            zeros = bytes(1 << 24)
            for _ in range(n_bytes // len(zeros)):
                member.write(zeros)
    return path


def test_a_model_member_bomb_is_refused_by_its_declared_size(tmp_path, monkeypatch):
    path = model_with_member(tmp_path, 128 << 20)
    assert path.stat().st_size < 1 << 20
    assert peak_of_refusal(lambda: SoftmaxRegression.load(path), ModelFileError,
                           "more than the limit of 67,108,864") < 16 << 20
    monkeypatch.setenv("FASTLR_MAX_MODEL_BYTES", str(1 << 30))
    # Allowed now, read in one copy: then refused as a model without its other members.
    assert peak_of_refusal(lambda: SoftmaxRegression.load(path), ModelFileError,
                           "missing") < (128 << 20) + (16 << 20)


# --- 3. thread counts are capped at the cores --------------------------------------------------

def rewrite_metadata(source, target, **changes):
    """Copy the model file ``source`` to ``target`` with its JSON metadata updated by
    ``changes`` (a key ``params`` is merged into the hyperparameters)."""
    from fastlr.model_file import read_model
    metadata = read_model(source).metadata
    metadata["params"].update(changes.pop("params", {}))
    metadata.update(changes)
    buffer = io.BytesIO()
    np.save(buffer, np.array(json.dumps(metadata)))
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as archive:
        for info in original.infolist():
            raw = buffer.getvalue() if info.filename == "metadata.npy" else original.read(info)
            archive.writestr(info.filename, raw)
    return target


def test_thread_counts_from_a_flag_the_estimator_or_a_model_file_are_capped(tmp_path, data_dir,
                                                                            capsys):
    from fastlr.backends import default_n_threads
    cores = min(default_n_threads(), 2)  # and at most the two chunks of a batch of 64
    assert train(data_dir, "--threads", "1000000", "--json", "--out",
                 str(tmp_path / "m.npz")) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["threads"] == cores

    X, y = np.random.default_rng(0).random((20, 16)), np.arange(20) % 3
    model = SoftmaxRegression(epochs=1, backend="numpy", n_threads=10**15).fit(X, y)
    assert model.n_threads_ == cores and model.n_threads == 10**15

    hostile = rewrite_metadata(tmp_path / "m.npz", tmp_path / "hostile.npz", n_threads=10**15,
                               params={"n_threads": 10**15})
    loaded = SoftmaxRegression.load(hostile)
    assert loaded.predict(X).shape == (20,)
    assert loaded.partial_fit(X, y).n_threads_ == cores


# --- 7. a FASTLR_DATA that cannot be used is an error, not a silent fallback ------------------

@pytest.mark.parametrize("state", ["missing", "incomplete", "a file"])
def test_an_unusable_fastlr_data_is_one_line(tmp_path, capsys, monkeypatch, state):
    directory = tmp_path / "env-data"
    if state == "incomplete":
        write_small_dataset(directory)
        (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    elif state == "a file":
        directory.write_text("not a directory")
    monkeypatch.setenv("FASTLR_DATA", str(directory))
    assert main(["train", "--backend", "numpy", "--epochs", "1", "--no-progress"]) == 1
    line = one_error_line(capsys.readouterr().err, f"FASTLR_DATA={directory}")
    assert {"missing": "no such directory", "incomplete": "missing t10k-labels",
            "a file": "not a directory"}[state] in line


# --- 8. predict reports the inputs it read, then the one it could not ------------------------

@pytest.mark.parametrize("as_json", [False, True])
def test_predict_prints_the_good_inputs_before_the_bad_one(tmp_path, model_path, capsys,
                                                           as_json):
    good = tmp_path / "good.npy"
    np.save(good, np.arange(32, dtype=np.uint8).reshape(2, 4, 4))
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an array")
    capsys.readouterr()
    args = ["predict", str(model_path), str(good), str(bad), str(good)]
    assert main(args + (["--json"] if as_json else [])) == 1
    out, err = capsys.readouterr()
    one_error_line(err, "bad.npy")
    if as_json:
        result = json.loads(out)
        assert len(result["predictions"]) == 4
        assert [e["input"] for e in result["errors"]] == [str(bad)]
    else:
        assert out.count("good.npy[") == 4


# --- 9. a download has an overall deadline and says what it is doing ---------------------------

@pytest.fixture
def trickling_mirror():
    """An HTTP server on 127.0.0.1 that promises 10 kB and sends a byte every 50 ms."""
    import http.server
    import threading
    import time

    stop = threading.Event()

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "10000")
            self.end_headers()
            for _ in range(10000):
                if stop.is_set():
                    return
                self.wfile.write(b"\x00")
                self.wfile.flush()
                time.sleep(0.05)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    stop.set()
    server.shutdown()
    server.server_close()


def test_a_trickling_mirror_is_given_up_at_the_deadline_with_a_progress_line(
        tmp_path, trickling_mirror, capsys):
    from fastlr.data import download_dataset
    with pytest.raises(DataError, match="deadline has passed"):
        download_dataset(tmp_path, "mnist", mirrors=[trickling_mirror], timeout=5, deadline=0.5)
    assert "connecting to 127.0.0.1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- 10. smaller cases ------------------------------------------------------------------------

@pytest.mark.parametrize("history", [[{}], [1, 2], [{"epoch": "x", "train_loss": None}],
                                     [{"epoch": 1, "train_loss": 0.5}],
                                     [{"epoch": 1, "train_loss": 0.5, "train_accuracy": 1e999}]])
def test_a_model_file_with_a_broken_history_is_refused_on_load(tmp_path, model_path, capsys,
                                                               history):
    broken = rewrite_metadata(model_path, tmp_path / "broken.npz", history=history)
    capsys.readouterr()
    assert main(["plot", "curves", str(broken), "--out", str(tmp_path / "c.png")]) == 1
    one_error_line(capsys.readouterr().err, "training history")


def test_a_diverging_huge_rate_suggests_a_sensible_one(data_dir, capsys):
    assert train(data_dir, "--lr", "1e300") == 1
    line = one_error_line(capsys.readouterr().err, "too high")
    assert "e.g. --lr 1." in line and "e+299" not in line


def test_train_help_shows_percent_signs_once(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "10% of the training images" in text and "%%" not in text


def seven_on_transparency(path, ink):
    from PIL import Image, ImageDraw
    image = Image.new("RGBA", (60, 80), (0, 0, 0, 0))
    ImageDraw.Draw(image).line([(10, 10), (50, 10), (25, 70)], fill=ink, width=8)
    image.save(path)
    return path


def test_white_ink_on_a_transparent_png_reads_as_black_ink_does(tmp_path):
    from fastlr.images import read_image
    white = read_image(seven_on_transparency(tmp_path / "white.png", (255, 255, 255, 255)))
    black = read_image(seven_on_transparency(tmp_path / "black.png", (0, 0, 0, 255)))
    assert white.max() == 1.0
    np.testing.assert_allclose(white, black, atol=0.02)


# The image has 60 x 80 = 4800 pixels: Pillow warns past its limit and refuses past twice it.
@pytest.mark.parametrize("limit", [3999, 1999])
def test_an_image_past_pillows_pixel_limit_is_one_error_and_no_warning(tmp_path, monkeypatch,
                                                                       recwarn, limit):
    from PIL import Image

    from fastlr.images import read_image
    path = seven_on_transparency(tmp_path / "big.png", (0, 0, 0, 255))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(DataError, match="too large to read"):
        read_image(path)
    assert len(recwarn) == 0


@pytest.mark.parametrize("command", [["train"], ["explain", "model.npz"]])
def test_a_negative_seed_is_one_line(capsys, command):
    assert main([*command, "--seed", "-1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--seed: must be a whole number >= 0, got -1" in lines[0]


def test_plot_out_writes_exactly_the_path_given(tmp_path, model_path, capsys):
    out = tmp_path / "DIR"
    assert main(["plot", "weights", str(model_path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (tmp_path / "DIR.png").exists()


class Frame:
    """The part of a DataFrame fastlr looks at: named columns and the values as an array."""

    def __init__(self, values, columns):
        self.values, self.columns = np.asarray(values), list(columns)

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)

    def reordered(self, order):
        return Frame(self.values[:, order], [self.columns[i] for i in order])


def test_a_dataframe_with_its_columns_reordered_is_refused_at_predict():
    rng = np.random.default_rng(0)
    frame = Frame(rng.random((30, 3)), ["ink", "slant", "width"])
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(frame, np.arange(30) % 2)
    assert list(model.feature_names_in_) == ["ink", "slant", "width"]
    assert model.predict(frame).shape == (30,)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        assert model.predict(frame.values).shape == (30,)  # as scikit-learn, with a warning
    with pytest.raises(DataError, match="feature names should match"):
        model.predict(frame.reordered([2, 0, 1]))
    with pytest.raises(DataError, match="feature names should match"):
        model.partial_fit(frame.reordered([1, 0, 2]), np.arange(30) % 2)
    refitted = model.fit(frame.values, np.arange(30) % 2)
    assert not hasattr(refitted, "feature_names_in_")


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path):
    from fastlr.images import read_image
    # Found by atheris: a 171-byte run-length-encoded BMP of 33,567,232 x 1 pixels.
    raw = bytearray(b"BM" + bytes(12) + (40).to_bytes(4, "little"))
    raw += (33_567_232).to_bytes(4, "little") + (1).to_bytes(4, "little")
    raw += (1).to_bytes(2, "little") + (8).to_bytes(2, "little") + (1).to_bytes(4, "little")
    raw += bytes(20) + bytes(4 * 256) + b"\x00\x01"
    raw[10:14] = (len(raw) - 2).to_bytes(4, "little")
    path = tmp_path / "long.bmp"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="33567232x1 pixels, more than the 16,777,216"):
        read_image(path)


def test_numba_disable_jit_makes_the_numba_backend_unavailable_not_a_traceback():
    result = run_cli("train", "--epochs", "1", "--no-progress", "--backend", "numba",
                     env={"NUMBA_DISABLE_JIT": "1"})
    assert_one_line_error(result, "NUMBA_DISABLE_JIT is set")
    result = run_cli("info", env={"NUMBA_DISABLE_JIT": "1"})
    assert result.returncode == 0 and "Traceback" not in result.stderr


# --- class 2: every file through the one writer ---------------------------------------------------

def test_the_page_goes_through_the_writer_a_symlink_is_replaced_a_failure_keeps_the_old(
        tmp_path, data_dir, model_path, capsys, monkeypatch):
    precious = tmp_path / "precious.txt"
    precious.write_text("precious")
    page = tmp_path / "page.html"
    page.symlink_to(precious)
    args = ["explain", str(model_path), "--data-dir", str(data_dir), "--backend", "numpy",
            "--html", "--out", str(page)]
    with umask(0o022):
        assert main(args) == 0
    assert precious.read_text() == "precious" and not page.is_symlink()
    assert stat.S_IMODE(page.stat().st_mode) == 0o644
    before = page.read_bytes()
    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    capsys.readouterr()
    assert main(args) == 1
    one_error_line(capsys.readouterr().err, f"cannot write {page}: No space left")
    assert page.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model.npz", "page.html",
                                                          "precious.txt"]


def test_every_file_a_command_writes_is_shareable(tmp_path, data_dir, capsys):
    """Under umask 022 every file is 0644: model, history, figures, report, page."""
    with umask(0o022):
        assert train(data_dir, "--out", str(tmp_path / "m.npz"), "--history",
                     str(tmp_path / "h.csv")) == 0
        model = str(tmp_path / "m.npz")
        assert main(["plot", "weights", model, "--out", str(tmp_path / "w.png")]) == 0
        assert main(["explain", model, "--data-dir", str(data_dir), "--backend", "numpy",
                     "--pair-epochs", "1", "--out", str(tmp_path / "report")]) == 0
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "data" not in p.parts]
    assert len(files) >= 8
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {
        p.name: "0o644" for p in files}
