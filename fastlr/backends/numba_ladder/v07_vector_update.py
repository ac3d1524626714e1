"""v7, a vectorized update.

Shapes: N samples, D features, C classes, B batch, T threads.

``_apply_update``'s innermost loop is the runtime-length sum over T, which keeps the whole
update scalar; ``_apply_update_rows`` sums the partials row by row first, so every inner loop
runs along D contiguous floats and vectorizes. Same arithmetic, same order: same bits as v5
(tested).

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


if __name__ == "__main__":
    main(sgd_epoch_v7, __doc__)
