"""The benchmark harness behind ``python -m fastlr bench``.

One run measures, side by side on the same MNIST arrays:

- every fastlr backend (and, with ``--kernels all``, every version of the Numba kernel ladder),
  one full epoch of minibatch SGD over the 60,000 training images, per batch size and thread
  count;
- the peers, when installed: a plain PyTorch CPU loop (``nn.Linear`` + ``cross_entropy`` +
  ``torch.optim.SGD`` over the same minibatches), one epoch of scikit-learn's ``SGDClassifier``
  and scikit-learn's ``LogisticRegression`` (lbfgs);
- the machine's ceiling: large-sgemm GFLOP/s through NumPy's BLAS and the streaming read
  bandwidth, each at every thread count timed.

Before a number is printed for an SGD engine, its epoch is checked against the reference
(float64) on the benchmark's own data, permutation and learning rates; an engine that disagrees
gets an error row and no number. The first call (which includes Numba's compilation or cache
load) is not timed; its extra time is reported as ``compile_s``. Times are medians over
``--repeats`` runs, with min and max; ratios are against NumPy at the same batch size and
thread count, measured in the same run.

A benchmark on a busy machine does not lie quietly: while each row is timed, the harness
measures how much CPU other processes took (the machine's busy time in /proc/stat minus this
process's own CPU time, in cores: the ``others`` column). A row during which they took more
than 5% of the machine is timed again, up to ``--retries`` times; the quietest try is kept,
and marked ``!`` if it was still disturbed.

One epoch is ``4 N D C`` floating-point operations (the forward scores and the weight gradient,
a multiply and an add each), 1.88 GFLOP for MNIST. ``of peak`` is the achieved GFLOP/s over the
sgemm GFLOP/s at the same thread count.

Example: a ``python -m fastlr bench --quick --retries 1`` run on one of the project's 2-core
Intel Xeon (Sapphire Rapids) machines while a test suite ran beside it: every row was
disturbed twice and is marked (a full run is in the README and docs/bench.json)::

    machine   Intel(R) Xeon(R) Processor, 2 cores
    versions  fastlr 0.1.0, python 3.11.7, numpy 2.4.6, numba 0.68.1, cython 3.3.1, scikit-learn 1.9.1
    blas      openblas 0.3.30 (2 threads); openblas 0.3.31.188.0 (2 threads)
    numba     threading layer omp
    ceiling   sgemm 107 GFLOP/s on 2 threads
              memory read 11.0 GB/s on 2 threads
    one epoch = 4*N*D*C = 1.88 GFLOP

    engine                 batch thr   ms/epoch [min - max]       samples/s  GFLOP/s vs numpy of peak compile s  others
    -------------------------------------------------------------------------------------------------------------------
    numpy                     64   2      184.9 [183.7 - 185.2]     324,551     10.2    1.00x      9%      0.05   1.50!
    numba                     64   2      270.0 [151.7 - 453.3]     222,184      7.0    0.68x      6%      6.82   1.33!
    cython                    64   2      501.6 [453.0 - 676.4]     119,607      3.8    0.37x      3%      0.00   0.95!
    numpy                   1024   2      182.2 [157.5 - 316.6]     329,280     10.3    1.00x     10%      0.15   0.67!
    numba                   1024   2       38.3 [37.3 - 40.1]     1,568,134     49.2    4.76x     46%      0.20   0.50!
    cython                  1024   2      183.3 [137.4 - 395.9]     327,306     10.3    0.99x     10%      0.10   0.93!
    note: 6 of 6 rows (marked !) were disturbed: other processes took more than 5% of the machine's CPU while they ran, in each of 2 tries; their times are not those of a quiet machine
"""

import importlib.util
import statistics
import time
import warnings
from types import SimpleNamespace

import numpy as np

