"""One epoch at many shapes: fastlr's backends against the loops its users would write instead.

    flock -x /tmp/fastlr-cpu.lock env PYTHONPATH=$PWD python bench/shapes.py \
        [--quick] [--classes 2,10,...] [--features 784,3072] [--batch-sizes 64,1024] \
        [--threads 2] [--rounds 3] [--json docs/shapes.json] [--plot docs/shapes.png]

Shapes: N samples (60,000), D features, C classes, B batch, T threads.

For every D in ``--features`` and C in ``--classes``, N synthetic uint8 images (uniform
pixels, features X / 255) with uniform labels in 0..C-1, and each batch size, the engines
train one epoch of minibatch SGD from zero weights with the same permutation and rates:

- ``numba`` and ``cython``: fastlr's ``sgd_epoch`` on the uint8 pixels, float32 weights;
- ``numpy``: the plain loop a user writes (``bench/plain_numpy_train.py``): per batch
  ``z = x @ W.T + b``, softmax with the maximum subtracted, ``g = (p - onehot) / B``,
  ``W -= lr g.T @ x``, on the features converted to float32 once, before timing; BLAS on T
  threads;
- ``jax``: the same step, the whole epoch jitted as one function (``lax.scan`` over the full
  batches, then the last short one), when JAX is importable; its compilation is reported
  apart (``compile_s``) and not timed.

Check before timing: each engine first trains one epoch on the first ``--check-rows`` images
of the shape (the same C, D, batch size and rates), and must end within the trajectory
tolerance of ``fastlr/backends/check.py`` of the reference's float64 epoch on them (W, b, and
the mean loss for the engines that compute it); an engine that disagrees gets an error row and
no time. A float64 reference epoch on all of N at the largest shapes would take longer than
the whole grid.

Timing: the engines take turns (numba, cython, numpy, jax, numba, ...) for ``--rounds``
rounds in this one process; a row's time is the median, with min and max. Shapes whose epoch
is more than ``--big-gflop`` GFLOP take ``--big-rounds`` rounds instead, to keep the run
practical (a row says how many it had). The ceiling is a 4096^3 float32 sgemm through NumPy's
BLAS on T threads, measured before and after the grid (the higher of the two medians of 5).
One epoch is ``4 N C D`` floating-point
operations (the forward scores and the weight gradient); ``% sgemm`` is its GFLOP/s over the
ceiling's; ``x peer`` is the best of numpy and jax at the same shape divided by the row's
time. ``others`` is the CPU (in cores) other processes took while the row's rounds ran
(``fastlr.measure.CpuWatch``), the largest over its rounds; ``!`` marks a row where it was
more than 5% of the machine.

Example: rows of the run that wrote ``docs/shapes.json`` (the full grid, the command above
with ``--big-rounds 3``) on the project's 2-core AMD EPYC (Zen 3); the whole table is in the
journal, ``docs/journal/epyc-zen3.md``::

    machine  AMD EPYC, 2 cores
    ceiling  sgemm 4096^3: 185.7 GFLOP/s on 2 threads (before and after the grid: 185.7, 169.4)
    epoch    60,000 uint8 images, 2 threads; one epoch = 4*N*C*D flops

        C     D batch  engine          ms [min - max]            x peer  % sgemm rounds  others
    -------------------------------------------------------------------------------------------
       26   784  1024  numba         71.2 [70.1 - 92.9]           1.58x     37%      3   0.05
       26   784  1024  cython        62.2 [55.9 - 62.9]           1.81x     42%      3   0.17
       26   784  1024  numpy        121.3 [116.7 - 129.0]         0.93x     22%      3   0.02
       26   784  1024  jax          112.6 [78.0 - 116.6]          1.00x     23%      3   0.00
      345   784  1024  numba        605.6 [584.1 - 673.2]         0.85x     58%      3   0.01
      345   784  1024  cython       533.9 [495.4 - 554.5]         0.96x     65%      3   0.04
      345   784  1024  numpy        606.8 [525.3 - 613.6]         0.84x     58%      3   0.04
      345   784  1024  jax          512.6 [469.8 - 583.8]         1.00x     68%      3   0.00
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from fastlr.atomic import atomic_write
from fastlr.backends import available_backends, get_backend, reference
from fastlr.backends.check import TRAJECTORY_TOLERANCE, epoch_error, run_epoch
from fastlr.backends.contract import SGDState, Samples, Steps, make_threads
from fastlr.machine import machine_info
from fastlr.measure import CpuWatch, _blas_threads, measure_sgemm_gflops, settle
from fastlr.sgd import Schedule

N_SAMPLES = 60_000
CLASSES = (2, 10, 26, 62, 345, 1000)
FEATURES = (784, 3072)
BATCH_SIZES = (64, 1024)
QUICK_CLASSES = (10, 26, 345)
QUICK_FEATURES = (784,)
FASTLR_ENGINES = ("numba", "cython")
PEERS = ("numpy", "jax")
SGEMM_SIZE = 4096
# The rate of the first step, scaled by 784 / D: uniform pixels have a squared norm of about
# D / 3, so a fixed rate would overshoot more the wider the images. A rate that overshoots on
# random labels makes the trajectory chaotic: a float32 epoch, any engine's, then drifts from
# the float64 one beyond the check's tolerance (docs/journal/epyc-zen3.md).
LEARNING_RATE = 0.1
EPOCHS_OF_SCHEDULE = 10


def flops_per_epoch(n, c, d):
    """The forward scores and the weight gradient: two (n x c x d) multiply-adds."""
    return 4.0 * n * c * d


def synthetic_images(n, d, seed=0):
    """``n`` uint8 images of ``d`` uniform pixels."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, d), dtype=np.uint8)


