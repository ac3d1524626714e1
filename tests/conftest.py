"""What the tests share, one section per kind: the oracles of the backend tests, helpers for
running the CLI and writing small data sets; test settings.

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
from fastlr.backends.check import TOLERANCE, scaled_error
from fastlr.backends.contract import SGDState, Samples, Steps, make_threads
from fastlr.sgd import Schedule

settings.register_profile("fastlr", deadline=None)
settings.load_profile("fastlr")

ROOT = Path(__file__).resolve().parent.parent


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
