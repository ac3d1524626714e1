"""What reading one epoch of class files costs, by how the bytes are read, under a memory limit.

    python bench/read_paths.py DIR [--memory-limit 1GiB] [--repeats 2] [--json FILE]

DIR holds class files (``bench/class_files.py write``). One child process per way and repeat,
each in a cgroup v1 memory cgroup of ``--memory-limit`` (root only) whose page cache cannot
hold the files, reads the shuffle buffers of one epoch of ``fastlr.streaming.open_source(DIR)``
at its defaults into one buffer, with nothing else running in it, the files' pages evicted
first. Each way:

- ``mmap``: copied out of the files' memory maps (numpy slicing of ``np.load(mmap_mode="r")``);
- ``pread``: positioned reads (``os.preadv``) into the buffer, through the page cache;
- ``pread-drop``: the same, each read's pages dropped from the cache after it
  (``POSIX_FADV_DONTNEED``);
- ``direct``: ``O_DIRECT`` reads into an aligned staging area of 4 MiB, copied into place
  (:class:`fastlr.reading.RowFile` with ``bypass_cache``, as ``StreamingSource`` reads rows
  that cannot stay cached).

Prints each child's CPU time (user + system, from ``getrusage``) and wall time. A
measurement, not a test.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WAYS = ("mmap", "pread", "pread-drop", "direct")
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def read_epoch(directory, way):
    """Read one epoch's buffers ``way``; returns (CPU s, wall s)."""
    from fastlr import streaming
    source = streaming.open_source(directory)
    epoch = source.epoch_runs(np.random.default_rng(0))
    X = np.empty((source.buffer_size, source.n_features), dtype=np.uint8)
    images = [part for part, _ in source.parts]  # RowFiles: a path, an offset, a shape
    fds = [os.open(part.path, os.O_RDONLY) for part in images]
    maps = [np.memmap(part.path, np.uint8, "r", part.offset, part.shape) for part in images]
    for part in images:
        part.bypass_cache = True
    for fd in fds:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for runs in epoch:
        m = 0
        for part, first, stop in runs:
            rows = X[m:m + stop - first]
            position = images[part].offset + first * source.n_features
            if way == "mmap":
                rows[...] = maps[part][first:stop]
            elif way == "direct":
                images[part].read_into(first, stop, rows)
            else:
                view, done = memoryview(rows).cast("B"), 0
                while done < len(view):
                    done += os.preadv(fds[part], [view[done:]], position + done)
                if way == "pread-drop":
                    os.posix_fadvise(fds[part], position, len(view), os.POSIX_FADV_DONTNEED)
            m += stop - first
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--memory-limit", default="1GiB")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # in the child
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.way:
        print(json.dumps(read_epoch(args.directory, args.way)))
        return
    limit = int(float(args.memory_limit.removesuffix("GiB")) * 2 ** 30)
    cgroup = CGROUP_ROOT / f"fastlr-read-paths-{os.getpid()}"
    cgroup.mkdir()
    (cgroup / "memory.limit_in_bytes").write_text(str(limit))
    results = {way: [] for way in WAYS}
    root = Path(__file__).resolve().parents[1]
    try:
        for _ in range(args.repeats):
            for way in WAYS:
                done = subprocess.run(
                    [sys.executable, __file__, str(args.directory), "--way", way],
                    capture_output=True, text=True, check=True, cwd=root,
                    env=dict(os.environ, PYTHONPATH=str(root)),
                    preexec_fn=lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid())))
                results[way].append(json.loads(done.stdout))
    finally:
        cgroup.rmdir()
    print(f"one epoch of {args.directory} in a {args.memory_limit} memory cgroup:")
    print(f"{'way':<12} {'CPU (s)':>16} {'wall (s)':>16}")
    for way, runs in results.items():
        cpu = ", ".join(f"{c:.2f}" for c, _ in runs)
        wall = ", ".join(f"{w:.2f}" for _, w in runs)
        print(f"{way:<12} {cpu:>16} {wall:>16}")
    if args.json:
        Path(args.json).write_text(json.dumps({"directory": str(args.directory),
                                               "memory_limit": args.memory_limit,
                                               "cpu_wall_s": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
