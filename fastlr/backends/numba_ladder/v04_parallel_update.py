"""v4, parallel update: the reduction and the update split by columns in a second prange.

Shapes: N samples, D features, C classes, B batch, T threads.

v3's chunk kernel; after it, thread k reduces the T partials of its columns of W
(``_column_slice``: bounds on cache lines) and updates them in place, instead of one thread
doing the whole update.

Frozen as measured: the code of ``fastlr/backends/numba.py`` at commit 371b075 (2026-11-27).
"""

import numpy as np
from numba import njit, prange

from .lab_common import _chunk_bounds, main


# Reassociation lets LLVM vectorize the dot-product reductions; contraction gives FMAs. The
# other fast-math flags (no NaN, no inf, approximate functions) are left off: softmax must
# see an inf or a NaN if the weights diverge, so the driver can report it.
FAST = {"reassoc", "contract"}


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
def _column_slice(D, k, T):
    """Columns [lo, hi) of W that thread k updates: T slices whose bounds are multiples of 16
    floats, so no two threads write the same cache line."""
    lo = min(D, ((k * D) // T + 15) // 16 * 16)
    hi = D if k == T - 1 else min(D, (((k + 1) * D) // T + 15) // 16 * 16)
    return lo, hi


@njit(fastmath=FAST, cache=True)
def _scores_block4(x0, x1, x2, x3, W, b, Z):
    """Scores of 4 samples into Z (4, C) float64: each W row is loaded once for 4 samples."""
    C, D = W.shape
    for c in range(C):
        w = W[c]
        a0 = a1 = a2 = a3 = W.dtype.type(0)
        for d in range(D):
            wd = w[d]
            a0 += wd * x0[d]
            a1 += wd * x1[d]
            a2 += wd * x2[d]
            a3 += wd * x3[d]
        Z[0, c] = a0 + b[c]
        Z[1, c] = a1 + b[c]
        Z[2, c] = a2 + b[c]
        Z[3, c] = a3 + b[c]


@njit(fastmath=FAST, cache=True)
def _accumulate_block4(x0, x1, x2, x3, G, inv_batch, part_W, part_b):
    """part_W (C, D) += G (4, C)^T [x0; x1; x2; x3] / B: each gradient row is loaded and stored
    once for 4 samples."""
    C, D = part_W.shape
    for c in range(C):
        g0 = part_W.dtype.type(G[0, c] * inv_batch)
        g1 = part_W.dtype.type(G[1, c] * inv_batch)
        g2 = part_W.dtype.type(G[2, c] * inv_batch)
        g3 = part_W.dtype.type(G[3, c] * inv_batch)
        part_b[c] += (g0 + g1) + (g2 + g3)
        row = part_W[c]
        for d in range(D):
            row[d] += (g0 * x0[d] + g1 * x1[d]) + (g2 * x2[d] + g3 * x3[d])


@njit(fastmath=FAST, cache=True)
def _chunk_grad_v3(X, y, sample_weight, rows, lo, hi, inv_batch, W, b, part_W, part_b):
    """Partial gradient of samples ``rows[lo:hi]``, fused per block of 4 samples: scores,
    softmax and the gradient update while the 4 rows of X are still in L1. The last
    (hi - lo) % 4 samples go through the same code with the block padded by repeating
    the last row at weight 0."""
    C, D = W.shape
    Z = np.empty((4, C))
    G = np.zeros((4, C))
    part_W[:, :] = 0
    part_b[:] = 0
    loss = 0.0
    for j in range(lo, hi, 4):
        n_live = min(4, hi - j)
        x0 = X[rows[j]]
        x1 = X[rows[j + min(1, n_live - 1)]]
        x2 = X[rows[j + min(2, n_live - 1)]]
        x3 = X[rows[j + min(3, n_live - 1)]]
        _scores_block4(x0, x1, x2, x3, W, b, Z)
        for s in range(4):
            if s < n_live:
                i = rows[j + s]
                loss += _softmax_row(Z[s], y[i], sample_weight[i], G[s])
            else:
                G[s, :] = 0.0
        _accumulate_block4(x0, x1, x2, x3, G, inv_batch, part_W, part_b)
    return loss


@njit(parallel=True, cache=True)
def sgd_epoch_v4(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v4: per step, a prange over T sample chunks (v3's kernel), then a prange over T column
    slices of W, each reducing the T partials of its columns and updating them in place.
    With T = 1 there is no parallel region at all."""
    T, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    chunk_loss = np.zeros(T)
    loss_sum = 0.0
    for t in range(n_steps):
        start = t * batch_size
        stop = min(start + batch_size, M)
        inv_batch = 1.0 / (stop - start)
        if T == 1:
            loss_sum += _chunk_grad_v3(X, y, sample_weight, perm, start, stop, inv_batch, W, b,
                                       parts_W[0], parts_b[0])
            _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                          0, D, True)
            continue
        for k in prange(T):
            lo, hi = _chunk_bounds(start, stop, k, T)
            chunk_loss[k] = _chunk_grad_v3(X, y, sample_weight, perm, lo, hi, inv_batch, W, b,
                                           parts_W[k], parts_b[k])
        for k in range(T):
            loss_sum += chunk_loss[k]
        for k in prange(T):
            col_lo, col_hi = _column_slice(D, k, T)
            _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                          col_lo, col_hi, k == 0)
    return loss_sum


if __name__ == "__main__":
    main(sgd_epoch_v4, __doc__)
