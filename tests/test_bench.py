"""The benchmark harness: its JSON schema, its refusal to time a wrong backend, its plot.

Nothing here asserts a time: the numbers depend on the machine. These tests check what every
run must satisfy.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fastlr import bench, data
from fastlr.backends import reference

ROOT = Path(__file__).resolve().parent.parent
ROW_KEYS = {"backend", "batch_size", "threads", "ms_per_epoch", "ms_min", "ms_max",
            "samples_per_s", "gflops", "speedup_vs_numpy", "fraction_of_peak", "compile_s"}


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
    assert machine["read_gbps"] > 0 and all(g > 0 for g in machine["sgemm_gflops"].values())
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
    def sgd_epoch_with_a_bug(X, y, sw, perm, W, b, *rest):
        # The reference, but with every sample's weight off by 5%: a plausible kernel bug.
        return reference.sgd_epoch(X, y, sw * X.dtype.type(1.05), perm, W, b, *rest)

    impostor = SimpleNamespace(name="impostor", sgd_epoch=sgd_epoch_with_a_bug)
    shared = bench.prepare_data(small_mnist)
    n = len(shared["y"])
    shared["lr_steps"] = bench.learning_rates("linear", 1.0, -(-n // 64))
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


def test_other_processes_cpu_is_the_machine_busy_time_less_our_own(monkeypatch):
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    # 3 s of wall on 2 cores; the machine was busy 2.5 s, of which 1 s was this process
    assert bench.other_cpu_fraction((10.0, 4.0), (12.5, 5.0), 3.0) == pytest.approx(0.25)
    assert bench.other_cpu_fraction((10.0, 4.0), (11.0, 5.0), 3.0) == 0.0
    assert bench.other_cpu_fraction(None, (11.0, 5.0), 3.0) is None


def test_a_disturbed_row_is_timed_again_and_the_quietest_attempt_kept(monkeypatch):
    readings = iter([(0.0, 0.0), (9.0, 0.0),    # attempt 1: others took the machine
                     (9.0, 0.0), (9.5, 0.0),    # attempt 2: less
                     (9.5, 0.0), (9.5, 0.0)])   # attempt 3 would be quiet: never reached
    monkeypatch.setattr(bench, "_cpu_seconds", lambda: next(readings))
    monkeypatch.setattr(bench, "RETRIES", 1)
    calls = []

    def run_once():
        calls.append(1)
        time.sleep(0.01)
        return 0.01

    seconds, other = bench.time_undisturbed(run_once, 3)
    assert len(calls) == 6 and len(seconds) == 3
    # ~0.03 s of wall on 2 cores: attempt 1 saw others take 9 s, attempt 2 0.5 s
    assert other == pytest.approx(0.5 / (2 * 0.03), rel=0.5)
    monkeypatch.setattr(bench, "_cpu_seconds", lambda: None)
    assert bench.time_undisturbed(lambda: 0.01, 2) == ([0.01, 0.01], None)


def test_disturbed_rows_are_marked_in_the_table():
    row = bench._timed_row("numba", 64, 2, [0.02, 0.03], None, 100, 1e9, other_cpu=0.4,
                           disturbed=True)
    report = {"machine": {"cpu": "x", "cores": 2, "versions": {}, "sgemm_gflops": {"2": 100.0},
                          "read_gbps": 20.0, "read_gbps_by_threads": {"1": 7.0, "2": 20.0}},
              "results": [row], "time_to_accuracy": [], "notes": [], "flops_per_epoch": 1e9}
    text = bench.format_report(report)
    assert "DISTURBED: other processes took 40% of the CPU" in text
    assert "7.0 GB/s on 1, 20.0 GB/s on 2" in text
