"""The benchmark harness: its JSON schema, its refusal to time a wrong backend, its plot.

Nothing here asserts a time: the numbers depend on the machine. These tests check what every
run must satisfy.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fastlr import bench, data, measure
from fastlr.backends import reference
from fastlr.backends.contract import Samples
from fastlr.sgd import Schedule

ROOT = Path(__file__).resolve().parent.parent
ROW_KEYS = {"backend", "batch_size", "threads", "ms_per_epoch", "ms_min", "ms_max",
            "samples_per_s", "gflops", "speedup_vs_numpy", "fraction_of_peak", "compile_s",
            "other_cpu", "disturbed", "attempts"}


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    """A 1,500-image slice of MNIST in MNIST's file names, so a whole run takes seconds."""
    directory = tmp_path_factory.mktemp("small-mnist")
    X_train, y_train, X_test, y_test = data.load_mnist(ROOT / "data" / "mnist", dtype=np.uint8)
    for prefix, X, y, n in (("train", X_train, y_train, 1500), ("t10k", X_test, y_test, 500)):
        data.write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", X[:n].reshape(n, 28, 28))
        data.write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", y[:n].astype(np.uint8))
    return directory


def check_schema(report):
    assert set(report) >= {"machine", "results"}
    machine = report["machine"]
    assert machine["cores"] >= 1 and machine["cpu"]
    assert all(g > 0 for g in machine["sgemm_gflops"].values())
    # Both ceilings at every thread count the rows were timed on.
    thread_counts = {str(row["threads"]) for row in report["results"]}
    assert set(machine["read_gbps"]) == set(machine["sgemm_gflops"]) >= thread_counts
    assert all(g > 0 for g in machine["read_gbps"].values())
    assert "numpy" in machine["versions"]
    # Every figure of a row is derived from its median time: they must agree with each other,
    # with the run's data and ceiling, and with the NumPy row they are compared to.
    numpy_ms = {(row["batch_size"], row["threads"]): row["ms_per_epoch"]
                for row in report["results"]
                if row["backend"] == "numpy" and row["ms_per_epoch"] is not None}
    for row in report["results"]:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        seconds = row["ms_per_epoch"]
        if seconds is None:
            continue
        assert 1 <= row["attempts"] <= 3
        assert row["other_cpu"] is None or row["other_cpu"] >= 0
        seconds /= 1e3
        assert row["samples_per_s"] == pytest.approx(report["n_train"] / seconds)
        assert row["gflops"] == pytest.approx(report["flops_per_epoch"] / seconds / 1e9)
        peak = machine["sgemm_gflops"][str(row["threads"])]
        assert row["fraction_of_peak"] == pytest.approx(row["gflops"] / peak)
        baseline = numpy_ms.get((row["batch_size"], row["threads"]))
        if baseline is not None:
            assert row["speedup_vs_numpy"] == pytest.approx(baseline / row["ms_per_epoch"])


def test_report_follows_the_schema_and_every_engine_validates(small_mnist, tmp_path):
    report = bench.run_bench(backends=("numpy", "numba", "cython"), batch_sizes=(64, 500),
                             threads=(1, 2), repeats=2, time_to_accuracy=False,
                             data_dir=small_mnist)
    check_schema(report)
    rows = report["results"]
    assert {r["backend"] for r in rows} >= {"numpy"}
    assert all(r["validated"] and r["error"] is None for r in rows), rows
    numpy_rows = [r for r in rows if r["backend"] == "numpy"]
    assert len(numpy_rows) == 4
    assert all(r["speedup_vs_numpy"] == pytest.approx(1.0) for r in numpy_rows)
    text = bench.format_report(report)
    assert "ceiling" in text and "numpy" in text
    json.dumps(report)  # everything in it is JSON


