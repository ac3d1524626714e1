"""v7, a vectorized update.

Shapes: N samples, D features, C classes, B batch, T threads.

``_apply_update``'s innermost loop is the runtime-length sum over T, which keeps the whole
update scalar; ``_apply_update_rows`` sums the partials row by row first, so every inner loop
runs along D contiguous floats and vectorizes. Same arithmetic, same order: same bits as v5
(tested).
"""

import numpy as np
from numba import njit, prange

from ..numba.partition import _chunk_bounds
from .v05_blocked_2x4 import _chunk_grad_v5


@njit(cache=True)
def _apply_update_rows(W, b, vel_W, vel_b, parts_W, parts_b, lr, momentum, alpha, grad_row):
    """``_apply_update`` over all of W, restructured so every inner loop runs along a row of D
    contiguous floats and vectorizes: the T partials are summed row by row into grad_row (D,)
    in fixed order k = 0..T-1, then one pass applies momentum, L2 and the step. (In
    ``_apply_update`` the innermost loop is the runtime-length sum over k, which keeps the
    whole update scalar.) Same arithmetic, same order, element by element; no fast-math, so
    no contraction into FMAs either: the result is bitwise ``_apply_update``'s."""
    T, C, D = parts_W.shape
    lr_ = W.dtype.type(lr)
    mu = W.dtype.type(momentum)
    al = W.dtype.type(alpha)
    for c in range(C):
        w = W[c]
        first = parts_W[0, c]
        for d in range(D):
            grad_row[d] = first[d]
        for k in range(1, T):
            part = parts_W[k, c]
            for d in range(D):
                grad_row[d] += part[d]
        if momentum != 0.0:
            v = vel_W[c]
            for d in range(D):
                g = grad_row[d] + al * w[d] + mu * v[d]
                v[d] = g
                w[d] -= lr_ * g
        else:
            for d in range(D):
                w[d] -= lr_ * (grad_row[d] + al * w[d])
    for c in range(C):
        g = parts_b[0, c]
        for k in range(1, T):
            g += parts_b[k, c]
        if momentum != 0.0:
            g += mu * vel_b[c]
            vel_b[c] = g
        b[c] -= lr_ * g


@njit(parallel=True, cache=True)
def sgd_epoch_v7(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v7: v6 (one fork-join per step, private weight copies; serial at T = 1) with the
    vectorized update."""
    T, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    grad_rows = np.empty((T, D), W.dtype)
    if T == 1:
        loss_sum = 0.0
        for t in range(n_steps):
            start = t * batch_size
            stop = min(start + batch_size, M)
            loss_sum += _chunk_grad_v5(X, y, sample_weight, perm, start, stop,
                                       1.0 / (stop - start), W, b, parts_W[0], parts_b[0])
            _apply_update_rows(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum,
                               alpha, grad_rows[0])
        return loss_sum
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
                _apply_update_rows(W_copy[k], b_copy[k], vel_W_copy[k], vel_b_copy[k],
                                   grads_W[before], grads_b[before], lr_steps[t - 1],
                                   momentum, alpha, grad_rows[k])
            lo, hi = _chunk_bounds(start, stop, k, T)
            chunk_loss[k] = _chunk_grad_v5(X, y, sample_weight, perm, lo, hi, inv_batch,
                                           W_copy[k], b_copy[k], grads_W[now, k],
                                           grads_b[now, k])
        for k in range(T):
            loss_sum += chunk_loss[k]
    if n_steps > 0:
        last = (n_steps - 1) % 2
        W[...] = W_copy[0]
        b[...] = b_copy[0]
        vel_W[...] = vel_W_copy[0]
        vel_b[...] = vel_b_copy[0]
        _apply_update_rows(W, b, vel_W, vel_b, grads_W[last], grads_b[last],
                           lr_steps[n_steps - 1], momentum, alpha, grad_rows[0])
    return loss_sum
