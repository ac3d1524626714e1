"""The SGD update: momentum and L2, written once.

Shapes: C classes, D features, T threads (partial gradients).

``v = momentum v + (grad + alpha W); W -= lr v``, the bias the same without alpha (the
contract in ``fastlr/backends/__init__.py``, the math in ``reference.py``). ``_sgd_step`` is
that arithmetic on one flat view, element by element, in float64 and rounded once to the
weights' type, as the C kernel does (``sgd_update`` in ``fastlr/csrc/tiles_impl.h``);
``_update_slice`` sums the T partial gradients of a slice of the flat W in order k = 0..T-1
and steps it; ``_update_bias`` does the same for b. No fast-math: the update keeps strict IEEE
order. Every loop runs over views that start at the slice's first element: indexing
``W[lo + j]`` costs a negative-index check per element and the loops stop vectorizing (the
update took 8 us per step instead of 1).

Why float64: with momentum the velocity of a pixel that is rarely lit decays by the momentum
every step, through the subnormal range on its way to zero (at batch 64 on MNIST, 38-104 of
the 7,840 velocities are subnormal at the end of an epoch). On Intel cores arithmetic on a
subnormal operand goes through a microcode assist: the float32 update of half of W, in cache,
took 32 us with subnormal velocities against 1.0 us without. Widened to float64 they are ordinary
numbers, and the update takes 1.8 us either way; at batch 64 on two threads with momentum 0.9
an epoch went from 22.2-23.4 to 20.0-21.2 ms (Xeon, docs/kernels.md, round six).
"""

import numpy as np
from numba import njit


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
    summed from parts (T, C D) into the scratch ``grad``."""
    _sum_parts(parts, lo, hi, grad)
    _sgd_step(W[lo:hi], vel[lo:hi], grad[:hi - lo], lr, momentum, alpha)


@njit(cache=True)
def _update_bias(b, vel_b, parts_b, lr, momentum, grad):
    """The SGD step on the bias b (C,), with the gradient summed from parts_b (T, C) into the
    scratch ``grad``; no decay on the bias."""
    C = b.shape[0]
    _sum_parts(parts_b, 0, C, grad)
    _sgd_step(b, vel_b, grad[:C], lr, momentum, 0.0)
