"""What every rung of the lab shares: the partition of a batch, the check, the timing.

Shapes: N samples, D features, C classes, B batch, T threads.

A rung imports this module and nothing else of fastlr. It imports the reference and the
records of the contract the reference takes (``fastlr/backends/contract.py``). It holds:

``_chunk_bounds``      thread k's contiguous chunk of a batch: the partition every rung uses
                       for its partial gradients (T alone decides it, never the thread pool)
``reference_epoch``    the one call into ``fastlr.backends.reference``, the spec and oracle
``check``              two epochs of a rung against the reference on MNIST-shaped data
``time_epochs``        an MNIST epoch of a rung, timed, compilation excluded
``main``               what ``python -m fastlr.backends.numba_ladder.vNN_...`` runs: load MNIST,
                       check, then time and print

Every rung keeps the 14 positional arguments of the ``sgd_epoch`` contract it was written for
and returns its epoch's loss sum (the later rungs also the weight of the samples scored right);
the reference's own signature is named in ``reference_epoch`` alone, so a change of the
reference's contract changes that function and nothing else here.

Numba keys a rung's cached functions by the rung's own file; ``_chunk_bounds`` is the one
compiled function defined here, frozen like the rungs: an edit to it would need the lab's
``__pycache__`` cleared.
"""

import argparse
import gzip
import os
import statistics
import time

import numpy as np
from numba import njit

from fastlr.backends import reference
from fastlr.backends.contract import SGDState, Samples, Steps, Threads

# How far a rung's float32 SGD trajectory may stray from the float64 reference: the error of
# W, b and the loss relative to the reference's largest magnitude (at least 1). The same bound
# as the production tests' float32 trajectories (fastlr/backends/check.py); kept here so the
# lab depends on the reference alone.
TOLERANCE = 2e-4

MNIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                     os.pardir, "data", "mnist")


@njit(cache=True)
def _chunk_bounds(start, stop, k, T):
    """Rows [lo, hi) of thread k's contiguous chunk of the batch [start, stop). Depends on T
    only, never on the thread pool, so a given T always gives the same partition."""
    size = stop - start
    return start + (k * size) // T, start + ((k + 1) * size) // T


def reference_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size,
                    momentum, alpha):
    """One epoch of the reference (``fastlr.backends.reference.sgd_epoch``) in X's dtype,
    updating W, b, vel_W, vel_b in place; returns the epoch's sum of ``s_i l_i``.

    The only call into the reference: the rungs are frozen at the contract they were written
    for, so when the reference's signature changes, this function follows it alone.
    """
    loss_sum, _ = reference.sgd_epoch(
        Samples(X, y, sample_weight), SGDState(W, b, vel_W, vel_b),
        Steps(perm, lr_steps, batch_size, momentum, alpha), Threads(1, None, None))
    return loss_sum


def _loss_of(result):
    """A rung's loss sum: the rungs before v12 return it alone, v12 with the count."""
    return result[0] if isinstance(result, tuple) else result


def run_rung(sgd_epoch, X, y, sample_weight, perms, W, b, lr_steps, batch_size, momentum,
             alpha, n_threads):
    """len(perms) epochs of a rung from copies of W, b (zero velocities); returns W, b and
    the epochs' loss sums."""
    W, b = W.copy(), b.copy()
    vel_W, vel_b = np.zeros_like(W), np.zeros_like(b)
    parts_W = np.zeros((n_threads,) + W.shape, W.dtype)
    parts_b = np.zeros((n_threads, W.shape[0]), W.dtype)
    losses = [_loss_of(sgd_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps,
                                 batch_size, momentum, alpha, parts_W, parts_b))
              for perm in perms]
    return W, b, np.array(losses)