from .backends import available_backends, get_backend, reference, unavailable_reasons
from .backends.check import TRAJECTORY_TOLERANCE, epoch_error, run_epoch
from .data import load_mnist
from .machine import machine_info
from .measure import (DISTURBED_SHARE, RETRIES, _blas_threads, _median_min_max,
                      measure_read_gbps, measure_sgemm_gflops, settle, time_undisturbed)
from .backends.contract import SGDState, Samples, Steps, make_threads
from .sgd import Schedule

FASTLR_BACKENDS = ("numpy", "numba", "cython")
PEERS = ("torch", "sklearn")
DEFAULT_BACKENDS = FASTLR_BACKENDS + PEERS
TARGET_ACCURACY = 0.92
LEARNING_RATE = 1.0
EPOCHS_OF_SCHEDULE = 10


def flops_per_epoch(n, d, c):
    """Forward scores and weight gradient: two (n x d x c) multiply-adds."""
    return 4.0 * n * d * c


# --- one SGD engine, checked then timed -------------------------------------------------------

def _error_row(engine, batch_size, threads, message):
    return {"backend": engine, "batch_size": batch_size, "threads": threads,
            "ms_per_epoch": None, "ms_min": None, "ms_max": None, "samples_per_s": None,
            "gflops": None, "speedup_vs_numpy": None, "fraction_of_peak": None,
            "compile_s": None, "validated": False, "error": message, "other_cpu": None,
            "disturbed": False, "attempts": 0}


def _timed_row(engine, batch_size, threads, seconds, load, first_call_s, n, flops,
               validated=True, **extra):
    """A result row from the timed ``seconds`` and the ``load`` time_undisturbed saw."""
    median, fastest, slowest = _median_min_max(seconds)
    row = {"backend": engine, "batch_size": batch_size, "threads": threads,
           "ms_per_epoch": median * 1e3, "ms_min": fastest * 1e3, "ms_max": slowest * 1e3,
           "samples_per_s": n / median, "gflops": flops / median / 1e9,
           "speedup_vs_numpy": None, "fraction_of_peak": None,
           "compile_s": max(0.0, first_call_s - median) if first_call_s is not None else None,
           "validated": validated, "error": None}
    row.update(load)
    row.update(extra)
    return row


def bench_sgd_engine(engine, backend, data, batch_size, threads, repeats, expected, epochs=1,
                     retries=RETRIES):
    """Check one kernel-contract engine against the reference result ``expected``, then time
    ``repeats`` runs of ``epochs`` epochs each (again if other processes disturbed them, see
    time_undisturbed). Returns a result row (times per epoch)."""
    X, y, perm, lr_steps, W0, b0 = (data[k] for k in ("X", "y", "perm", "lr_steps", "W0", "b0"))
    if getattr(backend, "pixels", False):
        X = data["X_pixels"]
    n, d = X.shape
    c = W0.shape[0]
    # Only the NumPy engine calls BLAS. For the others BLAS gets one thread: OpenBLAS workers
    # left over from an earlier multi-threaded call busy-wait, and on a 2-core machine they
    # take a core from the engine's own threads.
    with _blas_threads(threads if backend.name == "numpy" else 1):
        settle()  # the first call's time counts toward compile s: no leftover BLAS spinning
        start = time.perf_counter()
        try:
            result = run_epoch(backend, X, y, W0, b0, perm, lr_steps, batch_size, threads,
                               W0.dtype)
        except Exception as exc:  # a broken engine gets an error row, the run goes on
            return _error_row(engine, batch_size, threads, f"failed: {exc}")
        first_call = time.perf_counter() - start
        error = epoch_error(result, expected)
        tolerance = TRAJECTORY_TOLERANCE[W0.dtype]
        if not error <= tolerance:
            return _error_row(engine, batch_size, threads,
                              f"disagrees with the reference: error {error:.2g} > {tolerance:g}")
        samples = Samples(X, y, np.ones(n, dtype=W0.dtype))
        steps = Steps(perm, lr_steps, batch_size, 0.0, 0.0)
        thread_parts = make_threads(threads, c, d, W0.dtype)

        def run_once():
            W, b = W0.copy(), b0.copy()
            state = SGDState(W, b, np.zeros_like(W), np.zeros_like(b))
            start = time.perf_counter()
            for _ in range(epochs):
                backend.sgd_epoch(samples, state, steps, thread_parts)
            return (time.perf_counter() - start) / epochs

        seconds, load = time_undisturbed(run_once, repeats, retries)
    return _timed_row(engine, batch_size, threads, seconds, load, first_call, n,
                      flops_per_epoch(n, d, c), validation_error=error)


