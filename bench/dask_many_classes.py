"""Many classes on a Dask cluster: a fit of 1M rows x 345 classes per worker, and its memory.

    python bench/dask_many_classes.py [--workers 2] [--rows-per-worker 250000,1000000]
        [--classes 345] [--memory-limit 6.5GiB] [--epochs 1] [--json FILE]

Each worker makes its own partition of synthetic, learnable uint8 images (28 x 28: a prototype
per class plus noise, Quick, Draw!'s shape), so nothing travels through the client; the fit
trains on ``Pixels`` of them (the bytes stay bytes on the workers), scores the training set after
every epoch (``score_train``: the scoring wave over every partition) and a test set of 10,000
images in the client. The resident memory of every worker process is sampled every 0.2 s,
apart while the workers make their images (float64 temporaries) and while the fit runs: the
fit's peak is what the memory limit must hold for data that is read, not made. Dask's nanny
kills a worker at 95% of its limit, so a fit that completes stayed under it. One fit (on a new
cluster) per value of ``--rows-per-worker``.

The compute time of every training and scoring task is read from Dask's task stream, and
turned into each worker's rates: training 4 n D C flop an epoch of n rows, scoring 2 n D C.

A measurement, not a test: it prints what it measured (and writes it with ``--json``).
"""

import argparse
import json
import statistics
import threading
import time

import numpy as np

from fastlr import Pixels, SoftmaxRegression
from fastlr.distributed import require_dask

SIDE = 28


def prototypes(n_classes, seed=0):
    """One smooth random 28 x 28 uint8 pattern per class: (C, 784) float32."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n_classes, 7, 7), dtype=np.float32)
    fine = np.kron(coarse, np.ones((4, 4), np.float32))
    return (fine.reshape(n_classes, SIDE * SIDE) * 255).astype(np.float32)


def images(n_rows, n_classes, seed):
    """``n_rows`` labelled images: a class's prototype plus Gaussian noise, as uint8 (N, 784)
    and int64 labels (N,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_rows)
    protos = prototypes(n_classes)
    out = np.empty((n_rows, SIDE * SIDE), np.uint8)
    for start in range(0, n_rows, 65536):
        stop = min(start + 65536, n_rows)
        noisy = protos[labels[start:stop]] + rng.normal(0, 40, (stop - start, SIDE * SIDE))
        out[start:stop] = np.clip(noisy, 0, 255)
    return out, labels


def partition_images(n_rows, n_classes, seed):
    return images(n_rows, n_classes, seed)[0]


def partition_labels(n_rows, n_classes, seed):
    return images(n_rows, n_classes, seed)[1]


def task_seconds(stream):
    """The compute seconds of every task in a Dask task stream, by the name of its function."""
    seconds = {"_train_partition": [], "_score_partition": []}
    for task in stream:
        name = str(task["key"]).strip("('").split("-")[0]
        if name in seconds:
            seconds[name].extend(s["stop"] - s["start"] for s in task["startstops"]
                                 if s["action"] == "compute")
    return seconds


def fit_on_cluster(args, n):
    """One fit of ``args.workers`` partitions of n rows each on a new LocalCluster; what it
    measured."""
    dask, distributed = require_dask()
    import psutil

    c = args.classes
    X_blocks, y_blocks = [], []
    for worker in range(args.workers):
        X_blocks.append(dask.array.from_delayed(
            dask.delayed(partition_images, pure=True)(n, c, worker), (n, SIDE * SIDE), np.uint8))
        y_blocks.append(dask.array.from_delayed(
            dask.delayed(partition_labels, pure=True)(n, c, worker), (n,), np.int64))
    X, y = dask.array.concatenate(X_blocks), dask.array.concatenate(y_blocks)
    X_test, y_test = images(10_000, c, seed=10_000)

    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                  processes=True, memory_limit=args.memory_limit,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        peaks = {}
        done = threading.Event()

        def sample():
            while not done.is_set():
                for address, rss in client.run(
                        lambda: psutil.Process().memory_info().rss).items():
                    peaks[address] = max(peaks.get(address, 0), rss)
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # The partitions are made (and persisted) first, so the task stream of the fit holds
        # its training and scoring tasks alone, and the peak memory of the fit is apart from
        # that of making the images (float64 temporaries).
        X, y = client.persist([X, y])
        distributed.wait([X, y])
        making = dict(peaks)
        peaks.clear()
        client.get_task_stream(start=time.time())  # starts the scheduler's recording
        stream_start = time.time()
        start = time.perf_counter()
        try:
            model = SoftmaxRegression(epochs=args.epochs, batch_size=args.batch_size,
                                      learning_rate=0.1).fit(
                Pixels(X), y, eval_set=(Pixels(X_test), y_test), score_train=True)
        finally:
            wall = time.perf_counter() - start
            done.set()
            sampler.join()
        tasks = task_seconds(client.get_task_stream(start=stream_start))
    return {"workers": args.workers, "rows_per_worker": n, "classes": c,
            "memory_limit": args.memory_limit, "epochs": args.epochs,
            "batch_size": args.batch_size, "fit_s": wall,
            "epoch_s": [r["time_s"] for r in model.history_],
            "end_train_accuracy": model.history_[-1]["end_train_accuracy"],
            "train_task_s": tasks["_train_partition"],
            "score_task_s": tasks["_score_partition"],
            # 4 n D C flop a training epoch of n rows (scores and gradient, 2 n D C each),
            # 2 n D C a scoring pass.
            "train_gflops_per_worker": 4 * n * SIDE * SIDE * c / 1e9
            / statistics.median(tasks["_train_partition"]),
            "score_gflops_per_worker": 2 * n * SIDE * SIDE * c / 1e9
            / statistics.median(tasks["_score_partition"]),
            "test_accuracy": model.history_[-1]["val_accuracy"],
            "peak_worker_rss_gib": sorted(p / 2 ** 30 for p in peaks.values()),
            "peak_worker_rss_making_gib": sorted(p / 2 ** 30 for p in making.values())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows-per-worker", default="1000000",
                        help="one fit per value of this comma-separated list")
    parser.add_argument("--classes", type=int, default=345)
    parser.add_argument("--memory-limit", default="6.5GiB")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--json")
    args = parser.parse_args()
    runs = []
    for n in (int(value) for value in args.rows_per_worker.split(",")):
        report = fit_on_cluster(args, n)
        runs.append(report)
        print(f"{args.workers} workers x {n:,} rows x {args.classes} classes, limit "
              f"{args.memory_limit}: fit {report['fit_s']:.1f} s, test accuracy "
              f"{report['test_accuracy']:.4f}, train {report['end_train_accuracy']:.4f}; peak "
              f"worker memory in the fit "
              + ", ".join(f"{g:.2f}" for g in report["peak_worker_rss_gib"])
              + " GiB (making the images "
              + ", ".join(f"{g:.2f}" for g in report["peak_worker_rss_making_gib"])
              + " GiB); per worker: training "
              f"{report['train_gflops_per_worker']:.1f} GFLOP/s, scoring "
              f"{report['score_gflops_per_worker']:.1f} GFLOP/s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"runs": runs}, handle, indent=1)
            handle.write("\n")


if __name__ == "__main__":
    main()
