"""How much of an epoch is waiting for the rows of X: the same kernel, the same arithmetic, with
the rows coming from different places.

    python bench/where_rows_come_from.py [--backend numba] [--threads 2] [--batch-size 1024]
                                         [--repeats 7] [--blocks 32,64]

One backend's ``sgd_epoch`` on MNIST (60,000 x 784) with four permutations and two dtypes, in
one run, interleaved, medians of ``--repeats``:

``random``      a permutation, as training draws it: every row from memory, in random order
``in order``    0, 1, 2, ...: the same rows from memory, in the order the hardware prefetchers
                follow best
``in cache``    i mod 512: the same number of rows and steps, but only 512 distinct rows
                (1.6 MB as float32), which stay in the caches: the epoch's in-core time
``random u8``   a permutation of the uint8 pixels: a quarter of the bytes
``in cache u8`` i mod 512 of the pixels: the uint8 path's in-core time

The float32 arithmetic is the same in the first three (only the values of X differ), so the
differences are the cost of reading the rows. ``--blocks`` (Numba only) times every case with
the threads' chunks in blocks of each given number of samples instead of the tuned one,
interleaved in the same run: the lab's copy of the production epoch (v12,
``fastlr.backends.numba_ladder.v12_tuned_blocks.epoch_in_blocks``), which production does not
keep. A benchmark, not a test: run it on a quiet
machine, and compare rows of one run.
"""

import argparse
import importlib
import statistics
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numba", choices=("numba", "cython"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--blocks", default=None,
                        help="comma-separated block sizes to compare (numba only)")
    args = parser.parse_args()
    if args.blocks and args.backend != "numba":
        parser.error("--blocks: only the Numba kernel takes its block size at run time")

    from fastlr.backends.contract import SGDState, Samples, Steps, epoch_arguments, make_threads
    from fastlr.data import load_mnist
    backend = importlib.import_module(f"fastlr.backends.{args.backend}")
    if args.backend == "numba":
        import numba
        numba.set_num_threads(args.threads)
    X_float, y, _, _ = load_mnist()
    X_bytes = load_mnist(dtype=np.uint8)[0]
    n, d = X_float.shape
    classes, T, B = 10, args.threads, args.batch_size
    rng = np.random.default_rng(0)
    random = rng.permutation(n).astype(np.int64)
    cases = {"random": (X_float, random), "in order": (X_float, np.arange(n, dtype=np.int64)),
             "in cache": (X_float, np.arange(n, dtype=np.int64) % 512),
             "random u8": (X_bytes, random),
             "in cache u8": (X_bytes, np.arange(n, dtype=np.int64) % 512)}
    ones = np.ones(n, np.float32)
    lr_steps = np.full(-(-n // B), 0.1)
    epochs = {"": backend.sgd_epoch}
    if args.blocks:
        from fastlr.backends.numba_ladder.v12_tuned_blocks import epoch_in_blocks
        # The lab's rung takes the positional arguments it was written for.
        epochs = {f" b{block}": lambda *records, block=block: epoch_in_blocks(
                      block, *epoch_arguments(*records))
                  for block in map(int, args.blocks.split(","))}

    def epoch_ms(epoch, X, perm):
        W, b = np.zeros((classes, d), np.float32), np.zeros(classes, np.float32)
        records = (Samples(X, y, ones), SGDState(W, b, np.zeros_like(W), np.zeros_like(b)),
                   Steps(perm, lr_steps, B, 0.0, 0.0), make_threads(T, classes, d, np.float32))
        start = time.perf_counter()
        epoch(*records)
        return 1e3 * (time.perf_counter() - start)

    runs = {name + tag: (epoch, X, perm) for name, (X, perm) in cases.items()
            for tag, epoch in epochs.items()}
    for run in runs.values():  # compile or load, warm the caches
        epoch_ms(*run)
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(epoch_ms(*run))
    flop = 4 * n * d * classes
    print(f"{args.backend}, {T} threads, batch {B}: ms per epoch, median of {args.repeats}")
    for name, values in times.items():
        ms = statistics.median(values)
        print(f"  {name:16s} {ms:7.1f}  [{min(values):.1f} - {max(values):.1f}]"
              f"  {flop / ms / 1e6:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
