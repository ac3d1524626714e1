"""Threads that help or step aside (``fastlr/threads.py``): the chunks of a batch fix the bits
whatever the thread count, an epoch that loses a thread goes on with the same bits, the plan
falls back and tries again as it says, and training beside busy processes finishes with the
same model. No timing: what is asserted holds on any machine."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, make_problem, run_cli, write_small_dataset
from fastlr import sgd, threads
from fastlr.backends import available_backends, get_backend, reference
from fastlr.backends.contract import SGDState, Samples, Steps, make_threads
from fastlr.threads import ThreadPlan, chunks_per_batch, describe_changes

COMPILED = [name for name in available_backends() if name != "numpy"]


def _epochs(backend, X, y, sw, W, b, perms, batch_size, n_threads, chunks, momentum=0.9):
    """W, b after len(perms) epochs on T = n_threads threads and K = chunks chunks."""
    W, b = W.copy(), b.copy()
    state = SGDState(W, b, np.zeros_like(W), np.zeros_like(b))
    record = make_threads(n_threads, *W.shape, W.dtype, chunks)
    steps = -(-len(perms[0]) // batch_size)
    for epoch, perm in enumerate(perms):
        rates = sgd.Schedule("linear", 0.3, len(perms)).rates(epoch, steps)
        backend.sgd_epoch(Samples(X, y, sw), state,
                          Steps(perm, rates, batch_size, momentum, 1e-4), record)
        assert record.seen[0] == steps  # every step: patience 0 never stops
    return W, b


@pytest.mark.parametrize("backend_name", COMPILED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
@pytest.mark.parametrize("batch_size,chunks", [(64, 2), (100, 3), (37, 5), (300, 1)])
def test_the_chunks_not_the_threads_fix_the_bits(backend_name, dtype, batch_size, chunks):
    """Any T, fewer or more threads than chunks, gives bitwise the same model: chunk j's
    partial has its own buffer and the K are summed in order, whoever computed them. A
    batch size that the chunks do not divide, and a last batch that is short."""
    backend = get_backend(backend_name)
    rng = np.random.default_rng(41)
    floats = np.float32 if dtype == np.uint8 else dtype
    X, y, sw, W, b = make_problem(rng, 523, 784, 10, floats, weighted=True)
    if dtype == np.uint8:
        X = rng.integers(0, 256, size=X.shape).astype(np.uint8)
    perms = [rng.permutation(523).astype(np.int64) for _ in range(2)]
    runs = [_epochs(backend, X, y, sw, W, b, perms, batch_size, n_threads, chunks)
            for n_threads in (1, 2, 3)]
    for W_run, b_run in runs[1:]:
        assert W_run.tobytes() == runs[0][0].tobytes()
        assert b_run.tobytes() == runs[0][1].tobytes()


@pytest.mark.parametrize("backend_name", COMPILED)
def test_loss_and_grad_shares_the_chunks_the_same_way(backend_name):
    backend = get_backend(backend_name)
    rng = np.random.default_rng(43)
    X, y, sw, W, b = make_problem(rng, 150, 784, 10, np.float32, weighted=True)
    results = []
    for n_threads in (1, 2, 4):
        grad_W, grad_b = np.full_like(W, np.nan), np.full_like(b, np.nan)
        loss = backend.loss_and_grad(Samples(X, y, sw), W, b, grad_W, grad_b,
                                     make_threads(n_threads, 10, 784, np.float32, 4))
        results.append((loss, grad_W.tobytes(), grad_b.tobytes()))
    assert results[0] == results[1] == results[2]


def test_the_defaults_cut_a_batch_of_64_in_two_and_nothing_depends_on_the_machine():
    """K = 2 up to a batch of 1,535 keeps the bits the defaults had on two threads; then K
    grows with the batch, chunks of CHUNK_SAMPLES, up to MAX_CHUNKS, and shrinks when the
    partials would pass PARTS_BYTES (not below 2); a batch of one sample is one chunk."""
    assert chunks_per_batch(64, 10, 784, 4) == 2
    assert chunks_per_batch(2, 10, 784, 4) == chunks_per_batch(1535, 10, 784, 8) == 2
    assert chunks_per_batch(1, 10, 784, 8) == 1
    assert chunks_per_batch(4096, 10, 784, 4) == 8
    assert chunks_per_batch(1 << 20, 10, 784, 4) == threads.MAX_CHUNKS
    huge = threads.PARTS_BYTES // 3  # bytes of one partial
    assert chunks_per_batch(1 << 20, 1, huge, 1) == 3
    assert chunks_per_batch(1 << 20, 1, 4 * threads.PARTS_BYTES, 1) == 2


class _StopsEvery:
    """A backend whose threads stop after every ``every`` steps, as the kernels' do after
    long waits: the reference on the first steps, ``seen`` saying how many ran."""

    name = "stops-every"
    takes_pixels = False

    def __init__(self, every):
        self.every = every
        self.calls = []

    def sgd_epoch(self, samples, state, steps, record):
        n = len(steps.perm)
        if record.patience > 0:  # only threads that may stop do
            n = min(self.every * steps.batch_size, n)
        self.calls.append((record.n_threads, -(-len(steps.perm) // steps.batch_size)))
        return reference.sgd_epoch(samples, state, steps._replace(
            perm=steps.perm[:n], lr_steps=steps.lr_steps[:-(-n // steps.batch_size)]), record)


def _train(backend, X, y, plan, epochs=2, batch_size=2048):
    state = sgd.TrainingState.zeros(3, X.shape[1], X.dtype, np.random.default_rng(3))
    state.threads = plan
    source = sgd.ArraySource(backend, X, y, np.ones(len(y), X.dtype), state.W, state.b)
    settings = sgd.StepSettings(batch_size, 0.9, 1e-3, plan.most, plan.adapt)
    sgd.train(backend, source, state, sgd.Schedule("linear", 0.5, epochs), settings,
              epochs=epochs)
    return state


def test_an_epoch_that_loses_a_thread_goes_on_from_the_next_step_with_the_same_bits():
    """The engine goes on from the step where the threads stopped, with the next rates, on
    the threads the plan gives: the model is the uninterrupted one, bit for bit."""
    rng = np.random.default_rng(7)
    X, y = rng.random((16240, 12)), rng.integers(0, 3, 16240)
    whole = _train(reference, X, y, ThreadPlan(1, False))
    stopping = _StopsEvery(3)
    state = _train(stopping, X, y, ThreadPlan(3, True, probe=lambda: 0))
    assert state.W.tobytes() == whole.W.tobytes() and state.b.tobytes() == whole.b.tobytes()
    # 8 steps of 4 chunks an epoch: 3 on three threads, 3 on two, then one thread to the end;
    # the plan waits before it tries more threads again, so the second epoch runs on one.
    assert [call[0] for call in stopping.calls] == [3, 2, 1, 1]
    assert [change["threads"] for change in state.threads.changes] == [3, 2, 1]
    assert [(c["epoch"], c["step"]) for c in state.threads.changes] == [(1, 0), (1, 3), (1, 6)]
    assert [record["threads"] for record in state.history] == [1, 1]


def test_threads_that_may_stop_count_their_waits_over_a_bounded_stretch(monkeypatch):
    """The kernel counts long waits per call: threads that may stop get at most
    PATIENCE_STEPS steps a call, so rare waits of a long epoch never add up to a fall."""
    monkeypatch.setattr(sgd, "PATIENCE_STEPS", 5)
    rng = np.random.default_rng(7)
    X, y = rng.random((16240, 12)), rng.integers(0, 3, 16240)
    whole = _train(reference, X, y, ThreadPlan(1, False))
    steady = _StopsEvery(10 ** 9)
    state = _train(steady, X, y, ThreadPlan(2, True, probe=lambda: 0))
    assert steady.calls == [(2, 5), (2, 3)] * 2
    assert state.W.tobytes() == whole.W.tobytes()
    forced = _StopsEvery(10 ** 9)
    _train(forced, X, y, ThreadPlan(2, False))
    assert forced.calls == [(2, 8)] * 2  # threads that never stop take the epoch whole


def test_a_kernel_that_misreports_its_steps_is_an_error_not_a_hang():
    class Liar(_StopsEvery):
        def sgd_epoch(self, samples, state, steps, record):
            super().sgd_epoch(samples, state, steps, record)
            record.seen[0] = 0
            return 0.0, 0.0

    rng = np.random.default_rng(7)
    X, y = rng.random((5000, 4)), rng.integers(0, 3, 5000)
    with pytest.raises(RuntimeError, match="ran 0 of"):
        _train(Liar(2), X, y, ThreadPlan(2, True, probe=lambda: 0))


def test_the_plan_starts_on_the_idle_cores_falls_back_and_tries_again_later(monkeypatch):
    monkeypatch.setattr(threads, "LOOK_SECONDS", 0)  # a look at every epoch
    busy = [1]
    plan = ThreadPlan(4, True, probe=lambda: busy[0])
    assert plan.start_epoch(0, chunks=8) == 3  # one core taken
    assert plan.patience() == threads.PATIENCE
    busy[0] = 0
    assert plan.stopped(0, 100) == 2  # one fewer, though the probe sees nothing
    assert plan.start_epoch(1, 8) == 2 and plan.start_epoch(2, 8) == 2  # waits 2 epochs
    assert plan.start_epoch(3, 8) == 4  # tries again: the cores are idle
    assert plan.stopped(3, 5) == 3
    assert [plan.start_epoch(e, 8) for e in range(4, 9)] == [3, 3, 3, 3, 4]  # then 4 epochs
    assert plan.start_epoch(9, chunks=2) == 2  # never more threads than chunks
    assert plan.used == 4
    reasons = [change["reason"] for change in plan.changes]
    assert reasons[0] == "other processes had 1 thread running"
    assert reasons[1] == "another process took a core"
    assert reasons[2] == "the cores were idle again"
    one = ThreadPlan(2, True, probe=lambda: 5)
    assert one.start_epoch(0, 2) == 1 and one.patience() == 0  # nobody to wait for


def test_a_process_counts_when_every_recent_look_sees_it(monkeypatch):
    """A process seen now and then (by the looks at the run queue as epochs start) takes no
    thread away; one the last LOOKS looks all saw does. Epochs that follow each other
    within LOOK_SECONDS share a look."""
    monkeypatch.setattr(threads, "LOOK_SECONDS", 0)
    looks = iter([1, 0, 1, 1, 1, 0])
    plan = ThreadPlan(2, True, probe=lambda: next(looks))
    assert [plan.start_epoch(epoch, 2) for epoch in range(6)] == [1, 2, 2, 2, 1, 2]
    monkeypatch.setattr(threads, "LOOK_SECONDS", 3600)
    calls = []
    plan = ThreadPlan(2, True, probe=lambda: calls.append(1) or 1)
    assert [plan.start_epoch(epoch, 2) for epoch in range(50)] == [1] * 50
    assert len(calls) == 1


def test_a_thread_count_asked_for_is_kept_whatever_runs():
    plan = ThreadPlan(2, False, probe=lambda: pytest.fail("a forced count probes nothing"))
    assert plan.start_epoch(0, 8) == 2 and plan.patience() == 0
    assert plan.start_epoch(5, 8) == 2
    assert plan.start_epoch(6, 1) == 1  # a batch of one chunk runs on one thread
    assert plan.changes[-1]["reason"] == "a batch is 1 chunk of samples"


def test_the_changes_in_words():
    assert describe_changes([]) == ""
    assert describe_changes([{"epoch": 1, "step": 0, "threads": 2, "reason": None}]) == "2 threads"
    assert describe_changes([
        {"epoch": 1, "step": 0, "threads": 2, "reason": None},
        {"epoch": 3, "step": 412, "threads": 1, "reason": "another process took a core"},
    ]) == "2 threads, 1 from epoch 3 (step 412): another process took a core"


def test_busy_cores_reads_this_machine_and_never_counts_this_process():
    assert threads.busy_cores() >= 0
    if sys.platform.startswith("linux"):
        assert threads._running_threads("/proc/self/task") >= 1  # this thread, reading


# --- in other processes: one core for two threads, and busy neighbours --------------------

PINNED = """
import hashlib, json, os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import numpy as np
from fastlr import sgd
from fastlr.backends import get_backend
from fastlr.pixels import Pixels
from fastlr.threads import ThreadPlan

