"""Data-parallel training on a local Dask cluster against one-process ``fit``, in one run.

    python bench/dask_rounds.py [--workers 2] [--repeats 3]
        [--partitions 1,2,4,8,16,32,64] [--json docs/scale.json]

Measures, with the defaults (10 epochs, batch 64, rate 1.0 decaying linearly) on MNIST:

1. one-process ``fit`` on numpy arrays with 1 thread and with ``--workers`` threads: the wall
   time of the fit, the median epoch, the test accuracy;
2. ``fit`` on Dask arrays of ``--workers`` partitions on a LocalCluster of ``--workers`` worker
   processes of one thread each, the partitions already on the workers: the wall time of the
   fit, the median round, the median compute time of a training task and of a scoring task
   (from Dask's task stream; the rest of a round is scheduling and moving weights), and the
   test accuracy after every round;
3. the test accuracy and median round for each partition count of ``--partitions`` on the same
   cluster (P partitions of 60000 / P images each: what averaging P machines' models costs),
   and for 2, 5 and 10 partitions of the training set sorted by label (each partition holds
   10 / P classes: data cut by class, as one file per class would be).

The times of 1 and 2 are medians over ``--repeats``, and the runs take turns, repeat after
repeat (one process, then the cluster, then the tasks in this process), so that on a shared
machine each ratio compares runs under the same load; the load average before and after is
recorded. The cluster is warmed up first (its workers load the Numba kernels from the cache).
A benchmark, not a test: it prints what it measured and exits 0. The run of docs/scale.md:

    load average 2.1 before, 2.1 after
    one process (2 threads vs 1):
      1 thread(s): fit 0.62 s, epoch 55.4 ms, test accuracy 92.69%
      2 thread(s): fit 0.53 s, epoch 43.2 ms, test accuracy 92.69%
    LocalCluster, 2 workers x 1 thread, 2 partitions:
      fit 1.32 s (2.14x one process), round 58.0 ms (1.05x its 1-thread epoch); train task
      31.0 ms, score task 29.0 ms
      the same tasks in this process: train 28.9 ms, score 22.8 ms
      test accuracy per round: 0.9131 0.9197 0.9186 0.9211 0.9191 0.9221 0.9264 0.9256 ...
    partitions of the rows in MNIST's order:
    partitions  round ms  test accuracy
             1      70.4  0.9271
             2      48.6  0.9254
           ...
            64     152.5  0.9050
"""

import argparse
import json
import os
import statistics
import time
import warnings

import numpy as np

from fastlr import SoftmaxRegression, load_mnist
from fastlr import distributed as fastlr_distributed
from fastlr.distributed import training_arrays, require_dask
from fastlr.pixels import Pixels
from fastlr.sgd import StepSettings


def one_process(mnist, n_threads, repeats):
    """Median fit wall time and epoch time, and the test accuracy, of one-process fits."""
    X_train, y_train, X_test, y_test = mnist
    walls, epochs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        model = SoftmaxRegression(n_threads=n_threads).fit(X_train, y_train,
                                                           eval_set=(X_test, y_test))
        walls.append(time.perf_counter() - start)
        epochs.append(statistics.median(r["time_s"] for r in model.history_))
    return {"threads": n_threads, "fit_s": statistics.median(walls),
            "epoch_s": statistics.median(epochs),
            "test_accuracy": model.history_[-1]["val_accuracy"],
            "accuracy_per_epoch": [r["val_accuracy"] for r in model.history_]}


def task_in_process(mnist, n_partitions, repeats):
    """Median time of the first partition's training and scoring tasks run in this process, on
    the same rows and with the same config: what a task costs without Dask around it."""
    n_rows = len(mnist[1]) // n_partitions
    partition = fastlr_distributed._prepare_partition(
        mnist[0][:n_rows], mnist[1][:n_rows], None, np.arange(10), None, np.float32, False)
    weights = (np.zeros((10, mnist[0].shape[1]), np.float32), np.zeros(10, np.float32))
    config = {"backend": "auto", "settings": StepSettings(64, 0.0, 0.0, 1),
              "schedule": ("linear", 1.0, 10), "seed": 0}
    train, score = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        fastlr_distributed._train_partition(partition, weights, 0, 0, config)
        middle = time.perf_counter()
        fastlr_distributed._score_partition(partition, weights, config)
        train.append(middle - start)
        score.append(time.perf_counter() - middle)
    return {"train_task_s": statistics.median(train), "score_task_s": statistics.median(score)}


