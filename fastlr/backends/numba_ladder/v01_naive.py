"""v1, naive: the epoch in compiled code with straightforward fused loops.

Shapes: N samples, D features, C classes, B batch, T threads.

Per step, one ``prange`` over T contiguous chunks of the batch, each thread writing its own
partial gradient, then a serial reduction in order k = 0..T-1 and the update. Scalar loops in
strict IEEE order: the baseline every later rung is measured against. ``_softmax_row`` is one
sample's stable softmax, its gradient and loss in float64; ``_apply_update`` the reduction and
the SGD step over a range of columns, the bias optionally.

Frozen as measured: the code of ``fastlr/backends/numba.py`` at commit 371b075 (2026-11-27),
the first measured ladder.
"""

import numpy as np
from numba import njit, prange

from .lab_common import _chunk_bounds, main


@njit(cache=True)
def _softmax_row(z, y_i, weight, G_row):
    """Stable softmax of one sample's scores z (C,) float64, the sample's gradient wrt the
    scores ``G_row = weight (p - onehot(y_i))`` written in place, and its loss
    ``weight * (logsumexp(z) - z[y_i])``, all in float64."""
    C = z.shape[0]
    m = z[0]
    for c in range(1, C):
        if z[c] > m:
            m = z[c]
    total = 0.0
    for c in range(C):
        e = np.exp(z[c] - m)
        G_row[c] = e
        total += e
    inv_total = 1.0 / total
    for c in range(C):
        G_row[c] = weight * G_row[c] * inv_total
    G_row[y_i] -= weight
    return weight * (m + np.log(total) - z[y_i])


@njit(cache=True)
def _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr, momentum, alpha, col_lo, col_hi,
                  with_bias):
    """Reduce the T partial gradients in fixed order and apply the SGD step to the columns
    [col_lo, col_hi) of W (and to b if ``with_bias``):
    ``v = momentum v + (grad + alpha W); W -= lr v``, the bias without alpha."""
    T, C, _ = parts_W.shape
    lr_ = W.dtype.type(lr)
    mu = W.dtype.type(momentum)
    al = W.dtype.type(alpha)
    for c in range(C):
        for d in range(col_lo, col_hi):
            g = parts_W[0, c, d]
            for k in range(1, T):
                g += parts_W[k, c, d]
            g += al * W[c, d]
            if momentum != 0.0:
                g += mu * vel_W[c, d]
                vel_W[c, d] = g
            W[c, d] -= lr_ * g
    if with_bias:
        for c in range(C):
            g = parts_b[0, c]
            for k in range(1, T):
                g += parts_b[k, c]
            if momentum != 0.0:
                g += mu * vel_b[c]
                vel_b[c] = g
            b[c] -= lr_ * g


@njit(cache=True)
def _chunk_grad_v1(X, y, sample_weight, rows, lo, hi, inv_batch, W, b, part_W, part_b):
    """Partial gradient of samples ``rows[lo:hi]`` into part_W (C, D), part_b (C,), one sample
    at a time, strict IEEE order; returns the chunk's sum of s_i l_i."""
    C, D = W.shape
    z = np.empty(C)
    G_row = np.empty(C)
    for c in range(C):
        part_b[c] = 0
        for d in range(D):
            part_W[c, d] = 0
    loss = 0.0
    for j in range(lo, hi):
        i = rows[j]
        for c in range(C):
            acc = b[c]
            for d in range(D):
                acc += W[c, d] * X[i, d]
            z[c] = acc
        loss += _softmax_row(z, y[i], sample_weight[i], G_row)
        for c in range(C):
            g = W.dtype.type(G_row[c] * inv_batch)
            part_b[c] += g
            for d in range(D):
                part_W[c, d] += g * X[i, d]
    return loss


@njit(parallel=True, cache=True)
def sgd_epoch_v1(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v1: per step, one prange over T sample chunks, then a serial reduction and update."""
    T, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    chunk_loss = np.zeros(T)
    loss_sum = 0.0
    for t in range(n_steps):
        start = t * batch_size
        stop = min(start + batch_size, M)
        inv_batch = 1.0 / (stop - start)
        for k in prange(T):
            lo, hi = _chunk_bounds(start, stop, k, T)
            chunk_loss[k] = _chunk_grad_v1(X, y, sample_weight, perm, lo, hi, inv_batch, W, b,
                                           parts_W[k], parts_b[k])
        for k in range(T):
            loss_sum += chunk_loss[k]
        _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                      0, D, True)
    return loss_sum


if __name__ == "__main__":
    main(sgd_epoch_v1, __doc__)
