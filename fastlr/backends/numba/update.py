"""The SGD update: momentum and L2, written once.

Shapes: C classes, D features, T threads (partial gradients).

``v = momentum v + (grad + alpha W); W -= lr v``, the bias the same without alpha (the
contract in ``fastlr/backends/__init__.py``, the math in ``reference.py``). ``_sgd_step`` is
that arithmetic on one flat view, element by element; ``_update_slice`` sums the T partial
gradients of a slice of the flat W in order k = 0..T-1 and steps it; ``_update_bias`` does the
same for b. No fast-math: the update keeps strict IEEE order. Every loop runs over views that
start at the slice's first element: indexing ``W[lo + j]`` costs a negative-index check per
element and the loops stop vectorizing (the update took 8 us per step instead of 1).
"""

from numba import njit


@njit(cache=True)
def _sgd_step(w, v, grad, lr, momentum, alpha):
    """One SGD step on the 1-d views w, v (the velocity) with the gradient grad, all of one
    length n: ``v = momentum v + (grad + alpha w); w -= lr v``; with momentum 0, v is not
    touched and the step is ``w -= lr (grad + alpha w)``; with alpha 0 there is no decay term."""
    lr_ = w.dtype.type(lr)
    mu = w.dtype.type(momentum)
    al = w.dtype.type(alpha)
    for j in range(w.shape[0]):
        g = grad[j]
        if alpha != 0.0:
            g += al * w[j]
        if momentum != 0.0:
            g += mu * v[j]
            v[j] = g
        w[j] -= lr_ * g


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
