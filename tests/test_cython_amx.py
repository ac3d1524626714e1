"""The Cython kernel's AMX level (bf16 tile products for uint8 pixels with float32 weights,
``fastlr/csrc/tiles_amx.c``): its epochs and gradients against the reference, bitwise
reproducibility, and the levels around it. Skipped where the build, the CPU or the operating
system has no AMX (``best_isa_level() < AMX_LEVEL``).
"""

import numpy as np
import pytest

from fastlr.backends import available_backends, get_backend, reference
from fastlr.backends.check import TOLERANCE, TRAJECTORY_TOLERANCE, scaled_error
from fastlr.backends.contract import SGDState, Samples, Steps, Threads, make_threads

# One skip for the module, with its reason, rather than one per test.
if "cython" not in available_backends():
    pytest.skip("the Cython extension is not built", allow_module_level=True)
if get_backend("cython").best_isa_level() < get_backend("cython").AMX_LEVEL:
    pytest.skip("no AMX here: this build, CPU or operating system lacks AMX-BF16",
                allow_module_level=True)


@pytest.fixture
def amx():
    """The Cython backend at the AMX level, put back to its best level afterwards."""
    backend = get_backend("cython")
    best = backend.best_isa_level()
    backend.set_isa_level(backend.AMX_LEVEL)
    yield backend
    backend.set_isa_level(best)


def pixel_problem(seed, n, d, c):
    """uint8 pixels (n, d) with the extremes 0 and 255 in them, their features as float64,
    labels, sample weights and float64 weights of MNIST's scale."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, d)).astype(np.uint8)
    pixels[0] = 255
    pixels[-1, : d // 2] = 0
    y = rng.integers(0, c, n).astype(np.int64)
    sw = rng.uniform(0.2, 3.0, n)
    W = rng.standard_normal((c, d)) * 0.02
    b = rng.standard_normal(c) * 0.1
    return pixels, pixels / 255.0, y, sw, W, b


def epoch(backend, pixels, y, sw, W, b, perm, lr_steps, batch_size, n_threads,
          momentum=0.0, alpha=0.0):
    """One float32 sgd_epoch of ``backend`` from copies of W, b; returns W, b and the loss sum."""
    W, b = W.astype(np.float32), b.astype(np.float32)
    c, d = W.shape
    loss_sum, _ = backend.sgd_epoch(Samples(pixels, y, sw.astype(np.float32)),
                                    SGDState(W, b, np.zeros_like(W), np.zeros_like(b)),
                                    Steps(perm, lr_steps, batch_size, momentum, alpha),
                                    make_threads(n_threads, c, d, np.float32))
    return W, b, loss_sum


def reference_epoch(X, y, sw, W, b, perm, lr_steps, batch_size, momentum=0.0, alpha=0.0):
    W, b = W.copy(), b.copy()
    loss_sum, _ = reference.sgd_epoch(Samples(X, y, sw),
                                      SGDState(W, b, np.zeros_like(W), np.zeros_like(b)),
                                      Steps(perm, lr_steps, batch_size, momentum, alpha),
                                      Threads(1, None, None))
    return W, b, loss_sum


@pytest.mark.parametrize("d,c", [(784, 10), (50, 3), (50, 10), (784, 16), (17, 5)])
@pytest.mark.parametrize("batch_size", [1, 37, 130, 300, 1024])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_amx_epoch_matches_the_reference(amx, d, c, batch_size, n_threads):
    """An epoch over weighted pixels at the AMX level against the reference on the features
    X / 255: blocks and groups of 16 cut short (chunks of 65 = 64 + 1, 130, 150, 512), D not
    a multiple of 16 (a tail slab), 3 to 16 classes; and the chunks shorter than
    FASTLR_AMX_MIN_CHUNK (batches of 1 and 37), which take the v4 tiles."""
    n = 1100 if batch_size == 1024 else 150
    pixels, X, y, sw, W, b = pixel_problem(11, n, d, c)
    perm = np.random.default_rng(12).permutation(n).astype(np.int64)
    # A step of lr |x|^2 ~ 0.3 at most (mean x^2 ~ 1/3), so a trajectory of 150 steps of one
    # sample stays contractive and does not amplify the rounding of either side.
    lr_steps = np.full(-(-n // batch_size), 1.0 / d)
    got = epoch(amx, pixels, y, sw, W, b, perm, lr_steps, batch_size, n_threads,
                momentum=0.5, alpha=1e-3)
    want = reference_epoch(X, y, sw, W, b, perm, lr_steps, batch_size, momentum=0.5, alpha=1e-3)
    tol = TRAJECTORY_TOLERANCE[np.dtype(np.float32)]
    assert scaled_error(got[0], want[0]) <= tol
    assert scaled_error(got[1], want[1]) <= tol
    assert scaled_error(got[2] / n, want[2] / n) <= tol


@pytest.mark.parametrize("n,d,c,n_threads", [(1, 784, 10, 1), (37, 50, 3, 2), (65, 784, 10, 1),
                                             (129, 50, 3, 2), (300, 784, 10, 2),
                                             (160, 33, 16, 1)])
def test_amx_loss_and_gradient_match_the_reference(amx, n, d, c, n_threads):
    pixels, X, y, sw, W, b = pixel_problem(21, n, d, c)
    ref_grad_W, ref_grad_b = np.empty_like(W), np.empty_like(b)
    ref_loss = reference.loss_and_grad(Samples(X, y, sw), W, b, ref_grad_W, ref_grad_b,
                                       Threads(1, None, None))
    W32, b32 = W.astype(np.float32), b.astype(np.float32)
    grad_W, grad_b = np.full_like(W32, np.nan), np.full_like(b32, np.nan)
    loss = amx.loss_and_grad(Samples(pixels, y, sw.astype(np.float32)), W32, b32, grad_W, grad_b,
                             make_threads(n_threads, c, d, np.float32))
    tol = TOLERANCE[np.dtype(np.float32)]
    assert scaled_error(loss, ref_loss) <= tol
    assert scaled_error(grad_W, ref_grad_W) <= tol
    assert scaled_error(grad_b, ref_grad_b) <= tol


@pytest.mark.parametrize("n,n_threads,like_v4", [(64, 1, False), (127, 2, False),
                                                 (63, 1, True), (126, 2, True)])
def test_amx_tiles_take_the_chunks_of_at_least_min_chunk_samples(amx, n, n_threads, like_v4):
    """A chunk of 64 samples (FASTLR_AMX_MIN_CHUNK) goes through the tiles, whose bf16 pairs
    round otherwise than v4's float32 FMAs; chunks of 63 take the v4 tiles, bitwise."""
    pixels, _, y, sw, W, b = pixel_problem(61, n, 784, 10)
    grads = {}
    for level in (amx.AMX_LEVEL, 4):
        amx.set_isa_level(level)
        grad_W, grad_b = np.empty((10, 784), np.float32), np.empty(10, np.float32)
        amx.loss_and_grad(Samples(pixels, y, sw.astype(np.float32)), W.astype(np.float32),
                          b.astype(np.float32), grad_W, grad_b,
                          make_threads(n_threads, 10, 784, np.float32))
        grads[level] = grad_W
    assert np.array_equal(grads[amx.AMX_LEVEL], grads[4]) == like_v4


