"""The speed a user sees: the three targets of ``python -m fastlr train``, from one run.

    python bench/user_speed.py [--repeats 5] [--first-repeats 3]

1. warm ``python -m fastlr train`` (the defaults, progress bar on) against the plain NumPy script
   ``bench/plain_numpy_train.py`` doing the same job: whole processes, run alternately
   (A B A B ...), medians; the goal is at least 2x;
2. ``SoftmaxRegression().fit`` with the defaults: the share of its wall time spent in the SGD
   epochs (the history's ``time_s``), median over repeats in one process; the goal is 80%;
3. the first ``train --epochs 1`` after install (an empty Numba cache and an empty decoded-data
   cache, both in fresh temporary directories) against a warm ``train --epochs 1``: medians, for
   the default backend and for ``--backend numba``; the goal is at most 5x.

Every command runs once untimed first, so the warm runs find the caches filled. The load
average before and after is printed: the machine may be shared. ``--before DIR`` (a checkout of
an older fastlr, its extension built) adds that checkout's ``train`` to the alternation and to
the first-run rows, so a before/after table comes from one run. A benchmark, not a test: it
exits 0 once it has measured, whether the targets hold or not. The output of
``python bench/user_speed.py --repeats 5 --first-repeats 2 --before DIR`` (DIR a checkout of the
commit before ``train`` handed the kernels MNIST's bytes) on the 2-core Xeon, quiet::

    load average 0.25 before, 0.80 after
    warm train vs plain NumPy:   train 0.37 s, numpy 1.11 s (medians of 5): 2.99x (goal >= 2x)
      before (DIR):  train 0.49 s: 2.26x
    fit's SGD share:             0.19 s of 0.20 s (median of 5): 93% (goal >= 80%)
    first run, default backend:  0.46 s vs 0.22 s warm (medians of 2): 2.1x (goal <= 5x)
    first run, --backend numba:  15.85 s vs 0.72 s warm (medians of 2): 21.9x (goal <= 5x)
    first run, before, default:  0.71 s vs 0.28 s warm (medians of 2): 2.6x (goal <= 5x)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAIN_NUMPY = [sys.executable, str(ROOT / "bench" / "plain_numpy_train.py")]
TRAIN = [sys.executable, "-m", "fastlr", "train"]

FIT_SHARE_SCRIPT = """
import json, sys, time
from fastlr import SoftmaxRegression, load_mnist
X, y, _, _ = load_mnist()
shares = []
n_threads = int(sys.argv[2]) or None
for repeat in range(int(sys.argv[1]) + 1):
    start = time.perf_counter()
    model = SoftmaxRegression(n_threads=n_threads).fit(X, y)
    wall = time.perf_counter() - start
    sgd = sum(r["time_s"] for r in model.history_)
    if repeat:  # the first fit loads the kernels
        shares.append((sgd, wall))
print(json.dumps(shares))
"""


def run_seconds(command, env=None, cwd=ROOT):
    """Wall time of one whole process run in ``cwd``; raises if it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=dict(os.environ, **(env or {})),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-500:]}")
    return seconds


def alternate(commands, repeats):
    """Median wall time of each (command, cwd), run in turn A B A B ... ``repeats`` times
    after one untimed run of each."""
    for command, cwd in commands:
        run_seconds(command, cwd=cwd)
    times = [[] for _ in commands]
    for _ in range(repeats):
        for k, (command, cwd) in enumerate(commands):
            times[k].append(run_seconds(command, cwd=cwd))
    return [statistics.median(t) for t in times]


def first_run(extra, repeats, cwd=ROOT):
    """Median wall time of ``train --epochs 1 EXTRA`` in ``cwd`` with empty caches,
    alternating with the same command warm; returns (first, warm)."""
    command = TRAIN + ["--epochs", "1"] + extra
    run_seconds(command, cwd=cwd)
    firsts, warms = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as empty:
            env = {"NUMBA_CACHE_DIR": os.path.join(empty, "numba"),
                   "XDG_CACHE_HOME": os.path.join(empty, "xdg")}
            firsts.append(run_seconds(command, env, cwd))
        warms.append(run_seconds(command, cwd=cwd))
    return statistics.median(firsts), statistics.median(warms)


def fit_share(repeats, n_threads):
    """Median (sgd seconds, fit seconds) of ``SoftmaxRegression().fit`` in one process
    (``n_threads`` 0: the default)."""
    done = subprocess.run([sys.executable, "-c", FIT_SHARE_SCRIPT, str(repeats),
                           str(n_threads)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    shares = json.loads(done.stdout)
    shares.sort(key=lambda s: s[0] / s[1])
    return shares[len(shares) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per warm command")
    parser.add_argument("--first-repeats", type=int, default=3,
                        help="timed first runs (each compiles, when Numba is used)")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="an older checkout to time beside this one")
    parser.add_argument("--threads", type=int, default=0,
                        help="pass --threads to every train and fit (default: theirs, all cores)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]

    threads = ["--threads", str(args.threads)] if args.threads else []
    train = TRAIN + threads
    commands = [(train, ROOT), (PLAIN_NUMPY, ROOT)] + ([(train, args.before)] if args.before
                                                       else [])
    medians = alternate(commands, args.repeats)
    train_s, numpy_s = medians[:2]
    sgd_s, fit_s = fit_share(args.repeats, args.threads)
    first_rows = [("default backend", first_run(threads, args.first_repeats)),
                  ("--backend numba", first_run(threads + ["--backend", "numba"],
                                                args.first_repeats))]
    if args.before:
        first_rows.append(("before, default", first_run(threads, args.first_repeats,
                                                        args.before)))

    print(f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"warm train vs plain NumPy:   train {train_s:.2f} s, numpy {numpy_s:.2f} s (medians "
          f"of {args.repeats}): {numpy_s / train_s:.2f}x (goal >= 2x)")
    if args.before:
        print(f"  before ({args.before}):  train {medians[2]:.2f} s: "
              f"{numpy_s / medians[2]:.2f}x")
    print(f"fit's SGD share:             {sgd_s:.2f} s of {fit_s:.2f} s (median of "
          f"{args.repeats}): {sgd_s / fit_s:.0%} (goal >= 80%)")
    for label, (first, warm) in first_rows:
        print(f"first run, {label + ':':17} {first:.2f} s vs {warm:.2f} s warm (medians of "
              f"{args.first_repeats}): {first / warm:.1f}x (goal <= 5x)")


if __name__ == "__main__":
    main()
