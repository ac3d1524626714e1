"""What the tests share: helpers for running the CLI and writing small data sets; test settings.

Hypothesis runs without a deadline: how long an example takes depends on what else runs on the
machine, so a deadline is a timing assertion, and timing belongs to the benchmarks.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import settings

from fastlr import data

settings.register_profile("fastlr", deadline=None)
settings.load_profile("fastlr")

ROOT = Path(__file__).resolve().parent.parent


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


def write_small_dataset(directory, n_train=30, n_test=10, side=4, compress=True):
    """Random MNIST-format files (MNIST's four names, ``side`` x ``side`` images, 3 classes)
    in ``directory``; returns the images and labels written, by split ("train", "t10k")."""
    rng = np.random.default_rng(1)
    suffix = ".gz" if compress else ""
    images = {"train": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
              "t10k": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8)}
    labels = {"train": rng.integers(0, 3, n_train, dtype=np.uint8),
              "t10k": rng.integers(0, 3, n_test, dtype=np.uint8)}
    for split in ("train", "t10k"):
        data.write_idx(Path(directory) / f"{split}-images-idx3-ubyte{suffix}", images[split])
        data.write_idx(Path(directory) / f"{split}-labels-idx1-ubyte{suffix}", labels[split])
    return images, labels