# --- peers ---------------------------------------------------------------------------------------

class TorchLoop:
    """A plain PyTorch CPU training loop: nn.Linear, cross_entropy, torch.optim.SGD, with the
    learning rate set at every step from the same schedule as fastlr's."""

    def __init__(self, data):
        import torch
        self.torch = torch
        self.X = torch.from_numpy(data["X"])
        self.y = torch.from_numpy(data["y"])

    def new_model(self, W0, b0):
        torch = self.torch
        model = torch.nn.Linear(W0.shape[1], W0.shape[0])
        with torch.no_grad():
            model.weight.copy_(torch.from_numpy(W0))
            model.bias.copy_(torch.from_numpy(b0))
        return model, torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)

    def run_epoch(self, model, optimizer, perm, lr_steps, batch_size):
        """One epoch over ``perm``; returns the sum of the per-sample losses."""
        functional = self.torch.nn.functional
        perm = self.torch.from_numpy(perm)
        loss_sum = 0.0
        for step, start in enumerate(range(0, len(perm), batch_size)):
            idx = perm[start:start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = float(lr_steps[step])
            optimizer.zero_grad(set_to_none=True)
            loss = functional.cross_entropy(model(self.X[idx]), self.y[idx])
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
        return loss_sum


def bench_torch(loop, data, batch_size, threads, repeats, expected, epochs=1,
                retries=RETRIES):
    """Check the PyTorch loop against the reference like a backend (same minibatches, same
    rates, so the same math), then time it."""
    loop.torch.set_num_threads(threads)
    n, d = data["X"].shape
    c = data["W0"].shape[0]

    def run(n_epochs):
        model, optimizer = loop.new_model(data["W0"], data["b0"])
        start = time.perf_counter()
        for _ in range(n_epochs):
            loss_sum = loop.run_epoch(model, optimizer, data["perm"], data["lr_steps"],
                                      batch_size)
        return (time.perf_counter() - start) / n_epochs, model, loss_sum

    first_call, model, loss_sum = run(1)
    result = (model.weight.detach().double().numpy(), model.bias.detach().double().numpy(),
              loss_sum / n)
    error = epoch_error(result, expected)
    tolerance = TRAJECTORY_TOLERANCE[np.dtype(np.float32)]
    if not error <= tolerance:
        return _error_row("torch", batch_size, threads, f"disagrees with the "
                          f"reference: error {error:.2g} > {tolerance:g}")
    seconds, load = time_undisturbed(lambda: run(epochs)[0], repeats, retries)
    return _timed_row("torch", batch_size, threads, seconds, load, first_call, n,
                      flops_per_epoch(n, d, c), validation_error=error)


def bench_sklearn_sgd(data, threads, repeats, retries=RETRIES):
    """One epoch of SGDClassifier(loss="log_loss"): one-vs-rest, one sample per step, its own
    learning-rate schedule. Another algorithm than fastlr's, so it is checked by its accuracy
    after the epoch, not against the reference."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier
    X, y = data["X"], data["y"]
    n, d = X.shape
    c = data["W0"].shape[0]
    accuracy = None

    def fit_once():
        nonlocal accuracy
        model = SGDClassifier(loss="log_loss", max_iter=1, tol=None, n_jobs=threads,
                              random_state=0)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
        seconds = time.perf_counter() - start
        accuracy = model.score(data["X_test"], data["y_test"])
        return seconds

    first_call = fit_once()
    if accuracy < 0.8:
        return _error_row("sklearn-sgd", 1, threads,
                          f"test accuracy {accuracy:.1%} after one epoch: not a working fit")
    seconds, load = time_undisturbed(fit_once, repeats, retries)
    return _timed_row("sklearn-sgd", 1, threads, seconds, load, first_call, n,
                      flops_per_epoch(n, d, c), validated=False, test_accuracy=accuracy,
                      note="one-vs-rest, per-sample SGD: checked by accuracy")


def bench_sklearn_lbfgs(data, threads, repeats, retries=RETRIES):
    """LogisticRegression (lbfgs) to convergence; a row's 'epoch' is one lbfgs iteration (at
    least one full-data loss and gradient)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    X, y = data["X"], data["y"]
    n, d = X.shape
    c = data["W0"].shape[0]
    n_iter, accuracy = None, None

    def fit_once():
        nonlocal n_iter, accuracy
        model = LogisticRegression(max_iter=100)
        start = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - start
        n_iter = int(np.max(model.n_iter_))
        accuracy = model.score(data["X_test"], data["y_test"])
        return seconds

    with _blas_threads(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits, load = time_undisturbed(fit_once, repeats, retries)
    if accuracy < 0.9:
        return _error_row("sklearn-lbfgs", n, threads,
                          f"test accuracy {accuracy:.1%}: not a working fit"), None
    per_iteration = [f / n_iter for f in fits]
    row = _timed_row("sklearn-lbfgs", n, threads, per_iteration, load, None, n,
                     flops_per_epoch(n, d, c), validated=False, test_accuracy=accuracy,
                     fit_s=statistics.median(fits), n_iter=n_iter,
                     note="full batch; one 'epoch' = one lbfgs iteration")
    return row, (statistics.median(fits), accuracy)


# --- time to accuracy ----------------------------------------------------------------------------

def time_to_accuracy_fastlr(backend_name, data, threads, target=TARGET_ACCURACY):
    """Wall time of ``SoftmaxRegression`` (defaults) until the test accuracy reaches target."""
    from .model import SoftmaxRegression
    model = SoftmaxRegression(backend=backend_name, n_threads=threads)
    # A first short fit, so that compilation is not counted.
    model.set_params(epochs=1).fit(data["X"][:256], data["y"][:256])
    model.set_params(epochs=EPOCHS_OF_SCHEDULE)
    reached = {}
    start = time.perf_counter()

    def on_epoch(record):
        if "s" not in reached and record["test_accuracy"] >= target:
            reached.update(s=time.perf_counter() - start, epoch=record["epoch"])

    model.fit(data["X"], data["y"], eval_set=(data["X_test"], data["y_test"]),
              on_epoch=on_epoch, eval_name="test")
    return {"engine": f"fastlr {backend_name}", "threads": threads,
            "seconds": reached.get("s"), "epochs": reached.get("epoch"),
            "final_accuracy": model.history_[-1]["test_accuracy"]}


def time_to_accuracy_torch(loop, data, threads, batch_size=64, target=TARGET_ACCURACY):
    """Wall time of the PyTorch loop, with fastlr's default schedule, to the target."""
    loop.torch.set_num_threads(threads)
    n = len(data["y"])
    steps = -(-n // batch_size)
    schedule = Schedule("linear", LEARNING_RATE, EPOCHS_OF_SCHEDULE)
    model, optimizer = loop.new_model(np.zeros_like(data["W0"]), np.zeros_like(data["b0"]))
    X_test = loop.torch.from_numpy(data["X_test"])
    y_test = loop.torch.from_numpy(data["y_test"])
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    accuracy = None
    for epoch in range(EPOCHS_OF_SCHEDULE):
        loop.run_epoch(model, optimizer, rng.permutation(n), schedule.rates(epoch, steps),
                       batch_size)
        with loop.torch.no_grad():
            accuracy = float((model(X_test).argmax(dim=1) == y_test).double().mean())
        if accuracy >= target:
            return {"engine": "torch", "threads": threads,
                    "seconds": time.perf_counter() - start, "epochs": epoch + 1,
                    "final_accuracy": accuracy}
    return {"engine": "torch", "threads": threads, "seconds": None, "epochs": None,
            "final_accuracy": accuracy}


def time_to_accuracy_sklearn_sgd(data, threads, target=TARGET_ACCURACY):
    """SGDClassifier(loss="log_loss"), one partial_fit epoch at a time, up to 10 epochs."""
    from sklearn.linear_model import SGDClassifier
    model = SGDClassifier(loss="log_loss", n_jobs=threads, random_state=0)
    classes = np.unique(data["y"])
    start = time.perf_counter()
    accuracy = None
    for epoch in range(EPOCHS_OF_SCHEDULE):
        model.partial_fit(data["X"], data["y"], classes=classes)
        accuracy = model.score(data["X_test"], data["y_test"])
        if accuracy >= target:
            return {"engine": "sklearn-sgd", "threads": threads,
                    "seconds": time.perf_counter() - start, "epochs": epoch + 1,
                    "final_accuracy": accuracy}
    return {"engine": "sklearn-sgd", "threads": threads, "seconds": None, "epochs": None,
            "final_accuracy": accuracy}


# --- the whole run -------------------------------------------------------------------------------

def prepare_data(data_dir=None, seed=0):
    """MNIST in float32 (and as its uint8 pixels, for the engines that take them), loaded
    once, with the permutation and starting weights every engine shares."""
    X, y, X_test, y_test = load_mnist(data_dir)
    n_classes = int(max(y.max(), y_test.max())) + 1
    return {"X": X, "y": y, "X_test": X_test, "y_test": y_test,
            "X_pixels": load_mnist(data_dir, dtype=np.uint8)[0],
            "perm": np.random.default_rng(seed).permutation(len(y)).astype(np.int64),
            "W0": np.zeros((n_classes, X.shape[1]), dtype=np.float32),
            "b0": np.zeros(n_classes, dtype=np.float32)}


def kernel_versions(backend_name):
    """(name, sgd_epoch) of each kernel version a backend keeps side by side (the Numba
    optimization ladder, the Cython synchronization variants), in order."""
    if backend_name == "numba":  # the lab lives apart from the production backend
        from .backends.contract import epoch_arguments
        from .backends.numba_ladder import KERNEL_VERSIONS
        # The rungs keep the positional arguments they were written with.
        return [(version, lambda *records, rung=rung: rung(*epoch_arguments(*records)))
                for version, rung in KERNEL_VERSIONS.items()]
    return list(getattr(get_backend(backend_name), "KERNEL_VERSIONS", {}).items())


def run_bench(backends=DEFAULT_BACKENDS, batch_sizes=(64, 256, 1024), threads=(1, 2),
              repeats=5, epochs=1, kernels=False, time_to_accuracy=True, data_dir=None, log=None,
              retries=RETRIES):
    """Run the benchmark; returns ``{"machine", "results", "time_to_accuracy", "notes"}``.

    Parameters
    ----------
    backends : names among numpy, numba, cython, torch, sklearn
    batch_sizes, threads : sequences of int
    repeats : int, timed runs per configuration (after one checked, untimed epoch)
    epochs : int, epochs per timed run
    kernels : bool, also time every kernel version the numba and cython backends keep side by
        side
    time_to_accuracy : bool, also measure each engine's wall time to 92% test accuracy
    log : callable(str), optional, told what is being measured
    retries : int, how many more times a row that other processes disturbed is timed (see
        time_undisturbed); a row still disturbed after them has ``disturbed`` True
    """
    log = log or (lambda message: None)
    notes = []
    machine = machine_info()
    log("measuring the machine's ceiling")
    machine["sgemm_gflops"] = {str(t): measure_sgemm_gflops(t) for t in threads}
    machine["read_gbps"] = {str(t): measure_read_gbps(t) for t in threads}
    data = prepare_data(data_dir)
    n, d = data["X"].shape
    c = data["W0"].shape[0]
    available = available_backends()
    missing = unavailable_reasons()

    engines = []
    for name in backends:
        if name in FASTLR_BACKENDS:
            if name in available:
                engines.append((name, get_backend(name)))
            else:
                engines.append((name, None))
                notes.append(f"{name}: not available ({missing.get(name, 'unknown')})")
    for name, backend in list(engines):
        if name != "numpy" and getattr(backend, "takes_pixels", False):
            engines.append((f"{name}:uint8", SimpleNamespace(
                name=name, sgd_epoch=backend.sgd_epoch, pixels=True)))
    if kernels:
        for name in ("numba", "cython"):
            if name in available and name in backends:
                engines += [(f"{name}:{version}", SimpleNamespace(name=version, sgd_epoch=fn))
                            for version, fn in kernel_versions(name)]
    torch_loop = None
    if "torch" in backends:
        try:
            torch_loop = TorchLoop(data)
        except ImportError:
            notes.append("torch: not installed, skipped")
    sklearn_ok = "sklearn" in backends and importlib.util.find_spec("sklearn") is not None
    if "sklearn" in backends and not sklearn_ok:
        notes.append("scikit-learn: not installed, skipped")

    expected, lr_steps = {}, {}
    for batch_size in batch_sizes:
        steps = -(-n // batch_size)
        lr_steps[batch_size] = Schedule("linear", LEARNING_RATE,
                                        EPOCHS_OF_SCHEDULE).rates(0, steps)
        log(f"batch {batch_size}: the reference epoch in float64")
        expected[batch_size] = run_epoch(reference, data["X"], data["y"], data["W0"],
                                         data["b0"], data["perm"], lr_steps[batch_size],
                                         batch_size, 1, np.float64)
    # fastlr's engines first, the peers after them: PyTorch's thread pool, once started,
    # disturbed the engines timed after it on this 2-core machine.
    results = []
    for batch_size in batch_sizes:
        data["lr_steps"] = lr_steps[batch_size]
        for n_threads in threads:
            for engine, backend in engines:
                if backend is None:
                    continue
                log(f"batch {batch_size}, {n_threads} thread(s): {engine}")
                results.append(bench_sgd_engine(engine, backend, data, batch_size, n_threads,
                                                repeats, expected[batch_size], epochs,
                                                retries))
    if torch_loop is not None:
        for batch_size in batch_sizes:
            data["lr_steps"] = lr_steps[batch_size]
            for n_threads in threads:
                log(f"batch {batch_size}, {n_threads} thread(s): torch")
                results.append(bench_torch(torch_loop, data, batch_size, n_threads, repeats,
                                           expected[batch_size], epochs, retries))
    lbfgs_fits = {}
    if sklearn_ok:
        for n_threads in threads:
            log(f"{n_threads} thread(s): scikit-learn SGDClassifier, LogisticRegression")
            results.append(bench_sklearn_sgd(data, n_threads, repeats, retries))
            row, fit = bench_sklearn_lbfgs(data, n_threads, min(repeats, 3), retries)
            results.append(row)
            lbfgs_fits[n_threads] = fit
    _add_ratios(results, machine["sgemm_gflops"])
    disturbed = [row for row in results if row["disturbed"]]
    if disturbed:
        notes.append(f"{len(disturbed)} of {len(results)} rows (marked !) were disturbed: "
                     f"other processes took more than {DISTURBED_SHARE:.0%} of the machine's "
                     f"CPU while they ran, in each of {retries + 1} tries; their times are "
                     f"not those of a quiet machine")

    to_accuracy = []
    if time_to_accuracy:
        n_threads = max(threads)
        for engine, backend in engines:
            if backend is not None and engine in FASTLR_BACKENDS:
                log(f"time to {TARGET_ACCURACY:.0%}: fastlr {engine}")
                to_accuracy.append(time_to_accuracy_fastlr(engine, data, n_threads))
        if torch_loop is not None:
            log(f"time to {TARGET_ACCURACY:.0%}: torch")
            to_accuracy.append(time_to_accuracy_torch(torch_loop, data, n_threads))
        if sklearn_ok:
            log(f"time to {TARGET_ACCURACY:.0%}: scikit-learn")
            to_accuracy.append(time_to_accuracy_sklearn_sgd(data, n_threads))
            fit = lbfgs_fits.get(n_threads)
            if fit is not None:
                to_accuracy.append({"engine": "sklearn-lbfgs", "threads": n_threads,
                                    "seconds": fit[0] if fit[1] >= TARGET_ACCURACY else None,
                                    "epochs": None, "final_accuracy": fit[1]})
    return {"machine": machine, "results": results, "time_to_accuracy": to_accuracy,
            "notes": notes, "n_train": n, "flops_per_epoch": flops_per_epoch(n, d, c)}


def _add_ratios(results, sgemm_gflops):
    """Fill in the speedup over numpy at the same batch and threads, and the fraction of the
    sgemm GFLOP/s at the same threads."""
    numpy_ms = {(r["batch_size"], r["threads"]): r["ms_per_epoch"] for r in results
                if r["backend"] == "numpy" and r["ms_per_epoch"] is not None}
    for row in results:
        if row["ms_per_epoch"] is None:
            continue
        baseline = numpy_ms.get((row["batch_size"], row["threads"]))
        if baseline is not None:
            row["speedup_vs_numpy"] = baseline / row["ms_per_epoch"]
        peak = sgemm_gflops.get(str(row["threads"]))
        if peak:
            row["fraction_of_peak"] = row["gflops"] / peak


# --- presenting it -------------------------------------------------------------------------------

def format_report(report):
    """The machine block and the aligned result tables, as text."""
    machine = report["machine"]
    versions = machine["versions"]
    lines = [f"machine   {machine['cpu']}, {machine['cores']} cores",
             "versions  " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
             f"blas      {'; '.join(machine.get('blas') or ['unknown'])}"]
    if "numba_threading_layer" in machine:
        lines.append(f"numba     threading layer {machine['numba_threading_layer']}")
    ceiling = ", ".join(f"{g:.0f} GFLOP/s on {t} thread{'s' if t != '1' else ''}"
                        for t, g in machine["sgemm_gflops"].items())
    bandwidth = ", ".join(f"{g:.1f} GB/s on {t} thread{'s' if t != '1' else ''}"
                          for t, g in machine["read_gbps"].items())
    lines.append(f"ceiling   sgemm {ceiling}")
    lines.append(f"          memory read {bandwidth}")
    lines.append(f"one epoch = 4*N*D*C = {report['flops_per_epoch'] / 1e9:.2f} GFLOP")
    lines.append("")
    width = max([22] + [len(row["backend"]) + 1 for row in report["results"]])
    header = (f"{'engine':<{width}}{'batch':>6}{'thr':>4}  {'ms/epoch':>9} {'[min - max]':<17}"
              f"{'samples/s':>10}{'GFLOP/s':>9}{'vs numpy':>9}{'of peak':>8}{'compile s':>10}"
              f"{'others':>8}")
    lines += [header, "-" * len(header)]
    for row in report["results"]:
        if row["ms_per_epoch"] is None:
            lines.append(f"{row['backend']:<{width}}{row['batch_size']:>6}{row['threads']:>4}  "
                         f"ERROR: {row['error']}")
            continue
        spread = f"[{row['ms_min']:.1f} - {row['ms_max']:.1f}]"
        speedup = (f"{row['speedup_vs_numpy']:.2f}x" if row["speedup_vs_numpy"] is not None
                   else "-")
        peak = (f"{row['fraction_of_peak']:.0%}" if row["fraction_of_peak"] is not None
                else "-")
        compile_s = f"{row['compile_s']:.2f}" if row["compile_s"] is not None else "-"
        others = f"{row['other_cpu']:.2f}" if row["other_cpu"] is not None else "-"
        others += "!" if row["disturbed"] else " "
        lines.append(f"{row['backend']:<{width}}{row['batch_size']:>6}{row['threads']:>4}  "
                     f"{row['ms_per_epoch']:>9.1f} {spread:<17}{row['samples_per_s']:>10,.0f}"
                     f"{row['gflops']:>9.1f}{speedup:>9}{peak:>8}{compile_s:>10}{others:>8}")
    if report["time_to_accuracy"]:
        lines += ["", f"time to {TARGET_ACCURACY:.0%} test accuracy (defaults: batch 64, rate "
                      f"{LEARNING_RATE} decaying over {EPOCHS_OF_SCHEDULE} epochs)"]
        for entry in report["time_to_accuracy"]:
            if entry["seconds"] is None:
                outcome = f"not reached (final {entry['final_accuracy']:.2%})"
            elif entry["epochs"] is None:
                outcome = f"{entry['seconds']:7.2f} s   (final {entry['final_accuracy']:.2%})"
            else:
                outcome = (f"{entry['seconds']:7.2f} s   (epoch {entry['epochs']}, "
                           f"{entry['final_accuracy']:.2%} at the end)")
            lines.append(f"  {entry['engine']:<20}{entry['threads']:>3} thr  {outcome}")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def plot_report(report, path):
    """Throughput by batch size, one line per engine and thread count (solid with filled
    markers: several threads; dashed with hollow markers: one), the sgemm ceiling drawn in; written to ``path`` (PNG). The uint8 pixel
    engines are drawn beside the float32 ones; the versions of the kernel ladders are left
    out: the table has them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_figure

    fig, ax = plt.subplots(figsize=(10, 5.5))
    lines = {}
    for row in report["results"]:
        if (row["ms_per_epoch"] is None or row["backend"].startswith("sklearn")
                or (":" in row["backend"] and not row["backend"].endswith(":uint8"))):
            continue
        lines.setdefault((row["backend"], row["threads"]), []).append(
            (row["batch_size"], row["samples_per_s"]))
    engines = sorted({engine for engine, _ in lines})
    colors = {engine: plt.get_cmap("tab10")(i) for i, engine in enumerate(engines)}
    for (engine, threads), points in sorted(lines.items()):
        points.sort()
        # One thread: dashed, hollow markers; more: solid, filled. The legend's long handles
        # show both, so its entries tell the thread counts apart at a glance.
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                color=colors[engine], linestyle="-" if threads > 1 else "--",
                markerfacecolor=colors[engine] if threads > 1 else "white",
                label=f"{engine}, {threads} thread{'s' if threads > 1 else ''}")
    per_sample = report["flops_per_epoch"] / report["n_train"]
    for threads, gflops in report["machine"]["sgemm_gflops"].items():
        ceiling = gflops * 1e9 / per_sample
        ax.axhline(ceiling, color="black", linestyle="-" if threads != "1" else ":",
                   linewidth=1)
        ax.annotate(f"sgemm ceiling, {threads} thread{'s' if threads != '1' else ''}: "
                    f"{gflops:.0f} GFLOP/s", xy=(0.01, ceiling),
                    xycoords=("axes fraction", "data"), ha="left", va="bottom", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    batch_sizes = sorted({p[0] for points in lines.values() for p in points})
    ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    ax.set_xlabel("batch size (images per SGD step)")
    ax.set_ylabel("training throughput (images per second)")
    ax.set_title(f"One MNIST epoch of softmax-regression SGD: {report['machine']['cpu']}, "
                 f"{report['machine']['cores']} cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), handlelength=4,
              title="dashed, hollow: 1 thread\nsolid, filled: more threads", title_fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, bbox_inches=None)
    plt.close(fig)
    return path
