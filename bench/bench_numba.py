"""Benchmark of the Numba epoch kernels against the NumPy reference on MNIST.

Run from the repository root::

    python bench/bench_numba.py                 # all ladder versions, batch 64/256/1024
    python bench/bench_numba.py --repeats 7 --versions v4-parallel-update

For every batch size and thread count (1 and 2) it prints ms per 60000-sample epoch (median,
min and max over the repeats, compilation excluded), the speed-up over the NumPy reference
timed in the same run with the same thread count, and the fraction of the compute floor:
an epoch is 4 N D C flops (2 N D C for the scores, 2 N D C for the gradient), and the floor
is that divided by the large-sgemm GFLOP/s of NumPy float32 matmul on the same threads,
measured in the same run. Every kernel is checked against the reference on the benchmark's
own inputs first; one that disagrees gets no number.

Example output (2-core AMD EPYC Zen 4, AVX-512; ``python bench/bench_numba.py``; the batch
256 and 1024 blocks follow in the same shape, see docs/kernels.md). The first-call line reads
~0.02 s because the kernels were already in Numba's cache; an empty cache takes seconds::

    first call, s: v1 0.04, v2 0.01, v3 0.01, v4 0.01, v5 0.01, v6 0.02, v7 0.02
    sgemm 2048^3 float32: 1 thr 103 GFLOP/s, 2 thr 191 GFLOP/s
    epoch = 60000 samples, 1.88 GFLOP; floor = GFLOP / sgemm GFLOP/s

    kernel               batch thr median ms     min     max vs numpy of floor
    --------------------------------------------------------------------------
    numpy                   64   1     106.1   101.3   134.8    1.00x      17%
    v1-naive                64   1     443.6   441.5   453.7    0.24x       4%
    v2-vectorized           64   1     106.2   104.9   107.2    1.00x      17%
    v3-blocked              64   1      64.2    63.2    67.8    1.65x      28%
    v4-parallel-update      64   1      63.9    62.5    65.6    1.66x      29%
    v5-blocked-2x4          64   1      58.8    56.2    59.6    1.80x      31%
    v6-one-sync             64   1      57.9    57.3    58.1    1.83x      32%
    v7-vector-update        64   1      57.6    57.2    58.1    1.84x      32%
    numpy                   64   2     101.2   100.4   102.4    1.00x      10%
    v1-naive                64   2     246.5   246.2   255.5    0.41x       4%
    v2-vectorized           64   2      78.4    77.7    78.7    1.29x      13%
    v3-blocked              64   2      56.1    54.9    58.9    1.80x      18%
    v4-parallel-update      64   2      54.7    51.2    56.2    1.85x      18%
    v5-blocked-2x4          64   2      44.7    44.0    46.3    2.27x      22%
    v6-one-sync             64   2      47.4    44.0    48.7    2.13x      21%
    v7-vector-update        64   2      35.2    34.5    36.8    2.87x      28%
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from threadpoolctl import threadpool_limits  # noqa: E402

from fastlr import load_mnist  # noqa: E402
from fastlr.backends import reference  # noqa: E402
from fastlr.sgd import allocate_parts  # noqa: E402


def measure_sgemm_gflops(n_threads, size=2048, repeats=5, dtype=np.float32):
    """Best GFLOP/s of a (size x size) @ (size x size) NumPy matmul on ``n_threads`` BLAS
    threads: the machine's practical ceiling for dense float32 arithmetic."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=dtype)
    b = rng.random((size, size), dtype=dtype)
    out = np.empty((size, size), dtype=dtype)
    best = float("inf")
    with threadpool_limits(n_threads):
        np.matmul(a, b, out=out)
        for _ in range(repeats):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best / 1e9


