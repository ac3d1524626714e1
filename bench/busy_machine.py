"""Training on a busy machine: default ``train``, ``train --threads 1`` and the plain NumPy script,
with 0, 1 and 2 busy processes beside them.

    python bench/busy_machine.py [--repeats 5] [--busy 0,1,2] [--before DIR] [--json FILE]

For each count of busy processes (``python -c "while True: pass"``, started before the row and
killed after it) the commands run in turn, A B C A B C ..., as whole processes, after one
untimed run of each: ``python -m fastlr train`` with its defaults (the progress bar on, as a
user runs it), the same with ``--threads 1``, ``bench/plain_numpy_train.py`` (the same job in
plain NumPy), and with ``--before DIR`` the default ``train`` of an older checkout (its
extension built). Each row gives the median, min and max wall time, and the ratios of the
medians against ``--threads 1`` and against NumPy, measured in the same row; the thread line of
the default's summary says what it did. Before it times anything it checks that the default
and ``--threads 1`` report the same test accuracy (the thread count must not change the
model). A benchmark, not a test: it exits 0 once it has measured, whether the targets hold or
not (default at most 1.1x ``--threads 1`` and never slower than NumPy with busy processes
beside it; idle, as fast as before).

The output of ``python bench/busy_machine.py --repeats 5 --before DIR --json
docs/busy_machine.json`` on the 2-core AMD EPYC (Zen 3) this was written on, shared with other
work (its numbers: ``docs/busy_machine.json``)::

    busy  command          median     min     max   x threads 1   x numpy
       0  default           0.52 s   0.50    0.60          0.83      0.22
       0  threads 1         0.63 s   ...
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


def summary_field(stdout, pattern):
    """The first group of ``pattern`` in a ``train`` summary (None for the NumPy script)."""
    found = re.search(pattern, stdout)
    return found.group(1) if found else None


def row(commands, busy, repeats):
    """The runs of every command with ``busy`` busy processes beside them: {name: {"runs":
    [seconds], "threads": [the summary's thread line], "accuracy": the test accuracy}}."""
    neighbours = [subprocess.Popen(BUSY) for _ in range(busy)]
    try:
        time.sleep(0.5)  # the neighbours are running when the first command starts
        results = {name: {"runs": [], "threads": []} for name in commands}
        for name, (command, cwd) in commands.items():
            _, stdout = run(command, cwd)
            results[name]["accuracy"] = summary_field(stdout, r"test accuracy\s+([\d.]+%)")
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
    report = {"cores": len(os.sched_getaffinity(0)), "repeats": args.repeats,
              "load_before": os.getloadavg()[0], "rows": []}
    print(f"{'busy':>4}  {'command':10} {'median':>8} {'min':>7} {'max':>7} "
          f"{'x threads 1':>12} {'x numpy':>8}  threads")
    for busy in map(int, args.busy.split(",")):
        results = row(commands, busy, args.repeats)
        if results["default"]["accuracy"] != results["threads 1"]["accuracy"]:
            raise SystemExit(f"the default and --threads 1 disagree: "
                             f"{results['default']['accuracy']} against "
                             f"{results['threads 1']['accuracy']}")
        medians = {name: statistics.median(r["runs"]) for name, r in results.items()}
        for name, result in results.items():
            entry = {"busy": busy, "command": name, "median_s": medians[name],
                     "min_s": min(result["runs"]), "max_s": max(result["runs"]),
                     "runs_s": result["runs"], "threads": result["threads"],
                     "test_accuracy": result["accuracy"],
                     "x_threads_1": medians[name] / medians["threads 1"],
                     "x_numpy": medians[name] / medians["numpy"]}
            report["rows"].append(entry)
            threads = "; ".join(sorted(set(t for t in result["threads"] if t)))
            print(f"{busy:>4}  {name:10} {entry['median_s']:7.2f}s {entry['min_s']:7.2f} "
                  f"{entry['max_s']:7.2f} {entry['x_threads_1']:12.2f} "
                  f"{entry['x_numpy']:8.2f}  {threads}", flush=True)
    report["load_after"] = os.getloadavg()[0]
    print(f"load average {report['load_before']:.2f} before, {report['load_after']:.2f} after")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
