"""Nothing lost, nothing hangs, nothing unbounded: the faults by class, each class tested where
every path goes through it (one bounded reader, one writer, one deadline, one error handler).

1. work and memory bounded by what the input declares, before the work;
4. nothing waits forever, and errors from libraries are one line;
5. inputs that change or lie while being read;
6. a hostile or odd environment;
7. the library API guards like the CLI.

(Class 2, the writer, is tested in test_atomic.py and test_safety.py.)
"""

import io
import json
import os
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest
from conftest import ROOT, write_small_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from fastlr import DataError, ModelFileError, SoftmaxRegression, streaming
from fastlr.cli import main
from fastlr.images import read_inputs
from fastlr.reading import read_npy
from test_safety import one_error_line

MiB = 1 << 20


@pytest.fixture
def data_dir(tmp_path):
    directory = tmp_path / "data"
    write_small_dataset(directory)
    return directory


@pytest.fixture
def model_path(tmp_path, data_dir):
    assert main(["train", "--data-dir", str(data_dir), "--backend", "numpy", "--epochs", "1",
                 "--no-progress", "--out", str(tmp_path / "model.npz")]) == 0
    return tmp_path / "model.npz"


def peak_memory(work):
    """The peak memory Python and NumPy allocate while ``work()`` runs, and its result or
    exception."""
    tracemalloc.start()
    try:
        try:
            outcome = work()
        except Exception as exc:  # noqa: BLE001 - returned for the test to look at
            outcome = exc
        return tracemalloc.get_traced_memory()[1], outcome
    finally:
        tracemalloc.stop()


def npy_header(shape, descr="<f8", fortran=False):
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': %r, }" % (descr, fortran,
                                                                      tuple(shape))
    header = header.ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()


def run_fastlr(*args, stdin=None, timeout=120, env=None, cwd=ROOT):
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "fastlr", *args], input=stdin,
                          capture_output=True, env=full_env, cwd=cwd, timeout=timeout)


# --- 1. work and memory bounded by what the input declares ---------------------------------------

def test_a_128_byte_npy_declaring_2_to_the_40_floats_is_refused_in_small_memory(
        tmp_path, model_path, capsys):
    path = tmp_path / "huge.npy"
    path.write_bytes(npy_header((2 ** 40,)))
    assert path.stat().st_size == 128
    peak, outcome = peak_memory(lambda: read_inputs(path, 16))
    assert isinstance(outcome, DataError) and peak < MiB
    assert "declares shape (1099511627776,)" in str(outcome) and "holds 0" in str(outcome)
    assert main(["predict", str(model_path), str(path)]) == 1
    one_error_line(capsys.readouterr().err, "huge.npy: truncated")


@settings(max_examples=60)
@given(shape=st.lists(st.integers(0, 2 ** 31), min_size=1, max_size=4),
       descr=st.sampled_from(["<f8", "|u1", ">i4", "<f4"]),
       tail=st.integers(0, 4096))
def test_a_npy_reader_never_allocates_more_than_the_file_holds(shape, descr, tail):
    raw = npy_header(shape, descr) + bytes(tail)
    peak, outcome = peak_memory(lambda: read_npy(io.BytesIO(raw), "fuzzed", len(raw), 64 * MiB))
    assert peak < 64 * 1024 + 2 * len(raw)
    if not isinstance(outcome, DataError):
        assert outcome.nbytes <= tail and outcome.shape == tuple(shape)


def test_a_npy_over_the_limit_is_refused_by_its_header(tmp_path, monkeypatch):
    path = tmp_path / "images.npy"
    np.save(path, np.arange(160, dtype=np.uint8).reshape(10, 4, 4))  # ten inked images
    assert read_inputs(path, 16).shape == (10, 16)
    monkeypatch.setenv("FASTLR_MAX_IDX_BYTES", "100")
    with pytest.raises(DataError, match="160 bytes, beyond the limit of 100; set FASTLR_MAX"):
        read_inputs(path, 16)


def test_a_zip_listing_many_members_is_refused_before_its_directory_is_read(tmp_path):
    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(50_000):
            archive.writestr(f"m{i}.npy", b"")
    peak, outcome = peak_memory(lambda: SoftmaxRegression.load(path))
    assert isinstance(outcome, ModelFileError) and "50,000 members" in str(outcome)
    assert peak < MiB


