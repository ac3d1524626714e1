"""Scores and the loss of one batch, on the epoch's tiles.

Shapes: N samples, B batch, D features, C classes, T threads, K chunks of a batch.

``predict_scores``  X W^T + b: T contiguous chunks of rows, each in blocks of BLOCK rows
                    through the score tiles.
``loss_and_grad``   the mean loss of one batch and its gradient: the K chunks of the batch
                    shared by T threads with the epoch's chunk gradient, the K partials
                    reduced in fixed order (the same bits at any T).
"""

import numpy as np
from numba import njit, prange

from .epoch import _chunk_gradient, _epoch_scratch, samples_per_block
from .microkernel import new_scratch, thread_scratch
from .partition import _chunk_bounds, _thread_chunks
from .tiles import _gather_scores, padded_rows

# Rows scored together by predict_scores: in order, so no next block to ask for; the size it
# had when it shared the epoch's blocks.
BLOCK = 64


@njit(cache=True)
def _score_rows(X, W, b, lo, hi, rows, S, out):
    """out[lo:hi] = X[lo:hi] W^T + b, BLOCK rows at a time; ``rows`` (BLOCK,) int64 and
    S (BLOCK rounded up to whole score tiles, C) are scratch."""
    C = W.shape[0]
    for p0 in range(lo, hi, BLOCK):
        n = min(BLOCK, hi - p0)
        for s in range(n):
            rows[s] = p0 + s
        for s in range(n, padded_rows(n)):
            rows[s] = p0 + n - 1
        _gather_scores(X, rows, n, W, S)
        for s in range(n):
            for c in range(C):
                out[p0 + s, c] = S[s, c] + b[c]


@njit(parallel=True, cache=True)
def predict_scores(X, W, b, out, n_threads):
    """Scores of every sample: ``out = X W^T + b``.

    Parameters
    ----------
    X : (N, D) float32 or float64, C-contiguous
    W, b : (C, D), (C,) X's dtype
    out : (N, C) X's dtype, written
    n_threads : int, T contiguous chunks of rows (at least 1)
    """
    N = X.shape[0]
    C = W.shape[0]
    T = max(1, n_threads)
    rows = np.zeros((T, BLOCK + 16), np.int64)
    S = np.zeros((T, padded_rows(BLOCK), C), W.dtype)
    for k in prange(T):
        lo, hi = _chunk_bounds(0, N, k, T)
        _score_rows(X, W, b, lo, hi, rows[k], S[k], out)


@njit(cache=True)
def _reduce_parts(parts_W, parts_b, grad_W, grad_b):
    """grad = sum_j parts[j], j = 0..K-1 in order."""
    K, C, D = parts_W.shape
    for c in range(C):
        for d in range(D):
            g = parts_W[0, c, d]
            for j in range(1, K):
                g += parts_W[j, c, d]
            grad_W[c, d] = g
        g = parts_b[0, c]
        for j in range(1, K):
            g += parts_b[j, c]
        grad_b[c] = g


@njit(parallel=True, cache=True)
def loss_and_grad(X, y, sample_weight, W, b, grad_W, grad_b, parts_W, parts_b, n_threads):
    """Mean weighted cross-entropy of one batch and its gradient.

    Parameters
    ----------
    X : (B, D) float32 or float64, C-contiguous
    y : (B,) int64
    sample_weight : (B,) X's dtype
    W, b : (C, D), (C,) X's dtype
    grad_W, grad_b : (C, D), (C,) X's dtype, written
    parts_W, parts_b : (K, C, D), (K, C) X's dtype, the partial gradients of the K chunks
    n_threads : int, T, the threads that share the chunks

    Returns
    -------
    float
        ``(1/B) sum_i s_i l_i``.
    """
    K, C, D = parts_W.shape
    T = max(1, n_threads)
    B = X.shape[0]
    perm = np.arange(B)
    block = samples_per_block(D * X.itemsize)
    rows, ahead, S, G, Z, E, row_max, row_total, _ = _epoch_scratch(T, C, D, W.dtype, block)
    kernel = new_scratch(T, C, D, block, X, W)
    chunk_loss = np.zeros(K)
    for k in prange(T):
        j0, j1 = _thread_chunks(k, T, K)
        for j in range(j0, j1):
            chunk_loss[j], _ = _chunk_gradient(j, K, j0, j1, 0, X, y, sample_weight, perm, B,
                                               W, b, parts_W[j], parts_b[j], rows[k], ahead[k],
                                               S[k], G[k], Z[k], E[k], row_max[k],
                                               row_total[k], thread_scratch(kernel, k), block)
    _reduce_parts(parts_W, parts_b, grad_W, grad_b)
    loss = 0.0
    for j in range(K):
        loss += chunk_loss[j]
    return loss * (1.0 / B)
