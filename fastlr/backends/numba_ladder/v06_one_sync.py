"""v6, one fork-join per step: private weight copies, the update moved into the next step.

Shapes: N samples, D features, C classes, B batch, T threads.

Each chunk keeps a private copy of (W, b, vel) and applies step t-1's update itself, from
double-buffered partials, at the start of step t: one parallel region per step instead of two.
Same bits as v5 (tested).
"""

import numpy as np
from numba import njit, prange

from ..numba.partition import _chunk_bounds
from .v01_naive import _apply_update
from .v05_blocked_2x4 import _chunk_grad_v5, sgd_epoch_v5


@njit(parallel=True, cache=True)
def sgd_epoch_v6(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v6: v5's kernel with a single prange per step. Each of the T chunks keeps its own copy
    of (W, b, vel) and, at the start of step t, applies step t-1's update to it from the T
    partial gradients of step t-1 (double-buffered by step parity, so nobody overwrites a
    partial another chunk is still reading). Every copy runs the same update on the same
    inputs, so the copies stay bitwise equal to one another and to v5's single W."""
    T, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    if T == 1 or n_steps == 0:
        return sgd_epoch_v5(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps,
                            batch_size, momentum, alpha, parts_W, parts_b)
    # The epoch's working set, in the contract's layouts: T private weight copies and a
    # second partial-gradient buffer (the first is the driver's parts_*).
    W_copy = np.empty((T, C, D), W.dtype)
    b_copy = np.empty((T, C), W.dtype)
    vel_W_copy = np.empty((T, C, D), W.dtype)
    vel_b_copy = np.empty((T, C), W.dtype)
    grads_W = np.empty((2, T, C, D), W.dtype)
    grads_b = np.empty((2, T, C), W.dtype)
    for k in range(T):
        W_copy[k] = W
        b_copy[k] = b
        vel_W_copy[k] = vel_W
        vel_b_copy[k] = vel_b
    chunk_loss = np.zeros(T)
    loss_sum = 0.0
    for t in range(n_steps):
        start = t * batch_size
        stop = min(start + batch_size, M)
        inv_batch = 1.0 / (stop - start)
        now = t % 2
        before = 1 - now
        for k in prange(T):
            if t > 0:
                _apply_update(W_copy[k], b_copy[k], vel_W_copy[k], vel_b_copy[k],
                              grads_W[before], grads_b[before], lr_steps[t - 1], momentum,
                              alpha, 0, D, True)
            lo, hi = _chunk_bounds(start, stop, k, T)
            chunk_loss[k] = _chunk_grad_v5(X, y, sample_weight, perm, lo, hi, inv_batch,
                                           W_copy[k], b_copy[k], grads_W[now, k],
                                           grads_b[now, k])
        for k in range(T):
            loss_sum += chunk_loss[k]
    last = (n_steps - 1) % 2
    W[...] = W_copy[0]
    b[...] = b_copy[0]
    vel_W[...] = vel_W_copy[0]
    vel_b[...] = vel_b_copy[0]
    _apply_update(W, b, vel_W, vel_b, grads_W[last], grads_b[last], lr_steps[n_steps - 1],
                  momentum, alpha, 0, D, True)
    return loss_sum