def test_a_wrong_backend_is_refused_and_gets_no_number(small_mnist):
    def sgd_epoch_with_a_bug(samples, *rest):
        # The reference, but with every sample's weight off by 5%: a plausible kernel bug.
        X, y, sw = samples
        return reference.sgd_epoch(Samples(X, y, sw * X.dtype.type(1.05)), *rest)

    impostor = SimpleNamespace(name="impostor", sgd_epoch=sgd_epoch_with_a_bug)
    shared = bench.prepare_data(small_mnist)
    n = len(shared["y"])
    shared["lr_steps"] = Schedule("linear", 1.0, 1).rates(0, -(-n // 64))
    expected = bench.run_epoch(reference, shared["X"], shared["y"], shared["W0"], shared["b0"],
                               shared["perm"], shared["lr_steps"], 64, 1, np.float64)
    row = bench.bench_sgd_engine("impostor", impostor, shared, 64, 1, 2, expected)
    assert row["error"] and "disagrees with the reference" in row["error"]
    assert row["ms_per_epoch"] is None and row["speedup_vs_numpy"] is None
    assert not row["validated"]
    honest = SimpleNamespace(name="honest", sgd_epoch=reference.sgd_epoch)
    row = bench.bench_sgd_engine("honest", honest, shared, 64, 1, 2, expected)
    assert row["error"] is None and row["ms_per_epoch"] > 0


def test_plot_is_written(small_mnist, tmp_path):
    report = bench.run_bench(backends=("numpy",), batch_sizes=(64, 256), threads=(1,),
                             repeats=1, time_to_accuracy=False, data_dir=small_mnist)
    path = bench.plot_report(report, tmp_path / "throughput.png")
    assert path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.extended
def test_quick_bench_smoke_run(tmp_path):
    """The CLI's --quick run on the real MNIST: the JSON follows the schema and every row
    validated."""
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "fastlr", "bench", "--quick", "--json",
                             str(out)], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    check_schema(report)
    assert report["results"]
    assert all(r["validated"] and r["error"] is None for r in report["results"]), \
        report["results"]


def test_settle_waits_until_this_process_s_other_threads_are_idle():
    """A thread of this process that still spins (as OpenBLAS's workers do after a call)
    keeps settle waiting; it returns once the thread has stopped."""
    stopped = threading.Event()

    def spin():
        start = time.perf_counter()
        while time.perf_counter() - start < 0.3:
            pass
        stopped.set()

    spinner = threading.Thread(target=spin)
    spinner.start()
    measure.settle(max_seconds=10.0)
    assert stopped.is_set()
    spinner.join()
    assert measure.settle(max_seconds=10.0) < 10.0


SPIN_HALF_A_SECOND = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 0.5: pass"


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc/stat")
def test_cpu_watch_sees_another_process_and_not_this_one():
    with measure.CpuWatch() as own_work:
        start = time.perf_counter()
        while time.perf_counter() - start < 0.5:
            pass
    with measure.CpuWatch() as other_work:
        subprocess.run([sys.executable, "-c", SPIN_HALF_A_SECOND], check=True)
    # The child's half second of CPU is another process's; this process only waited. (A busy
    # machine adds to both, so only the difference is certain.)
    assert other_work.other_cpu > 0.5
    assert other_work.disturbed
    assert other_work.other_cpu - other_work.resolution > own_work.other_cpu - 0.5


class FakeWatch:
    """A CpuWatch that reports the next of a list of loads."""
    loads = []

    def __enter__(self):
        self.other_cpu = FakeWatch.loads.pop(0)
        self.disturbed = self.other_cpu > 0.1
        return self

    def __exit__(self, *exc_info):
        return False


def test_a_disturbed_row_is_timed_again_and_the_quietest_try_kept(monkeypatch):
    monkeypatch.setattr(measure, "CpuWatch", FakeWatch)
    calls = iter(range(100))
    FakeWatch.loads = [0.9, 0.3, 0.6]
    seconds, load = measure.time_undisturbed(lambda: next(calls), repeats=2, retries=2)
    assert seconds == [2, 3] and load == {"other_cpu": 0.3, "disturbed": True, "attempts": 3}
    FakeWatch.loads = [0.9, 0.0, 0.6]
    seconds, load = measure.time_undisturbed(lambda: next(calls), repeats=2, retries=2)
    assert seconds == [8, 9] and load == {"other_cpu": 0.0, "disturbed": False, "attempts": 2}
    FakeWatch.loads = [0.9]
    seconds, load = measure.time_undisturbed(lambda: next(calls), repeats=1, retries=0)
    assert seconds == [10] and load["disturbed"] and load["attempts"] == 1


class BusyWatch(FakeWatch):
    """A CpuWatch on a machine where another process always takes a whole core."""

    def __enter__(self):
        self.other_cpu, self.disturbed = 1.0, True
        return self


def test_a_run_on_a_busy_machine_says_which_rows_were_disturbed(small_mnist, monkeypatch):
    monkeypatch.setattr(measure, "CpuWatch", BusyWatch)
    report = bench.run_bench(backends=("numpy",), batch_sizes=(64,), threads=(1,), repeats=1,
                             time_to_accuracy=False, data_dir=small_mnist, retries=1)
    row = report["results"][0]
    assert row["disturbed"] and row["attempts"] == 2 and row["ms_per_epoch"] > 0
    assert any("1 of 1 rows (marked !) were disturbed" in note and "5%" in note
               for note in report["notes"]), report["notes"]
    assert "1.00!" in bench.format_report(report)


def test_the_report_marks_a_disturbed_row(small_mnist):
    report = bench.run_bench(backends=("numpy",), batch_sizes=(64,), threads=(1,), repeats=1,
                             time_to_accuracy=False, data_dir=small_mnist, retries=0)
    row = report["results"][0]
    row.update(other_cpu=1.23, disturbed=True)
    report["notes"].append("a note")
    text = bench.format_report(report)
    assert "1.23!" in text
    assert "others" in text and "memory read" in text
