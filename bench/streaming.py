"""Streaming from disk against training in memory, on MNIST written as uncompressed IDX files.

    python bench/streaming.py [--repeats 5] [--threads 1]
        [--backend auto] [--seeds 0,1,2] [--json docs/streaming.json]

Measures, with the defaults of ``fit`` (10 epochs, batch 64, rate 1.0 decaying linearly):

1. the epoch time of ``fit`` on the images in memory (``Pixels``) and of ``fit`` on a
   :class:`fastlr.streaming.StreamingSource` of the same files (default chunk and buffer:
   every epoch reads the files into the shuffle buffers and trains), the median
   epoch of each fit, then the median over ``--repeats`` fits; the two take turns, repeat
   after repeat, so their ratio compares runs under the same load. The files are in the page
   cache (they were just written): this is the cost of streaming itself, not of the disk;
2. the test accuracy (mean over ``--seeds``) of the full shuffle in memory against streaming
   with shuffle buffers of 1, 4, 16 and 59 chunks of 1024 images (59 chunks: the whole
   training set, a full shuffle by chunks), on MNIST in its own order and sorted by class
   (the layout of one file per class).

Compile time is excluded: one fit of each kind runs first, unmeasured. A benchmark, not a
test: it prints what it measured and exits 0. The run of the README:

    load average 2.3 before, 2.1 after; cython backend, 1 thread
    epoch time, median of 5 fits (each the median of its 10 epochs):
      in memory    38.9 ms
      streamed     48.0 ms   (1.23x)
    test accuracy, mean of seeds 0, 1, 2 (chunks of 1024 images):
      order      buffer (images)  test accuracy
      in memory     full shuffle  0.9267
      MNIST's               1024  0.9267
      MNIST's               4096  0.9265
      MNIST's              16384  0.9268
      MNIST's              60416  0.9265
      by class              1024  0.9089
      by class              4096  0.9172
      by class             16384  0.9104
      by class             60416  0.9259
"""

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

from fastlr import Pixels, SoftmaxRegression, data, streaming
from fastlr.backends import get_backend

CHUNK_SIZE = 1024
BUFFER_CHUNKS = (1, 4, 16, 59)


def write_idx_set(directory, X, y, X_test, y_test):
    """MNIST's four files, uncompressed, from uint8 arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    data.write_idx(directory / "train-images-idx3-ubyte", X.reshape(-1, 28, 28))
    data.write_idx(directory / "train-labels-idx1-ubyte", y.astype(np.uint8))
    data.write_idx(directory / "t10k-images-idx3-ubyte", X_test.reshape(-1, 28, 28))
    data.write_idx(directory / "t10k-labels-idx1-ubyte", y_test.astype(np.uint8))
    return directory


def median_epoch(model, X, y=None):
    """The median epoch time (s) of one fit."""
    model.fit(X, y)
    return statistics.median(record["time_s"] for record in model.history_)


def epoch_times(directory, mnist, params, repeats):
    """Median epoch of in-memory and streamed fits, taking turns; medians over the repeats."""
    X, y = mnist[0], mnist[1]
    source = streaming.open_source(directory)
    median_epoch(SoftmaxRegression(**params), X, y)
    median_epoch(SoftmaxRegression(**params), source)
    in_memory, streamed = [], []
    for _ in range(repeats):
        in_memory.append(median_epoch(SoftmaxRegression(**params), X, y))
        streamed.append(median_epoch(SoftmaxRegression(**params), source))
    return {"in_memory_s": statistics.median(in_memory), "streamed_s": statistics.median(streamed),
            "in_memory_all_s": in_memory, "streamed_all_s": streamed}


def accuracies(directories, mnist, params, seeds):
    """Mean test accuracy over the seeds: full shuffle in memory, then each order and buffer."""
    X, y, X_test, y_test = mnist
    rows = [{"order": "in memory", "buffer": None, "test_accuracy": float(np.mean([
        SoftmaxRegression(**params, random_state=seed).fit(X, y).score(X_test, y_test)
        for seed in seeds]))}]
    for order, directory in directories.items():
        for chunks in BUFFER_CHUNKS:
            source = streaming.open_source(directory, chunk_size=CHUNK_SIZE,
                                           buffer_size=chunks * CHUNK_SIZE)
            scores = [SoftmaxRegression(**params, random_state=seed).fit(source)
                      .score(*source.test) for seed in seeds]
            rows.append({"order": order, "buffer": chunks * CHUNK_SIZE,
                         "test_accuracy": float(np.mean(scores))})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    params = {"backend": args.backend, "n_threads": args.threads}
    load_before = os.getloadavg()[0]
    X, y, X_test, y_test = data.load_dataset("mnist", dtype=np.uint8).arrays()
    # Bytes in memory, as the stream hands them to the kernels (and as ``train`` loads them).
    mnist = (Pixels(X), y, Pixels(X_test), y_test)
    by_class = np.argsort(y, kind="stable")
    with tempfile.TemporaryDirectory(prefix="fastlr-bench-streaming-") as tmp:
        directories = {
            "MNIST's": write_idx_set(Path(tmp) / "mnist", X, y, X_test, y_test),
            "by class": write_idx_set(Path(tmp) / "by-class", X[by_class], y[by_class],
                                      X_test, y_test)}
        times = epoch_times(directories["MNIST's"], mnist, params, args.repeats)
        rows = accuracies(directories, mnist, params, seeds)
    load_after = os.getloadavg()[0]

    backend = get_backend(args.backend).name
    print(f"load average {load_before:.1f} before, {load_after:.1f} after; {backend} backend, "
          f"{args.threads} thread{'s' if args.threads != 1 else ''}")
    print(f"epoch time, median of {args.repeats} fits (each the median of its 10 epochs):")
    print(f"  in memory  {times['in_memory_s'] * 1e3:6.1f} ms")
    print(f"  streamed   {times['streamed_s'] * 1e3:6.1f} ms   "
          f"({times['streamed_s'] / times['in_memory_s']:.2f}x)")
    print(f"test accuracy, mean of seeds {', '.join(map(str, seeds))} (chunks of {CHUNK_SIZE} "
          f"images):")
    print("  order      buffer (images)  test accuracy")
    for row in rows:
        buffer = "full shuffle" if row["buffer"] is None else f"{row['buffer']:>12}"
        print(f"  {row['order']:<10} {buffer:>15}  {row['test_accuracy']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "backend": backend, "threads": args.threads, "repeats": args.repeats,
            "seeds": seeds, "chunk_size": CHUNK_SIZE, "load_average": [load_before, load_after],
            "epoch_time": times, "accuracy": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
