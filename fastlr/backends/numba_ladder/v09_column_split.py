"""v9, the threads split the features.

Shapes: N samples, D features, C classes, B batch, T threads.

In v8 every step each thread read the other's partial gradient across cores and both ran the
whole update. In v9 thread k owns the columns ``_aligned_slice(D, k, T)`` of W in a private
buffer and reads only those columns of X: its gradient and update stay in its cache, and only
the partial scores cross cores. Every thread runs the softmax of the whole batch, which made
the softmax worth making cheap: the vectorizable exp of ``fastlr.backends.numba.softmax``.
Steps are pipelined, one fork-join each; the packing copies half rows through a view that
starts at the slice (indexing ``row[d_lo + d]`` stops the copy vectorizing), and the gradient
asks for the next step's first PREFETCH_LEAD half rows (the whole next batch thrashed L2).
"""

import numpy as np
from numba import njit, prange

from ..numba.partition import _aligned_slice, _chunk_bounds
from ..numba.softmax import _block_softmax, _softmax_scratch
from ..numba.tiles import FAST, SCORE_SAMPLES, TILE_CLASSES, VECTOR_BYTES, _score_leftovers
from ..numba.update import _sgd_step
from .v08_register_tiles import (
    GRAD_VECTORS, PANEL, _grad_tile_narrow, _grad_tile_wide, _prefetch_span, _score_tile)


PREFETCH_ROWS = 8   # how far ahead in perm the packing asks for half rows of X (v9)
PREFETCH_LEAD = 32  # how many of the next step's half rows the gradient asks for (v9)


@njit(fastmath=FAST, cache=True)
def _column_scores(X, perm, start, stop, d_lo, d_hi, Xp, W_k, S_k, cursor):
    """Pack the half rows ``X[perm[start:stop], d_lo:d_hi]`` into Xp (P, D_k) and write the
    partial scores ``S_k[s, c] = Xp[s] . W_k[c]`` (the columns of Xp and W_k past
    d_hi - d_lo are zero), SCORE_SAMPLES rows at a time: pack them, then the register tiles
    on them while they are in L1. Before each block, make sure the half rows up to
    PREFETCH_ROWS further on in perm have been asked for (``cursor[0]``: the first row not
    yet asked for; ``_column_gradient`` usually got there first)."""
    C, Dk = W_k.shape
    M = perm.shape[0]
    n = stop - start
    width = d_hi - d_lo
    lanes = VECTOR_BYTES // Xp.itemsize
    n_vec = Dk // lanes
    d_tail = n_vec * lanes
    c_tiles = C - C % TILE_CLASSES
    for s0 in range(0, n, SCORE_SAMPLES):
        target = min(M, start + s0 + PREFETCH_ROWS + SCORE_SAMPLES)
        for j in range(cursor[0], target):
            _prefetch_span(X, perm[j], d_lo, width)
        cursor[0] = max(cursor[0], target)
        for s in range(s0, min(n, s0 + SCORE_SAMPLES)):
            # A view that starts at d_lo: indexing the row at d_lo + d instead costs a
            # negative-index check per element and the copy no longer vectorizes (2.6x slower).
            source = X[perm[start + s], d_lo:d_hi]
            packed = Xp[s]
            for d in range(width):
                packed[d] = source[d]
        for c0 in range(0, c_tiles, TILE_CLASSES):
            _score_tile(Xp, s0, W_k, c0, n_vec, S_k)
        for s in range(s0, s0 + SCORE_SAMPLES):
            _score_leftovers(Xp[s], W_k, S_k[s], c_tiles, d_tail, 1.0)


