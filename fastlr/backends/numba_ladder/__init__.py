"""The Numba lab: every rung of the optimization ladder, side by side with the chosen kernel.

Shapes: N samples, D features, C classes, B batch, T threads.

One file per rung, each with a short header (what it changed, why); a rung reuses the
production helpers of ``fastlr.backends.numba`` and older rungs' pieces where they are the same
code. Every rung implements the ``sgd_epoch`` contract of ``fastlr/backends/__init__.py``, is
checked against the reference by ``tests/test_numba_ladder.py`` and timed by ``python -m fastlr
bench --kernels all``; the measurements, and the story they tell, are in docs/kernels.md. The
last rung is the production epoch itself, imported, not copied. Nothing in production imports
this package.

The rungs before it return the epoch's loss sum alone: they are timed and checked, never used
for training, so they do not count the samples scored right. ``KERNEL_VERSIONS`` gives them
the contract's two results, with NaN for the count they do not keep.
"""

import functools
import math

from ..numba.epoch import sgd_epoch
from .v01_naive import sgd_epoch_v1
from .v02_vectorized import sgd_epoch_v2
from .v03_blocked import sgd_epoch_v3
from .v04_parallel_update import sgd_epoch_v4
from .v05_blocked_2x4 import sgd_epoch_v5
from .v06_one_sync import sgd_epoch_v6
from .v07_vector_update import sgd_epoch_v7
from .v08_register_tiles import sgd_epoch_v8
from .v09_column_split import sgd_epoch_v9
from .v10_panel_sync import sgd_epoch_v10
from .v11_sample_split import sgd_epoch_v11



def _uncounted(rung):
    """``rung``, an epoch that returns its loss sum, as the contract's (loss_sum, NaN)."""
    @functools.wraps(rung)
    def epoch(*args):
        return rung(*args), math.nan
    return epoch


KERNEL_VERSIONS = {
    "v1-naive": _uncounted(sgd_epoch_v1),
    "v2-vectorized": _uncounted(sgd_epoch_v2),
    "v3-blocked": _uncounted(sgd_epoch_v3),
    "v4-parallel-update": _uncounted(sgd_epoch_v4),
    "v5-blocked-2x4": _uncounted(sgd_epoch_v5),
    "v6-one-sync": _uncounted(sgd_epoch_v6),
    "v7-vector-update": _uncounted(sgd_epoch_v7),
    "v8-register-tiles": _uncounted(sgd_epoch_v8),
    "v9-column-split": _uncounted(sgd_epoch_v9),
    "v10-panel-sync": _uncounted(sgd_epoch_v10),
    "v11-sample-split": sgd_epoch_v11,
    "v12-tuned-blocks": sgd_epoch,
}
