"""The same MNIST job on what a user might pick instead: Spark MLlib, dask-ml, and fastlr.

    flock -x /tmp/fastlr-cpu.lock python bench/peers.py [--repeats 3] [--workers 2]
        [--json docs/peers.json]

Every system trains multinomial logistic regression on MNIST's 60,000 training images (pixels
scaled to [0, 1]) and is scored on its 10,000 test images:

- **fastlr, one process**: ``SoftmaxRegression()`` with its defaults (10 epochs of SGD,
  batch 64) on ``Pixels`` of the uint8 images, on all cores, as ``fastlr train`` runs it;
- **fastlr, LocalCluster**: the same on ``--workers`` Dask worker processes of one thread,
  each holding one partition (read by the worker from MNIST's files), weights averaged after
  every epoch;
- **dask-ml**: ``Incremental(SGDClassifier(loss="log_loss"))`` on the same cluster, ten passes
  of ``partial_fit`` over two blocks of float32 features already on the workers (dask-ml's
  own ``LogisticRegression`` is binary only);
- **Spark MLlib**: ``LogisticRegression(family="multinomial")`` in local mode on
  ``--workers`` cores (``local[2]``), its default L-BFGS with ``maxIter`` 100 and with 20, on a
  cached DataFrame read from a LIBSVM file; skipped, with the reason, without pyspark or a
  Java runtime. The peak resident memory of its JVM is sampled while it fits.

Times are wall times of the fit call alone (data loaded, cluster and JVM started, one
unmeasured warm-up fit of each); the systems take turns, repeat after repeat, and each time is
the median (with min and max) over ``--repeats``. A benchmark, not a test: it prints what it
measured and exits 0.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from fastlr import Pixels, SoftmaxRegression, load_mnist
from fastlr.distributed import require_dask, training_arrays


def timed(fit):
    """Run ``fit()``; returns (seconds, what it returned)."""
    start = time.perf_counter()
    result = fit()
    return time.perf_counter() - start, result


class Fastlr:
    name = "fastlr, one process"

    def __init__(self, mnist, **_):
        X, y, self.X_test, self.y_test = mnist
        self.X, self.y = Pixels(X), y

    def fit(self):
        model = SoftmaxRegression().fit(self.X, self.y)
        return model.score(Pixels(self.X_test), self.y_test)


class FastlrCluster:
    name = "fastlr, LocalCluster"

    def __init__(self, mnist, client, workers, **_):
        self.X_test, self.y_test = mnist[2], mnist[3]
        X, y = training_arrays(workers)
        data, y = client.persist([X.data, y])
        self.X, self.y = Pixels(data), y

    def fit(self):
        model = SoftmaxRegression().fit(self.X, self.y)
        return model.score(Pixels(self.X_test), self.y_test)


class DaskML:
    name = "dask-ml Incremental(SGDClassifier)"
    passes = 10

    def __init__(self, mnist, client, workers, **_):
        dask, _ = require_dask()
        X, y, self.X_test, self.y_test = mnist
        rows = -(-len(y) // workers)
        features = X / np.float32(255)
        self.X, self.y = client.persist([dask.array.from_array(features, chunks=(rows, 784)),
                                         dask.array.from_array(y, chunks=rows)])
        self.features_test = self.X_test / np.float32(255)

    def fit(self):
        from dask_ml.wrappers import Incremental
        from sklearn.linear_model import SGDClassifier
        model = Incremental(SGDClassifier(loss="log_loss", random_state=0), shuffle_blocks=True,
                            random_state=0)
        for _ in range(self.passes):
            model.partial_fit(self.X, self.y, classes=np.arange(10))
        return float(model.estimator_.score(self.features_test, self.y_test))


def spark_unavailable():
    """Why Spark cannot run here, or None."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install pyspark)"
    java = shutil.which("java", path=os.path.join(os.environ.get("JAVA_HOME", ""), "bin")) \
        or shutil.which("java")
    if java is None:
        return "no Java runtime (apt-get install default-jre-headless)"
    done = subprocess.run([java, "-version"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"java -version failed: {done.stderr.strip()[:200]}"
    return None


def write_libsvm(path, X, y):
    """Rows of features in [0, 1] as a LIBSVM text file (1-based indices, zeros left out)."""
    with open(path, "w") as out:
        for row, label in zip(X, y):
            nonzero = np.flatnonzero(row)
            out.write(f"{label} " + " ".join(f"{i + 1}:{row[i] / 255:.6g}" for i in nonzero)
                      + "\n")


class Spark:
    """One local Spark session for every fit; ``max_iter`` sets L-BFGS's iterations."""

    session = None

    def __init__(self, mnist, workers, max_iter, directory, **_):
        from pyspark.sql import SparkSession
        self.name = f"Spark MLlib LogisticRegression, maxIter {max_iter}"
        self.max_iter = max_iter
        if Spark.session is None:
            X, y, X_test, y_test = mnist
            start = time.perf_counter()
            Spark.session = (SparkSession.builder.master(f"local[{workers}]")
                             .config("spark.driver.memory", "4g")
                             .config("spark.ui.enabled", "false")
                             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
            Spark.session.sparkContext.setLogLevel("ERROR")
            Spark.startup_s = time.perf_counter() - start
            frames = []
            for name, images, labels in (("train", X, y), ("test", X_test, y_test)):
                path = Path(directory) / f"mnist-{name}.libsvm"
                write_libsvm(path, images, labels)
                frame = Spark.session.read.format("libsvm").option(
                    "numFeatures", "784").load(str(path)).cache()
                frame.count()
                frames.append(frame)
            Spark.train, Spark.test = frames
            Spark.jvm_pid = Spark.session.sparkContext._gateway.proc.pid
            Spark.peak_rss = 0

    def fit(self):
        import psutil
        from pyspark.ml.classification import LogisticRegression
        from pyspark.ml.evaluation import MulticlassClassificationEvaluator
        done = threading.Event()

        def sample():
            process = psutil.Process(Spark.jvm_pid)
            while not done.is_set():
                rss = sum(p.memory_info().rss for p in [process] + process.children(True))
                Spark.peak_rss = max(Spark.peak_rss, rss)
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            model = LogisticRegression(family="multinomial", maxIter=self.max_iter).fit(
                Spark.train)
        finally:
            done.set()
            sampler.join()
        self.last_model = model
        return model

    def accuracy(self, model):
        from pyspark.ml.evaluation import MulticlassClassificationEvaluator
        return MulticlassClassificationEvaluator(metricName="accuracy").evaluate(
            model.transform(Spark.test))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    _, distributed = require_dask()
    X, y, X_test, y_test = load_mnist(dtype=np.uint8)
    mnist = (X, y, X_test, y_test)
    load_before = os.getloadavg()[0]
    report = {"workers": args.workers, "repeats": args.repeats, "systems": {}, "skipped": {}}
    with tempfile.TemporaryDirectory(prefix="fastlr-peers-") as directory, \
            distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                     processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        common = {"mnist": mnist, "client": client, "workers": args.workers,
                  "directory": directory}
        systems = [Fastlr(**common), FastlrCluster(**common), DaskML(**common)]
        reason = spark_unavailable()
        if reason is None:
            systems += [Spark(max_iter=100, **common), Spark(max_iter=20, **common)]
        else:
            report["skipped"]["Spark MLlib"] = reason
        for system in systems:  # warm-up: JIT, caches, the workers' kernels
            system.fit()
        times = {system.name: [] for system in systems}
        accuracies = {}
        for _ in range(args.repeats):
            for system in systems:
                seconds, result = timed(system.fit)
                times[system.name].append(seconds)
                accuracies[system.name] = (system.accuracy(result) if isinstance(system, Spark)
                                           else result)
        for system in systems:
            row = {"fit_s": statistics.median(times[system.name]),
                   "fit_min_s": min(times[system.name]), "fit_max_s": max(times[system.name]),
                   "fit_all_s": times[system.name],
                   "test_accuracy": float(accuracies[system.name])}
            if isinstance(system, Spark):
                row["jvm_peak_rss_gib"] = Spark.peak_rss / 2 ** 30
                row["session_startup_s"] = Spark.startup_s
            report["systems"][system.name] = row
    report["load_average"] = [load_before, os.getloadavg()[0]]
    print(f"MNIST, 60,000 training / 10,000 test images; {args.workers} workers or cores; "
          f"median of {args.repeats} fits (min-max); load average {load_before:.1f} before, "
          f"{report['load_average'][1]:.1f} after")
    print(f"{'system':<48} {'fit (s)':>8} {'min-max':>14}  test accuracy")
    for name, row in report["systems"].items():
        print(f"{name:<48} {row['fit_s']:8.2f} {row['fit_min_s']:6.2f}-{row['fit_max_s']:<7.2f}"
              f"  {row['test_accuracy']:.4f}")
    for name, reason in report["skipped"].items():
        print(f"{name}: skipped, {reason}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
