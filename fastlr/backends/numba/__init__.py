"""Numba backend: the production softmax-regression kernels, compiled with @njit.

Shapes: N samples, D features, C classes, B batch, T threads.

The contract (``fastlr/backends/contract.py``, its records unpacked here; the math in
``reference.py``):

``sgd_epoch``        the whole epoch in compiled code, one parallel region (``epoch.py``)
``loss_and_grad``    one batch's mean loss and gradient (``predict.py``)
``predict_scores``   X W^T + b (``predict.py``)

The files, in the order an epoch calls them (``docs/kernels.md`` is the tour): ``epoch.py``
the chosen epoch, ``partition.py`` which samples and weights each thread takes,
``microkernel.py`` the one interface to the tiles and the provider chosen for this CPU,
``tiles.py`` the vector register tiles in LLVM IR (scores, gradient, prefetch), ``amx.py`` the
same products on AMX tiles for uint8 pixels where the CPU has them, ``softmax.py`` the
vectorizable exp, the softmax and the loss, ``sync.py`` the atomic flags and barrier of the
threads, ``update.py`` the one SGD update (momentum and L2), ``tuning.py`` what depends on the
CPU (vector width, tile shapes, FMA, prefetch, AMX; ``FASTLR_NUMBA_TUNING`` overrides it),
``predict.py`` the scores and ``loss_and_grad``, ``_cache.py`` the on-disk cache keyed by all
of these sources and the tuning. The variants tried on the way, and why each was kept or
dropped, are the lab in ``fastlr/backends/numba_ladder``; the measurements are in the journal,
``docs/journal/``.

float32 is the fast path; float64 runs the same code (8 lanes instead of 16); uint8 pixels
(features X / 255) run it on a quarter of the bytes. Importing this
package compiles (or loads) one tiny parallel probe and raises ImportError if Numba cannot
compile here, so the registry falls back.
"""

try:
    import numpy as np
    from numba import njit, prange
except ImportError as exc:  # the registry reads ImportError as "not available"
    raise ImportError(f"numba is not installed ({exc})") from exc

from numba import config  # noqa: E402

if config.DISABLE_JIT:  # the tiles are LLVM intrinsics: there is no Python to fall back to
    raise ImportError("NUMBA_DISABLE_JIT is set, and these kernels only run compiled")

from . import _cache  # noqa: E402

_cache.register()  # before any kernel is defined: the locator is chosen at decoration

from ..contract import batch_arguments, epoch_arguments, team_arguments  # noqa: E402
from . import epoch as _epoch, predict as _predict  # noqa: E402
from .epoch import _sample_epoch  # noqa: E402
from .predict import predict_scores  # noqa: E402

name = "numba"
takes_pixels = True  # uint8 X, the 1/255 folded into the tiles (``tiles.py``)


def loss_and_grad(samples, W, b, grad_W, grad_b, threads):
    """The contract's ``loss_and_grad`` (``contract.py``), unpacked for the kernel."""
    return _predict.loss_and_grad(*batch_arguments(samples, W, b, grad_W, grad_b, threads))


def sgd_epoch(samples, state, steps, threads):
    """The contract's ``sgd_epoch`` (``contract.py``), unpacked for the kernel."""
    return _epoch.sgd_epoch(*epoch_arguments(samples, state, steps, threads),
                            *team_arguments(threads))


def first_run_compiles():
    """Whether the first training run in this process will compile kernels.

    Returns
    -------
    bool
        True if the kernels a training run needs (the chosen epoch and ``predict_scores``) have
        no fresh entry in Numba's on-disk cache yet, so the first epoch includes their
        compilation (``bench/numba_compile.py`` measures how long); False once
        they are cached.
    """
    return _cache.first_run_compiles((_sample_epoch, predict_scores))


@njit(parallel=True, cache=True)
def _parallel_probe(a):
    for k in prange(a.shape[0]):
        a[k] = k


try:
    _parallel_probe(np.zeros(2))
except Exception as exc:  # no working compiler or threading layer on this machine
    raise ImportError(f"numba is installed but cannot compile here ({exc})") from exc
