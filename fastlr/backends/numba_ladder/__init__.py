"""The Numba lab: every rung of the optimization ladder, each frozen as it was measured.

Shapes: N samples, D features, C classes, B batch, T threads.

One file per rung, in the way of llm.c's ``dev/cuda``: each rung changes one thing against the
one before and says so in its header, and each is self-contained. A rung holds a copy of every
helper it was measured with (its tiles, softmax, update, meetings), taken from the commit that
measured it, and imports only ``lab_common`` (the partition of a batch over threads, the check
against the reference, the timing), never production code. The duplication is on purpose: a
rung's numbers in the journal (``docs/journal/``) come from the code in its file, which no
later change to production can alter, and a reader can study one rung top to bottom.

Each rung runs alone::

    python -m fastlr.backends.numba_ladder.v08_register_tiles [--batch-size 64 1024]
        [--threads 1 2] [--repeats 5]

checks itself against the reference on MNIST (two epochs, float32 against float64), then times
an MNIST epoch (median of the repeats, the compiling epoch excluded) and prints both.

Production (``fastlr.backends.numba``) never imports the lab. When a rung wins, production
copies it: v12 is the copy of the production epoch as it stood when it was chosen, so the
next rung starts from it.

``KERNEL_VERSIONS`` (read on first use, so running one rung imports no other) maps each
rung's name to its ``sgd_epoch``, with the contract's two results: the rungs before v12 count
no samples scored right, and give NaN for it. ``python -m fastlr bench --kernels all`` times
them side by side; ``tests/test_numba_ladder.py`` checks them against the reference.
"""

import functools
import importlib
import math

RUNGS = {
    "v1-naive": ("v01_naive", "sgd_epoch_v1"),
    "v2-vectorized": ("v02_vectorized", "sgd_epoch_v2"),
    "v3-blocked": ("v03_blocked", "sgd_epoch_v3"),
    "v4-parallel-update": ("v04_parallel_update", "sgd_epoch_v4"),
    "v5-blocked-2x4": ("v05_blocked_2x4", "sgd_epoch_v5"),
    "v6-one-sync": ("v06_one_sync", "sgd_epoch_v6"),
    "v7-vector-update": ("v07_vector_update", "sgd_epoch_v7"),
    "v8-register-tiles": ("v08_register_tiles", "sgd_epoch_v8"),
    "v9-column-split": ("v09_column_split", "sgd_epoch_v9"),
    "v10-panel-sync": ("v10_panel_sync", "sgd_epoch_v10"),
    "v11-sample-split": ("v11_sample_split", "sgd_epoch_v11"),
    "v12-tuned-blocks": ("v12_tuned_blocks", "sgd_epoch"),
}


def rung(name):
    """The ``sgd_epoch`` of the rung ``name`` (a key of ``RUNGS``), as its file defines it."""
    module, function = RUNGS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def _counted(epoch):
    """``epoch`` with the contract's two results: (loss_sum, NaN) for a rung that returns its
    loss sum alone."""
    @functools.wraps(epoch)
    def counted(*args):
        result = epoch(*args)
        return result if isinstance(result, tuple) else (result, math.nan)
    return counted


def __getattr__(name):
    if name == "KERNEL_VERSIONS":
        return {version: _counted(rung(version)) for version in RUNGS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