def epoch_args(X, y, batch_size, n_threads, seed=0, n_classes=10):
    """The arguments of one ``sgd_epoch`` call on (X, y): fresh zero weights, a seeded
    permutation, a constant learning rate of 0.1, momentum 0.9, alpha 1e-4."""
    rng = np.random.default_rng(seed)
    n, d = X.shape
    dtype = X.dtype
    W = np.zeros((n_classes, d), dtype=dtype)
    b = np.zeros(n_classes, dtype=dtype)
    perm = rng.permutation(n).astype(np.int64)
    n_steps = -(-n // batch_size)
    lr_steps = np.full(n_steps, 0.1)
    parts_W, parts_b = allocate_parts(n_threads, n_classes, d, dtype)
    sw = np.ones(n, dtype=dtype)
    return [X, y, sw, perm, W, b, np.zeros_like(W), np.zeros_like(b), lr_steps, batch_size,
            0.9, 1e-4, parts_W, parts_b]


def time_epochs(fn, args, repeats=5, n_threads=1):
    """Seconds per call of ``fn(*args)``: (median, min, max) over ``repeats`` calls after one
    warm-up call (which compiles a jitted kernel). Weights are reset before every call so
    each repeat does the same work."""
    weights = [a.copy() for a in args[4:8]]

    def reset():
        for dst, src in zip(args[4:8], weights):
            dst[...] = src

    times = []
    with threadpool_limits(n_threads):
        reset()
        fn(*args)
        for _ in range(repeats):
            reset()
            start = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - start)
    reset()
    return statistics.median(times), min(times), max(times)


def agrees_with_reference(fn, X, y, batch_size, n_threads, n_samples=3000, tol=5e-3):
    """Run one epoch on the first n_samples with fn and with the float64 reference; True if the
    weights agree within ``tol`` relative to their largest magnitude."""
    args = epoch_args(np.ascontiguousarray(X[:n_samples]), y[:n_samples], batch_size, n_threads)
    ref_args = [a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == X.dtype
                else a for a in args]
    reference.sgd_epoch(*ref_args)
    fn(*args)
    scale = max(1.0, float(np.abs(ref_args[4]).max()))
    return float(np.abs(args[4] - ref_args[4]).max()) <= tol * scale


def compile_seconds(fn, X, y, n_threads):
    """Wall time of the first call on a tiny problem: compilation, or loading the cache."""
    args = epoch_args(np.ascontiguousarray(X[:64]), y[:64], 16, n_threads)
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main(argv=None):
    from fastlr.backends import numba as numba_backend

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--versions", nargs="+", default=list(numba_backend.KERNEL_VERSIONS))
    opts = parser.parse_args(argv)

    X, y = load_mnist()[:2]
    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    flops = 4.0 * n * d * 10
    kernels = {name: numba_backend.KERNEL_VERSIONS[name] for name in opts.versions}

    print("first call, s: "
          + ", ".join(f"{name.split('-')[0]} {compile_seconds(fn, X, y, 2):.2f}"
                      for name, fn in kernels.items()))
    ok = {(name, t): agrees_with_reference(fn, X, y, 64, t)
          for name, fn in kernels.items() for t in opts.threads}
    gflops = {t: measure_sgemm_gflops(t) for t in opts.threads}
    print("sgemm 2048^3 float32: " + ", ".join(f"{t} thr {g:.0f} GFLOP/s"
                                               for t, g in gflops.items()))
    print(f"epoch = {n} samples, {flops / 1e9:.2f} GFLOP; floor = GFLOP / sgemm GFLOP/s\n")
    header = (f"{'kernel':<20} {'batch':>5} {'thr':>3} {'median ms':>9} {'min':>7} {'max':>7} "
              f"{'vs numpy':>8} {'of floor':>8}")
    print(header)
    print("-" * len(header))
    for batch in opts.batch_sizes:
        for t in opts.threads:
            floor_ms = flops / (gflops[t] * 1e9) * 1e3
            base = time_epochs(reference.sgd_epoch, epoch_args(X, y, batch, t), opts.repeats, t)
            rows = [("numpy", base)]
            for name, fn in kernels.items():
                if not ok[(name, t)]:
                    rows.append((name, None))
                    continue
                rows.append((name, time_epochs(fn, epoch_args(X, y, batch, t), opts.repeats,
                                               t)))
            for name, result in rows:
                if result is None:
                    print(f"{name:<20} {batch:>5} {t:>3}  disagrees with the reference")
                    continue
                med, lo, hi = (1e3 * v for v in result)
                print(f"{name:<20} {batch:>5} {t:>3} {med:>9.1f} {lo:>7.1f} {hi:>7.1f} "
                      f"{1e3 * base[0] / med:>7.2f}x {floor_ms / med:>8.0%}")
        print()


if __name__ == "__main__":
    main()
