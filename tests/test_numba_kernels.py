"""The production Numba kernels beyond the reference checks of test_backends.py: the exp the
softmax vectorizes, the two epoch paths (spinning threads, fork-joins) giving the same bits, and
the on-disk cache that must notice an edit to any production kernel file and no edit to the lab;
and the block size, a tuning that must not change the math.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import assert_matches, in_float64, make_problem, run_epochs

numba_backend = pytest.importorskip("fastlr.backends.numba")
from fastlr.backends import reference  # noqa: E402
from fastlr.backends.check import TRAJECTORY_TOLERANCE  # noqa: E402
from fastlr.backends.contract import (SGDState, Samples, Steps, Threads,  # noqa: E402
                                      epoch_arguments, team_arguments)
from fastlr.backends.numba import epoch  # noqa: E402


def test_vectorizable_exp_is_within_two_ulp_of_libm():
    """The softmax uses its own exp (a loop around libm's cannot vectorize): on [-708, 0]
    within 2 ulp of np.exp, below that a number too small to matter next to the row maximum's
    exp(0) = 1, and NaN stays NaN."""
    from fastlr.backends.numba.softmax import _exp_nonpositive as exp
    x = np.concatenate([-np.logspace(-12, np.log10(708.0), 4000), np.linspace(-708.0, 0.0, 4001)])
    got = np.array([exp(v) for v in x])
    expected = np.exp(x)
    assert np.max(np.abs(got - expected) / np.spacing(expected)) <= 2
    assert 0.0 <= exp(-1e4) < 1e-300
    assert exp(-np.inf) < 1e-300
    assert np.isnan(exp(np.nan))


SPINNING_SCRIPT = """
import numpy as np
from fastlr.backends import numba as numba_backend, reference
from fastlr.backends.check import TRAJECTORY_TOLERANCE, scaled_error
from fastlr.backends.contract import SGDState, Samples, Steps, make_threads

from fastlr.backends.numba.sync import _threads_run_at_once

assert _threads_run_at_once(3), "the spinning path would not run"
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
        loss, _ = backend.sgd_epoch(Samples(X.astype(dtype), y, sw.astype(dtype)),
                                    SGDState(W, b, vel_W, vel_b),
                                    Steps(perm, lr_steps, batch_size, 0.9, 1e-3),
                                    make_threads(T, c, d, dtype))
        results.append((W, b, np.array(loss)))
    for got, expected in zip(results[1], results[0]):
        error = scaled_error(got, expected)
        assert error <= TRAJECTORY_TOLERANCE[np.dtype(np.float32)], (batch_size, error)
print("ok")
"""


def test_sample_split_epoch_spins_correctly_with_more_threads_than_cores():
    """The chosen epoch's threads meet twice per step by spinning on flags. In a fresh interpreter with
    NUMBA_NUM_THREADS=3, T = 3 takes that path even on a 2-core machine (a thread that is
    descheduled only slows the others down), with batch sizes that give a thread an empty
    chunk (2), an uneven one (7) and one larger than the data (64)."""
    env = dict(os.environ, NUMBA_NUM_THREADS="3")
    done = subprocess.run([sys.executable, "-c", SPINNING_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def _in_blocks(kernel, block=None):
    """One of the two epoch kernels with the contract's records, in blocks of ``block``
    samples (default this CPU's)."""
    def run(samples, state, steps, threads):
        X = samples.X
        return kernel(*epoch_arguments(samples, state, steps, threads),
                      *team_arguments(threads),
                      block or epoch.samples_per_block(X.shape[1] * X.itemsize))
    return run


class _Epoch:
    """A backend-shaped wrapper around one of the two epoch kernels, for run_epochs."""

    def __init__(self, kernel):
        self.sgd_epoch = _in_blocks(kernel)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_size,momentum,alpha", [(1, 0.0, 0.0), (7, 0.9, 1e-3),
                                                       (64, 0.9, 0.0), (300, 0.0, 1e-3)])