def synthetic_labels(n, c, seed=0):
    """``n`` uniform labels in 0..c-1, int64."""
    return np.random.default_rng(seed + c).integers(0, c, size=n, dtype=np.int64)


def epoch_rates(n, d, batch_size):
    """The rates of the first epoch of the linear schedule, one per step."""
    steps = -(-n // batch_size)
    return Schedule("linear", LEARNING_RATE * 784 / d, EPOCHS_OF_SCHEDULE).rates(0, steps)


# --- the engines: prepare(X_pixels, X_features, y) once per shape, then epoch() ----------------

class Engine:
    """An engine: ``prepare`` takes a shape's data, ``compile`` readies the epoch for a
    shape (untimed; returns its seconds), ``epoch`` trains one epoch from (W, b) and returns
    the new (W, b) and, where ``computes_loss``, the mean loss."""

    computes_loss = False

    def __init__(self, n_threads):
        self.n_threads = n_threads

    def compile(self, W0, b0, perm, rates, batch_size):
        """Nothing per shape (fastlr's kernels are compiled per dtype, by the check's
        epoch): 0 seconds."""
        return 0.0


class FastlrEngine(Engine):
    """A fastlr backend's ``sgd_epoch`` on uint8 pixels with float32 weights."""

    computes_loss = True

    def __init__(self, name, n_threads):
        super().__init__(n_threads)
        self.name = name
        self.backend = get_backend(name)

    def prepare(self, X_pixels, X_features, y):
        self.X, self.y = X_pixels, y

    def epoch(self, W, b, perm, rates, batch_size):
        """One epoch from (W, b), in place; returns (W, b, mean loss)."""
        # BLAS is not called; one BLAS thread keeps OpenBLAS's idle workers off the cores.
        with _blas_threads(1):
            return run_epoch(self.backend, self.X, self.y, W, b, perm, rates, batch_size,
                             self.n_threads, np.float32)


def softmax_delta(z, y):
    """``(softmax(z) - onehot(y)) / B`` of a batch's scores z (B, C), in place."""
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    z[np.arange(len(y)), y] -= 1
    z /= len(y)
    return z


class NumpyLoop(Engine):
    """The plain NumPy loop of ``bench/plain_numpy_train.py`` on float32 features."""

    name = "numpy"

    def prepare(self, X_pixels, X_features, y):
        self.X, self.y = X_features, y

    def epoch(self, W, b, perm, rates, batch_size):
        W, b = W.copy(), b.copy()
        X, y = self.X, self.y
        with _blas_threads(self.n_threads):
            for t, start in enumerate(range(0, len(perm), batch_size)):
                rows = perm[start:start + batch_size]
                x = X[rows]
                delta = softmax_delta(x @ W.T + b, y[rows])
                lr = np.float32(rates[t])
                W -= lr * (delta.T @ x)
                b -= lr * delta.sum(axis=0)
        return W, b


class JaxEpoch(Engine):
    """The same step in JAX, the whole epoch one jitted function: ``lax.scan`` over the full
    batches, then the short last batch; X on JAX's CPU device as float32 features."""

    name = "jax"

    def __init__(self, n_threads):
        import jax
        import jax.numpy as jnp
        super().__init__(n_threads)
        self.jax, self.jnp = jax, jnp
        self._compiled = {}

    def prepare(self, X_pixels, X_features, y):
        if getattr(self, "_features", None) is not X_features:
            self._features = X_features
            self.X = self.jnp.asarray(X_features)
        if getattr(self, "_labels", None) is not y:
            self._labels = y
            self.y = self.jnp.asarray(y.astype(np.int32))

    def _epoch_function(self, n, batch_size):
        jax, jnp = self.jax, self.jnp
        full = n // batch_size

        def step(W, b, x, y, lr):
            z = x @ W.T + b
            delta = (jax.nn.softmax(z, axis=1) - jax.nn.one_hot(y, W.shape[0],
                                                               dtype=z.dtype)) / x.shape[0]
            return W - lr * (delta.T @ x), b - lr * delta.sum(axis=0)

        def epoch(W, b, X, y, perm, rates):
            batches = perm[:full * batch_size].reshape(full, batch_size)

            def body(carry, inputs):
                rows, lr = inputs
                return step(*carry, X[rows], y[rows], lr), None

            (W, b), _ = jax.lax.scan(body, (W, b), (batches, rates[:full]))
            if full * batch_size < n:
                rows = perm[full * batch_size:]
                W, b = step(W, b, X[rows], y[rows], rates[full])
            return W, b

        return jax.jit(epoch)

    def _arguments(self, W, b, perm, rates):
        jnp = self.jnp
        return (jnp.asarray(W), jnp.asarray(b), self.X, self.y,
                jnp.asarray(perm.astype(np.int32)), jnp.asarray(rates, dtype=jnp.float32))

    def compile(self, W0, b0, perm, rates, batch_size):
        """Compile the epoch for this shape ahead of time; returns the seconds it took."""
        start = time.perf_counter()
        key = (len(perm), batch_size, W0.shape)
        self._compiled[key] = self._epoch_function(len(perm), batch_size).lower(
            *self._arguments(W0, b0, perm, rates)).compile()
        return time.perf_counter() - start

    def epoch(self, W, b, perm, rates, batch_size):
        key = (len(perm), batch_size, W.shape)
        if key not in self._compiled:
            self.compile(W, b, perm, rates, batch_size)
        W, b = self._compiled[key](*self._arguments(W, b, perm, rates))
        W.block_until_ready()
        return np.asarray(W), np.asarray(b)


def make_engines(names, n_threads):
    """The engines among ``names`` that can run here, and {name: why not} for the others."""
    engines, skipped = [], {}
    for name in names:
        if name in FASTLR_ENGINES:
            if name in available_backends():
                engines.append(FastlrEngine(name, n_threads))
            else:
                skipped[name] = "not available"
        elif name == "numpy":
            engines.append(NumpyLoop(n_threads))
        elif name == "jax":
            try:
                engines.append(JaxEpoch(n_threads))
            except ImportError as exc:
                skipped[name] = f"not importable ({exc})"
        else:
            raise ValueError(f"unknown engine {name!r}")
    return engines, skipped


# --- check, then time ---------------------------------------------------------------------------

def check_engine(engine, X_pixels, y, c, batch_size, check_rows):
    """The scaled error of ``engine``'s epoch on the first ``check_rows`` images against the
    reference's float64 epoch on the same minibatches (W, b, and the loss where the engine
    computes one)."""
    n = min(check_rows, len(y))
    X, labels = X_pixels[:n], y[:n]
    features = X.astype(np.float32) / np.float32(255)
    perm = np.random.default_rng(1).permutation(n).astype(np.int64)
    rates = epoch_rates(n, X.shape[1], batch_size)
    W0 = np.zeros((c, X.shape[1]), dtype=np.float32)
    b0 = np.zeros(c, dtype=np.float32)
    expected = run_epoch(reference, X / 255.0, labels, W0, b0, perm, rates, batch_size, 1,
                         np.float64)
    engine.prepare(X, features, labels)
    result = engine.epoch(W0.copy(), b0.copy(), perm, rates, batch_size)
    if not engine.computes_loss:
        expected = expected[:2]
    return epoch_error(result[:len(expected)], expected)


def time_shape(engines, c, d, batch_size, X_pixels, X_features, y, rounds, check_rows, log):
    """Check every engine at this shape, then time ``rounds`` interleaved epochs of each;
    returns one row per engine."""
    n = len(y)
    perm = np.random.default_rng(0).permutation(n).astype(np.int64)
    rates = epoch_rates(n, d, batch_size)
    W0 = np.zeros((c, d), dtype=np.float32)
    b0 = np.zeros(c, dtype=np.float32)
    tolerance = TRAJECTORY_TOLERANCE[np.dtype(np.float32)]
    rows, timed = {}, []
    for engine in engines:
        row = {"engine": engine.name, "classes": c, "features": d, "batch_size": batch_size,
               "threads": engine.n_threads, "rounds": rounds, "ms": None, "ms_min": None,
               "ms_max": None, "compile_s": None, "other_cpu": None, "disturbed": False,
               "error": None}
        rows[engine.name] = row
        log(f"C={c} D={d} batch {batch_size}: checking {engine.name}")
        try:
            row["check_error"] = check_engine(engine, X_pixels, y, c, batch_size, check_rows)
        except Exception as exc:  # a broken engine gets an error row; the run goes on
            row["error"] = f"failed: {exc}"
            continue
        if not row["check_error"] <= tolerance:
            row["error"] = (f"disagrees with the reference: error {row['check_error']:.2g} > "
                            f"{tolerance:g}")
            continue
        engine.prepare(X_pixels, X_features, y)
        row["compile_s"] = engine.compile(W0, b0, perm, rates, batch_size)
        timed.append(engine)
    seconds = {engine.name: [] for engine in timed}
    for round_ in range(rounds):
        for engine in timed:
            log(f"C={c} D={d} batch {batch_size}: round {round_ + 1}/{rounds}, {engine.name}")
            engine.prepare(X_pixels, X_features, y)
            settle()
            W, b = W0.copy(), b0.copy()
            with CpuWatch() as watch:
                start = time.perf_counter()
                engine.epoch(W, b, perm, rates, batch_size)
                seconds[engine.name].append(time.perf_counter() - start)
            row = rows[engine.name]
            if watch.other_cpu is not None:
                row["other_cpu"] = max(row["other_cpu"] or 0.0, watch.other_cpu)
            row["disturbed"] |= watch.disturbed
    flops = flops_per_epoch(n, c, d)
    for name, times in seconds.items():
        row = rows[name]
        row.update(ms=statistics.median(times) * 1e3, ms_min=min(times) * 1e3,
                   ms_max=max(times) * 1e3, ms_all=[t * 1e3 for t in times],
                   gflops=flops / statistics.median(times) / 1e9)
    return list(rows.values())


def add_ratios(results, sgemm_gflops):
    """Each row's ``x_best_peer`` (the best peer's time at its shape over its own) and
    ``fraction_of_sgemm``."""
    best = {}
    for row in results:
        if row["engine"] in PEERS and row["ms"] is not None:
            key = (row["classes"], row["features"], row["batch_size"])
            best[key] = min(best.get(key, np.inf), row["ms"])
    for row in results:
        key = (row["classes"], row["features"], row["batch_size"])
        row["x_best_peer"] = (best[key] / row["ms"] if row["ms"] is not None and key in best
                              else None)
        row["fraction_of_sgemm"] = (row["gflops"] / sgemm_gflops if row["ms"] is not None
                                    else None)


def run_shapes(classes=CLASSES, features=FEATURES, batch_sizes=BATCH_SIZES, n_threads=2,
               engines=FASTLR_ENGINES + PEERS, rounds=3, big_gflop=100.0, big_rounds=1,
               n_samples=N_SAMPLES, check_rows=2048, sgemm_size=SGEMM_SIZE, log=None):
    """Time the grid; returns ``{"machine", "sgemm_gflops", "results", "skipped", ...}``.

    Parameters
    ----------
    classes, features, batch_sizes : sequences of int
        The grid: every C x D x B.
    n_threads : int
        T, for every engine.
    engines : names among numba, cython, numpy, jax
    rounds : int
        Interleaved timed epochs per engine and shape.
    big_gflop, big_rounds : float, int
        Shapes whose epoch is more than ``big_gflop`` GFLOP take ``big_rounds`` rounds.
    n_samples, check_rows : int
        N, and the images of the check's epoch.
    sgemm_size : int
        The side of the ceiling's square sgemm.
    log : callable(str), optional
        Told what is being measured.
    """
    log = log or (lambda message: None)
    engine_list, skipped = make_engines(engines, n_threads)
    log(f"the ceiling: a {sgemm_size}^3 sgemm on {n_threads} threads")
    sgemm_runs = [measure_sgemm_gflops(n_threads, size=sgemm_size, repeats=5)]
    results = []
    for d in features:
        X_pixels = synthetic_images(n_samples, d)
        X_features = X_pixels.astype(np.float32) / np.float32(255)
        for c in classes:
            y = synthetic_labels(n_samples, c)
            shape_rounds = (big_rounds if flops_per_epoch(n_samples, c, d) > big_gflop * 1e9
                            else rounds)
            for batch_size in batch_sizes:
                results += time_shape(engine_list, c, d, batch_size, X_pixels, X_features, y,
                                      shape_rounds, check_rows, log)
        del X_pixels, X_features
    log("the ceiling again, after the grid")
    sgemm_runs.append(measure_sgemm_gflops(n_threads, size=sgemm_size, repeats=5))
    # The higher of the two: the host's other guests slow a run down, never up.
    sgemm = max(sgemm_runs)
    add_ratios(results, sgemm)
    return {"machine": machine_info(), "sgemm_gflops": sgemm, "sgemm_runs": sgemm_runs,
            "sgemm_size": sgemm_size,
            "n_samples": n_samples, "threads": n_threads, "check_rows": check_rows,
            "skipped": skipped, "results": results}


# --- presenting it ------------------------------------------------------------------------------

def format_table(report):
    """The results as an aligned text table."""
    lines = [f"machine  {report['machine']['cpu']}, {report['machine']['cores']} cores",
             f"ceiling  sgemm {report['sgemm_size']}^3: {report['sgemm_gflops']:.1f} GFLOP/s "
             f"on {report['threads']} threads (before and after the grid: "
             f"{', '.join(f'{g:.1f}' for g in report['sgemm_runs'])})",
             f"epoch    {report['n_samples']:,} uint8 images, {report['threads']} threads; "
             f"one epoch = 4*N*C*D flops", ""]
    header = (f"{'C':>5}{'D':>6}{'batch':>6}  {'engine':<8}{'ms':>10} {'[min - max]':<21}"
              f"{'x peer':>8}{'% sgemm':>9}{'rounds':>7}{'others':>8}")
    lines += [header, "-" * len(header)]
    for row in report["results"]:
        head = f"{row['classes']:>5}{row['features']:>6}{row['batch_size']:>6}  {row['engine']:<8}"
        if row["ms"] is None:
            lines.append(f"{head}ERROR: {row['error']}")
            continue
        spread = f"[{row['ms_min']:.1f} - {row['ms_max']:.1f}]"
        peer = f"{row['x_best_peer']:.2f}x" if row["x_best_peer"] is not None else "-"
        others = f"{row['other_cpu']:.2f}" if row["other_cpu"] is not None else "-"
        others += "!" if row["disturbed"] else " "
        lines.append(f"{head}{row['ms']:>10.1f} {spread:<21}{peer:>8}"
                     f"{row['fraction_of_sgemm']:>8.0%} {row['rounds']:>6}{others:>8}")
    for name, reason in report["skipped"].items():
        lines.append(f"note: {name} skipped, {reason}")
    return "\n".join(lines)


def plot_efficiency(report, path):
    """% of sgemm against C, one panel per (D, batch), one line per engine; a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["features"], r["batch_size"]) for r in report["results"]})
    engines = list(dict.fromkeys(r["engine"] for r in report["results"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), sharey=True,
                             squeeze=False)
    for ax, (d, batch_size) in zip(axes[0], panels):
        for i, engine in enumerate(engines):
            points = sorted((r["classes"], 100 * r["fraction_of_sgemm"])
                            for r in report["results"]
                            if r["engine"] == engine and r["features"] == d
                            and r["batch_size"] == batch_size and r["ms"] is not None)
            if points:
                ax.plot(*zip(*points), marker="o", label=engine,
                        color=plt.get_cmap("tab10")(i))
        ax.set_xscale("log")
        ax.set_title(f"D = {d}, batch {batch_size}", fontsize=10)
        ax.set_xlabel("classes C")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(f"% of {report['sgemm_size']}^3 sgemm "
                          f"({report['sgemm_gflops']:.0f} GFLOP/s)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"One epoch of {report['n_samples']:,} uint8 images, "
                 f"{report['threads']} threads: {report['machine']['cpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _int_list(text):
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=_int_list, default=None)
    parser.add_argument("--features", type=_int_list, default=None)
    parser.add_argument("--batch-sizes", type=_int_list, default=list(BATCH_SIZES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engines", default=",".join(FASTLR_ENGINES + PEERS))
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--big-gflop", type=float, default=100.0)
    parser.add_argument("--big-rounds", type=int, default=1)
    parser.add_argument("--samples", type=int, default=N_SAMPLES)
    parser.add_argument("--check-rows", type=int, default=2048)
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke test: C in {QUICK_CLASSES}, D = 784, 1 round")
    parser.add_argument("--json")
    parser.add_argument("--plot")
    args = parser.parse_args(argv)
    classes = args.classes or (list(QUICK_CLASSES) if args.quick else list(CLASSES))
    features = args.features or (list(QUICK_FEATURES) if args.quick else list(FEATURES))
    rounds = args.rounds or (1 if args.quick else 3)
    report = run_shapes(classes, features, args.batch_sizes, args.threads,
                        [e for e in args.engines.split(",") if e], rounds, args.big_gflop,
                        min(args.big_rounds, rounds), args.samples, args.check_rows,
                        log=lambda message: print(f"  {message}", file=sys.stderr, flush=True))
    print(format_table(report))
    if args.json:
        with atomic_write(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"results written to {args.json}")
    if args.plot:
        plot_efficiency(report, args.plot)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
