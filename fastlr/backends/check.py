"""How close a backend must come to the reference: the tolerances, in one place.

Used by the tests (``tests/test_backends.py``) and by the benchmark harness, which refuses to
time a backend that disagrees with the reference on the benchmark's own data.

An error is measured relative to the largest magnitude of the reference value (at least 1), so
that one tolerance serves a gradient of size 1e-3 and a weight matrix of size 10 alike.
"""

import numpy as np

from .contract import SGDState, Samples, Steps, make_threads

# One kernel call (a loss, a gradient, scores).
TOLERANCE = {
    np.dtype(np.float64): 1e-10,
    np.dtype(np.float32): 2e-5,
}
# An SGD trajectory accumulates the rounding of every step.
TRAJECTORY_TOLERANCE = {
    np.dtype(np.float64): 1e-9,
    np.dtype(np.float32): 2e-4,
}


def scaled_error(actual, expected):
    """``max|actual - expected| / max(1, max|expected|)``; inf if actual is not finite or the
    shapes differ."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape or not np.all(np.isfinite(actual)):
        return float("inf")
    if expected.size == 0:
        return 0.0
    scale = max(1.0, float(np.max(np.abs(expected))))
    return float(np.max(np.abs(actual - expected))) / scale


def run_epoch(backend, X, y, W, b, perm, lr_steps, batch_size, n_threads, dtype):
    """One ``sgd_epoch`` of ``backend`` in ``dtype`` from copies of (W, b), without momentum or
    L2; returns the new (W, b) and the mean loss over the epoch. uint8 X (pixels) is passed as
    it is."""
    if X.dtype != np.uint8:
        X = np.ascontiguousarray(X, dtype=dtype)
    W, b = W.astype(dtype), b.astype(dtype)
    loss_sum, _ = backend.sgd_epoch(
        Samples(X, y, np.ones(len(y), dtype=dtype)),
        SGDState(W, b, np.zeros_like(W), np.zeros_like(b)),
        Steps(perm, lr_steps, batch_size, 0.0, 0.0), make_threads(n_threads, *W.shape, dtype))
    return W, b, loss_sum / len(perm)


def epoch_error(result, expected):
    """The larger of the scaled errors of W, b and the mean loss of two ``run_epoch`` results."""
    return max(scaled_error(r, e) for r, e in zip(result, expected))
