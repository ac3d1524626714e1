"""How many threads train, and when they step aside: threads that help on an idle machine and
never make a run slower than one thread on a busy one.

Shapes: B batch, C classes, D features, T threads, K chunks of a batch.

The bits do not depend on the threads. The engine cuts every batch into K chunks,
:func:`chunks_per_batch`, fixed by the batch size and the shape but never by T or the
machine; each chunk's partial gradient has its own buffer and the K partials are summed in a
fixed order (``fastlr/backends/contract.py``). So one thread, two, or two that become one in
the middle of an epoch all give the same model, and a model is reproducible on machines with
any number of cores. Up to a batch of 1,535 samples K = 2: the chunks and the sum of the two
threads of a two-core machine, whose bits (and speed) the defaults, batch 64, and the batches
the benchmarks time always had. So two threads is also the most a batch that size can use,
whatever the machine.

The threads adapt, because the kernels' T threads meet twice per step: when another process
takes a core, a thread that is not running stalls every meeting for a time slice, and the
other burns its own core spinning, so two threads beside a busy process take longer than
one (``bench/busy_machine.py``). :class:`ThreadPlan` decides, once, for both compiled
backends:

- a count asked for (``n_threads``, ``--threads N``) is kept as it is, whatever happens;
- otherwise each epoch starts on the cores that no other process keeps busy, at least one:
  looks at the run queue as epochs start (:func:`busy_cores`), at least ``LOOK_SECONDS``
  apart so that a run of tiny epochs pays for few, and a process counts when the last
  ``LOOKS`` looks all saw it (one that runs now and then does not; one that starts in the
  middle of a run is met by the next point);
- the kernels count the long waits of their meetings (a thread that waited so long that it
  yielded its core); after ``PATIENCE`` of them within ``PATIENCE_STEPS`` steps the threads
  stop at the end of the step, and the epoch goes on, from that step, on one thread fewer,
  with the same bits;
- after such a fall the plan tries more threads again only after 2, 4, 8, ... epochs, so a
  machine that stays busy costs a few long waits now and then, and one that quiets is used
  again.

Every change is recorded (:attr:`ThreadPlan.changes`) with its reason, for ``train``'s
summary and the model file.
"""

import os
import time

#: The samples of a chunk beyond the first two chunks. Large: on AMX the weights are packed
#: for the tiles once per chunk, and a chunk below ``TUNING.amx_min_chunk`` samples leaves
#: the tiles; every extra chunk is also one more partial for one thread to sum.
CHUNK_SAMPLES = 512
#: The most chunks of a batch, so the most threads that share one.
MAX_CHUNKS = 16
#: The bytes the K partial gradients may take, beyond two of them.
PARTS_BYTES = 32 << 20
#: Long waits the threads may see in PATIENCE_STEPS steps before they stop and the epoch goes
#: on with one fewer.
PATIENCE = 4
PATIENCE_STEPS = 1024
#: The looks at the run queue that must all see other processes' threads before an epoch
#: starts on fewer threads (at the first epoch, its own look), and the seconds between two.
LOOKS = 3
LOOK_SECONDS = 0.05


