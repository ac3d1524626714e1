"""uint8 pixels: X as MNIST stores it, its features X / 255 folded into the kernels' arithmetic.

The reference defines the path (``reference.features``); each backend that declares
``takes_pixels`` must give, from the bytes, the float model of X / 255 within the tolerances of
``fastlr/backends/check.py``: loss and gradient, scores, and a k-step SGD trajectory.
"""

import numpy as np
import pytest

from fastlr.backends import available_backends, get_backend, reference
from fastlr.backends.check import TRAJECTORY_TOLERANCE

from conftest import assert_matches, run_epochs, run_loss_and_grad

PIXEL_BACKENDS = [name for name in available_backends()
                  if getattr(get_backend(name), "takes_pixels", False)]
DTYPES = [np.float32, np.float64]


def pixel_problem(rng, n, d, c, dtype):
    """uint8 X with some 0 and 255 in it, and the float64 problem of its features X / 255."""
    X = rng.integers(0, 256, size=(n, d)).astype(np.uint8)
    X[:, : d // 4] = 0
    X[0, :] = 255
    y = rng.integers(0, c, size=n).astype(np.int64)
    W = (rng.standard_normal((c, d)) * 0.01).astype(dtype)
    b = (rng.standard_normal(c) * 0.1).astype(dtype)
    sw = rng.uniform(0.5, 2.0, size=n).astype(dtype)
    floats = (X / 255.0, y, sw.astype(np.float64), W.astype(np.float64), b.astype(np.float64))
    return (X, y, sw, W, b), floats


def test_reference_pixels_are_their_features():
    rng = np.random.default_rng(0)
    (X, y, sw, W, b), (Xf, _, swf, Wf, bf) = pixel_problem(rng, 50, 20, 3, np.float64)
    got = run_loss_and_grad(reference, X, y, sw, W, b)
    expected = run_loss_and_grad(reference, Xf, y, swf, Wf, bf)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-14, atol=1e-15)


def test_the_backends_that_take_pixels():
    assert "numpy" in PIXEL_BACKENDS
    assert "numba" in PIXEL_BACKENDS or "numba" not in available_backends()


@pytest.mark.parametrize("backend_name", PIXEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [784, 37])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_pixel_loss_grad_and_scores_match_the_float_model(backend_name, dtype, d, n_threads):
    backend = get_backend(backend_name)
    rng = np.random.default_rng(d + n_threads)
    pixels, floats = pixel_problem(rng, 203, d, 10, dtype)
    got = run_loss_and_grad(backend, *pixels, n_threads=n_threads)
    expected = run_loss_and_grad(reference, *floats)
    for g, e in zip(got, expected):
        assert_matches(g, e, dtype)
    X, _, _, W, b = pixels
    out = np.full((X.shape[0], 10), np.nan, dtype=dtype)
    backend.predict_scores(X, W, b, out, n_threads)
    scores = np.empty((X.shape[0], 10))
    reference.predict_scores(floats[0], floats[3], floats[4], scores, 1)
    assert_matches(out, scores, dtype)


@pytest.mark.parametrize("backend_name", PIXEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("batch_size,momentum,alpha", [(64, 0.0, 0.0), (10, 0.9, 1e-3)])
def test_pixel_trajectory_matches_the_float_model(backend_name, dtype, n_threads, batch_size,
                                                  momentum, alpha):
    backend = get_backend(backend_name)
    rng = np.random.default_rng(3)
    pixels, floats = pixel_problem(rng, 301, 784, 10, dtype)
    perms = [rng.permutation(301).astype(np.int64) for _ in range(3)]
    lr = 0.05 if batch_size == 64 else 0.005
    got = run_epochs(backend, *pixels, perms, batch_size, lr, momentum, alpha, n_threads)
    expected = run_epochs(reference, *floats, perms, batch_size, lr, momentum, alpha)
    assert got[0].dtype == dtype
    for g, e in zip(got, expected):
        assert_matches(g, e, dtype, TRAJECTORY_TOLERANCE)


@pytest.mark.parametrize("backend_name", PIXEL_BACKENDS)
def test_pixels_same_thread_count_is_bitwise_reproducible(backend_name):
    backend = get_backend(backend_name)
    rng = np.random.default_rng(5)
    pixels, _ = pixel_problem(rng, 1000, 784, 10, np.float32)
    perms = [rng.permutation(1000).astype(np.int64) for _ in range(2)]
    runs = [run_epochs(backend, *pixels, perms, 64, 0.5, 0.0, 0.0, n_threads=2)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
