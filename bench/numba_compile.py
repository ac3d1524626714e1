"""Where the Numba backend's first-run compilation goes, per kernel and per dtype signature.

    python bench/numba_compile.py [--repeats 3]

Each row is a fresh interpreter with an empty ``NUMBA_CACHE_DIR`` that imports the backend
(which compiles its small parallel probe), then times the first call of one kernel at one
dtype on MNIST-shaped inputs (a short epoch, so the time is the compilation); then the same
process calls it again, warm, and the row shows the difference. Medians over ``--repeats``
fresh processes; the load average is printed, since the machine may be shared. The output of
``python bench/numba_compile.py --repeats 1`` on the shared 2-core machine, heavily loaded::

    load average 8.86 before, 6.64 after; medians of 1 fresh processes, empty cache
    import (compiles the parallel probe)        3.72 s
    sgd_epoch float32                          50.90 s compile  (first call 51.05 s, warm 148.0 ms)
    sgd_epoch float64                          69.39 s compile  (first call 69.60 s, warm 208.0 ms)
    predict_scores float32                     15.07 s compile  (first call 15.07 s, warm 0.1 ms)
    predict_scores float64                     12.67 s compile  (first call 12.72 s, warm 51.5 ms)
    loss_and_grad float32                      43.22 s compile  (first call 43.25 s, warm 26.8 ms)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import json, sys, time
start = time.perf_counter()
import numpy as np
import fastlr.backends.numba as nb
from fastlr.backends.contract import SGDState, Samples, Steps, make_threads
imported = time.perf_counter() - start
kernel, dtype = sys.argv[1], np.dtype(sys.argv[2])
rng = np.random.default_rng(0)
n, d, c, T = 256, 784, 10, 2
X = rng.random((n, d)).astype(dtype)
y = rng.integers(0, c, n).astype(np.int64)
sw = np.ones(n, dtype)
W, b = np.zeros((c, d), dtype), np.zeros(c, dtype)


def call():
    if kernel == "sgd_epoch":
        nb.sgd_epoch(Samples(X, y, sw), SGDState(W, b, np.zeros_like(W), np.zeros_like(b)),
                     Steps(np.arange(n, dtype=np.int64), np.full(4, 0.1), 64, 0.0, 0.0),
                     make_threads(T, c, d, dtype))
    elif kernel == "predict_scores":
        nb.predict_scores(X, W, b, np.zeros((n, c), dtype), T)
    elif kernel == "loss_and_grad":
        nb.loss_and_grad(Samples(X, y, sw), W, b, np.zeros_like(W), np.zeros_like(b),
                         make_threads(T, c, d, dtype))


timings = []
for _ in range(2):
    start = time.perf_counter()
    call()
    timings.append(time.perf_counter() - start)
print(json.dumps({"import": imported, "first": timings[0], "warm": timings[1]}))
"""

ROWS = [("sgd_epoch", "float32"), ("sgd_epoch", "float64"), ("predict_scores", "float32"),
        ("predict_scores", "float64"), ("loss_and_grad", "float32")]


def measure(kernel, dtype):
    """One fresh process with an empty Numba cache: its timings as a dict."""
    with tempfile.TemporaryDirectory() as empty:
        env = dict(os.environ, NUMBA_CACHE_DIR=empty)
        done = subprocess.run([sys.executable, "-c", SCRIPT, kernel, dtype], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    results = {row: [measure(*row) for _ in range(args.repeats)] for row in ROWS}
    print(f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; medians of "
          f"{args.repeats} fresh processes, empty cache")
    imports = [r["import"] for runs in results.values() for r in runs]
    print(f"{'import (compiles the parallel probe)':40} {statistics.median(imports):7.2f} s")
    for (kernel, dtype), runs in results.items():
        first = statistics.median(r["first"] for r in runs)
        warm = statistics.median(r["warm"] for r in runs)
        print(f"{kernel + ' ' + dtype:40} {first - warm:7.2f} s compile  "
              f"(first call {first:.2f} s, warm {warm * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
