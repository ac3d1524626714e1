"""What the tests share, one section per kind: the tiers, the oracles of the backend tests,
helpers for running the CLI and writing small data sets; test settings.

Two tiers. ``python -m pytest`` runs the default tier: every backend's contract, the command
line, the files and the estimator, in a few minutes with a cold Numba cache. Tests marked
``@pytest.mark.extended`` (every ladder rung compiled, fuzzing, the large cgroup and cluster
runs, the forced foreign-CPU compilations, slow sweeps) are skipped there and run with
``python -m pytest --extended``.

Hypothesis runs without a deadline: how long an example takes depends on what else runs on the
machine, so a deadline is a timing assertion, and timing belongs to the benchmarks.
"""

import contextlib
import dataclasses
import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from fastlr import data, datasets
from fastlr.backends import available_backends
from fastlr.backends.check import TOLERANCE, scaled_error
from fastlr.backends.contract import SGDState, Samples, Steps, make_threads
from fastlr.sgd import Schedule

settings.register_profile("fastlr", deadline=None)
settings.load_profile("fastlr")

ROOT = Path(__file__).resolve().parent.parent


# --- the two tiers -------------------------------------------------------------------------------

def pytest_addoption(parser):
    parser.addoption("--extended", action="store_true", default=False,
                     help="also run the extended tier: the tests marked extended (every "
                          "ladder rung, fuzzing, the large cgroup and cluster runs, forced "
                          "foreign CPUs, slow sweeps)")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--extended"):
        skip = pytest.mark.skip(reason="extended tier: run with --extended")
        for item in items:
            if item.get_closest_marker("extended"):
                item.add_marker(skip)
    _compile_beside_the_other_tests(items)


# --- the Numba kernels compile beside the other tests --------------------------------------------
#
# With a cold cache, compiling the production Numba kernels takes minutes of one core. A
# background process compiles them into the cache (tests/compile_kernels.py) while the tests
# that do not need Numba run on the other core; the tests that need it run last, after waiting
# for that process, and load the kernels from the cache. A warm cache makes the process a
# matter of seconds.

_compiling = []


def _needs_numba(item):
    """True for a test that runs the Numba kernels: named after them, or a benchmark (which
    times every backend)."""
    return "numba" in item.nodeid or item.path.name == "test_bench.py"


def _compile_beside_the_other_tests(items):
    items.sort(key=_needs_numba)  # stable: the order within each group is kept
    runs_numba = [item for item in items
                  if _needs_numba(item) and not item.get_closest_marker("skip")]
    if not runs_numba or "numba" not in available_backends():
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    _compiling.append(subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "compile_kernels.py")], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def pytest_runtest_setup(item):
    if _compiling and _needs_numba(item):
        # Whatever its outcome: a kernel it could not compile, the test compiles itself.
        _compiling.pop().wait()


def pytest_unconfigure(config):
    for process in _compiling:
        process.kill()
        process.wait()


@pytest.fixture(autouse=True, scope="session")
def _private_user_cache(tmp_path_factory):
    """The tests' decoded data sets go to a cache of their own, not the user's (the commands
    they run inherit it); a test that needs an empty cache sets XDG_CACHE_HOME itself."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


# --- CLI and data helpers the tests share --------------------------------------------------------

def run_cli(*args, env=None):
    """Run ``python -m fastlr ARGS`` from the checkout, as a user would; a CompletedProcess."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "fastlr", *args], capture_output=True,
                          text=True, env=full_env, cwd=ROOT, timeout=600)


def assert_one_line_error(result, *fragments):
    """The run failed with one line on stderr, no traceback, holding every fragment."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def write_small_dataset(directory, n_train=30, n_test=10, side=4, compress=True,
                        image_shape=None, n_classes=3):
    """Random MNIST-format files (MNIST's four names, ``side`` x ``side`` images or
    ``image_shape``, ``n_classes`` classes) in ``directory``; returns the images and labels
    written, by split ("train", "t10k")."""
    rng = np.random.default_rng(1)
    suffix = ".gz" if compress else ""
    shape = tuple(image_shape or (side, side))
    images = {"train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
              "t10k": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8)}
    labels = {"train": rng.integers(0, n_classes, n_train, dtype=np.uint8),
              "t10k": rng.integers(0, n_classes, n_test, dtype=np.uint8)}
    for split in ("train", "t10k"):
        data.write_idx(Path(directory) / f"{split}-images-idx3-ubyte{suffix}", images[split])
        data.write_idx(Path(directory) / f"{split}-labels-idx1-ubyte{suffix}", labels[split])
    return images, labels


@contextlib.contextmanager
def serve_directory(directory):
    """A real HTTP server on 127.0.0.1 serving ``directory``; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def with_mirrors(monkeypatch, name, *urls):
    """Make the known data set ``name`` download from ``urls`` for the rest of the test."""
    monkeypatch.setitem(datasets.DATASETS, name,
                        dataclasses.replace(datasets.DATASETS[name], mirrors=urls))


# --- oracles: the reference and the tolerances the backend tests share ------------------------


def assert_matches(actual, expected, dtype, table=TOLERANCE):
    """|actual - expected| <= tol * max(1, max|expected|), the tolerance of ``dtype`` in
    ``table`` (``fastlr/backends/check.py`` holds the tables, shared with the benchmarks)."""
    error = scaled_error(actual, expected)
    assert error <= table[np.dtype(dtype)], f"scaled error {error:.3g}"


def make_problem(rng, n, d, c, dtype, weight_scale=0.1, weighted=False):
    X = rng.random((n, d)).astype(dtype)
    y = rng.integers(0, c, size=n).astype(np.int64)
    W = (rng.standard_normal((c, d)) * weight_scale).astype(dtype)
    b = (rng.standard_normal(c) * weight_scale).astype(dtype)
    if weighted:
        sw = rng.uniform(0.0, 3.0, size=n).astype(dtype)
    else:
        sw = np.ones(n, dtype=dtype)
    return X, y, sw, W, b


def in_float64(X, y, sw, W, b):
    """The same problem in float64, for the reference."""
    return X.astype(np.float64), y, sw.astype(np.float64), W.astype(np.float64), b.astype(
        np.float64)


def run_loss_and_grad(backend, X, y, sw, W, b, n_threads=1):
    grad_W = np.full_like(W, np.nan)
    grad_b = np.full_like(b, np.nan)
    loss = backend.loss_and_grad(Samples(X, y, sw), W, b, grad_W, grad_b,
                                 make_threads(n_threads, *W.shape, W.dtype))
    return loss, grad_W, grad_b


def run_epochs(backend, X, y, sw, W, b, perms, batch_size, lr, momentum, alpha, n_threads=1):
    """Run len(perms) epochs with a linearly decaying learning rate; return W, b and the
    epochs' loss sums and running correct sums, (epochs, 2)."""
    W, b = W.copy(), b.copy()
    state = SGDState(W, b, np.zeros_like(W), np.zeros_like(b))
    threads = make_threads(n_threads, *W.shape, W.dtype)
    steps = -(-len(perms[0]) // batch_size)
    schedule = Schedule("linear", lr, len(perms))
    sums = []
    for epoch, perm in enumerate(perms):
        sums.append(backend.sgd_epoch(
            Samples(X, y, sw), state,
            Steps(perm, schedule.rates(epoch, steps), batch_size, momentum, alpha), threads))
    return W, b, np.array(sums)
