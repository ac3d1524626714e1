"""Cython backend: a thin import of the compiled kernels, ``fastlr/_kernels.pyx`` (the OpenMP
regions) and the C in ``fastlr/csrc``.

Shapes: N samples, D features, C classes, B batch, T threads, K chunks of a batch. The contract is ``contract.py``;
its records are unpacked here, once, into the positional arguments of the compiled kernels.
"""

try:
    from .. import _kernels
except ImportError as exc:
    raise ImportError("the Cython extension fastlr._kernels is not built") from exc

from .contract import batch_arguments, epoch_arguments, team_arguments  # noqa: E402

name = "cython"
#: The kernels take uint8 X (pixels, features X / 255) as well as float X of W's dtype.
takes_pixels = True

predict_scores = _kernels.predict_scores


def loss_and_grad(samples, W, b, grad_W, grad_b, threads):
    """The contract's ``loss_and_grad`` (``contract.py``), unpacked for the compiled kernel."""
    return _kernels.loss_and_grad(*batch_arguments(samples, W, b, grad_W, grad_b, threads))


def sgd_epoch(samples, state, steps, threads):
    """The contract's ``sgd_epoch`` (``contract.py``), unpacked for the compiled kernel."""
    return _kernels.sgd_epoch(*epoch_arguments(samples, state, steps, threads),
                              *team_arguments(threads))


def _region_per_step(samples, state, steps, threads):
    return _kernels.sgd_epoch_region_per_step(*epoch_arguments(samples, state, steps, threads),
                                              *team_arguments(threads))


#: Whether the kernels were compiled with OpenMP; without it they run on one thread.
OPENMP_ENABLED = _kernels.OPENMP_ENABLED
#: The most threads an OpenMP parallel region would start here.
MAX_THREADS = _kernels.max_threads()
#: ``isa_level()``: the instruction set the kernels run (``AMX_LEVEL`` = 5: x86-64-v4 with
#: AMX-BF16 tiles for uint8 X and float32 weights; 4 x86-64-v4, 3 x86-64-v3, 1 baseline), the
#: best this CPU supports (``best_isa_level()``) unless ``set_isa_level`` chose a lower one.
isa_level = _kernels.isa_level
best_isa_level = _kernels.best_isa_level
set_isa_level = _kernels.set_isa_level
AMX_LEVEL = _kernels.AMX_LEVEL
#: ``set_score_span(n_bytes)``: the span of the score tile (0: this CPU's choice); speed only.
set_score_span = _kernels.set_score_span

#: The synchronization variants side by side, for ``python -m fastlr bench --kernels all``:
#: one OpenMP parallel region per epoch with a barrier between steps (the one ``sgd_epoch``
#: uses), against a new parallel region per step.
KERNEL_VERSIONS = {
    "one-region": sgd_epoch,
    "region-per-step": _region_per_step,
}
