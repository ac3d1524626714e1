"""The shapes benchmark (``bench/shapes.py``) at tiny shapes: every engine it times is checked
against the reference first, a wrong one gets an error row instead of a time, and the figures
of a row agree with each other. No time is asserted."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from fastlr.backends import available_backends
from fastlr.backends.check import TRAJECTORY_TOLERANCE

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import shapes  # noqa: E402

TINY = dict(features=(40,), batch_sizes=(16, 64), n_samples=300, check_rows=200, rounds=1,
            sgemm_size=128)
FASTLR = [name for name in shapes.FASTLR_ENGINES if name in available_backends()]


def test_every_engine_is_checked_then_timed_at_leftover_class_counts():
    """C = 3 and 13 leave classes over any tile width the kernels use."""
    report = shapes.run_shapes(classes=(3, 13), engines=FASTLR + ["numpy"], **TINY)
    rows = report["results"]
    assert len(rows) == 2 * 2 * (len(FASTLR) + 1)
    tolerance = TRAJECTORY_TOLERANCE[np.dtype(np.float32)]
    for row in rows:
        assert row["error"] is None, row
        assert 0 <= row["check_error"] <= tolerance
        assert row["ms_min"] <= row["ms"] <= row["ms_max"]
        flops = shapes.flops_per_epoch(300, row["classes"], 40)
        assert row["gflops"] == pytest.approx(flops / row["ms"] / 1e6)
        assert row["fraction_of_sgemm"] == pytest.approx(row["gflops"] / report["sgemm_gflops"])
        peer = next(r for r in rows if r["engine"] == "numpy" and all(
            r[k] == row[k] for k in ("classes", "features", "batch_size")))
        assert row["x_best_peer"] == pytest.approx(peer["ms"] / row["ms"])
    assert "numpy" in shapes.format_table(report)


class WrongLoop(shapes.NumpyLoop):
    """The plain loop with its gradient's sign flipped."""

    def epoch(self, W, b, perm, rates, batch_size):
        return super().epoch(W, b, perm, -np.asarray(rates), batch_size)


def test_an_engine_that_disagrees_gets_no_time():
    engine = WrongLoop(1)
    X = shapes.synthetic_images(300, 40)
    rows = shapes.time_shape([engine], 5, 40, 16, X, X.astype(np.float32) / 255,
                             shapes.synthetic_labels(300, 5), 1, 200, print)
    assert rows[0]["ms"] is None
    assert "disagrees with the reference" in rows[0]["error"]


JAX_CHECK = """
import sys
sys.path.insert(0, {bench!r})
import shapes
engine, = shapes.make_engines(["jax"], 1)[0]
X = shapes.synthetic_images(300, 40)
print(shapes.check_engine(engine, X, shapes.synthetic_labels(300, 7), 7, 64, 300))
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_the_jitted_jax_epoch_matches_the_reference():
    """A short last batch (300 = 4 x 64 + 44) goes through the step after the scan. In a
    process of its own: JAX starts threads, and the tests that fork after it would warn of a
    deadlock."""
    done = subprocess.run([sys.executable, "-c", JAX_CHECK.format(bench=str(ROOT / "bench"))],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    error = float(done.stdout.strip().splitlines()[-1])
    assert error <= TRAJECTORY_TOLERANCE[np.dtype(np.float32)]


def test_the_plot_is_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    report = shapes.run_shapes(classes=(2, 4), engines=["numpy"], **TINY)
    shapes.plot_efficiency(report, tmp_path / "shapes.png")
    assert (tmp_path / "shapes.png").stat().st_size > 0