def test_stepwise_epoch_is_bitwise_the_spinning_epoch(dtype, batch_size, momentum, alpha):
    """The fork-join path that runs when the threads cannot all run at once computes the same
    chunk gradients and the same update in the same order: the same W, b and loss. T = 2, so
    the spinning path runs wherever Numba has two threads."""
    import numba

    n_threads = min(2, numba.get_num_threads())
    rng = np.random.default_rng(29)
    X, y, sw, W, b = make_problem(rng, 211, 784, 10, dtype, weighted=True)
    perms = [rng.permutation(211).astype(np.int64) for _ in range(2)]
    spinning = run_epochs(_Epoch(epoch._sample_epoch), X, y, sw, W, b, perms, batch_size, 0.1,
                          momentum, alpha, n_threads)
    stepwise = run_epochs(_Epoch(epoch._stepwise_epoch), X, y, sw, W, b, perms, batch_size,
                          0.1, momentum, alpha, n_threads)
    for expected, actual in zip(spinning, stepwise):
        assert actual.tobytes() == expected.tobytes()


class _Blocks:
    """A backend whose epoch is the chosen one in blocks of ``block`` samples (T = 2: the
    spinning epoch where Numba has two threads, else the fork-join one, the same bits)."""

    def __init__(self, block):
        kernel = epoch._sample_epoch if epoch._threads_run_at_once(2) else epoch._stepwise_epoch
        self.sgd_epoch = _in_blocks(kernel, block)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
@pytest.mark.parametrize("block", [5, 32, 64, 128])
def test_every_block_size_computes_the_reference_epoch(dtype, block):
    """The block (``samples_per_block``'s, or another) only regroups a chunk's gradient
    sum: a short last block (5 does not divide the chunks) and the sizes the tuning picks
    for float and for uint8 rows all give the reference's two epochs, at a batch of 300 whose
    chunks span several blocks. uint8: pixels, float32 weights, the reference on X / 255."""
    rng = np.random.default_rng(37)
    floats = np.float32 if dtype == np.uint8 else dtype
    X, y, sw, W, b = make_problem(rng, 661, 784, 10, floats, weighted=True)
    features = X
    if dtype == np.uint8:
        X = rng.integers(0, 256, size=X.shape).astype(np.uint8)
        features = X / 255.0
    perms = [rng.permutation(661).astype(np.int64) for _ in range(2)]
    expected = run_epochs(reference, *in_float64(features, y, sw, W, b), perms, 300, 0.1, 0.9,
                          1e-3)
    got = run_epochs(_Blocks(block), X, y, sw, W, b, perms, 300, 0.1, 0.9, 1e-3, 2)
    for actual, wanted in zip(got, expected):
        assert_matches(actual, wanted, floats, TRAJECTORY_TOLERANCE)


