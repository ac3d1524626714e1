"""Every rung of the Numba lab computes the reference's epoch, and stands alone.

``fastlr.backends.numba_ladder`` keeps every rung as it was measured, each a self-contained
file (``python -m`` on one checks it against the reference and times it); this file keeps
them honest: each rung's trajectory against the reference, the rungs that only reorganize
another against it bit for bit, and no rung importing production code. Compiling the rungs
takes minutes, so those tests are ``extended``.
"""

import ast
import pathlib

import numpy as np
import pytest

from fastlr.backends import reference
from fastlr.backends.check import TRAJECTORY_TOLERANCE
from fastlr.backends.contract import epoch_arguments

from conftest import assert_matches, in_float64, make_problem, run_epochs

pytest.importorskip("numba")
ladder = pytest.importorskip("fastlr.backends.numba_ladder")
from fastlr.backends.numba_ladder import lab_common  # noqa: E402

LAB = pathlib.Path(ladder.__file__).parent
VERSIONS = list(ladder.RUNGS)


class _Version:
    """A backend-shaped wrapper around one rung, for run_epochs."""

    def __init__(self, version):
        rung = ladder.KERNEL_VERSIONS[version]  # the positional arguments it was written for
        self.sgd_epoch = lambda *records: rung(*epoch_arguments(*records))


def _imports(path):
    """The modules a file imports: ``(level, module)`` pairs, level 1 for ``from .x``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {(0, alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add((node.level, node.module))
    return found


def test_every_rung_has_a_file_and_imports_no_production_code():
    """A rung imports the lab's common module and third-party packages, nothing of fastlr; the
    common module imports the reference and the records of its contract alone."""
    files = sorted(p.name for p in LAB.glob("v*.py"))
    assert files == sorted(module + ".py" for module, _ in ladder.RUNGS.values())
    for name in files:
        for level, module in _imports(LAB / name):
            assert (level, module) == (1, "lab_common") or (
                level == 0 and not module.startswith("fastlr")), (name, module)
    fastlr_imports = {m for level, m in _imports(LAB / "lab_common.py")
                      if level or m.startswith("fastlr")}
    # from fastlr.backends import reference; from fastlr.backends.contract import ...
    assert fastlr_imports == {"fastlr.backends", "fastlr.backends.contract"}


def test_the_labs_check_passes_the_reference_and_fails_a_wrong_epoch():
    """``lab_common.check`` (what each rung runs before it is timed) accepts the reference
    itself in float32 and rejects an epoch that leaves the weights alone."""
    rng = np.random.default_rng(2)
    X = rng.random((300, 40)).astype(np.float32)
    y = rng.integers(0, 4, 300)

    def idle(*args):
        return 0.0

    def reference_epoch(*args):  # the 14 positional arguments; the partials unused
        return lab_common.reference_epoch(*args[:12])

    assert lab_common.check(reference_epoch, X, y, 32, 1) <= lab_common.TOLERANCE
    assert lab_common.check(idle, X, y, 32, 1) > lab_common.TOLERANCE


@pytest.mark.extended
def test_a_rung_returns_the_contracts_two_results_without_a_count():
    rng = np.random.default_rng(3)
    X, y, sw, W, b = make_problem(rng, 20, 12, 3, np.float64)
    loss_sum, correct_sum = ladder.KERNEL_VERSIONS["v1-naive"](
        X, y, sw, np.arange(20, dtype=np.int64), W, b, np.zeros_like(W), np.zeros_like(b),
        np.full(4, 0.1), 5, 0.0, 0.0, np.zeros((1, 3, 12)), np.zeros((1, 3)))
    assert np.isfinite(loss_sum) and np.isnan(correct_sum)


@pytest.mark.extended
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("batch_size,momentum,alpha", [(16, 0.9, 1e-3), (7, 0.0, 0.0)])
def test_ladder_version_matches_reference(version, n_threads, batch_size, momentum, alpha):
    """Two epochs in float32 (the dtype the lab is timed in), injected permutations, a batch
    size that leaves a short last batch and a class count that is odd (the 2-class blocks have
    a remainder)."""
    rng = np.random.default_rng(13)
    X, y, sw, W, b = make_problem(rng, 103, 70, 5, np.float32, weighted=True)
    perms = [rng.permutation(103).astype(np.int64) for _ in range(2)]
    ref_W, ref_b, ref_losses = run_epochs(reference, *in_float64(X, y, sw, W, b), perms,
                                          batch_size, 0.05, momentum, alpha)
    got_W, got_b, got_losses = run_epochs(_Version(version), X, y, sw, W, b, perms, batch_size,
                                          0.05, momentum, alpha, n_threads)
    assert got_W.dtype == np.float32
    assert_matches(got_W, ref_W, np.float32, TRAJECTORY_TOLERANCE)
    assert_matches(got_b, ref_b, np.float32, TRAJECTORY_TOLERANCE)
    assert_matches(got_losses[:, 0], ref_losses[:, 0], np.float32, TRAJECTORY_TOLERANCE)


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
    of a fork-join per step) and runs the same tiles and sums in the same order: the same W,
    b and loss. Both files hold their own copy of the column split, which the test also ties
    together. T = 2, so the spinning path runs wherever Numba has two threads (with T = 3 on
    a 2-core machine the ladder test above checks v10's fallback to v9)."""
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
