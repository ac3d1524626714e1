"""v5, 2 classes x 4 samples for the scores.

Shapes: N samples, D features, C classes, B batch, T threads.

Two W rows at a time: per vector of features 6 loads feed 8 FMAs, where v3's one row was
load-bound. Kept for v5-v7.
"""

import numpy as np
from numba import njit, prange

from ..numba.partition import _aligned_slice, _chunk_bounds
from ..numba.tiles import FAST
from .v01_naive import _apply_update, _softmax_row
from .v03_blocked import _accumulate_block4


@njit(fastmath=FAST, cache=True)
def _scores_block4x2(x0, x1, x2, x3, W, b, Z):
    """Scores of 4 samples into Z (4, C) float64, two W rows at a time: per 16 features, 6
    vector loads feed 8 FMAs (v3's one row: 5 loads for 4 FMAs, load-bound). An odd last
    class goes through v3's one-row loop."""
    C, D = W.shape
    for c in range(0, C - 1, 2):
        w = W[c]
        v = W[c + 1]
        a0 = a1 = a2 = a3 = e0 = e1 = e2 = e3 = W.dtype.type(0)
        for d in range(D):
            wd = w[d]
            vd = v[d]
            a0 += wd * x0[d]
            a1 += wd * x1[d]
            a2 += wd * x2[d]
            a3 += wd * x3[d]
            e0 += vd * x0[d]
            e1 += vd * x1[d]
            e2 += vd * x2[d]
            e3 += vd * x3[d]
        Z[0, c] = a0 + b[c]
        Z[1, c] = a1 + b[c]
        Z[2, c] = a2 + b[c]
        Z[3, c] = a3 + b[c]
        Z[0, c + 1] = e0 + b[c + 1]
        Z[1, c + 1] = e1 + b[c + 1]
        Z[2, c + 1] = e2 + b[c + 1]
        Z[3, c + 1] = e3 + b[c + 1]
    if C % 2 == 1:
        c = C - 1
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
def _chunk_grad_v5(X, y, sample_weight, rows, lo, hi, inv_batch, W, b, part_W, part_b):
    """v3's fused 4-sample blocks with the 2-class score kernel."""
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
        _scores_block4x2(x0, x1, x2, x3, W, b, Z)
        for s in range(4):
            if s < n_live:
                i = rows[j + s]
                loss += _softmax_row(Z[s], y[i], sample_weight[i], G[s])
            else:
                G[s, :] = 0.0
        _accumulate_block4(x0, x1, x2, x3, G, inv_batch, part_W, part_b)
    return loss


@njit(parallel=True, cache=True)
def sgd_epoch_v5(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v5: v4's step structure (serial at T = 1, else a prange over sample chunks and a
    prange over column slices for the update) around the 2-class x 4-sample kernel."""
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
            loss_sum += _chunk_grad_v5(X, y, sample_weight, perm, start, stop, inv_batch, W, b,
                                       parts_W[0], parts_b[0])
            _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                          0, D, True)
            continue
        for k in prange(T):
            lo, hi = _chunk_bounds(start, stop, k, T)
            chunk_loss[k] = _chunk_grad_v5(X, y, sample_weight, perm, lo, hi, inv_batch, W, b,
                                           parts_W[k], parts_b[k])
        for k in range(T):
            loss_sum += chunk_loss[k]
        for k in prange(T):
            col_lo, col_hi = _aligned_slice(D, k, T)
            _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                          col_lo, col_hi, k == 0)
    return loss_sum