@pytest.mark.parametrize("n_threads", [1, 2])
def test_amx_epochs_are_bitwise_reproducible(amx, n_threads):
    """The same seed and thread count give bitwise the same model twice at the AMX level."""
    pixels, _, y, sw, W, b = pixel_problem(41, 2000, 784, 10)
    perm = np.random.default_rng(42).permutation(2000).astype(np.int64)
    lr_steps = np.full(-(-2000 // 300), 0.1)
    first = epoch(amx, pixels, y, sw, W, b, perm, lr_steps, 300, n_threads)
    second = epoch(amx, pixels, y, sw, W, b, perm, lr_steps, 300, n_threads)
    for got, want in zip(first, second):
        assert np.array_equal(got, want)


def test_levels_other_than_amx_still_run_and_match(amx):
    """Forcing v4 (and the levels below) at a CPU with AMX runs their tiles, which match the
    reference; float64 weights, float32 X and more than 16 classes take the v4 tiles at the
    AMX level itself (in chunks of 64 samples, which the AMX tiles would take otherwise)."""
    n, d, c = 300, 50, 10
    pixels, X, y, sw, W, b = pixel_problem(51, n, d, c)
    perm = np.random.default_rng(52).permutation(n).astype(np.int64)
    lr_steps = np.full(-(-n // 64), 0.05)
    want = reference_epoch(X, y, sw, W, b, perm, lr_steps, 64)
    tol = TRAJECTORY_TOLERANCE[np.dtype(np.float32)]
    for level in (4, 3, 1):
        amx.set_isa_level(level)
        assert amx.isa_level() == level
        got = epoch(amx, pixels, y, sw, W, b, perm, lr_steps, 64, 2)
        assert scaled_error(got[0], want[0]) <= tol, level
    amx.set_isa_level(amx.AMX_LEVEL)
    assert amx.isa_level() == amx.AMX_LEVEL
    # float64 weights on pixels: the v4 tiles, so float64's tolerance holds.
    W64, b64 = W.copy(), b.copy()
    amx.sgd_epoch(Samples(pixels, y, sw), SGDState(W64, b64, np.zeros_like(W), np.zeros_like(b)),
                  Steps(perm, lr_steps, 64, 0.0, 0.0), make_threads(1, c, d, np.float64))
    assert scaled_error(W64, want[0]) <= TRAJECTORY_TOLERANCE[np.dtype(np.float64)]
    # 17 classes: the v4 tiles, bitwise the same as at level 4.
    pixels17, _, y17, sw17, W17, b17 = pixel_problem(53, n, d, 17)
    results = {}
    for level in (amx.AMX_LEVEL, 4):
        amx.set_isa_level(level)
        results[level] = epoch(amx, pixels17, y17, sw17, W17, b17, perm, lr_steps, 64, 1)
    for got, want17 in zip(results[amx.AMX_LEVEL], results[4]):
        assert np.array_equal(got, want17)
    # float32 X: the v4 tiles too.
    results = {}
    for level in (amx.AMX_LEVEL, 4):
        amx.set_isa_level(level)
        W1, b1 = W.astype(np.float32), b.astype(np.float32)
        amx.sgd_epoch(Samples(X.astype(np.float32), y, sw.astype(np.float32)),
                      SGDState(W1, b1, np.zeros_like(W1), np.zeros_like(b1)),
                      Steps(perm, lr_steps, 64, 0.0, 0.0), make_threads(1, c, d, np.float32))
        results[level] = W1
    assert np.array_equal(results[amx.AMX_LEVEL], results[4])


def test_amx_is_the_level_picked_at_import(amx):
    """A fresh interpreter starts at the AMX level: the CPU check and the operating system's
    permission for the tile registers pass at import."""
    import json
    import os
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import json; from fastlr.backends import cython; "
            "print(json.dumps(cython.isa_level()))")
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=repo, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == amx.AMX_LEVEL
