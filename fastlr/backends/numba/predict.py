"""Scores and the loss of one batch, on the epoch's tiles.

Shapes: N samples, B batch, D features, C classes, T threads.

``predict_scores``  X W^T + b: T contiguous chunks of rows, each in blocks of BLOCK rows
                    through the score tiles.
``loss_and_grad``   the mean loss of one batch and its gradient: thread k takes the k-th chunk
                    of the batch with the epoch's chunk gradient, the T partials are reduced
                    in fixed order.
"""

import numpy as np
from numba import njit, prange

from .epoch import _chunk_gradient, _epoch_scratch, samples_per_block
from .microkernel import new_scratch, thread_scratch
from .partition import _chunk_bounds
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
    """grad = sum_k parts[k], k = 0..T-1 in order."""
    T, C, D = parts_W.shape
    for c in range(C):
        for d in range(D):
            g = parts_W[0, c, d]
            for k in range(1, T):
                g += parts_W[k, c, d]
            grad_W[c, d] = g
        g = parts_b[0, c]
        for k in range(1, T):
            g += parts_b[k, c]
        grad_b[c] = g


@njit(parallel=True, cache=True)
def loss_and_grad(X, y, sample_weight, W, b, grad_W, grad_b, parts_W, parts_b):
    """Mean weighted cross-entropy of one batch and its gradient.

    Parameters
    ----------
    X : (B, D) float32 or float64, C-contiguous
    y : (B,) int64
    sample_weight : (B,) X's dtype
    W, b : (C, D), (C,) X's dtype
    grad_W, grad_b : (C, D), (C,) X's dtype, written
    parts_W, parts_b : (T, C, D), (T, C) X's dtype, per-thread partial gradients

    Returns
    -------
    float
        ``(1/B) sum_i s_i l_i``.
    """
    T, C, D = parts_W.shape
    B = X.shape[0]
    perm = np.arange(B)
    block = samples_per_block(D * X.itemsize)
    rows, ahead, S, G, Z, E, row_max, row_total, _ = _epoch_scratch(T, C, D, W.dtype, block)
    kernel = new_scratch(T, C, D, block, X, W)
    chunk_loss = np.zeros(T)
    for k in prange(T):
        chunk_loss[k], _ = _chunk_gradient(k, T, 0, X, y, sample_weight, perm, B, W, b,
                                           parts_W[k], parts_b[k], rows[k], ahead[k], S[k],
                                           G[k], Z[k], E[k], row_max[k], row_total[k],
                                           thread_scratch(kernel, k), block)
    _reduce_parts(parts_W, parts_b, grad_W, grad_b)
    loss = 0.0
    for k in range(T):
        loss += chunk_loss[k]
    return loss * (1.0 / B)