def sorted_by_label(mnist, n_partitions):
    """The training set sorted by label, cut into ``n_partitions`` blocks: each partition
    holds a few classes only, as a data set stored one file per class would be cut."""
    dask, _ = require_dask()
    order = np.argsort(mnist[1], kind="stable")
    rows = -(-len(order) // n_partitions)
    return (dask.array.from_array(mnist[0][order], chunks=(rows, mnist[0].shape[1])),
            dask.array.from_array(mnist[1][order].astype(np.int64), chunks=rows))


def on_cluster(client, mnist, arrays, repeats, epochs=10):
    """Median fit wall time, round time and task compute times, and the per-round test
    accuracy, of fits on the Dask arrays ``arrays`` (X, y), first persisted on the workers."""
    X, y = arrays
    pixels = isinstance(X, Pixels)
    X, y = client.persist([X.data if pixels else X, y])
    partitions = X.numblocks[0]
    X = Pixels(X) if pixels else X
    client.wait_for_workers(1)
    walls, rounds, train_tasks, score_tasks = [], [], [], []
    for _ in range(repeats):
        client.get_task_stream(start=time.time())
        stream_start = time.time()
        start = time.perf_counter()
        model = SoftmaxRegression(epochs=epochs).fit(X, y, eval_set=(mnist[2], mnist[3]),
                                                     score_train=True)
        walls.append(time.perf_counter() - start)
        rounds.append(statistics.median(r["time_s"] for r in model.history_))
        for task in client.get_task_stream(start=stream_start):
            compute = [s["stop"] - s["start"] for s in task["startstops"]
                       if s["action"] == "compute"]
            name = str(task["key"])
            if name.startswith("_train_partition"):
                train_tasks.extend(compute)
            elif name.startswith("_score_partition"):
                score_tasks.extend(compute)
    return {"partitions": partitions, "fit_s": statistics.median(walls),
            "round_s": statistics.median(rounds),
            "train_task_s": statistics.median(train_tasks) if train_tasks else None,
            "score_task_s": statistics.median(score_tasks) if score_tasks else None,
            "test_accuracy": model.history_[-1]["val_accuracy"],
            "accuracy_per_round": [r["val_accuracy"] for r in model.history_]}


def median_of(rows):
    """One row from the rows of several repeats: the median of every time (``*_s``), the
    rest from the last row (accuracies are the same in every repeat)."""
    merged = dict(rows[-1])
    for key in merged:
        if key.endswith("_s") and merged[key] is not None:
            merged[key] = statistics.median(row[key] for row in rows)
    return merged


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--partitions", default="1,2,4,8,16,32,64")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    _, distributed = require_dask()
    # The sorted copies go to the cluster inside the graph, as Dask warns: here on purpose.
    warnings.filterwarnings("ignore", "Sending large graph")
    mnist = load_mnist()
    thread_counts = sorted({1, args.workers})
    report = {"workers": args.workers, "load_average_before": os.getloadavg()}
    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                  processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        on_cluster(client, mnist, training_arrays(args.workers), 1, epochs=1)  # warm-up
        # One process, the cluster and the tasks in turn, repeat after repeat: the machine is
        # shared, and each ratio should compare runs that saw the same load.
        runs = {"one_process": {t: [] for t in thread_counts}, "cluster": [],
                "task_in_process": []}
        cluster_arrays = training_arrays(args.workers)
        for _ in range(args.repeats):
            for n_threads in thread_counts:
                runs["one_process"][n_threads].append(one_process(mnist, n_threads, 1))
            runs["cluster"].append(on_cluster(client, mnist, cluster_arrays, 1))
            runs["task_in_process"].append(task_in_process(mnist, args.workers, 1))
        report["one_process"] = [median_of(rows) for rows in runs["one_process"].values()]
        report["cluster"] = median_of(runs["cluster"])
        report["task_in_process"] = median_of(runs["task_in_process"])
        report["partitions"] = [on_cluster(client, mnist, training_arrays(int(p)), 1)
                                for p in args.partitions.split(",")]
        report["sorted_by_label"] = [on_cluster(client, mnist, sorted_by_label(mnist, p), 1)
                                     for p in (2, 5, 10)]
    report["load_average_after"] = os.getloadavg()
    baseline = report["one_process"][0]
    print(f"load average {report['load_average_before'][0]:.1f} before, "
          f"{report['load_average_after'][0]:.1f} after")
    print(f"one process ({args.workers} threads vs 1):")
    for row in report["one_process"]:
        print(f"  {row['threads']} thread(s): fit {row['fit_s']:.2f} s, epoch "
              f"{row['epoch_s'] * 1e3:.1f} ms, test accuracy {row['test_accuracy']:.2%}")
    row = report["cluster"]
    print(f"LocalCluster, {args.workers} workers x 1 thread, {row['partitions']} partitions:")
    print(f"  fit {row['fit_s']:.2f} s ({row['fit_s'] / baseline['fit_s']:.2f}x one process), "
          f"round {row['round_s'] * 1e3:.1f} ms ({row['round_s'] / baseline['epoch_s']:.2f}x "
          f"its 1-thread epoch); train task {row['train_task_s'] * 1e3:.1f} ms, score task "
          f"{row['score_task_s'] * 1e3:.1f} ms")
    local = report["task_in_process"]
    print(f"  the same tasks in this process: train {local['train_task_s'] * 1e3:.1f} ms, "
          f"score {local['score_task_s'] * 1e3:.1f} ms")
    print("  test accuracy per round: " + " ".join(f"{a:.4f}" for a in
                                                    row["accuracy_per_round"]))
    for title, rows in (("partitions of the rows in MNIST's order", report["partitions"]),
                        ("partitions of rows sorted by label", report["sorted_by_label"])):
        print(f"{title}:\npartitions  round ms  test accuracy")
        for row in rows:
            print(f"{row['partitions']:>10}  {row['round_s'] * 1e3:>8.1f}  "
                  f"{row['test_accuracy']:.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
            fh.write("\n")


if __name__ == "__main__":
    main()