def chunks_per_batch(batch_size, n_classes, n_features, itemsize):
    """K, the chunks every batch of ``batch_size`` samples is cut into: two (two threads pay
    from the smallest batches on), or one per ``CHUNK_SAMPLES`` samples where that is more,
    at most ``MAX_CHUNKS`` and no more than fit in ``PARTS_BYTES`` of (C, D) partial
    gradients of ``itemsize`` bytes; one for a batch of one sample. It depends on these four
    numbers alone, never on the thread count or the machine, so neither changes a model's
    bits."""
    partial_bytes = n_classes * n_features * itemsize
    by_bytes = max(2, PARTS_BYTES // max(partial_bytes, 1))
    by_samples = max(2, batch_size // CHUNK_SAMPLES)
    return max(1, min(batch_size, by_samples, MAX_CHUNKS, by_bytes))


def _running_threads(path):
    """The threads in state R (running or ready to run) of the process whose ``task``
    directory is ``path``."""
    running = 0
    try:
        tasks = os.listdir(path)
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"{path}/{task}/stat", "rb") as stat:
                fields = stat.read()
        except OSError:  # the thread ended meanwhile
            continue
        # The state follows the command name, in parentheses that may themselves hold any byte.
        if fields[fields.rindex(b")") + 2:fields.rindex(b")") + 3] == b"R":
            running += 1
    return running


def busy_cores(samples=3):
    """How many threads of other processes are running or ready to run: the system's run
    queue (``/proc/loadavg``) less this process's own running threads, the fewest of
    ``samples`` looks (a process that only started a command for a moment counts in one look,
    a busy one in all). 0 where ``/proc`` cannot tell (not Linux). An idle machine takes one
    read of ``/proc/loadavg``: a queue of one is the thread that reads it."""
    fewest = None
    for _ in range(samples):
        try:
            with open("/proc/loadavg", "rb") as load:
                queued = int(load.read().split()[3].split(b"/")[0])
        except (OSError, ValueError, IndexError):
            return 0
        others = max(0, queued - (1 if queued <= 1 else _running_threads("/proc/self/task")))
        fewest = others if fewest is None else min(fewest, others)
        if fewest == 0:
            break
    return fewest


class ThreadPlan:
    """The thread count of every epoch of a run, and of every stretch of an epoch.

    Parameters
    ----------
    most : int, the most threads: the cores this process may use, or the count asked for
    adapt : bool, whether to run fewer when other processes take cores (False: always
        ``most``, for a count the user asked for)
    probe : callable() -> int, optional; the threads of other processes that are running
        (default :func:`busy_cores`)

    Attributes
    ----------
    changes : list of dict
        One record per change, the first the start: ``epoch`` (1-based, as the history
        counts), ``step`` (0-based, within the epoch), ``threads`` and ``reason`` (None at a
        start on ``most`` threads).
    """

    def __init__(self, most, adapt, probe=None):
        self.most = max(1, int(most))
        self.adapt = bool(adapt)
        self.probe = probe
        self.changes = []
        self.threads = None
        self._falls = 0
        self._next_try = 0
        self._looks = []
        self._looked = None

    @property
    def used(self):
        """The most threads any step ran on (None before the first epoch)."""
        return max((change["threads"] for change in self.changes), default=None)

    def start_epoch(self, epoch, chunks):
        """The threads epoch ``epoch`` (0-based over the run) starts on, for batches of
        ``chunks`` chunks."""
        most = min(self.most, chunks)
        threads = most
        reason = (f"a batch is {chunks} chunk{'s' if chunks > 1 else ''} of samples"
                  if most < self.most else None)
        if self.adapt and most > 1:
            now = time.monotonic()
            if self._looked is None or now - self._looked >= LOOK_SECONDS:
                self._looks = (self._looks + [self._busy()])[-LOOKS:]
                self._looked = now
            busy = min(self._looks)
            threads = max(1, min(most, self.most - busy))
            if threads < most:
                reason = (f"other processes had {busy} thread{'s' if busy > 1 else ''} "
                          f"running")
            if epoch < self._next_try and self.threads is not None and self.threads < threads:
                threads = self.threads
                reason = "another process took a core"
        if threads != self.threads:
            if self.threads is not None and threads > self.threads:
                reason = "the cores were idle again"
            self._record(epoch, 0, threads, reason)
        return threads

    def patience(self):
        """The long waits the current threads may see before they stop (0: never)."""
        return PATIENCE if self.adapt and self.threads > 1 else 0

    def stopped(self, epoch, step):
        """The threads stopped after step ``step`` of epoch ``epoch`` (0-based): the threads
        the epoch goes on with, one fewer than before or fewer still if other processes are
        running, and the next try at more threads 2, 4, 8, ... epochs on."""
        threads = max(1, min(self.threads - 1, self.most - self._busy()))
        self._falls += 1
        self._next_try = epoch + 1 + 2 ** self._falls
        self._record(epoch, step, threads, "another process took a core")
        return threads

    def _busy(self):
        return (self.probe or busy_cores)()

    def _record(self, epoch, step, threads, reason):
        self.threads = threads
        self.changes.append({"epoch": epoch + 1, "step": int(step), "threads": int(threads),
                             "reason": reason})


def describe_changes(changes):
    """The threads of a run in words, from its :attr:`ThreadPlan.changes` records (or a model
    file's), e.g. ``2 threads, 1 from epoch 3 (step 412): another process took a core``; ""
    for no records."""
    if not changes:
        return ""
    first = changes[0]
    text = f"{first['threads']} thread{'s' if first['threads'] != 1 else ''}"
    if first["reason"]:
        text += f" ({first['reason']})"
    for change in changes[1:]:
        where = f"epoch {change['epoch']}"
        if change["step"]:
            where += f" (step {change['step']})"
        text += f", {change['threads']} from {where}: {change['reason']}"
    return text
