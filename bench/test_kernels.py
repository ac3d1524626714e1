"""Micro-benchmarks of each backend's kernels with pytest-benchmark.

Run with ``python -m pytest bench --benchmark-only`` (they are not part of the default test
run: ``testpaths`` in pyproject.toml names ``tests`` only). For the side-by-side table against
NumPy, the peers and the machine's ceiling, use ``python -m fastlr bench``.

Each benchmark first checks its backend against the reference on its own inputs, so a number
is never reported for a kernel that computes something else.
"""

from pathlib import Path

import numpy as np
import pytest

from fastlr.backends import available_backends, get_backend, reference
from fastlr.backends.check import TOLERANCE, TRAJECTORY_TOLERANCE, epoch_error, run_epoch
from fastlr.backends.check import scaled_error
from fastlr.data import load_mnist
from fastlr.backends.contract import SGDState, Samples, Steps, make_threads
from fastlr.sgd import Schedule

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = available_backends()
THREADS = [1, 2]


@pytest.fixture(scope="module")
def mnist():
    X, y, _, _ = load_mnist(ROOT / "data" / "mnist")
    perm = np.random.default_rng(0).permutation(len(y)).astype(np.int64)
    return X, y, perm


@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_loss_and_grad(benchmark, mnist, backend_name, n_threads):
    """One MNIST minibatch of 64: scores, softmax, loss and gradient."""
    X, y, perm = mnist
    backend = get_backend(backend_name)
    batch = np.ascontiguousarray(X[perm[:64]])
    labels = np.ascontiguousarray(y[perm[:64]])
    sw = np.ones(64, dtype=np.float32)
    W = np.random.default_rng(1).normal(0, 0.01, (10, 784)).astype(np.float32)
    b = np.zeros(10, dtype=np.float32)
    grad_W, grad_b = np.empty_like(W), np.empty_like(b)
    threads = make_threads(n_threads, 10, 784, np.float32)
    ref_grad_W, ref_grad_b = np.empty((10, 784)), np.empty(10)
    ref_loss = reference.loss_and_grad(
        Samples(batch.astype(np.float64), labels, sw.astype(np.float64)),
        W.astype(np.float64), b.astype(np.float64), ref_grad_W, ref_grad_b, threads)
    loss = backend.loss_and_grad(Samples(batch, labels, sw), W, b, grad_W, grad_b, threads)
    tolerance = TOLERANCE[np.dtype(np.float32)]
    assert max(scaled_error(loss, ref_loss), scaled_error(grad_W, ref_grad_W),
               scaled_error(grad_b, ref_grad_b)) <= tolerance
    benchmark(backend.loss_and_grad, Samples(batch, labels, sw), W, b, grad_W, grad_b, threads)


@pytest.mark.parametrize("batch_size", [64, 1024])
@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_sgd_epoch(benchmark, mnist, backend_name, n_threads, batch_size):
    """One full MNIST epoch of minibatch SGD from zero weights."""
    X, y, perm = mnist
    backend = get_backend(backend_name)
    steps = -(-len(y) // batch_size)
    lr_steps = Schedule("linear", 1.0, 10).rates(0, steps)
    W0, b0 = np.zeros((10, 784), dtype=np.float32), np.zeros(10, dtype=np.float32)
    expected = run_epoch(reference, X, y, W0, b0, perm, lr_steps, batch_size, 1, np.float64)
    result = run_epoch(backend, X, y, W0, b0, perm, lr_steps, batch_size, n_threads,
                       np.float32)
    assert epoch_error(result, expected) <= TRAJECTORY_TOLERANCE[np.dtype(np.float32)]
    samples = Samples(X, y, np.ones(len(y), dtype=np.float32))
    steps = Steps(perm, lr_steps, batch_size, 0.0, 0.0)
    threads = make_threads(n_threads, 10, 784, np.float32)

    def fresh_weights():
        W, b = W0.copy(), b0.copy()
        return (samples, SGDState(W, b, np.zeros_like(W), np.zeros_like(b)), steps, threads), {}

    benchmark.pedantic(backend.sgd_epoch, setup=fresh_weights, rounds=5, warmup_rounds=1)
