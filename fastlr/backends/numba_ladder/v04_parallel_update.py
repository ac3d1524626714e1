"""v4, parallel update: the reduction and the update split by columns in a second prange.

Shapes: N samples, D features, C classes, B batch, T threads.

v3's chunk kernel; after it, thread k reduces the T partials of its columns of W and updates
them in place, instead of one thread doing the whole update.
"""

import numpy as np
from numba import njit, prange

from ..numba.partition import _aligned_slice, _chunk_bounds
from .v01_naive import _apply_update
from .v03_blocked import _chunk_grad_v3


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
            col_lo, col_hi = _aligned_slice(D, k, T)
            _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                          col_lo, col_hi, k == 0)
    return loss_sum
