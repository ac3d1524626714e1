"""Benchmark: one MNIST epoch of minibatch SGD, Cython kernels against the NumPy reference.

Prints ms/epoch (median, min and max over the repeats; one warm-up epoch is run first and not
counted) at batch 64, 256 and 1024 on 1 and 2 threads, and each median's speed-up over the
NumPy loop (``fastlr.backends.reference.sgd_epoch``) measured in the same run. Before timing,
each backend's epoch is checked against the reference on the benchmark's own data; a backend
that disagrees gets no number.

Usage (from a source checkout with the extension built)::

    python bench/bench_cython.py [--repeats 7] [--batches 64 256 1024] [--threads 1 2]

Example output (2-core AMD EPYC Zen 4, shared with other jobs at load ~5, so the 2-thread rows
are dominated by descheduled threads waiting at barriers)::

    MNIST train (60000, 784) float32; Cython kernels with OpenMP True, max threads 2; median, min, max of 7 epochs after a warm-up
    backend                   batch  T   median      min      max  vs numpy   (ms/epoch)
    numpy                        64  1    140.0    112.7    215.6      1.0x
    cython                       64  1     71.5     67.4    135.9      2.0x
    cython, region per step      64  1     64.4     62.0    113.8      2.2x
    cython                       64  2    647.9    265.2   1070.7      0.2x
    cython, region per step      64  2    403.8    344.1    769.2      0.3x
    numpy                       256  1    792.0    574.5   1353.6      1.0x
    cython                      256  1     89.0     75.9     93.0      8.9x
    cython, region per step     256  1     93.3     62.3    133.8      8.5x
    cython                      256  2    365.8    194.7    678.0      2.2x
    cython, region per step     256  2    329.4    262.7    523.9      2.4x
    numpy                      1024  1    813.6    602.8   1230.2      1.0x
    cython                     1024  1     87.8     87.2     89.4      9.3x
    cython, region per step    1024  1     93.7     85.2     98.3      8.7x
    cython                     1024  2    503.5    118.8    716.0      1.6x
    cython, region per step    1024  2    352.0    200.6    421.5      2.3x
"""

import argparse
import statistics
import time

import numpy as np

import fastlr
from fastlr.backends import get_backend, reference
from fastlr.sgd import allocate_parts


def epoch_inputs(X, y, batch_size, n_threads, seed=0):
    """Everything one ``sgd_epoch`` call takes, for a fresh zero model on (X, y)."""
    n, d = X.shape
    c = int(y.max()) + 1
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n).astype(np.int64)
    steps = -(-n // batch_size)
    W = np.zeros((c, d), dtype=X.dtype)
    b = np.zeros(c, dtype=X.dtype)
    parts_W, parts_b = allocate_parts(n_threads, c, d, X.dtype)
    return dict(X=X, y=y, sample_weight=np.ones(n, dtype=X.dtype), perm=perm, W=W, b=b,
                vel_W=np.zeros_like(W), vel_b=np.zeros_like(b),
                lr_steps=np.full(steps, 0.1), batch_size=batch_size, momentum=0.0, alpha=0.0,
                parts_W=parts_W, parts_b=parts_b)


def run_epoch(sgd_epoch, inputs):
    """One epoch from the fresh model in ``inputs``; returns (W, b, loss_sum)."""
    args = dict(inputs, W=inputs["W"].copy(), b=inputs["b"].copy(),
                vel_W=inputs["vel_W"].copy(), vel_b=inputs["vel_b"].copy())
    loss = sgd_epoch(**args)
    return args["W"], args["b"], loss


def agrees_with_reference(sgd_epoch, X, y, batch_size, n_threads, rtol=1e-3):
    """True if one epoch of ``sgd_epoch`` matches the reference's on the same inputs."""
    W_ref, b_ref, loss_ref = run_epoch(reference.sgd_epoch,
                                       epoch_inputs(X, y, batch_size, n_threads))
    W, b, loss = run_epoch(sgd_epoch, epoch_inputs(X, y, batch_size, n_threads))
    scale = max(1.0, float(np.abs(W_ref).max()))
    return (np.abs(W - W_ref).max() <= rtol * scale and np.abs(b - b_ref).max() <= rtol * scale
            and abs(loss - loss_ref) <= rtol * abs(loss_ref))


def time_epochs(sgd_epoch, X, y, batch_size, n_threads, repeats=7):
    """Wall time of ``repeats`` full epochs in ms, after one untimed warm-up epoch.

    Each epoch starts from the same fresh model, so every repeat does the same work.
    """
    inputs = epoch_inputs(X, y, batch_size, n_threads)
    run_epoch(sgd_epoch, inputs)
    times = []
    for _ in range(repeats):
        args = dict(inputs, W=inputs["W"].copy(), b=inputs["b"].copy())
        start = time.perf_counter()
        sgd_epoch(**args)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def measure(X, y, batch_sizes=(64, 256, 1024), thread_counts=(1, 2), repeats=7):
    """Time NumPy and the Cython variants on (X, y); return a list of result rows.

    Each row is a dict: ``backend``, ``batch``, ``threads``, ``times_ms`` (a list, empty
    if the backend disagreed with the reference) and ``vs_numpy`` (NumPy's median over this
    row's median at the same batch size, from this run; None without times).
    """
    kernels = get_backend("cython")._kernels
    variants = {"cython": kernels.sgd_epoch,
                "cython, region per step": kernels.sgd_epoch_region_per_step}
    rows = []
    for batch_size in batch_sizes:
        numpy_times = time_epochs(reference.sgd_epoch, X, y, batch_size, 1, repeats)
        numpy_ms = statistics.median(numpy_times)
        rows.append(dict(backend="numpy", batch=batch_size, threads=1, times_ms=numpy_times,
                         vs_numpy=1.0))
        for n_threads in thread_counts:
            for name, sgd_epoch in variants.items():
                times = []
                if agrees_with_reference(sgd_epoch, X, y, batch_size, n_threads):
                    times = time_epochs(sgd_epoch, X, y, batch_size, n_threads, repeats)
                rows.append(dict(backend=name, batch=batch_size, threads=n_threads,
                                 times_ms=times,
                                 vs_numpy=numpy_ms / statistics.median(times) if times
                                 else None))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)

    X, y = fastlr.load_mnist()[:2]
    cython = get_backend("cython")
    print(f"MNIST train {X.shape} float32; Cython kernels with OpenMP "
          f"{cython.OPENMP_ENABLED}, max threads {cython.MAX_THREADS}; median, min, max "
          f"of {args.repeats} epochs after a warm-up")
    print(f"{'backend':<25}{'batch':>6}{'T':>3}{'median':>9}{'min':>9}{'max':>9}"
          f"{'vs numpy':>10}   (ms/epoch)")
    for row in measure(X, y, args.batches, args.threads, args.repeats):
        label = f"{row['backend']:<25}{row['batch']:>6}{row['threads']:>3}"
        times = row["times_ms"]
        if not times:
            print(f"{label}   disagrees with the reference: no number")
            continue
        print(f"{label}{statistics.median(times):>9.1f}{min(times):>9.1f}{max(times):>9.1f}"
              f"{row['vs_numpy']:>9.1f}x")


if __name__ == "__main__":
    main()
