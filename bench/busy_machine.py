"""Training on a busy machine: default ``train``, ``train --threads 1`` and the plain NumPy script,
with 0, 1 and 2 busy processes beside them.

    python bench/busy_machine.py [--repeats 5] [--busy 0,1,2] [--before DIR] [--json FILE]

For each count of busy processes (``python -c "while True: pass"``, started before the row and
killed after it) the commands run in turn, A B C A B C ..., as whole processes, after one
untimed run of each: ``python -m fastlr train`` with its defaults (the progress bar on, as a
user runs it), the same with ``--threads 1``, ``bench/plain_numpy_train.py`` (the same job in
plain NumPy), and with ``--before DIR`` the default ``train`` of an older checkout (its
extension built). Each row gives the median, min and max wall time, and the ratios of the
medians against ``--threads 1``, against NumPy and (with ``--before``) against the older
checkout's default, measured in the same row; the thread line of the default's summary says
what it did. Before it times a row it checks, on the untimed runs, that the default and
``--threads 1`` saved bitwise the same model (the thread count must not change it).
A benchmark, not a test: it exits 0 once it has measured, whether the targets hold or
not (default at most 1.1x ``--threads 1`` and never slower than NumPy with busy processes
beside it; idle, as fast as before).

Its recorded run, on this project's machine: ``python bench/busy_machine.py --repeats 7
--before DIR --json docs/busy_machine.json`` (DIR: a checkout of the commit before the threads
adapted); the journal (docs/journal/) keeps the other runs of that hour.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, "-m", "fastlr", "train"]
COMMANDS = {
    "default": (TRAIN, None),
    "threads 1": (TRAIN + ["--threads", "1"], None),
    "numpy": ([sys.executable, str(ROOT / "bench" / "plain_numpy_train.py")], None),
}
BUSY = [sys.executable, "-c", "while True: pass"]


def run(command, cwd):
    """(wall seconds, stdout) of one whole process run in ``cwd``; raises if it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=dict(os.environ, PYTHONPATH=str(cwd)))
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-500:]}")
    return seconds, done.stdout


def commit(tree):
    """The git commit checked out in ``tree``, "+" if its files differ from it (None if it is
    not a checkout)."""
    try:
        head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


def summary_field(stdout, pattern):
    """The first group of ``pattern`` in a ``train`` summary (None for the NumPy script)."""
    found = re.search(pattern, stdout)
    return found.group(1) if found else None


def same_model(paths):
    """Whether the model files at ``paths`` hold bitwise the same weights and bias."""
    models = [np.load(path) for path in paths]
    return all(model[key].tobytes() == models[0][key].tobytes()
               for model in models[1:] for key in ("coef", "intercept"))


def row(commands, busy, repeats, scratch):
    """The runs of every command with ``busy`` busy processes beside them: {name: {"runs":
    [seconds], "threads": [the summary's thread line], "accuracy": the test accuracy}}. The
    untimed first runs of the default and of ``--threads 1`` save their models in
    ``scratch``; a SystemExit if they differ."""
    neighbours = [subprocess.Popen(BUSY) for _ in range(busy)]
    try:
        time.sleep(0.5)  # the neighbours are running when the first command starts
        results = {name: {"runs": [], "threads": []} for name in commands}
        saved = []
        for name, (command, cwd) in commands.items():
            if name in ("default", "threads 1"):
                saved.append(scratch / f"{name.replace(' ', '')}.npz")
                command = command + ["--out", str(saved[-1])]
            _, stdout = run(command, cwd)
            results[name]["accuracy"] = summary_field(stdout, r"test accuracy\s+([\d.]+%)")
        if not same_model(saved):
            raise SystemExit(f"with {busy} busy processes the default and --threads 1 trained "
                             f"different models")
        for _ in range(repeats):
            for name, (command, cwd) in commands.items():
                seconds, stdout = run(command, cwd)
                results[name]["runs"].append(seconds)
                results[name]["threads"].append(
                    summary_field(stdout, r"backend\s+\w+, (.*)"))
        return results
    finally:
        for process in neighbours:
            process.kill()
            process.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each command")
    parser.add_argument("--busy", default="0,1,2",
                        help="counts of busy processes, one row each (default: %(default)s)")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="an older checkout whose default train is timed beside")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results there")
    args = parser.parse_args(argv)
    commands = dict(COMMANDS)
    for name, (command, _) in commands.items():
        commands[name] = (command, ROOT)
    if args.before:
        commands["before"] = (TRAIN, args.before.resolve())
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "commit": commit(ROOT), "before": args.before and commit(args.before),
              "cores": len(os.sched_getaffinity(0)), "repeats": args.repeats,
              "load_before": os.getloadavg()[0], "rows": []}
    print(f"{'busy':>4}  {'command':10} {'median':>8} {'min':>7} {'max':>7} "
          f"{'x threads 1':>12} {'x numpy':>8} {'x before':>9}  threads")
    for busy in map(int, args.busy.split(",")):
        with tempfile.TemporaryDirectory() as scratch:
            results = row(commands, busy, args.repeats, Path(scratch))
        medians = {name: statistics.median(r["runs"]) for name, r in results.items()}
        for name, result in results.items():
            entry = {"busy": busy, "command": name, "median_s": medians[name],
                     "min_s": min(result["runs"]), "max_s": max(result["runs"]),
                     "runs_s": result["runs"], "threads": result["threads"],
                     "test_accuracy": result["accuracy"],
                     "x_threads_1": medians[name] / medians["threads 1"],
                     "x_numpy": medians[name] / medians["numpy"],
                     "x_before": medians[name] / medians["before"] if args.before else None}
            report["rows"].append(entry)
            threads = "; ".join(sorted(set(t for t in result["threads"] if t)))
            print(f"{busy:>4}  {name:10} {entry['median_s']:7.2f}s {entry['min_s']:7.2f} "
                  f"{entry['max_s']:7.2f} {entry['x_threads_1']:12.2f} "
                  f"{entry['x_numpy']:8.2f} {entry['x_before'] or float('nan'):9.2f}  "
                  f"{threads}", flush=True)
    report["load_after"] = os.getloadavg()[0]
    print(f"load average {report['load_before']:.2f} before, {report['load_after']:.2f} after")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
