"""v3, blocked: register blocks of K = 4 samples.

Shapes: N samples, D features, C classes, B batch, T threads.

Four samples share each load of a W row (scores) and of a gradient row (accumulation), so the
inner loops are less bound by loads.
"""

import numpy as np
from numba import njit, prange

from ..numba.partition import _chunk_bounds
from ..numba.tiles import FAST
from .v01_naive import _apply_update, _softmax_row


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
def sgd_epoch_v3(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v3: v1's step structure around the 4-sample blocked chunk kernel."""
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
            chunk_loss[k] = _chunk_grad_v3(X, y, sample_weight, perm, lo, hi, inv_batch, W, b,
                                           parts_W[k], parts_b[k])
        for k in range(T):
            loss_sum += chunk_loss[k]
        _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                      0, D, True)
    return loss_sum