def _off_a_line(a, offset=16):
    """A copy of ``a`` starting ``offset`` bytes after a 64-byte line."""
    raw = np.empty(a.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("sample_epoch", [epoch._sample_epoch, epoch._stepwise_epoch])
def test_weights_off_a_cache_line_get_the_same_bits_in_place(sample_epoch):
    """The epoch works on an aligned copy of W (and of the partial gradients) when they do
    not start on a line, and writes W back: the caller's W, in place, with the bits of an
    aligned run."""
    rng = np.random.default_rng(31)
    X, y, sw, W, b = make_problem(rng, 211, 784, 10, np.float32)
    perm = rng.permutation(211).astype(np.int64)
    results = []
    for place in (lambda a: a.copy(), _off_a_line):
        W_run, b_run = place(W), b.copy()
        parts_W = place(np.zeros((2, 10, 784), np.float32))
        loss = _in_blocks(sample_epoch)(
            Samples(X, y, sw), SGDState(W_run, b_run, np.zeros_like(W), np.zeros_like(b)),
            Steps(perm, np.full(4, 0.1), 64, 0.9, 1e-3),
            Threads(2, parts_W, np.zeros((2, 10), np.float32)))
        results.append((W_run, b_run, loss))
    assert results[1][0].ctypes.data % 64 == 16  # the caller's array, updated in place
    assert results[0][0].tobytes() == results[1][0].tobytes()
    assert results[0][1].tobytes() == results[1][1].tobytes()
    assert results[0][2] == results[1][2]
    assert not np.array_equal(results[1][0], W)


# --- the on-disk cache -------------------------------------------------------------------------

CACHE_SCRIPT = """
import json
import numpy as np
import fastlr.backends.numba as nb

compiles = nb.first_run_compiles()
W = np.full((10, 784), 0.01)
b = np.zeros(10)
out = np.zeros((5, 10))
nb.predict_scores(np.ones((5, 784)), W, b, out, 1)
if {run_epoch}:
    X = np.ones((8, 784), np.float32)
    W32, b32 = W.astype(np.float32), b.astype(np.float32)
    from fastlr.backends.contract import SGDState, Samples, Steps, make_threads
    nb.sgd_epoch(Samples(X, np.zeros(8, np.int64), np.ones(8, np.float32)),
                 SGDState(W32, b32, np.zeros_like(W32), np.zeros_like(b32)),
                 Steps(np.arange(8), np.full(2, 0.1), 4, 0.0, 0.0),
                 make_threads(1, 10, 784, np.float32))
    nb.predict_scores(X, W32, b32, np.zeros((8, 10), np.float32), 1)
stats = nb.predict_scores.stats
print(json.dumps({"first_run_compiles": compiles, "misses": sum(stats.cache_misses.values()),
                  "hits": sum(stats.cache_hits.values()), "cache_path": stats.cache_path,
                  "score": out[0, 0]}))
"""


def _copy_package(tmp_path):
    """A copy of the fastlr package under tmp_path, without compiled files or caches."""
    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fastlr")
    shutil.copytree(source, tmp_path / "fastlr",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.nbi", "*.nbc"))
    return tmp_path / "fastlr"


def _run(tmp_path, env, prelude="", run_epoch=False):
    """Run CACHE_SCRIPT (and a float32 epoch if run_epoch) in a new process; its report."""
    import json

    script = prelude + CACHE_SCRIPT.replace("{run_epoch}", str(run_epoch))
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _edit(path, old, new):
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


@pytest.mark.extended
def test_cache_notices_production_edits_and_ignores_lab_edits(tmp_path):
    """Numba keys a cache entry by the function's own file; the production stamp covers every
    production kernel file. Editing a ladder rung (a docstring) must load the cached
    production kernel; editing a callee in another production file must recompile it, and
    the new code must run."""
    package = _copy_package(tmp_path)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(tmp_path))
    first = _run(tmp_path, env)
    assert first["first_run_compiles"] and first["misses"] == 1
    assert first["cache_path"].startswith(str(tmp_path / "cache"))
    expected = first["score"]
    assert expected == pytest.approx(7.84)

    again = _run(tmp_path, env, run_epoch=True)
    assert again["hits"] == 1

    _edit(package / "backends" / "numba_ladder" / "v01_naive.py", '"""v1, naive:',
          '"""v1, naive (edited):')
    after_lab_edit = _run(tmp_path, env)
    assert not after_lab_edit["first_run_compiles"]  # the epoch and predict_scores are cached
    assert after_lab_edit["hits"] == 1 and after_lab_edit["misses"] == 0

    _edit(package / "backends" / "numba" / "tiles.py",
          "        _score_tail(X[rows[s]], W, S[s], d_tail, scale)\n",
          "        _score_tail(X[rows[s]], W, S[s], d_tail, scale)\n"
          "    S[0, 0] = 100.0\n")
    after_edit = _run(tmp_path, env)
    assert after_edit["first_run_compiles"] and after_edit["misses"] == 1
    assert after_edit["score"] == 100.0


@pytest.mark.extended
def test_cache_falls_back_to_the_user_cache_when_the_package_is_read_only(tmp_path):
    """Without NUMBA_CACHE_DIR the cache goes next to the sources; where that directory is not
    writable (simulated: the tests may run as root, who can write anywhere) it goes to the user
    cache directory, and the next process loads it from there."""
    _copy_package(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "user-cache"))
    read_only = textwrap.dedent("""
        from numba.core import caching

        def _not_writable(self):
            raise PermissionError("read-only package directory")

        caching.InTreeCacheLocator.ensure_cache_path = _not_writable
    """)
    first = _run(tmp_path, env, read_only)
    assert first["misses"] == 1
    assert first["cache_path"].startswith(str(tmp_path / "user-cache"))
    again = _run(tmp_path, env, read_only)
    assert again["hits"] == 1 and again["misses"] == 0
