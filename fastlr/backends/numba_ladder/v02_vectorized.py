"""v2, vectorized: v1 with reassociation allowed in the dot products.

Shapes: N samples, D features, C classes, B batch, T threads.

``fastmath={"reassoc", "contract"}`` lets LLVM vectorize the reductions over D into vector
FMAs; the softmax and the update keep strict IEEE order.
"""

import numpy as np
from numba import njit, prange

from ..numba.partition import _chunk_bounds
from ..numba.tiles import FAST
from .v01_naive import _apply_update, _softmax_row


@njit(fastmath=FAST, cache=True)
def _chunk_grad_v2(X, y, sample_weight, rows, lo, hi, inv_batch, W, b, part_W, part_b):
    """As v1, but reassociation lets LLVM vectorize the length-D dot products (v1's strict
    left-to-right sum is a serial chain of dependent adds)."""
    C, D = W.shape
    z = np.empty(C)
    G_row = np.empty(C)
    part_W[:, :] = 0
    part_b[:] = 0
    loss = 0.0
    for j in range(lo, hi):
        i = rows[j]
        x = X[i]
        for c in range(C):
            w = W[c]
            acc = W.dtype.type(0)
            for d in range(D):
                acc += w[d] * x[d]
            z[c] = acc + b[c]
        loss += _softmax_row(z, y[i], sample_weight[i], G_row)
        for c in range(C):
            g = W.dtype.type(G_row[c] * inv_batch)
            part_b[c] += g
            row = part_W[c]
            for d in range(D):
                row[d] += g * x[d]
    return loss


@njit(parallel=True, cache=True)
def sgd_epoch_v2(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v2: v1's step structure around the vectorized chunk kernel."""
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
            chunk_loss[k] = _chunk_grad_v2(X, y, sample_weight, perm, lo, hi, inv_batch, W, b,
                                           parts_W[k], parts_b[k])
        for k in range(T):
            loss_sum += chunk_loss[k]
        _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                      0, D, True)
    return loss_sum