@njit(fastmath=FAST, cache=True)
def _column_gradient(Xp, n, G, grad_k, X, perm, cursor, next_stop, d_lo, width):
    """``grad_k += G[:n]^T Xp[:n]`` (C, D_k) in panels of PANEL rows with the register tiles;
    between the tiles, ask for the half rows ``X[perm[cursor[0]:next_stop], d_lo:d_lo +
    width]`` (the next step's), spread evenly, so the memory works while the tiles do."""
    C, Dk = grad_k.shape
    lanes = VECTOR_BYTES // Xp.itemsize
    wide = GRAD_VECTORS * lanes
    d_wide = Dk - Dk % wide
    d_narrow = Dk - Dk % lanes
    c_tiles = C - C % TILE_CLASSES
    n_panels = (n + PANEL - 1) // PANEL
    n_slots = n_panels * ((d_narrow + wide - 1) // wide)
    per_slot = (next_stop - cursor[0] + n_slots - 1) // max(1, n_slots)
    for p0 in range(0, n, PANEL):
        rows = min(PANEL, n - p0)
        panel = Xp[p0:p0 + rows]
        g_panel = G[p0:p0 + rows]
        for d0 in range(0, d_narrow, wide):
            target = min(next_stop, cursor[0] + per_slot)
            for j in range(cursor[0], target):
                _prefetch_span(X, perm[j], d_lo, width)
            cursor[0] = max(cursor[0], target)
            if d0 < d_wide:
                for c0 in range(0, c_tiles, TILE_CLASSES):
                    _grad_tile_wide(panel, rows, g_panel, d0, c0, grad_k)
            else:
                for d1 in range(d0, d_narrow, lanes):
                    for c0 in range(0, c_tiles, TILE_CLASSES):
                        _grad_tile_narrow(panel, rows, g_panel, d1, c0, grad_k)
        for s in range(rows):
            x = panel[s]
            for c in range(c_tiles):
                g = g_panel[s, c]
                row = grad_k[c]
                for d in range(d_narrow, Dk):
                    row[d] += g * x[d]
            for c in range(c_tiles, C):
                g = g_panel[s, c]
                row = grad_k[c]
                for d in range(Dk):
                    row[d] += g * x[d]


@njit(cache=True)
def _column_update(grad_k, W_k, vel_k, b_k, vel_b_k, grad_b, lr, momentum, alpha):
    """The SGD step (``fastlr.backends.numba.update``) on the thread's columns of W, row by
    row, and on its copy of b."""
    for c in range(W_k.shape[0]):
        _sgd_step(W_k[c], vel_k[c], grad_k[c], lr, momentum, alpha)
    _sgd_step(b_k, vel_b_k, grad_b, lr, momentum, 0.0)


@njit(cache=True)
def _column_step(t, k, T, n_steps, X, y, sample_weight, perm, lr_steps, batch_size, momentum,
                 alpha, d_lo, d_hi, W_k, vel_k, grad_k, b_k, vel_b_k, grad_b, Xp, S_parts, G,
                 Z, E, row_max, row_total, cursor):
    """Thread k's share of pipeline stage t: finish step t-1 (softmax from the T partial
    scores, the gradient of its columns from its packed half rows while the next step's half
    rows are fetched, the update of its columns and of its copy of b), then start step t
    (pack its half rows, its partial scores). Returns its share of step t-1's sum of
    s_i l_i."""
    M = perm.shape[0]
    loss = 0.0
    if t > 0:
        start = (t - 1) * batch_size
        n = min(start + batch_size, M) - start
        loss_lo, loss_hi = _chunk_bounds(0, n, k, T)
        grad_b[:] = 0
        grad_k[:, :] = 0
        loss = _block_softmax(S_parts[(t - 1) % 2], n, 1.0 / n, b_k, y, sample_weight, perm,
                               start, Z, E, row_max, row_total, G, grad_b, loss_lo, loss_hi,
                               0.0)
        _column_gradient(Xp, n, G, grad_k, X, perm, cursor,
                         min(start + n + min(batch_size, PREFETCH_LEAD), M), d_lo, d_hi - d_lo)
        _column_update(grad_k, W_k, vel_k, b_k, vel_b_k, grad_b, lr_steps[t - 1], momentum,
                       alpha)
    if t < n_steps:
        start = t * batch_size
        _column_scores(X, perm, start, min(start + batch_size, M), d_lo, d_hi, Xp, W_k,
                       S_parts[t % 2, k], cursor)
    return loss


@njit(cache=True)
def _split_columns(W, b, vel_W, vel_b, T):
    """The private buffers of the column split (v9, v10): thread k's columns
    ``_aligned_slice(D, k, T)`` of W and vel_W in ``W_cols[k]``, ``vel_cols[k]`` (T, C, width),
    width the widest slice rounded up to whole vectors; columns past a thread's slice stay
    zero, so they add exact zeros to the scores and get a zero gradient and update. Each
    thread's copies of b and vel_b are padded to whole cache lines. Returns W_cols, vel_cols,
    grad_cols (zeros), b_cols, vel_b_cols, grad_b (zeros) and the slice bounds (T, 2)."""
    C, D = W.shape
    dtype = W.dtype
    lanes = VECTOR_BYTES // W.itemsize
    bounds = np.zeros((T, 2), np.int64)
    width = 0
    for k in range(T):
        d_lo, d_hi = _aligned_slice(D, k, T)
        bounds[k, 0] = d_lo
        bounds[k, 1] = d_hi
        width = max(width, d_hi - d_lo)
    width = (width + lanes - 1) // lanes * lanes
    c_pad = (C + lanes - 1) // lanes * lanes
    W_cols = np.zeros((T, C, width), dtype)
    vel_cols = np.zeros((T, C, width), dtype)
    b_cols = np.zeros((T, c_pad), dtype)
    vel_b_cols = np.zeros((T, c_pad), dtype)
    for k in range(T):
        d_lo = bounds[k, 0]
        for c in range(C):
            for d in range(d_lo, bounds[k, 1]):
                W_cols[k, c, d - d_lo] = W[c, d]
                vel_cols[k, c, d - d_lo] = vel_W[c, d]
            b_cols[k, c] = b[c]
            vel_b_cols[k, c] = vel_b[c]
    return (W_cols, vel_cols, np.zeros((T, C, width), dtype), b_cols, vel_b_cols,
            np.zeros((T, c_pad), dtype), bounds)


@njit(cache=True)
def _join_columns(W_cols, vel_cols, b_cols, vel_b_cols, bounds, W, b, vel_W, vel_b):
    """Write the threads' columns back into W and vel_W, and thread 0's copies of b and vel_b
    (all threads' are bitwise equal) into b and vel_b."""
    C = W.shape[0]
    for k in range(W_cols.shape[0]):
        d_lo = bounds[k, 0]
        for c in range(C):
            for d in range(d_lo, bounds[k, 1]):
                W[c, d] = W_cols[k, c, d - d_lo]
                vel_W[c, d] = vel_cols[k, c, d - d_lo]
    for c in range(C):
        b[c] = b_cols[0, c]
        vel_b[c] = vel_b_cols[0, c]


@njit(parallel=True, cache=True)
def sgd_epoch_v9(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v9: thread k owns the columns ``_aligned_slice(D, k, T)`` of W, in a contiguous private
    buffer with its velocity, and reads only those columns of X. Steps are pipelined, one
    fork-join each: in stage t each thread finishes step t-1 and starts step t, so the only
    data crossing cores are the T partial score blocks (P, C), double-buffered by step
    parity. Every thread runs the softmax and the bias update on the same inputs, so their
    copies of b stay bitwise equal; the loss is summed over T row chunks in order."""
    T, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    if n_steps == 0:
        return 0.0
    dtype = W.dtype
    W_cols, vel_cols, grad_cols, b_cols, vel_b_cols, grad_b, bounds = _split_columns(
        W, b, vel_W, vel_b, T)
    width = W_cols.shape[2]
    rows = (min(batch_size, M) + SCORE_SAMPLES - 1) // SCORE_SAMPLES * SCORE_SAMPLES
    # Columns past a thread's slice stay zero in Xp too.
    Xp = np.zeros((T, rows, width), dtype)
    S_parts = np.zeros((2, T, rows, C), dtype)
    G, Z, E, row_max, row_total = _softmax_scratch(T, rows, C, dtype)
    cursor = np.zeros((T, 8), np.int64)
    step_loss = np.zeros((T, 8))
    loss_sum = 0.0
    for t in range(n_steps + 1):
        if T == 1:
            step_loss[0, 0] = _column_step(
                t, 0, T, n_steps, X, y, sample_weight, perm, lr_steps, batch_size, momentum,
                alpha, bounds[0, 0], bounds[0, 1], W_cols[0], vel_cols[0], grad_cols[0],
                b_cols[0, :C], vel_b_cols[0, :C], grad_b[0, :C], Xp[0], S_parts, G[0], Z[0],
                E[0], row_max[0], row_total[0], cursor[0])
        else:
            for k in prange(T):
                step_loss[k, 0] = _column_step(
                    t, k, T, n_steps, X, y, sample_weight, perm, lr_steps, batch_size,
                    momentum, alpha, bounds[k, 0], bounds[k, 1], W_cols[k], vel_cols[k],
                    grad_cols[k], b_cols[k, :C], vel_b_cols[k, :C], grad_b[k, :C], Xp[k],
                    S_parts, G[k], Z[k], E[k], row_max[k], row_total[k], cursor[k])
        for k in range(T):
            loss_sum += step_loss[k, 0]
    _join_columns(W_cols, vel_cols, b_cols, vel_b_cols, bounds, W, b, vel_W, vel_b)
    return loss_sum