def scaled_error(actual, expected):
    """``max|actual - expected| / max(1, max|expected|)``; inf if actual is not finite."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    if not np.all(np.isfinite(actual)):
        return float("inf")
    return float(np.max(np.abs(actual - expected))) / max(1.0, float(np.max(np.abs(expected))))


def check(sgd_epoch, X, y, batch_size, n_threads, n_samples=2000, seed=0):
    """The largest scaled error of a rung's W, b and loss sums against the reference's after
    two epochs on the first ``n_samples`` rows of X (float32 for the rung, float64 for the
    reference), weighted samples, momentum 0.9, L2 1e-4, a batch that leaves a short last
    batch. Fails the rung if above ``TOLERANCE``."""
    rng = np.random.default_rng(seed)
    n = min(n_samples, X.shape[0]) - 1  # not a multiple of the batch: a short last batch
    X, y = np.ascontiguousarray(X[:n], np.float32), np.ascontiguousarray(y[:n], np.int64)
    C = int(y.max()) + 1
    sw = rng.uniform(0.5, 2.0, n).astype(np.float32)
    W = (rng.standard_normal((C, X.shape[1])) * 0.01).astype(np.float32)
    b = (rng.standard_normal(C) * 0.01).astype(np.float32)
    perms = [rng.permutation(n).astype(np.int64) for _ in range(2)]
    lr_steps = np.full(-(-n // batch_size), 0.05)
    got = run_rung(sgd_epoch, X, y, sw, perms, W, b, lr_steps, batch_size, 0.9, 1e-4,
                   n_threads)
    W64, b64 = W.astype(np.float64), b.astype(np.float64)
    vel_W, vel_b = np.zeros_like(W64), np.zeros_like(b64)
    X64, sw64 = X.astype(np.float64), sw.astype(np.float64)
    losses = [reference_epoch(X64, y, sw64, perm, W64, b64, vel_W, vel_b, lr_steps,
                              batch_size, 0.9, 1e-4) for perm in perms]
    return max(scaled_error(a, e) for a, e in zip(got, (W64, b64, np.array(losses))))


def load_mnist(directory=MNIST):
    """MNIST's 60,000 training images as float32 features in [0, 1] (N, 784) and their labels
    (N,) int64, read from the IDX files of ``directory``."""
    def idx(name):
        with gzip.open(os.path.join(directory, name + ".gz")) as f:
            data = f.read()
        dims = data[3]
        shape = np.frombuffer(data, ">u4", dims, 4).astype(int)
        return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)
    X = idx("train-images-idx3-ubyte").reshape(60000, -1).astype(np.float32) / 255.0
    return X, idx("train-labels-idx1-ubyte").astype(np.int64)


def time_epochs(sgd_epoch, X, y, configs, repeats, seed=0):
    """Seconds of one MNIST epoch of a rung for each (batch_size, n_threads) in ``configs``:
    one untimed epoch each first (it compiles), then ``repeats`` rounds that time every
    configuration once, interleaved. Each epoch starts from zero weights, without momentum
    or L2, at a learning rate of 0.1. Returns {config: [seconds, ...]} and the seconds of the
    first epochs (compilation included)."""
    perm = np.random.default_rng(seed).permutation(X.shape[0]).astype(np.int64)
    C, D = int(y.max()) + 1, X.shape[1]
    sw = np.ones(X.shape[0], np.float32)

    def epoch(batch_size, n_threads):
        W, b = np.zeros((C, D), np.float32), np.zeros(C, np.float32)
        args = (X, y, sw, perm, W, b, np.zeros_like(W), np.zeros_like(b),
                np.full(-(-X.shape[0] // batch_size), 0.1), batch_size, 0.0, 0.0,
                np.zeros((n_threads, C, D), np.float32), np.zeros((n_threads, C), np.float32))
        start = time.perf_counter()
        sgd_epoch(*args)
        return time.perf_counter() - start

    first = {config: epoch(*config) for config in configs}
    seconds = {config: [] for config in configs}
    for _ in range(repeats):
        for config in configs:
            seconds[config].append(epoch(*config))
    return seconds, first


def main(sgd_epoch, doc, argv=None):
    """Check a rung against the reference, then time an MNIST epoch: what each rung's
    ``python -m`` runs. Prints one line per configuration; exits with status 1 if the rung
    disagrees with the reference (then nothing is timed)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per configuration")
    parser.add_argument("--data", default=MNIST, help="directory of MNIST's IDX files")
    args = parser.parse_args(argv)
    X, y = load_mnist(args.data)
    configs = [(batch, threads) for batch in args.batch_size for threads in args.threads]
    for batch, threads in configs:
        error = check(sgd_epoch, X, y, batch, threads)
        print(f"check batch {batch:5d}  threads {threads}: scaled error {error:.1e} "
              f"(at most {TOLERANCE:.0e})")
        if not error <= TOLERANCE:
            raise SystemExit(1)
    seconds, first = time_epochs(sgd_epoch, X, y, configs, args.repeats)
    for config in configs:
        times = [1e3 * s for s in seconds[config]]
        print(f"epoch batch {config[0]:5d}  threads {config[1]}: median "
              f"{statistics.median(times):7.1f} ms  (min {min(times):.1f}, max "
              f"{max(times):.1f}, {len(times)} epochs; first epoch, compiling if not cached, "
              f"{first[config]:.1f} s)")
