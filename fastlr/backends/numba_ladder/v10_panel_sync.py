"""v10, one parallel region per epoch: the threads meet once per panel.

Shapes: N samples, D features, C classes, B batch, T threads.

v9's column split, but the whole epoch is one ``prange`` over the T threads, which meet once
per panel of SYNC_PANEL samples through the atomic flags of ``fastlr.backends.numba.sync``;
the partial scores are double-buffered by panel parity and each panel's gradient is taken from
its packed half rows while they are in L2. Same bits as v9, the loss included (tested). The
threads spin on each other, so when they cannot all run at once v9 runs instead. It gained the
fork-joins at batch 64; at batch 1024 the scores pass still waited on DRAM, which is what v11
(the chosen epoch, ``fastlr.backends.numba.epoch``, in its first blocks) changed: split the
samples again and read whole rows in place.
"""

import numpy as np
from numba import njit, prange

from ..numba.partition import _chunk_bounds
from ..numba.softmax import _block_softmax, _softmax_scratch
from ..numba.sync import _publish, _threads_run_at_once, _wait_until
from .v09_column_split import (
    PREFETCH_LEAD, _column_gradient, _column_scores, _column_update, _join_columns, _split_columns,
    sgd_epoch_v9)


SYNC_PANEL = 128  # samples per meeting of the threads (v10): 200 KB of half rows per thread


@njit(cache=True)
def _panel_thread(k, T, X, y, sample_weight, perm, lr_steps, batch_size, momentum, alpha,
                  d_lo, d_hi, W_k, vel_k, grad_k, b_k, vel_b_k, grad_b, Xq, S_ring, G, Z, E,
                  row_max, row_total, cursor, flags, step_loss):
    """Thread k's whole epoch in v10. Per step, per panel of SYNC_PANEL samples: pack its half
    rows into Xq and its partial scores into S_ring[q % 2, k] (q counts the panels of the
    epoch), publish ``flags[8 k] = q + 1``, wait until every thread has published panel q,
    then the panel's softmax from the T partials (summed in order k = 0..T-1) and the
    gradient of its columns from Xq while the half rows are still in L2; after the last
    panel, the update. A thread overwrites S_ring[q % 2, k] at panel q + 2 only after the
    others published panel q + 1, which they do after reading panel q. Its share of step t's sum
    of s_i l_i (the samples of its chunk of the batch, in order, as in v9) goes to
    ``step_loss[t, k]``."""
    M = perm.shape[0]
    width = d_hi - d_lo
    n_steps = (M + batch_size - 1) // batch_size
    q = 0
    for t in range(n_steps):
        start = t * batch_size
        n = min(start + batch_size, M) - start
        inv_batch = 1.0 / n
        chunk_lo, chunk_hi = _chunk_bounds(0, n, k, T)
        loss = 0.0
        grad_b[:] = 0
        grad_k[:, :] = 0
        for p0 in range(0, n, SYNC_PANEL):
            rows = min(SYNC_PANEL, n - p0)
            lo = start + p0
            _column_scores(X, perm, lo, lo + rows, d_lo, d_hi, Xq, W_k, S_ring[q % 2, k],
                           cursor)
            _publish(flags, 8 * k, np.int64(q + 1))
            for j in range(T):
                _wait_until(flags, 8 * j, np.int64(q + 1))
            loss_lo = min(rows, max(0, chunk_lo - p0))
            loss_hi = max(loss_lo, min(rows, chunk_hi - p0))
            loss = _block_softmax(S_ring[q % 2], rows, inv_batch, b_k, y, sample_weight,
                                   perm, lo, Z, E, row_max, row_total, G, grad_b, loss_lo,
                                   loss_hi, loss)
            _column_gradient(Xq, rows, G, grad_k, X, perm, cursor,
                             min(lo + rows + PREFETCH_LEAD, M), d_lo, width)
            q += 1
        _column_update(grad_k, W_k, vel_k, b_k, vel_b_k, grad_b, lr_steps[t], momentum, alpha)
        step_loss[t, k] = loss


def sgd_epoch_v10(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                  alpha, parts_W, parts_b):
    """v10: v9's column split and buffers, but the whole epoch is one parallel region
    (``_panel_epoch``): the threads meet once per panel of SYNC_PANEL samples instead of
    forking and joining once per step, and the packed half rows are used for the gradient
    while they are in L2 (v9 packed the whole batch: 1.6 MB per thread at B = 1024). Same
    bits as v9, the loss included. The threads spin on each
    other, so all T must run at once: with more chunks than Numba has threads, v9 runs
    instead. (A Python function: Numba's thread count read inside a kernel would keep it out
    of the cache.)"""
    args = (X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
            alpha, parts_W, parts_b)
    if not _threads_run_at_once(parts_W.shape[0]):
        return sgd_epoch_v9(*args)
    return _panel_epoch(*args)


@njit(parallel=True, cache=True)
def _panel_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """The kernel of ``sgd_epoch_v10``, for T at most Numba's thread count."""
    T, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    if n_steps == 0:
        return 0.0
    dtype = W.dtype
    W_cols, vel_cols, grad_cols, b_cols, vel_b_cols, grad_b, bounds = _split_columns(
        W, b, vel_W, vel_b, T)
    rows = SYNC_PANEL
    # Columns past a thread's slice stay zero in Xq too.
    Xq = np.zeros((T, rows, W_cols.shape[2]), dtype)
    S_ring = np.zeros((2, T, rows, C), dtype)
    flags = np.zeros(8 * T, np.int64)
    G, Z, E, row_max, row_total = _softmax_scratch(T, rows, C, dtype)
    cursor = np.zeros((T, 8), np.int64)
    step_loss = np.zeros((n_steps, T))
    for k in prange(T):  # the whole epoch: at T = 1, one fork-join per epoch
        _panel_thread(
            k, T, X, y, sample_weight, perm, lr_steps, batch_size, momentum, alpha,
            bounds[k, 0], bounds[k, 1], W_cols[k], vel_cols[k], grad_cols[k], b_cols[k, :C],
            vel_b_cols[k, :C], grad_b[k, :C], Xq[k], S_ring, G[k], Z[k], E[k], row_max[k],
            row_total[k], cursor[k], flags, step_loss)
    loss_sum = 0.0
    for t in range(n_steps):
        for k in range(T):
            loss_sum += step_loss[t, k]
    _join_columns(W_cols, vel_cols, b_cols, vel_b_cols, bounds, W, b, vel_W, vel_b)
    return loss_sum
