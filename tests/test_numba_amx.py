"""The Numba kernels' AMX tiles (``fastlr/backends/numba/amx.py``) against the reference.

They run only where the CPU has AMX-BF16 and the operating system gives the process its tile
registers (``TUNING.amx``); elsewhere this module is one skip, and the vector tiles the epoch
takes instead are what the rest of the suite checks (``tests/test_tuning.py`` checks, on any
CPU, that CPU features and the override choose the tiles, that the microkernel takes the
provider the tuning names, and that the AMX provider compiles to tile instructions for pixels
only). The pieces (the bfloat16 pairs, the score and gradient tiles with their tails) are
checked alone, then whole epochs of uint8 pixels with the chunk sizes that take the tiles, and
the choice itself: which chunks take them, that the others give the vector tiles' bits, and
that ``amx=0`` turns them off.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("numba")

from fastlr.backends import numba as nb  # noqa: E402
from fastlr.backends import reference  # noqa: E402
from fastlr.backends.check import TRAJECTORY_TOLERANCE  # noqa: E402
from fastlr.backends.numba import amx  # noqa: E402
from fastlr.backends.numba.amx import AMX_MIN_CHUNK, takes_tiles  # noqa: E402
from fastlr.backends.numba.tuning import TUNING  # noqa: E402

from conftest import assert_matches, run_epochs  # noqa: E402

# One skip for the module, with its reason, rather than one per test.
if not TUNING.amx:
    pytest.skip("no AMX tiles on this CPU or OS", allow_module_level=True)
SCALE = np.float32(1.0 / 255.0)


def _pixels(rng, n, d):
    return rng.integers(0, 256, size=(n, d)).astype(np.uint8)


def test_a_weight_is_two_bfloat16_within_two_to_the_minus_16():
    from numba import njit

    @njit
    def pairs(values, out):
        for i in range(values.size):
            out[i] = amx._bf16_pair(values[i])

    rng = np.random.default_rng(0)
    values = (rng.standard_normal(10000) * 10.0 ** rng.integers(-6, 3, 10000)).astype(
        np.float32)
    words = np.zeros(values.size, np.uint32)
    pairs(values, words)
    hi = (words << 16).view(np.float32).astype(np.float64)
    lo = (words & np.uint32(0xFFFF0000)).view(np.float32).astype(np.float64)
    assert np.all(np.abs(hi + lo - values) <= 2.0 ** -16 * np.abs(values))


@pytest.mark.parametrize("n,d,c", [(128, 784, 10), (37, 50, 3), (5, 17, 16), (64, 33, 10)])
def test_scores_and_gradient_of_a_block(n, d, c):
    rng = np.random.default_rng(n + d + c)
    X = _pixels(rng, 300, d)
    W = (rng.standard_normal((c, d)) * 0.05).astype(np.float32)
    n16 = amx.whole_groups(n)
    rows = rng.permutation(300)[:n16].astype(np.int64)
    rows[n:] = rows[n - 1]
    d16 = -(-d // amx.SLAB) * amx.SLAB
    Wb = np.zeros((d16, c), np.uint32)
    buf = amx.tile_buffers(1)[0]
    amx.pack_bf16_weights(W, SCALE, Wb)
    S = np.full((n16, c), np.nan, np.float32)
    amx.tile_scores(X, rows, n, rows, n, Wb, buf, S)
    features = X[rows[:n]] / 255.0
    assert_matches(S[:n], features @ W.T.astype(np.float64), np.float32)
    G = rng.standard_normal((n16, c)).astype(np.float32)
    Dt = np.zeros((n16 // amx.GROUP, c, amx.GROUP), np.uint32)
    tail = np.zeros((c, amx.SLAB), np.float32)
    expected = G[:n].astype(np.float64).T @ features
    out = np.full((c, d), np.nan, np.float32)
    amx.tile_gradient(G, n, SCALE, Dt, X, rows, rows, n, out, True, tail, buf)
    assert_matches(out, expected, np.float32)
    amx.tile_gradient(G, n, SCALE, Dt, X, rows, rows, 0, out, False, tail, buf)
    assert_matches(out, 2 * expected, np.float32)


def _epochs(rng, n, d, c, batch, threads, weighted=False, momentum=0.0, alpha=0.0):
    X = _pixels(rng, n, d)
    y = rng.integers(0, c, size=n).astype(np.int64)
    W = (rng.standard_normal((c, d)) * 0.01).astype(np.float32)
    b = np.zeros(c, np.float32)
    sw = (rng.uniform(0.0, 3.0, n) if weighted else np.ones(n)).astype(np.float32)
    perms = [rng.permutation(n).astype(np.int64) for _ in range(2)]
    got = run_epochs(nb, X, y, sw, W, b, perms, batch, 0.2, momentum, alpha, threads)
    ref = run_epochs(reference, X / 255.0, y, sw.astype(np.float64), W.astype(np.float64),
                     b.astype(np.float64), perms, batch, 0.2, momentum, alpha)
    return got, ref, (X, y, sw, W, b, perms)


@pytest.mark.parametrize("n,d,c,batch,threads,weighted", [
    (1500, 784, 10, 1024, 2, False),
    (900, 784, 10, 300, 1, True),
    (800, 50, 3, 600, 2, True),
    (700, 17, 16, 256, 1, False),
    (1100, 784, 10, 520, 2, False),
])
def test_epochs_on_the_tiles_match_the_reference(n, d, c, batch, threads, weighted):
    rng = np.random.default_rng(n + batch)
    got, ref, _ = _epochs(rng, n, d, c, batch, threads, weighted, momentum=0.9, alpha=1e-4)
    for g, e in zip(got, ref):
        assert_matches(g, e, np.float32, TRAJECTORY_TOLERANCE)


def test_the_same_seed_and_threads_give_the_same_bits():
    first = _epochs(np.random.default_rng(5), 1200, 784, 10, 1024, 2)[0]
    second = _epochs(np.random.default_rng(5), 1200, 784, 10, 1024, 2)[0]
    for a, b in zip(first, second):
        assert np.array_equal(a, b)


def test_which_rows_take_the_tiles():
    W = np.zeros((10, 784), np.float32)
    assert takes_tiles(np.zeros((1, 784), np.uint8), W)
    assert not takes_tiles(np.zeros((1, 784), np.float32), W)  # float rows: vector tiles
    assert not takes_tiles(np.zeros((1, 784), np.uint8), W.astype(np.float64))
    assert not takes_tiles(np.zeros((1, 784), np.uint8), np.zeros((17, 784), np.float32))


# The same epochs in a process whose tuning turns the tiles off: a chunk shorter than
# AMX_MIN_CHUNK must give the vector tiles' bits here too, a longer one other bits (the tiles'
# rounding) within the tolerance.
VECTOR_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.path.insert(0, "tests")
    from test_numba_amx import _epochs
    from fastlr.backends.numba.tuning import TUNING
    out = {"amx": TUNING.amx}
    for name, batch in (("short", 128), ("long", 1024)):
        got = _epochs(np.random.default_rng(9), 1100, 784, 10, batch, 2)[0]
        out[name] = [a.tolist() for a in got]
    print(json.dumps(out))
""")


def test_short_chunks_keep_the_vector_tiles_and_amx_0_turns_the_tiles_off(tmp_path):
    assert 128 // 2 < AMX_MIN_CHUNK <= 1024 // 2
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, FASTLR_NUMBA_TUNING="amx=0", NUMBA_NUM_THREADS="2",
               NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=root)
    done = subprocess.run([sys.executable, "-c", VECTOR_SCRIPT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    vector = json.loads(done.stdout.strip().splitlines()[-1])
    assert not vector["amx"]
    for name, batch in (("short", 128), ("long", 1024)):
        here = _epochs(np.random.default_rng(9), 1100, 784, 10, batch, 2)[0]
        there = [np.array(a, dtype=h.dtype) for a, h in zip(vector[name], here)]
        same = all(np.array_equal(h, t) for h, t in zip(here, there))
        assert same == (name == "short"), name
        for h, t in zip(here, there):
            assert_matches(h, t, np.float32, TRAJECTORY_TOLERANCE)
