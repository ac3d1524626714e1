"""Every rung of the Numba optimization ladder computes the reference's epoch.

``fastlr.backends.numba_ladder.KERNEL_VERSIONS`` keeps the superseded kernels next to the chosen
one (imported from production) so each step of the optimization can be timed (`python -m fastlr
bench --kernels all`); this file keeps them honest.
"""

import numpy as np
import pytest

from fastlr.backends import reference
from fastlr.backends.check import TRAJECTORY_TOLERANCE

from conftest import assert_matches, in_float64, make_problem, run_epochs

numba_backend = pytest.importorskip("fastlr.backends.numba")
ladder = pytest.importorskip("fastlr.backends.numba_ladder")

VERSIONS = list(ladder.KERNEL_VERSIONS)


class _Version:
    """A backend-shaped wrapper around one ladder version, for run_epochs."""

    def __init__(self, version):
        self.sgd_epoch = ladder.KERNEL_VERSIONS[version]


def test_the_chosen_kernel_is_the_last_rung():
    assert list(ladder.KERNEL_VERSIONS.values())[-1] is numba_backend.sgd_epoch


@pytest.mark.extended
def test_a_rung_returns_the_contracts_two_results_without_a_count():
    rng = np.random.default_rng(3)
    X, y, sw, W, b = make_problem(rng, 20, 12, 3, np.float64)
    loss_sum, correct_sum = ladder.KERNEL_VERSIONS["v1-naive"](
        X, y, sw, np.arange(20, dtype=np.int64), W, b, np.zeros_like(W), np.zeros_like(b),
        np.full(4, 0.1), 5, 0.0, 0.0, np.zeros((1, 3, 12)), np.zeros((1, 3)))
    assert np.isfinite(loss_sum) and np.isnan(correct_sum)


# Every rung in float32, the dtype the ladder is timed in; float64 for the chosen rung only,
# the production epoch that tests/test_backends.py compiles in float64 anyway: compiling each
# superseded rung a second time cost the suite about two minutes on a 2-core Zen 3. The
# superseded rungs are the extended tier: each compiles a kernel of its own. The chosen rung
# is the production epoch, compiled by the default tier anyway.
RUNGS = ([pytest.param(version, np.float32, marks=pytest.mark.extended)
          for version in VERSIONS[:-1]]
         + [(VERSIONS[-1], np.float32), (VERSIONS[-1], np.float64)])


@pytest.mark.parametrize("version,dtype", RUNGS)
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


@pytest.mark.extended
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


@pytest.mark.extended
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
