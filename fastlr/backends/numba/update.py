"""The SGD update: momentum and L2, written once.

Shapes: C classes, D features, T threads (partial gradients).

``v = momentum v + (grad + alpha W); W -= lr v``, the bias the same without alpha (the
contract in ``fastlr/backends/__init__.py``, the math in ``reference.py``). ``_sgd_step`` is
that arithmetic on one flat view, element by element, in float64 and rounded once to the
weights' type, as the C kernel does (``sgd_update`` in ``fastlr/csrc/tiles_impl.h``);
``_update_slice`` sums the T partial gradients of a slice of the flat W in order k = 0..T-1,
piece by piece of UPDATE_PIECE values, and steps each piece; ``_update_bias`` does the same for
b. No fast-math: the update keeps strict IEEE order. Every loop runs over views that start at
the slice's first element: indexing ``W[lo + j]`` costs a negative-index check per element and
the loops stop vectorizing (the update took 8 us per step instead of 1).

Why float64 and pieces (Xeon, batch 64, two threads, float32, where the update is a fifth of
an epoch; docs/kernels.md, round six): the same update in float32, the whole slice summed and
then stepped, took 21.4-22.1 ms an epoch; in float64, in pieces, 19.2-19.5, as fast as the C
kernel's update called from the same epoch (19.2-19.5).
"""

import numpy as np
from numba import njit

# Values of a piece: its sum of the T partials (1 KB of float32) stays in L1 for its step.
UPDATE_PIECE = 256


@njit(cache=True)
def _sgd_step(w, v, grad, lr, momentum, alpha):
    """One SGD step on the 1-d views w, v (the velocity) with the gradient grad, all of one
    length n: ``v = momentum v + (grad + alpha w); w -= lr v`` in float64, each result rounded
    once to w's type; with momentum 0, v is not touched and the step is ``w -= lr (grad +
    alpha w)``."""
    dtype = w.dtype.type
    if momentum != 0.0:
        for j in range(w.shape[0]):
            step = momentum * np.float64(v[j]) + (np.float64(grad[j]) + alpha * np.float64(w[j]))
            v[j] = dtype(step)
            w[j] = dtype(w[j] - lr * step)
    else:
        for j in range(w.shape[0]):
            w[j] = dtype(w[j] - lr * (np.float64(grad[j]) + alpha * np.float64(w[j])))


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
    summed from parts (T, C D), UPDATE_PIECE values at a time, into the scratch ``grad``."""
    for p0 in range(lo, hi, UPDATE_PIECE):
        p1 = min(hi, p0 + UPDATE_PIECE)
        _sum_parts(parts, p0, p1, grad)
        _sgd_step(W[p0:p1], vel[p0:p1], grad[:p1 - p0], lr, momentum, alpha)


@njit(cache=True)
def _update_bias(b, vel_b, parts_b, lr, momentum, grad):
    """The SGD step on the bias b (C,), with the gradient summed from parts_b (T, C) into the
    scratch ``grad``; no decay on the bias."""
    C = b.shape[0]
    _sum_parts(parts_b, 0, C, grad)
    _sgd_step(b, vel_b, grad[:C], lr, momentum, 0.0)
