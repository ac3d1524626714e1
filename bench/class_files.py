"""Quick, Draw!-shaped data: one .npy file per class, streamed under a memory limit, against a
fully shuffled fit of the same data in memory.

    python bench/class_files.py write DIR [--classes 345] [--rows-per-class 7500] [--seed 0]
    flock -x /tmp/fastlr-cpu.lock python bench/class_files.py run DIR
        [--runs memory,stream] [--epochs 10] [--memory-limit 1GiB] [--json FILE]

``write`` makes a learnable data set of Quick, Draw!'s shape: per class a file ``class_KKK.npy``
of uint8 images (n_k, 28, 28), n_k drawn around ``--rows-per-class`` (half to one and a half
times it, as Quick, Draw!'s classes differ in size), each image a smooth random pattern of its
class, scaled by ``--pattern-scale``, plus Gaussian noise of standard deviation 50: the
nearest class mean scores 93% at 100 classes and 88% at 345 with the default scale of 8, so
a linear model is tested short of 100%. The rows of a file are in no particular order within
the class.

``run`` trains on it with the defaults of ``fit`` (10 epochs, batch 64, rate 1.0 decaying
linearly; the compiled backend ``auto`` picks, on all cores), in one child process per entry
of ``--runs``:

- ``memory``: every training row loaded into memory (Pixels of one uint8 array), fully
  shuffled every epoch;
- ``stream``: a :class:`fastlr.streaming.StreamingSource` of the directory at its default
  chunk and buffer, in a cgroup v1 memory cgroup of ``--memory-limit`` (root only), whose
  page cache cannot hold the files: every epoch reads them from disk again (their pages are
  evicted from the page cache before the first epoch, so the loading of ``memory`` does not
  serve them);
- ``stream@PATH``: the same with the ``fastlr`` package found at PATH (an older checkout), to
  measure a change.

Both train on the same rows (the last rows of every file are held out as the test set, as
:func:`fastlr.streaming.open_source` does) and are scored on the same test set. The children
take turns epoch by epoch (each waits for the parent's word before its next epoch), so every
epoch of one is timed under the load the other saw. Epoch times are the engine's own
(``history_[i]["time_s"]``: training only). For a streamed run the time the engine waited
for the stream's next block is summed per epoch (``wait_s``): what streaming costs that
training cannot hide. A measurement, not a test: it prints what it measured and, with
``--json``, writes it.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIDE = 28
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


# --- the data set ---------------------------------------------------------------------------------

def class_patterns(n_classes, seed):
    """One smooth random pattern per class, (C, 784) float32 of unit scale: a 7 x 7 grid of
    Gaussian values, each repeated over a 4 x 4 block of pixels."""
    coarse = np.random.default_rng(seed).standard_normal((n_classes, 7, 7), dtype=np.float32)
    return np.kron(coarse, np.ones((4, 4), np.float32)).reshape(n_classes, SIDE * SIDE)


def class_images(pattern, n_rows, rng, pattern_scale, noise=50.0):
    """``n_rows`` images of one class: ``128 + pattern_scale * pattern + noise * N(0, 1)``,
    clipped to bytes, (n_rows, 28, 28) uint8."""
    pixels = rng.standard_normal((n_rows, SIDE * SIDE), dtype=np.float32)
    pixels *= np.float32(noise)
    pixels += np.float32(128) + np.float32(pattern_scale) * pattern
    return np.clip(pixels, 0, 255).astype(np.uint8).reshape(n_rows, SIDE, SIDE)


def write(directory, n_classes, rows_per_class, seed, pattern_scale):
    """Write the class files into ``directory``; returns their total size in bytes."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patterns = class_patterns(n_classes, seed)
    sizes = rng.integers(rows_per_class // 2, rows_per_class * 3 // 2 + 1, n_classes)
    total = 0
    for k, (pattern, n_rows) in enumerate(zip(patterns, sizes)):
        path = directory / f"class_{k:03d}.npy"
        np.save(path, class_images(pattern, int(n_rows), rng, pattern_scale))
        total += path.stat().st_size
    return total


# --- one run, in a child process ------------------------------------------------------------------

def worker(directory, mode, epochs, seed):
    """Train one model (``mode`` memory or stream), taking turns with the parent: one line to
    stdout when loaded, after every epoch and at the end; one line from stdin before each
    epoch."""
    from fastlr import Pixels, SoftmaxRegression, streaming

    source = streaming.open_source(directory)
    X_test, y_test = source.test
    sizes = {"n_samples": int(source.n_samples), "classes": len(source.classes)}
    waits = []
    if mode == "memory":
        X = Pixels(np.concatenate([np.asarray(images) for images, _ in source.parts]))
        y = np.repeat(np.arange(len(source.parts)), source.part_rows)
        y_test = np.searchsorted(source.classes, y_test)
        fit_args = (X, y)
        source = None  # unmaps the files, so that their pages can be evicted
    else:
        blocks = source.epoch_blocks

        def timed_blocks(rng):
            """The stream's blocks, with the time spent waiting for each one summed."""
            waits.append(0.0)
            stream = blocks(rng)
            while True:
                start = time.perf_counter()
                try:
                    block = next(stream)
                except StopIteration:
                    return
                finally:
                    waits[-1] += time.perf_counter() - start
                yield block

        source.epoch_blocks = timed_blocks
        fit_args = (source,)

    def say(kind, payload):
        print(kind, json.dumps(payload), flush=True)

    def turn():
        if sys.stdin.readline().strip() != "go":
            sys.exit(0)

    say("ready", sizes)
    turn()
    model = SoftmaxRegression(epochs=epochs, random_state=seed)
    model.fit(*fit_args, on_epoch=lambda record: (say("epoch", record), turn()))
    say("done", {"test_accuracy": float(model.score(X_test, y_test)),
                 "train_accuracy": model.history_[-1]["train_accuracy"],
                 "epoch_s": [r["time_s"] for r in model.history_],
                 "wait_s": waits, "backend": model.backend_, "threads": model.n_threads_,
                 "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20})


# --- the parent -----------------------------------------------------------------------------------

def parse_bytes(text):
    """'1GiB', '512MiB' or a number of bytes."""
    units = {"GiB": 2 ** 30, "MiB": 2 ** 20, "KiB": 2 ** 10}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * factor)
    return int(text)


def make_cgroup(name, limit):
    """A cgroup v1 memory cgroup of ``limit`` bytes; raises OSError where none can be made."""
    cgroup = CGROUP_ROOT / name
    cgroup.mkdir()
    (cgroup / "memory.limit_in_bytes").write_text(str(limit))
    return cgroup


def evict(directory):
    """Drop the files' pages from the page cache (clean pages that no process maps)."""
    for path in Path(directory).glob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class Child:
    """One run in a child process, talked to a line at a time."""

    def __init__(self, run, args, limit):
        self.run = run
        mode, _, path = run.partition("@")
        self.cgroup = None
        if mode == "stream":
            self.cgroup = make_cgroup(f"fastlr-bench-{os.getpid()}-{len(run)}-{id(self)}",
                                      limit)
        procs = None if self.cgroup is None else self.cgroup / "cgroup.procs"
        env = dict(os.environ)
        root = Path(path).resolve() if path else Path(__file__).resolve().parents[1]
        env["PYTHONPATH"] = str(root)
        self.process = subprocess.Popen(
            [sys.executable, __file__, "worker", str(args.directory), "--mode", mode,
             "--epochs", str(args.epochs), "--seed", str(args.seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root,
            preexec_fn=None if procs is None else (
                lambda: procs.write_text(str(os.getpid()))))

    def read(self, kind):
        line = self.process.stdout.readline()
        if not line.startswith(kind + " "):
            raise RuntimeError(f"{self.run}: expected {kind!r}, got {line!r}")
        return json.loads(line[len(kind) + 1:])

    def go(self):
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def close(self):
        self.process.wait()
        peak = None
        if self.cgroup is not None:
            peak = int((self.cgroup / "memory.max_usage_in_bytes").read_text()) / 2 ** 30
            self.cgroup.rmdir()
        return peak


def run(args):
    limit = parse_bytes(args.memory_limit)
    load_before = os.getloadavg()[0]
    children = [Child(name, args, limit) for name in args.runs.split(",")]
    try:
        sizes = [child.read("ready") for child in children]
        evict(args.directory)
        for _ in range(args.epochs):
            for child in children:
                child.go()
                child.read("epoch")
        results = {}
        for child in children:
            child.go()
            results[child.run] = child.read("done")
    finally:
        peaks = [child.close() for child in children]
    files = sum(path.stat().st_size for path in Path(args.directory).glob("*.npy"))
    report = {"directory": str(args.directory), "files_gib": files / 2 ** 30,
              "n_samples": sizes[0]["n_samples"], "classes": sizes[0]["classes"],
              "epochs": args.epochs, "memory_limit": args.memory_limit, "seed": args.seed,
              "load_average": [load_before, os.getloadavg()[0]], "runs": {}}
    for child, peak in zip(children, peaks):
        result = results[child.run]
        result["median_epoch_s"] = statistics.median(result["epoch_s"])
        if result["wait_s"]:
            result["median_wait_s"] = statistics.median(result["wait_s"])
        result["cgroup_peak_gib"] = peak
        report["runs"][child.run] = result
    base = report["runs"].get("memory")
    print(f"{report['n_samples']:,} training images, {report['classes']} class files "
          f"({files / 2 ** 30:.2f} GiB); load average {load_before:.1f} before, "
          f"{report['load_average'][1]:.1f} after")
    print("run                 test acc  epoch (median)  vs memory  waited for the stream  "
          "cgroup peak")
    for name, result in report["runs"].items():
        ratio = result["median_epoch_s"] / base["median_epoch_s"] if base else float("nan")
        wait = result.get("median_wait_s")
        wait = "" if wait is None else f"{wait:8.2f} s"
        peak = result["cgroup_peak_gib"]
        peak = "" if peak is None else f"{peak:.2f} GiB"
        print(f"{name:<19} {result['test_accuracy']:8.4f}  {result['median_epoch_s']:12.2f} s"
              f"  {ratio:8.3f}x  {wait:>21}  {peak:>11}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("write")
    make.add_argument("directory", type=Path)
    make.add_argument("--classes", type=int, default=345)
    make.add_argument("--rows-per-class", type=int, default=7500)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--pattern-scale", type=float, default=8.0)
    measure = commands.add_parser("run")
    measure.add_argument("directory", type=Path)
    measure.add_argument("--runs", default="memory,stream")
    measure.add_argument("--epochs", type=int, default=10)
    measure.add_argument("--memory-limit", default="1GiB")
    measure.add_argument("--seed", type=int, default=0)
    measure.add_argument("--json")
    child = commands.add_parser("worker")
    child.add_argument("directory", type=Path)
    child.add_argument("--mode", choices=("memory", "stream"))
    child.add_argument("--epochs", type=int)
    child.add_argument("--seed", type=int)
    args = parser.parse_args()
    if args.command == "write":
        start = time.perf_counter()
        size = write(args.directory, args.classes, args.rows_per_class, args.seed,
                     args.pattern_scale)
        print(f"{args.classes} class files, {size / 2 ** 30:.2f} GiB, in "
              f"{time.perf_counter() - start:.0f} s")
    elif args.command == "run":
        run(args)
    else:
        worker(args.directory, args.mode, args.epochs, args.seed)


if __name__ == "__main__":
    main()
