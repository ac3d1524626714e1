"""The SGD update: momentum and L2, written once.

Shapes: C classes, D features, T threads (partial gradients).

``v = momentum v + (grad + alpha W); W -= lr v``, the bias the same without alpha (the contract
in ``fastlr/backends/__init__.py``, the math in ``reference.py``). ``_sgd_step`` is that
arithmetic on one flat view, element by element, in float64 and rounded once to the weights'
type, as the C kernel does (``sgd_update`` in ``fastlr/csrc/tiles_impl.h``); ``_update_slice``
sums the T partial gradients of a slice of the flat W in order k = 0..T-1 and steps it (the
last partial added inside the step's loop, ``_sgd_step_of``: one or two partials take no pass
through a scratch slice, the same bits); ``_update_bias`` does the same for b. No fast-math:
the update keeps strict IEEE order. Every loop runs over views that start at the slice's first
element: indexing ``W[lo + j]`` costs a negative-index check per element and the loops stop
vectorizing (several times slower: docs/journal/epyc-zen4.md, v11).

Variants tried: the update in W's own type (v1-v12 of the lab), summed in pieces, summed
through a scratch slice before the step. Chosen: the step in float64 with the last partial
added inside the step's loop. Why float64: with momentum the velocity of a pixel that is
rarely lit decays by the momentum every step, through the subnormal range on its way to zero,
and on Intel cores arithmetic on a subnormal operand goes through a microcode assist that made
the float32 update many times slower; widened to float64 they are ordinary numbers, and the
epoch at batch 64 on two threads got faster (docs/journal/xeon-sapphire-rapids.md, round six).
"""

import numpy as np
from numba import njit


@njit(cache=True)
def _sgd_step_of(w, v, g0, g1, lr, momentum, alpha):
    """``_sgd_step`` with the gradient ``g0 + g1`` (summed in w's type, then widened), or g0
    alone if g1 is None: two partial gradients step W without a pass that sums them first."""
    dtype = w.dtype.type
    if momentum != 0.0:
        for j in range(w.shape[0]):
            g = np.float64(g0[j]) if g1 is None else np.float64(g0[j] + g1[j])
            step = momentum * np.float64(v[j]) + (g + alpha * np.float64(w[j]))
            v[j] = dtype(step)
            w[j] = dtype(w[j] - lr * step)
    else:
        for j in range(w.shape[0]):
            g = np.float64(g0[j]) if g1 is None else np.float64(g0[j] + g1[j])
            w[j] = dtype(w[j] - lr * (g + alpha * np.float64(w[j])))


@njit(cache=True)
def _sgd_step(w, v, grad, lr, momentum, alpha):
    """One SGD step on the 1-d views w, v (the velocity) with the gradient grad, all of one
    length n: ``v = momentum v + (grad + alpha w); w -= lr v`` in float64, each result rounded
    once to w's type; with momentum 0, v is not touched and the step is ``w -= lr (grad +
    alpha w)``."""
    _sgd_step_of(w, v, grad, None, lr, momentum, alpha)


@njit(cache=True)
def _sum_parts(parts, lo, hi, out):
    """``out[:hi - lo] = parts[0, lo:hi] + parts[1, lo:hi] + ... + parts[T-1, lo:hi]``, summed
    in that order. parts (T, n)."""
    n = hi - lo
    first = parts[0, lo:hi]
    for j in range(n):
        out[j] = first[j]
    for k in range(1, parts.shape[0]):
        part = parts[k, lo:hi]
        for j in range(n):
            out[j] += part[j]


@njit(cache=True)
def _update_slice(W, vel, parts, lo, hi, lr, momentum, alpha, grad):
    """The SGD step on the elements [lo, hi) of the flat W (C D,) and vel, with the gradient
    summed from parts (T, C D) in order k = 0..T-1. The last partial is added inside the
    step's loop, so one thread steps on its partial as it is and two sum theirs with no pass
    through a scratch slice (faster alone and in the epoch at batch 64 on two threads:
    docs/journal/xeon-sapphire-rapids.md, round six); more sum the first T - 1 into the
    scratch ``grad`` first."""
    T = parts.shape[0]
    w, v = W[lo:hi], vel[lo:hi]
    if T == 1:
        _sgd_step_of(w, v, parts[0, lo:hi], None, lr, momentum, alpha)
        return
    if T == 2:
        first = parts[0, lo:hi]
    else:
        _sum_parts(parts[:T - 1], lo, hi, grad)
        first = grad[:hi - lo]
    _sgd_step_of(w, v, first, parts[T - 1, lo:hi], lr, momentum, alpha)


@njit(cache=True)
def _update_bias(b, vel_b, parts_b, lr, momentum, grad):
    """The SGD step on the bias b (C,), with the gradient summed from parts_b (T, C) as
    ``_update_slice`` sums W's; no decay on the bias."""
    _update_slice(b, vel_b, parts_b, 0, b.shape[0], lr, momentum, 0.0, grad)