def test_a_zip_whose_end_record_understates_its_directory_is_refused(tmp_path):
    path = tmp_path / "lying.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(3000):
            archive.writestr(f"m{i}.npy", b"")
    raw = bytearray(path.read_bytes())
    end = raw.rindex(b"PK\x05\x06")
    raw[end + 8:end + 12] = (1).to_bytes(2, "little") * 2  # one member, says the end record
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="1 members in a directory of"):
        SoftmaxRegression.load(path)


def test_the_page_trains_its_comparison_for_at_most_100_epochs_whatever_the_file_says():
    from fastlr.page import MAX_COMPARE_EPOCHS, train_comparison
    rng = np.random.default_rng(0)
    X, y = rng.random((20, 4)), np.arange(20) % 2
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(X, y)
    model.set_params(epochs=10 ** 6)  # as a model file's metadata may say
    comparison, _ = train_comparison(model, X, y, backend="numpy")
    assert MAX_COMPARE_EPOCHS == 100 and len(comparison.history_) == 100


@pytest.mark.parametrize("n_classes, reason", [(101, "explains at most 100 classes"),
                                               (5, "no training image here ([3, 4])")])
def test_the_report_is_bounded_by_the_model_and_the_data(tmp_path, n_classes, reason):
    from fastlr.explain import explain
    rng = np.random.default_rng(0)
    X, y = rng.random((30, 4)), np.arange(30) % 3
    model = SoftmaxRegression(backend="numpy").partial_fit(X, y, classes=range(n_classes))
    with pytest.raises(DataError, match=reason.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        explain(model, X, y, X, y, tmp_path / "report", backend="numpy")
    assert not (tmp_path / "report" / "report.md").exists()


def test_the_page_shows_at_most_1000_classes():
    from fastlr.page import page_data
    rng = np.random.default_rng(0)
    X, y = rng.random((30, 4)), np.arange(30) % 3
    model = SoftmaxRegression(backend="numpy").partial_fit(X, y, classes=range(1001))
    with pytest.raises(DataError, match="at most 1,000 classes"):
        page_data(model, X, y, X, y, backend="numpy")


@pytest.fixture
def idx_stream_dir(tmp_path):
    directory = tmp_path / "stream"
    write_small_dataset(directory, n_train=40, n_test=10, compress=False)
    return directory


def test_shuffle_buffers_and_chunks_are_capped_by_the_data(idx_stream_dir, capsys):
    source = streaming.open_source(idx_stream_dir, chunk_size=10 ** 12, buffer_size=10 ** 12)
    assert (source.chunk_size, source.buffer_size) == (40, 40)
    # Capped, the same model: a buffer of all the rows trains as one of 10**12 rows would.
    models = [SoftmaxRegression(backend="numpy", epochs=2).fit(
        streaming.open_source(idx_stream_dir, chunk_size=7, buffer_size=buffer))
        for buffer in (10 ** 12, 40)]
    np.testing.assert_array_equal(models[0].coef_, models[1].coef_)
    assert main(["train", "--data-dir", str(idx_stream_dir), "--stream", "--backend", "numpy",
                 "--epochs", "1", "--no-progress", "--shuffle-buffer", str(10 ** 12),
                 "--chunk-size", str(10 ** 12)]) == 0


def test_a_label_file_with_holes_is_counted_in_small_memory(tmp_path):
    """A sparse label file declaring 2**28 labels (and images to match) is counted a MiB at a
    time; np.bincount on the whole would take 2 GiB of int64."""
    directory = tmp_path / "holes"
    write_small_dataset(directory, n_train=4, n_test=4, side=2, compress=False)
    n = 2 ** 28
    with open(directory / "train-labels-idx1-ubyte", "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + b"\x01")
        fh.truncate(8 + n)
    with open(directory / "train-images-idx3-ubyte", "wb") as fh:
        fh.write(bytes([0, 0, 8, 3]) + n.to_bytes(4, "big") + (2).to_bytes(4, "big") * 2)
        fh.truncate(16 + 4 * n)
    peak, source = peak_memory(lambda: streaming.open_source(directory, test_size=1))
    assert peak < 16 * MiB, peak
    assert source.n_samples == n and list(source.classes) == [0, 1]


# --- 5. inputs that change or lie while being read -----------------------------------------------

def test_a_file_truncated_during_training_is_one_error_not_sigbus(idx_stream_dir):
    source = streaming.open_source(idx_stream_dir, chunk_size=8, buffer_size=16)
    images = idx_stream_dir / "train-images-idx3-ubyte"
    os.truncate(images, images.stat().st_size // 2)
    with pytest.raises(DataError, match="changed while it was read"):
        SoftmaxRegression(backend="numpy", epochs=1).fit(source)


def test_a_file_truncated_during_a_cli_run_is_one_line(idx_stream_dir):
    """In a process of its own: a memory map would die of SIGBUS there, not raise."""
    script = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from fastlr import streaming
from fastlr.cli import main
real = streaming.StreamingSource._read_rows
def read_rows(self, *args):
    os.truncate({str(idx_stream_dir / 'train-images-idx3-ubyte')!r}, 100)
    return real(self, *args)
streaming.StreamingSource._read_rows = read_rows
sys.exit(main(["train", "--data-dir", {str(idx_stream_dir)!r}, "--stream", "--backend",
               "numpy", "--epochs", "2", "--no-progress"]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    one_error_line(result.stderr, "train-images-idx3-ubyte: the file changed while it was read")


def test_a_file_replaced_during_training_is_read_as_it_was(idx_stream_dir):
    source = streaming.open_source(idx_stream_dir, chunk_size=8, buffer_size=16)
    images = idx_stream_dir / "train-images-idx3-ubyte"
    before = source.parts[0][0].rows(0, 40)
    (idx_stream_dir / "new").write_bytes(b"short")
    os.replace(idx_stream_dir / "new", images)
    np.testing.assert_array_equal(source.parts[0][0].rows(0, 40), before)
    assert len(SoftmaxRegression(backend="numpy", epochs=1).fit(source).history_) == 1


@settings(max_examples=40)
@given(shape=st.tuples(st.integers(1, 30), st.integers(1, 5), st.integers(1, 5)),
       fortran=st.booleans(), flat=st.booleans(), data=st.data())
def test_row_files_read_c_and_fortran_order_as_numpy_does(tmp_path_factory, shape, fortran,
                                                         flat, data):
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    if flat:
        array = array.reshape(shape[0], -1)
    if fortran:
        array = np.asfortranarray(array)
    path = tmp_path_factory.mktemp("rows") / "a.npy"
    np.save(path, array)
    start = data.draw(st.integers(0, shape[0] - 1))
    stop = data.draw(st.integers(start + 1, shape[0]))
    rows = streaming._npy_rows(path) if shape[0] >= 2 else None
    expected = np.ascontiguousarray(array).reshape(shape[0], -1)
    if rows is not None:
        np.testing.assert_array_equal(rows.rows(start, stop), expected[start:stop])
        np.testing.assert_array_equal(rows.head(stop).rows(start, stop), expected[start:stop])


def test_fortran_order_class_files_are_streamed_not_loaded(tmp_path):
    c_dir, f_dir = tmp_path / "c", tmp_path / "f"
    c_dir.mkdir()
    f_dir.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        images = rng.integers(0, 256, (2000, 28, 28), dtype=np.uint8)  # 1.5 MiB a class
        np.save(c_dir / f"k{k}.npy", images)
        np.save(f_dir / f"k{k}.npy", np.asfortranarray(images))
    peak, source = peak_memory(lambda: streaming.open_source(f_dir, chunk_size=64,
                                                             buffer_size=128, test_size=30))
    assert peak < MiB, peak
    reference = streaming.open_source(c_dir, chunk_size=64, buffer_size=128, test_size=30)
    buffers = []
    for each in (source, reference):
        samples, _ = next(each.epoch_blocks(np.random.default_rng(0)))
        buffers.append((samples.X.data.copy(), samples.y.copy()))
    np.testing.assert_array_equal(buffers[0][0], buffers[1][0])
    np.testing.assert_array_equal(source.test[0], reference.test[0])


def test_predict_reads_fortran_order_and_non_native_npy_as_c_order(tmp_path):
    images = np.random.default_rng(0).random((3, 4, 4))
    variants = {"c": images, "fortran": np.asfortranarray(images),
                "big-endian": images.astype(">f8"), "uint16": (images * 255).astype(">u2")}
    rows = {}
    for name, array in variants.items():
        np.save(tmp_path / f"{name}.npy", array)
        rows[name] = read_inputs(tmp_path / f"{name}.npy", 16, (4, 4))
    np.testing.assert_array_equal(rows["fortran"], rows["c"])
    np.testing.assert_array_equal(rows["big-endian"], rows["c"])
    np.testing.assert_allclose(rows["uint16"], rows["c"], atol=1 / 255)


def test_a_class_file_of_another_dtype_is_one_line(tmp_path, capsys):
    for k in range(2):
        np.save(tmp_path / f"k{k}.npy", np.zeros((10, 16), dtype=">u2"))
    assert main(["train", "--data-dir", str(tmp_path), "--backend", "numpy", "--epochs", "1",
                 "--no-progress"]) == 1
    one_error_line(capsys.readouterr().err, "k0.npy: needs uint8 images", ">u2")


def test_a_fifo_nobody_writes_is_read_at_once_as_empty(tmp_path, model_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = run_fastlr("predict", str(model_path), str(fifo), timeout=60)
    assert result.returncode == 1
    one_error_line(result.stderr.decode(), "fifo: is empty")


@pytest.mark.parametrize("kind", ["npy", "idx", "model"])
def test_a_pipe_on_stdin_is_read_once(tmp_path, model_path, kind):
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    from fastlr.data import write_idx
    write_idx(tmp_path / "x.idx", images)
    if kind == "model":
        args, stdin = ("/dev/stdin", str(tmp_path / "x.npy")), model_path.read_bytes()
    else:
        args, stdin = (str(model_path), "/dev/stdin"), (tmp_path / f"x.{kind}").read_bytes()
    result = run_fastlr("predict", *args, "--json", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["predictions"]) == 3


def test_labels_the_model_does_not_know_are_an_error_not_zero_percent(tmp_path, capsys):
    classes_dir = tmp_path / "animals"
    classes_dir.mkdir()
    for name in ("cat", "dog"):
        np.save(classes_dir / f"{name}.npy",
                np.random.default_rng(0).integers(0, 256, (20, 4, 4), dtype=np.uint8))
    model = tmp_path / "animals.npz"
    assert main(["train", "--data-dir", str(classes_dir), "--backend", "numpy", "--epochs",
                 "1", "--no-progress", "--out", str(model)]) == 0
    digits = tmp_path / "digits"
    write_small_dataset(digits)
    capsys.readouterr()
    for command in (["evaluate"], ["explain", "--backend", "numpy", "--out",
                                   str(tmp_path / "r")]):
        assert main([command[0], str(model), "--data-dir", str(digits), *command[1:]]) == 1
        one_error_line(capsys.readouterr().err, "knows the classes ['cat', 'dog']",
                       "labels of IDX data set", "include [0, 1, 2]")


# --- 4. nothing waits forever; errors from libraries are one line --------------------------------

@pytest.fixture
def silent_listener():
    """A socket on 127.0.0.1 that accepts connections and never answers."""
    import socket
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture
def garbage_listener():
    """A socket on 127.0.0.1 that answers every connection with bytes no Dask peer sends."""
    import socket
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def answer():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + b"\xff" * 4096)

    threading.Thread(target=answer, daemon=True).start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def closed_port():
    import socket
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"tcp://127.0.0.1:{port}"


@pytest.mark.parametrize("address, reason", [
    ("http://127.0.0.1:8786", "unknown scheme 'http'"),
    ("tcp://127.0.0.1:notaport", "not a Dask scheduler address"),
    ("tcp://:8786", "no host name"),
    ("tcp://10.0.0.5:0", "the port 0 is not in 1-65535"),
    ("tcp://10.0.0.5:70000", "the port 70000 is not in 1-65535"),
    ("tcp://a b:8786", "no host name"),
])
def test_a_scheduler_address_in_the_wrong_form_is_refused_at_once(address, reason):
    pytest.importorskip("distributed")
    from fastlr.distributed import cluster_client
    with pytest.raises(DataError, match=reason):
        with cluster_client(address, timeout=0.001):
            pass


@pytest.mark.parametrize("listener", ["silent", "garbage", "closed"])
def test_a_listener_that_is_no_scheduler_is_given_up_at_the_deadline(
        silent_listener, garbage_listener, listener):
    pytest.importorskip("distributed")
    import time

    from fastlr.distributed import cluster_client
    address = {"silent": silent_listener, "garbage": garbage_listener,
               "closed": closed_port()}[listener]
    start = time.monotonic()
    with pytest.raises(DataError, match=f"--scheduler {address}: "):
        with cluster_client(address, timeout=1.0):
            pass
    assert time.monotonic() - start < 10


def test_a_scheduler_without_workers_is_given_up_at_the_deadline():
    distributed = pytest.importorskip("distributed")
    from fastlr.distributed import cluster_client
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as empty:
        with pytest.raises(DataError, match="the scheduler has no worker"):
            with cluster_client(empty.scheduler_address, timeout=1.0):
                pass


def test_train_at_a_silent_scheduler_is_one_line(silent_listener, data_dir, capsys,
                                                 monkeypatch):
    pytest.importorskip("distributed")
    from fastlr import distributed
    monkeypatch.setattr(distributed, "CLUSTER_TIMEOUT_S", 1.0)
    assert main(["train", "--data-dir", str(data_dir), "--backend", "numpy", "--epochs", "1",
                 "--no-progress", "--scheduler", silent_listener]) == 1
    one_error_line(capsys.readouterr().err, "no answer within 1 s")


@pytest.mark.parametrize("library", ["matplotlib", "numpy", "distributed"])
def test_an_error_a_library_raises_is_one_line_naming_the_command_and_input(
        tmp_path, model_path, capsys, monkeypatch, library):
    """Whatever a library raises in a command (here planted where the command calls it)."""
    from fastlr import plots
    if library == "matplotlib":
        monkeypatch.setenv("MPLBACKEND", "no-such-backend")
        monkeypatch.setattr(plots, "new_figure", lambda *a: __import__(
            "matplotlib").rcParams.update(backend="no-such-backend"))
    elif library == "numpy":
        monkeypatch.setattr(plots, "robust_limit", lambda values: np.percentile(values, 200))
    else:
        distributed = pytest.importorskip("distributed")

        def lost(*args):
            raise distributed.comm.core.CommClosedError("the worker went away")

        monkeypatch.setattr(plots, "robust_limit", lost)
    assert main(["plot", "weights", str(model_path), "--out", str(tmp_path / "w.png")]) == 1
    one_error_line(capsys.readouterr().err, f"plot weights {model_path}: {library} failed")


def test_an_error_in_fastlrs_own_code_keeps_its_traceback(model_path, monkeypatch):
    from fastlr import plots

    def bug(values):
        raise ZeroDivisionError("a bug of fastlr's")

    monkeypatch.setattr(plots, "robust_limit", bug)
    with pytest.raises(ZeroDivisionError):
        main(["plot", "weights", str(model_path), "--out", "/dev/null"])


# --- 6. a hostile or odd environment -------------------------------------------------------------

def test_a_closed_stdout_and_stderr_cost_neither_the_run_nor_the_model(tmp_path, data_dir):
    out = tmp_path / "model.npz"
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from fastlr.cli import main; "
              f"sys.exit(main(['train', '--data-dir', {str(data_dir)!r}, '--backend', 'numpy', "
              f"'--epochs', '1', '--out', {str(out)!r}]))")
    result = subprocess.run(f"{sys.executable} -c \"{script}\" >&- 2>&-", shell=True,
                            timeout=120)
    assert result.returncode == 0 and SoftmaxRegression.load(out).coef_.shape[0] == 3


def test_a_broken_stderr_pipe_costs_the_messages_not_the_model(tmp_path, data_dir):
    out = tmp_path / "model.npz"
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads stderr: every write to it is EPIPE
    process = subprocess.run([sys.executable, "-m", "fastlr", "train", "--data-dir",
                              str(data_dir), "--backend", "numpy", "--epochs", "2", "--out",
                              str(out)], stderr=write_end, stdout=subprocess.DEVNULL,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    os.close(write_end)
    assert process.returncode == 0 and len(SoftmaxRegression.load(out).history_) == 2


@pytest.mark.parametrize("encoding", ["utf-8:strict",
                                      pytest.param("ascii:strict", marks=pytest.mark.extended)])
def test_undecodable_file_names_with_a_strict_encoding_work(tmp_path, model_path, data_dir,
                                                            encoding):
    name = os.fsdecode(b"mod\xffel.npz")
    (tmp_path / name).write_bytes(model_path.read_bytes())
    model = str(tmp_path / name)
    env = {"PYTHONIOENCODING": encoding}
    for args in (["evaluate", model, "--data-dir", str(data_dir)],
                 ["plot", "weights", model, "--out", str(tmp_path / os.fsdecode(b"w\xfe.png"))],
                 ["plot", "curves", model, "--out", str(tmp_path / "c.png")],
                 ["explain", model, "--data-dir", str(data_dir), "--backend", "numpy", "--html",
                  "--out", str(tmp_path / "page.html")]):
        result = run_fastlr(*args, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stderr == b""
    assert b"mod\xffel.npz" in result.stdout or b"page.html" in result.stdout


@pytest.mark.parametrize("name", ["a$x^$.npz", "$\\frac$.npz", "$$$.npz", "cost $5 or $6.npz"])
def test_file_names_full_of_dollars_are_drawn_as_they_are(tmp_path, model_path, name, capsys):
    (tmp_path / name).write_bytes(model_path.read_bytes())
    for figure in ("weights", "curves"):
        assert main(["plot", figure, str(tmp_path / name), "--out",
                     str(tmp_path / f"{figure}.png")]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("variable, value", [
    ("FASTLR_MAX_IDX_BYTES", "lots"), ("FASTLR_MAX_MODEL_BYTES", "-5"),
    ("FASTLR_DATA", "/no/such\x01dir"), ("NUMBA_NUM_THREADS", "abc"),
    ("NUMBA_NUM_THREADS", "100000"), ("NUMBA_NUM_THREADS", "0"), ("OMP_NUM_THREADS", "-3"),
    ("XDG_CACHE_HOME", "relative/dir"), ("XDG_CACHE_HOME", "/dev/null/cache"),
    ("HOME", ""), ("MPLBACKEND", "zz"), ("MPLCONFIGDIR", "/dev/null/x"),
    ("NUMBA_OPT", "x"), ("NUMBA_CACHE_DIR", "/dev/null/x"),
])
def test_garbage_in_an_environment_variable_works_or_is_one_line(tmp_path, model_path,
                                                                 data_dir, variable, value):
    for args in (["train", "--data-dir", str(data_dir), "--backend", "numpy", "--epochs",
                  "1", "--no-progress", "--out", str(tmp_path / "m.npz")],
                 ["plot", "weights", str(model_path), "--out", str(tmp_path / "w.png")]):
        result = run_fastlr(*args, env={variable: value}, cwd=tmp_path)
        lines = result.stderr.decode().strip().splitlines()
        if result.returncode == 0:  # it works; each warning one line of fastlr's
            assert all(line.startswith("fastlr: warning: ") for line in lines), lines
        else:
            assert len(lines) == 1 and lines[0].startswith("fastlr: error: "), lines


def test_an_unknown_numba_tuning_profile_is_one_line(data_dir):
    pytest.importorskip("numba")
    result = run_fastlr("train", "--data-dir", str(data_dir), "--backend", "numba", "--epochs",
                        "1", "--no-progress", env={"FASTLR_NUMBA_TUNING": "zz"})
    assert result.returncode == 1
    one_error_line(result.stderr.decode(), "FASTLR_NUMBA_TUNING: unknown profile 'zz'")


def test_numba_threads_beyond_the_limit_are_refused_before_numba_starts(data_dir):
    result = run_fastlr("train", "--data-dir", str(data_dir), "--backend", "numpy",
                        env={"NUMBA_NUM_THREADS": "100000"})
    assert result.returncode == 1
    one_error_line(result.stderr.decode(), "NUMBA_NUM_THREADS=100000: more threads than")


# --- 7. the library API guards like the CLI ------------------------------------------------------

X7, Y7 = np.random.default_rng(0).random((12, 4)), np.arange(12) % 3


@pytest.mark.parametrize("classes, reason", [
    ([0, 1, 2, np.nan], "NaN or infinity"), ([0, 1, 2, np.inf], "NaN or infinity"),
    ([[0, 1], [2, 3]], "flat list"), ([0, 1, 2, None], "different types"),
    (np.array([b"0", b"1", b"2"]), "a number or a string"),
    ([0j, 1, 2], "a number or a string"), ([0, 1, 2, 2 ** 70], "a number or a string"),
    (np.array(["2020-01-01", "2020-01-02", "2020-01-03"], "datetime64[D]"),
     "a number or a string"), ([1], "at least two labels"),
])
def test_partial_fit_refuses_classes_a_model_file_cannot_hold(classes, reason):
    model = SoftmaxRegression(epochs=1, backend="numpy")
    with pytest.raises(DataError, match=reason):
        model.partial_fit(X7, Y7, classes=classes)
    assert not hasattr(model, "coef_") and not hasattr(model, "classes_")


@pytest.mark.parametrize("y, reason", [
    (np.array([b"a", b"b", b"c"])[Y7], "a number or a string"),
    (np.array(["2020-01-01", "2020-01-02", "2020-01-03"], "datetime64[D]")[Y7],
     "a number or a string"),
    (np.array([0, 1, 2 ** 70], dtype=object)[Y7], "a number or a string"),
])
def test_fit_refuses_labels_a_model_file_cannot_hold_and_keeps_the_fitted_model(y, reason):
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(X7, Y7)
    before = model.coef_.copy()
    with pytest.raises(DataError, match=reason):
        model.fit(X7, y)
    np.testing.assert_array_equal(model.coef_, before)


@pytest.mark.parametrize("X", [np.zeros((0, 4)), np.zeros((12, 0)), np.zeros((12, 0, 3)),
                               np.zeros((12, 4, 0)), np.zeros((0, 0))])
def test_zero_size_inputs_are_refused_before_any_state_changes(X):
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(X7, Y7)
    before, history = model.coef_.copy(), list(model.history_)
    y = Y7[:len(X)]
    for call in (lambda: model.partial_fit(X, y), lambda: model.fit(X, y),
                 lambda: SoftmaxRegression(backend="numpy").partial_fit(X, y, classes=[0, 1])):
        with pytest.raises(DataError):
            call()
    np.testing.assert_array_equal(model.coef_, before)
    assert model.history_ == history


def test_a_bad_partial_fit_after_fit_changes_nothing():
    model = SoftmaxRegression(epochs=1, backend="numpy").partial_fit(X7, Y7, classes=[0, 1, 2])
    before, history = model.coef_.copy(), list(model.history_)
    for call in (lambda: model.partial_fit(X7[:, :3], Y7),
                 lambda: model.partial_fit(X7, Y7 + 5),
                 lambda: model.partial_fit(np.full_like(X7, np.nan), Y7),
                 lambda: model.partial_fit(X7, Y7, sample_weight=-np.ones(12)),
                 lambda: model.partial_fit(X7, Y7, classes=[0, 1, np.nan])):
        with pytest.raises(DataError):
            call()
    np.testing.assert_array_equal(model.coef_, before)
    assert model.history_ == history


def test_a_refused_early_stopping_fit_keeps_the_fitted_model():
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(X7, Y7)
    before = model.coef_.copy()
    model.set_params(early_stopping=True, validation_fraction=0.99)
    with pytest.raises(DataError, match="too few samples"):
        model.fit(X7, Y7)
    np.testing.assert_array_equal(model.coef_, before)


@pytest.mark.parametrize("spoil, reason", [
    (lambda m: m.set_params(epochs=0), "epochs must be"),
    (lambda m: m.set_params(learning_rate=float("nan")), "cannot save"),
    (lambda m: m.coef_.__setitem__((0, 0), np.inf), "weights are not finite"),
    (lambda m: m.history_.append({"epoch": "x"}), "training history"),
    (lambda m: setattr(m, "classes_", np.array([b"a", b"b", b"c"])), "use numbers or strings"),
    (lambda m: setattr(m, "classes_", np.array([2, 1, 0])), "distinct sorted"),
])
def test_nothing_is_saved_that_cannot_be_loaded_again(tmp_path, spoil, reason):
    from fastlr import WriteError
    path = tmp_path / "model.npz"
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(X7, Y7)
    model.save(path)
    before = path.read_bytes()
    spoil(model)
    with pytest.raises(WriteError, match=reason):
        model.save(path)
    assert path.read_bytes() == before and SoftmaxRegression.load(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


labels = st.one_of(st.integers(-2 ** 63, 2 ** 64), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=4), st.binary(max_size=2), st.booleans(), st.none())


@settings(max_examples=150)
@given(classes=st.lists(labels, min_size=0, max_size=5))
def test_partial_fit_either_refuses_classes_or_saves_a_model_that_loads(tmp_path_factory, classes):
    model = SoftmaxRegression(epochs=1, backend="numpy")
    y = np.empty(12, dtype=object)
    y[:] = [classes[0] if classes else 0] * 12
    try:
        model.partial_fit(X7, y, classes=classes)
    except DataError:
        assert not hasattr(model, "coef_")
        return
    path = tmp_path_factory.mktemp("model") / "m.npz"
    model.save(path)
    loaded = SoftmaxRegression.load(path)
    assert list(loaded.classes_) == list(np.asarray(model.classes_).tolist())
