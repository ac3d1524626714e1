"""Every rung of the Numba optimization ladder computes the reference's epoch.

``fastlr.backends.numba.KERNEL_VERSIONS`` keeps the superseded kernels next to the chosen one so
each step of the optimization can be timed (`python -m fastlr bench --kernels all`); this file
keeps them honest.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from fastlr.backends import reference
from test_backends import (TRAJECTORY_TOLERANCE, assert_matches, in_float64, make_problem,
                           run_epochs)

numba_backend = pytest.importorskip("fastlr.backends.numba")

VERSIONS = list(numba_backend.KERNEL_VERSIONS)


class _Version:
    """A backend-shaped wrapper around one ladder version, for run_epochs."""

    def __init__(self, version):
        self.sgd_epoch = numba_backend.KERNEL_VERSIONS[version]


def test_the_chosen_kernel_is_on_the_ladder():
    assert numba_backend.sgd_epoch in numba_backend.KERNEL_VERSIONS.values()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("batch_size,momentum,alpha", [(16, 0.9, 1e-3), (7, 0.0, 0.0)])
def test_ladder_version_matches_reference(version, dtype, n_threads, batch_size, momentum, alpha):
    """Two epochs, injected permutations, a batch size that leaves a short last batch and a
    class count that is odd (the 2-class blocks have a remainder)."""
    rng = np.random.default_rng(13)
    X, y, sw, W, b = make_problem(rng, 103, 70, 5, dtype, weighted=True)
    perms = [rng.permutation(103).astype(np.int64) for _ in range(2)]
    ref_W, ref_b, ref_losses = run_epochs(reference, *in_float64(X, y, sw, W, b), perms,
                                          batch_size, 0.05, momentum, alpha)
    got_W, got_b, got_losses = run_epochs(_Version(version), X, y, sw, W, b, perms, batch_size,
                                          0.05, momentum, alpha, n_threads)
    assert got_W.dtype == dtype
    assert_matches(got_W, ref_W, dtype, TRAJECTORY_TOLERANCE)
    assert_matches(got_b, ref_b, dtype, TRAJECTORY_TOLERANCE)
    assert_matches(got_losses, ref_losses, dtype, TRAJECTORY_TOLERANCE)


@pytest.mark.parametrize("n_threads", [2, 3])
def test_restructured_epochs_are_bitwise_the_two_sync_epoch(n_threads):
    """v6 only moves v5's update into the next step's parallel region and v7 only reorders
    the loops of that update: same bits."""
    rng = np.random.default_rng(17)
    X, y, sw, W, b = make_problem(rng, 200, 784, 10, np.float32)
    perms = [rng.permutation(200).astype(np.int64) for _ in range(2)]
    v5 = run_epochs(_Version("v5-blocked-2x4"), X, y, sw, W, b, perms, 24, 0.1, 0.9, 1e-4,
                    n_threads)
    for version in ("v6-one-sync", "v7-vector-update"):
        got = run_epochs(_Version(version), X, y, sw, W, b, perms, 24, 0.1, 0.9, 1e-4,
                         n_threads)
        for expected, actual in zip(v5, got):
            np.testing.assert_array_equal(actual, expected)


def test_vectorizable_exp_is_within_two_ulp_of_libm():
    """v9's softmax uses its own exp (a loop around libm's cannot vectorize): on [-708, 0]
    within 2 ulp of np.exp, below that a number too small to matter next to the row maximum's
    exp(0) = 1, and NaN stays NaN."""
    exp = numba_backend._exp_nonpositive
    x = np.concatenate([-np.logspace(-12, np.log10(708.0), 4000), np.linspace(-708.0, 0.0, 4001)])
    got = np.array([exp(v) for v in x])
    expected = np.exp(x)
    assert np.max(np.abs(got - expected) / np.spacing(expected)) <= 2
    assert 0.0 <= exp(-1e4) < 1e-300
    assert exp(-np.inf) < 1e-300
    assert np.isnan(exp(np.nan))


@pytest.mark.parametrize("batch_size", [7, 64, 300])
def test_panel_sync_epoch_is_bitwise_the_column_split_epoch(batch_size):
    """v10 only changes where v9's threads meet (once per panel of SYNC_PANEL samples instead
    of a fork-join per step) and runs the same tiles and sums in the same order: the same W, b and loss.
    T = 2, so the spinning path runs wherever Numba has two threads (with T = 3 on a 2-core
    machine the ladder test above checks v10's fallback to v9)."""
    import numba

    n_threads = min(2, numba.get_num_threads())
    rng = np.random.default_rng(19)
    X, y, sw, W, b = make_problem(rng, 700, 784, 10, np.float32, weighted=True)
    perms = [rng.permutation(700).astype(np.int64) for _ in range(2)]
    v9 = run_epochs(_Version("v9-column-split"), X, y, sw, W, b, perms, batch_size, 0.1, 0.9,
                    1e-4, n_threads)
    v10 = run_epochs(_Version("v10-panel-sync"), X, y, sw, W, b, perms, batch_size, 0.1, 0.9,
                     1e-4, n_threads)
    np.testing.assert_array_equal(v10[0], v9[0])
    np.testing.assert_array_equal(v10[1], v9[1])
    np.testing.assert_array_equal(v10[2], v9[2])


SPINNING_SCRIPT = """
import numpy as np
from fastlr.backends import numba as numba_backend, reference
from fastlr.backends.check import TRAJECTORY_TOLERANCE, scaled_error

assert numba_backend._threads_run_at_once(3), "the spinning path would not run"
rng = np.random.default_rng(23)
n, d, c = 50, 40, 3
X = rng.random((n, d))
y = rng.integers(0, c, n).astype(np.int64)
sw = rng.uniform(0.0, 2.0, n)
W0 = rng.standard_normal((c, d)) * 0.1
b0 = rng.standard_normal(c) * 0.1
perm = rng.permutation(n).astype(np.int64)
for batch_size in (2, 7, 64):
    results = []
    for backend, dtype, T in ((reference, np.float64, 1), (numba_backend, np.float32, 3)):
        W, b = W0.astype(dtype), b0.astype(dtype)
        vel_W, vel_b = np.zeros_like(W), np.zeros_like(b)
        lr_steps = np.full(-(-n // batch_size), 0.1)
        loss = backend.sgd_epoch(X.astype(dtype), y, sw.astype(dtype), perm, W, b, vel_W, vel_b,
                                 lr_steps, batch_size, 0.9, 1e-3, np.zeros((T, c, d), dtype),
                                 np.zeros((T, c), dtype))
        results.append((W, b, np.array(loss)))
    for got, expected in zip(results[1], results[0]):
        error = scaled_error(got, expected)
        assert error <= TRAJECTORY_TOLERANCE[np.dtype(np.float32)], (batch_size, error)
print("ok")
"""


def test_sample_split_epoch_spins_correctly_with_more_threads_than_cores():
    """v11's threads meet twice per step by spinning on flags. In a fresh interpreter with
    NUMBA_NUM_THREADS=3, T = 3 takes that path even on a 2-core machine (a thread that is
    descheduled only slows the others down), with batch sizes that give a thread an empty
    chunk (2), an uneven one (7) and one larger than the data (64)."""
    env = dict(os.environ, NUMBA_NUM_THREADS="3")
    done = subprocess.run([sys.executable, "-c", SPINNING_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
