"""How the benchmark measures: the machine's own ceiling (sgemm GFLOP/s, read GB/s) and how busy
the machine was while a row was timed (the CPU other processes took), so a figure can be read
as a fraction of what the hardware does, and a disturbed figure is timed again or marked.

Used by :mod:`fastlr.bench` (``python -m fastlr bench``) and the scripts in ``bench/``.
"""

import os
import statistics
import threading
import time

import numpy as np


def _blas_threads(n_threads):
    """A context manager limiting BLAS threads (a no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        from contextlib import nullcontext
        return nullcontext()
    return threadpool_limits(limits=n_threads, user_api="blas")


def _median_min_max(seconds):
    return statistics.median(seconds), min(seconds), max(seconds)


# --- the machine's ceiling -----------------------------------------------------------------------

def measure_sgemm_gflops(n_threads, size=2048, repeats=5):
    """GFLOP/s of a (size x size) float32 matrix product through NumPy's BLAS; median."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    out = np.empty_like(a)
    times = []
    with _blas_threads(n_threads):
        np.matmul(a, b, out=out)
        for _ in range(repeats):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            times.append(time.perf_counter() - start)
    return 2.0 * size ** 3 / statistics.median(times) / 1e9


def measure_read_gbps(n_threads, n_bytes=1 << 29, repeats=5):
    """Streaming read bandwidth in GB/s on ``n_threads`` threads: each sums its own contiguous
    slice of a float64 array much larger than the caches (NumPy releases the GIL in the sum),
    all starting together; median over ``repeats`` of the time until the last one is done.
    One core alone cannot keep enough reads in flight to reach what two get."""
    array = np.ones(n_bytes // 8)
    slices = np.array_split(array, n_threads)
    start_line = threading.Barrier(n_threads + 1)
    finish_line = threading.Barrier(n_threads + 1)

    def read_slice(part):
        for _ in range(repeats + 1):
            start_line.wait()
            part.sum()
            finish_line.wait()

    workers = [threading.Thread(target=read_slice, args=(part,)) for part in slices]
    for worker in workers:
        worker.start()
    times = []
    for _ in range(repeats + 1):  # the first pass faults the pages in and is not counted
        start_line.wait()
        start = time.perf_counter()
        finish_line.wait()
        times.append(time.perf_counter() - start)
    for worker in workers:
        worker.join()
    return n_bytes / statistics.median(times[1:]) / 1e9


# --- how busy the machine was --------------------------------------------------------------------

#: A timed row is disturbed when other processes took more than this share of the machine's
#: CPU time (all cores) while it ran, beyond what /proc/stat can resolve.
DISTURBED_SHARE = 0.05
#: How many more times a disturbed row is timed before it is kept, marked, as the quietest try.
RETRIES = 2


def _busy_seconds():
    """CPU seconds the whole machine has been busy since boot, summed over its cores: every
    column of /proc/stat's first line but idle and iowait (steal, the time a hypervisor gave
    to another machine, counts as busy: it was taken from us). None without /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(field) for field in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuWatch:
    """How much CPU other processes took while the ``with`` block ran.

    ``other_cpu`` is the machine's busy time (/proc/stat) minus this process's own CPU time
    (all its threads), over the block's wall time: in cores, 0 on a quiet machine, None where
    /proc/stat is missing. /proc/stat counts in clock ticks, so the figure is uncertain by
    ``resolution`` cores (two ticks on every core over the wall time); ``disturbed`` is True
    when it exceeds ``DISTURBED_SHARE`` of the cores by more than that."""

    def __enter__(self):
        self._wall = time.perf_counter()
        self._own = time.process_time()
        self._busy = _busy_seconds()
        return self

    def __exit__(self, *exc_info):
        wall = time.perf_counter() - self._wall
        own = time.process_time() - self._own
        busy = _busy_seconds()
        cores = os.cpu_count() or 1
        self.other_cpu = self.resolution = None
        self.disturbed = False
        if self._busy is not None and busy is not None and wall > 0:
            self.other_cpu = max(0.0, (busy - self._busy - own) / wall)
            self.resolution = 2 * cores / os.sysconf("SC_CLK_TCK") / wall
            self.disturbed = self.other_cpu - self.resolution > DISTURBED_SHARE * cores
        return False


#: settle(): how long one look at the process's CPU time lasts, the share of it that counts as
#: quiet, and how long to wait at most.
SETTLE_WINDOW = 0.01
SETTLE_QUIET_SHARE = 0.1
SETTLE_MAX_SECONDS = 2.0


def settle(max_seconds=SETTLE_MAX_SECONDS):
    """Wait until this process's other threads are idle: the calling thread sleeps in windows
    of SETTLE_WINDOW seconds until the process used less than SETTLE_QUIET_SHARE of a core in
    one, or for ``max_seconds`` at most. Returns the seconds waited.

    Why: a CpuWatch sees only other processes. OpenBLAS's worker threads busy-wait for a while
    after a multi-threaded call, even once BLAS is limited to one thread; after a two-thread
    NumPy row, the next engine's first epochs ran several times slower on a 2-core machine
    until they stopped, and the harness took it for the engine's own time
    (docs/journal/xeon-sapphire-rapids.md)."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_seconds:
        used = time.process_time()
        time.sleep(SETTLE_WINDOW)
        if time.process_time() - used < SETTLE_QUIET_SHARE * SETTLE_WINDOW:
            break
    return time.perf_counter() - start


def time_undisturbed(run_once, repeats, retries=RETRIES):
    """Call ``run_once`` (which returns the seconds it timed) ``repeats`` times under a
    CpuWatch, once this process's own leftover threads are idle (``settle``); while the watch
    says disturbed, do it all again, up to ``retries`` more times. Returns the times of the
    quietest attempt and a dict for its row: ``other_cpu`` (cores, see CpuWatch),
    ``disturbed`` and ``attempts``."""
    quietest = None
    for attempt in range(1, retries + 2):
        settle()
        with CpuWatch() as watch:
            seconds = [run_once() for _ in range(repeats)]
        if quietest is None or (watch.other_cpu or 0.0) < (quietest[1].other_cpu or 0.0):
            quietest = (seconds, watch)
        if not watch.disturbed:
            break
    seconds, watch = quietest
    return seconds, {"other_cpu": watch.other_cpu, "disturbed": watch.disturbed,
                     "attempts": attempt}
