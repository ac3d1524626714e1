"""Compile the production Numba kernels into their on-disk cache, for the types the default
test tier runs them on: X float32, float64 and uint8 pixels (with float32 weights); one thread,
two, and more threads than Numba has (the epoch's stepwise path); the epoch, the loss and
gradient, the scores.

``tests/conftest.py`` runs this in a background process when a test session starts with a cold
cache, so that the compilation (minutes, on one core) overlaps the tests that do not need
Numba; the tests that do run after it and load the kernels from the cache. Runnable alone:
``python tests/compile_kernels.py``.
"""

import numpy as np

from fastlr.backends import get_backend
from fastlr.backends.contract import SGDState, Samples, Steps, make_threads

# (X dtype, weight dtype): the specializations the default tier uses.
SPECIALIZATIONS = [(np.float32, np.float32), (np.float64, np.float64), (np.uint8, np.float32)]


def compile_all(n=50, d=20, c=3):
    numba_backend = get_backend("numba")
    rng = np.random.default_rng(0)
    for x_dtype, w_dtype in SPECIALIZATIONS:
        X = (rng.integers(0, 256, (n, d)) if x_dtype == np.uint8 else rng.random((n, d)))
        X = X.astype(x_dtype)
        y = rng.integers(0, c, n).astype(np.int64)
        sw = np.ones(n, w_dtype)
        W, b = np.zeros((c, d), w_dtype), np.zeros(c, w_dtype)
        samples = Samples(X, y, sw)
        for n_threads in (1, 2, 3):
            numba_backend.sgd_epoch(samples, SGDState(W, b, np.zeros_like(W), np.zeros_like(b)),
                                    Steps(np.arange(n, dtype=np.int64), np.full(7, 0.1), 8,
                                          0.0, 0.0), make_threads(n_threads, c, d, w_dtype))
        numba_backend.loss_and_grad(samples, W, b, np.zeros_like(W), np.zeros_like(b),
                                    make_threads(1, c, d, w_dtype))
        numba_backend.predict_scores(X, W, b, np.zeros((n, c), w_dtype), 1)


if __name__ == "__main__":
    compile_all()