backend = get_backend(sys.argv[1])
rng = np.random.default_rng(5)
X = Pixels(rng.integers(0, 256, (4000, 784)).astype(np.uint8))
y = rng.integers(0, 10, 4000)
out = {}
for name, plan in (("adapted", ThreadPlan(2, True, probe=lambda: 0)),
                   ("one", ThreadPlan(1, False))):
    state = sgd.TrainingState.zeros(10, 784, np.float32, np.random.default_rng(0))
    state.threads = plan
    source = sgd.ArraySource(backend, X, y, np.ones(4000, np.float32), state.W, state.b)
    sgd.train(backend, source, state, sgd.Schedule("linear", 0.5, 2),
              sgd.StepSettings(64, 0.9, 1e-4, plan.most, plan.adapt), epochs=2)
    out[name] = {"bits": hashlib.sha256(state.W.tobytes() + state.b.tobytes()).hexdigest(),
                 "changes": plan.changes}
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend_name", COMPILED)
def test_two_threads_on_one_core_fall_back_to_one_with_the_same_bits(backend_name):
    """Pinned to one CPU, two threads cannot run at once: every meeting waits for a thread
    that is not running, so the kernel's threads stop after PATIENCE long waits and the epoch
    goes on on one thread; the model is the one-thread model, and nothing hangs."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no sched_setaffinity here")
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS="2", OMP_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-c", PINNED, backend_name], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["adapted"]["bits"] == out["one"]["bits"]
    changes = out["adapted"]["changes"]
    assert changes[0] == {"epoch": 1, "step": 0, "threads": 2, "reason": None}
    assert changes[1]["threads"] == 1 and changes[1]["reason"] == "another process took a core"
    assert changes[1]["epoch"] == 1 and 1 <= changes[1]["step"] < 63  # 63 steps an epoch


BUSY_NEIGHBOURS = """
import hashlib, json, sys
import numpy as np
from fastlr import SoftmaxRegression, load_mnist
from fastlr.pixels import Pixels
X, y, _, _ = load_mnist(dtype=np.uint8)
X = Pixels(X.reshape(len(X), -1)[:6000]); y = y[:6000]
out = {}
for n_threads in (None, 1, 2):
    model = SoftmaxRegression(backend=sys.argv[1], n_threads=n_threads, epochs=2).fit(X, y)
    out[str(n_threads)] = {
        "bits": hashlib.sha256(model.coef_.tobytes() + model.intercept_.tobytes()).hexdigest(),
        "threads": model.n_threads_, "changes": model.thread_changes_}
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend_name", COMPILED)
def test_beside_busy_processes_every_thread_count_trains_the_same_model(backend_name):
    """With as many busy processes as cores beside it, training finishes (a timeout, no
    hang) and the default, one thread and two threads give the same bits."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 1)]
    try:
        done = subprocess.run([sys.executable, "-c", BUSY_NEIGHBOURS, backend_name],
                              capture_output=True, text=True, cwd=ROOT, timeout=900,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["None"]["bits"] == out["1"]["bits"] == out["2"]["bits"]
    assert out["1"]["changes"] == [{"epoch": 1, "step": 0, "threads": 1, "reason": None}]
    assert 1 <= out["None"]["threads"] <= out["2"]["threads"]


def test_train_says_how_many_threads_and_why_and_the_model_file_keeps_it(tmp_path,
                                                                          monkeypatch, capsys):
    """With another process running (the probe says so) on a two-core machine, ``train``'s
    summary says the run took one thread and why; the model file records it. ``--threads``
    is kept and needs no reason."""
    from fastlr import SoftmaxRegression
    from fastlr.backends import default_n_threads
    from fastlr.cli import main
    write_small_dataset(tmp_path / "data", n_train=200, side=8)
    monkeypatch.setattr(threads, "busy_cores", lambda samples=3: 1)
    out = tmp_path / "m.npz"
    assert main(["train", "--epochs", "2", "--no-progress", "--data-dir",
                 str(tmp_path / "data"), "--out", str(out)]) == 0
    backend_line = [line for line in capsys.readouterr().out.splitlines()
                    if line.startswith("  backend ")][0]
    model = SoftmaxRegression.load(out)
    expected = max(1, min(2, default_n_threads() - 1))  # a batch of 64 is two chunks
    assert model.n_threads_ == expected == model.thread_changes_[0]["threads"]
    if default_n_threads() == 2:
        why = "1 thread (other processes had 1 thread running)"
        assert backend_line.endswith(why), backend_line
        assert model.thread_changes_[0]["reason"] == why[10:-1]
    result = run_cli("train", "--epochs", "1", "--no-progress", "--threads", "1",
                     "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    assert ", 1 thread\n" in result.stdout


def test_a_model_file_keeps_well_formed_thread_records_and_drops_others():
    from fastlr.model_file import _thread_changes
    good = [{"epoch": 1, "step": 0, "threads": 2, "reason": None},
            {"epoch": 2, "step": 17, "threads": 1, "reason": "another process took a core"}]
    assert _thread_changes(good) == good
    for bad in (None, "2", [{"epoch": 0, "step": 0, "threads": 2, "reason": None}],
                [{"epoch": 1, "step": -1, "threads": 2, "reason": None}],
                [{"epoch": 1, "step": 0, "threads": True, "reason": None}],
                [{"epoch": 1, "step": 0, "threads": 2, "reason": 3}]):
        assert _thread_changes(bad) is None
