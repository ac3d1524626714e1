"""The chosen SGD epoch: the threads split the samples of every batch, in one parallel region.

Shapes: N samples, D features, C classes, B batch, T threads, K chunks of a batch
(``parts_W.shape[0]``), P rows of a block's scratch.

``sgd_epoch`` runs the whole epoch in compiled code. Every minibatch is cut into K contiguous
chunks (``partition.py``; K is the driver's, fixed by the batch and the shape, never by T) and
thread k of T takes a run of them. A chunk goes in blocks of about ``block_kib`` KiB of rows
(``samples_per_block``): the block's scores through the microkernel (``score_block``, which
reads the rows of X where they are), its softmax (``softmax.py``), then its gradient into the
chunk's partial gradient ``parts_W[j]`` (``accumulate_gradient``) while the next block's rows
are asked for. Then the threads meet (``sync.py``), each sums the K partials in order
j = 0..K-1 over its slice of the weights and applies the update there, thread 0 also the bias
(``update.py``), and they meet again, with W whole for the next step. No Python runs between
steps, and a given K gives the same bits on every run and at every T.

A meeting counts the waits long enough that a thread yielded its core (``sync.py``): a thread
that was not running, because another process took its core. With ``patience`` > 0 the team
stops at the end of the step where it has seen that many, and says so in ``seen``; the driver
goes on with fewer threads (``fastlr/threads.py``), which changes no bits.

The microkernel (``microkernel.py``) is the one interface to the tiles: the epoch asks it for
its scratch, to ready W at the start of a chunk, and for a block's scores and gradient; which
tiles answer is chosen there from the CPU's tuning.

Why this epoch won, against the rungs of the lab (``fastlr/backends/numba_ladder``: columns
split between threads, packed panels, a fork-join per step): splitting the samples and
reading rows in place needs no packing copy and runs each sample's softmax in one thread, and
one parallel region per epoch saves a fork-join per step. The measurements are in the journal
(``docs/journal/``).

The threads spin on each other, so all T must run at once. When they cannot (T above Numba's
thread count, or the TBB layer), ``sgd_epoch`` runs ``_stepwise_epoch`` instead: the same
chunk gradients and the same update, with a fork-join in place of each meeting. It computes
the same arithmetic in the same order, so it gives the same bits; it is only slower.

The scratch (row lists, scores, softmax rows, the update's gradient slice, the microkernel's)
is allocated once per epoch, not per step: the contract's signature has no place for it, and
an allocation is negligible against an epoch.
"""

import numpy as np
from numba import get_num_threads, njit, prange, set_num_threads

from .microkernel import (accumulate_gradient, new_scratch, pack_weights, padded_rows,
                          score_block, thread_scratch)
from .partition import _aligned_slice, _chunk_bounds, _thread_chunks, _thread_stream
from .softmax import _block_correct, _block_softmax, _softmax_scratch
from .sync import MEETING_SLOTS, _meeting, _threads_run_at_once
from .tiles import SCORE_SAMPLES, VECTOR_BYTES, _prefetch_element
from .tuning import TUNING
from .update import _update_bias, _update_slice

BLOCK_BYTES = TUNING.block_kib * 1024  # rows of X per block, in bytes (``tuning.py``)
MAX_BLOCK = 1024  # samples: the scratch of a block of rows a few features long stays small


@njit(cache=True)
def _aligned(a):
    """``a`` itself if it starts on a 64-byte line, else a copy that does (Numba allocates on
    64 bytes). On Intel cores a 64-byte load that straddles two lines costs two; a row of
    MNIST (3136 bytes) is a whole number of lines, so aligning the start aligns every row:
    on the Xeon both tiles ran faster from aligned rows (docs/journal/xeon-sapphire-rapids.md,
    round two)."""
    if a.ctypes.data % 64 == 0:
        return a
    return a.copy()


@njit(cache=True)
def samples_per_block(row_bytes):
    """The samples of a block for rows of ``row_bytes`` bytes: BLOCK_BYTES of them, rounded
    down to whole score tiles, at least one tile and at most MAX_BLOCK (MNIST: 32 float32
    rows, 16 float64 rows, and 128 uint8 rows with AVX-512's tiles of 4 samples, 130 with
    the tiles of 2 of AVX2 and the baseline)."""
    n = BLOCK_BYTES // row_bytes // SCORE_SAMPLES * SCORE_SAMPLES
    return min(max(n, SCORE_SAMPLES), MAX_BLOCK)


@njit(cache=True)
def _epoch_scratch(T, C, D, dtype, block):
    """Per-thread scratch of the epoch in blocks of ``block`` samples, each row padded so no
    two threads share a cache line: the block's row numbers and the next block's
    (T, block + 16) int64, the block's scores S (T, P, C), the softmax's G, Z, E, row maxima
    and sums, the update's gradient slice (T, C D / T + 16 + lanes)."""
    rows = np.zeros((T, block + 16), np.int64)
    ahead = np.zeros((T, block + 16), np.int64)
    S = np.zeros((T, padded_rows(block), C), dtype)
    lanes = VECTOR_BYTES // S.itemsize
    G, Z, E, row_max, row_total = _softmax_scratch(T, block, C, dtype)
    grad = np.zeros((T, (C * D) // T + 16 + lanes), dtype)
    return rows, ahead, S, G, Z, E, row_max, row_total, grad


@njit(cache=True)
def _chunk_gradient(j, K, j0, j1, t, X, y, sample_weight, perm, batch_size, W, b, part_W,
                    part_b, rows, ahead, S, G, Z, E, row_max, row_total, kernel, block):
    """The partial gradient of chunk j of the K of step t at the current W, computed by the
    thread that takes chunks [j0, j1), into part_W (C, D) and part_b (C,), block by block of ``block`` samples: the block's scores, its softmax, its gradient,
    while the next block's rows are asked for. ``kernel``: thread k's microkernel scratch.
    Returns the chunk's sum of s_i l_i and its sum of s_i over the samples whose highest
    score is their label."""
    M = perm.shape[0]
    start = t * batch_size
    stop = min(start + batch_size, M)
    inv_batch = 1.0 / (stop - start)
    lo, hi = _chunk_bounds(start, stop, j, K)
    loss = 0.0
    correct = 0.0
    part_b[:] = 0
    if hi == lo:
        part_W[:, :] = 0
    pack_weights(X, W, hi - lo, kernel)
    for p0 in range(lo, hi, block):
        n = min(block, hi - p0)
        for s in range(n):
            rows[s] = perm[p0 + s]
            # The softmax reads the block's labels and weights, scattered over y and
            # sample_weight: asked for now, they arrive while the scores run.
            _prefetch_element(y, rows[s])
            _prefetch_element(sample_weight, rows[s])
        for s in range(n, padded_rows(n)):
            rows[s] = rows[n - 1]
        n_ahead = _thread_stream(perm, batch_size, K, j0, j1, t, j, p0 - lo + n, n, ahead)
        score_block(X, rows, n, ahead, n_ahead, W, kernel, S)
        loss = _block_softmax(S, n, inv_batch, b, y, sample_weight, perm, p0, Z, E, row_max,
                              row_total, G, part_b, loss)
        correct = _block_correct(Z, row_max, y, sample_weight, perm, p0, n, correct)
        # The first block overwrites the part: no pass to clear it.
        accumulate_gradient(X, rows, n, ahead, n_ahead, G, part_W, p0 == lo, kernel)
    return loss, correct


@njit(cache=True)
def _update_share(k, T, lr, momentum, alpha, W, b, vel_W, vel_b, parts_W, parts_b, grad):
    """Thread k's share of a step's update: its slice of the flat W from the K partial
    gradients, and the bias if k is 0."""
    K, C, D = parts_W.shape
    lo, hi = _aligned_slice(C * D, k, T)
    _update_slice(W.reshape(C * D), vel_W.reshape(C * D), parts_W.reshape((K, C * D)), lo, hi,
                  lr, momentum, alpha, grad)
    if k == 0:
        _update_bias(b, vel_b, parts_b, lr, momentum, grad)


@njit(cache=True)
def _sample_thread(k, T, X, y, sample_weight, perm, lr_steps, batch_size, momentum, alpha,
                   W, b, vel_W, vel_b, parts_W, parts_b, rows, ahead, S, G, Z, E, row_max,
                   row_total, grad, kernel, flags, step_loss, step_correct, block, patience,
                   seen):
    """Thread k's whole epoch: per step the gradients of its chunks, a meeting, its share of
    the update, a meeting, after which W is whole again. Chunk j's sum of s_i l_i for step t
    goes to ``step_loss[t, j]``, its sum of s_i over the samples scored right to
    ``step_correct[t, j]``. After a step whose closing meeting counted ``patience`` long
    waits (if patience > 0) the team stops, every thread at the same step. ``seen`` (2,)
    int64: the steps it ran, the long waits it saw."""
    K = parts_W.shape[0]
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    j0, j1 = _thread_chunks(k, T, K)
    meetings = 0
    long_waits = 0
    seen[0] = n_steps
    for t in range(n_steps):
        for j in range(j0, j1):
            step_loss[t, j], step_correct[t, j] = _chunk_gradient(
                j, K, j0, j1, t, X, y, sample_weight, perm, batch_size, W, b, parts_W[j],
                parts_b[j], rows, ahead, S, G, Z, E, row_max, row_total, kernel, block)
        if T > 1:
            meetings += 1
            _, waited = _meeting(flags, k, T, meetings, long_waits)
            long_waits += waited
        _update_share(k, T, lr_steps[t], momentum, alpha, W, b, vel_W, vel_b, parts_W, parts_b,
                      grad)
        if T > 1:
            meetings += 1
            team, waited = _meeting(flags, k, T, meetings, long_waits)
            long_waits += waited
            if patience > 0 and team >= patience:
                seen[0] = t + 1
                break
    seen[1] = long_waits


@njit(cache=True)
def _sum_steps(per_step):
    """The epoch's total of (S, K) per-step, per-chunk sums (of the loss, of the samples
    scored right), added step by step, chunk by chunk, in order."""
    total = 0.0
    for t in range(per_step.shape[0]):
        for k in range(per_step.shape[1]):
            total += per_step[t, k]
    return total


@njit(parallel=True, cache=True)
def _sample_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                  alpha, parts_W, parts_b, T, patience, seen, block):
    """The epoch as one parallel region: T threads that meet through atomic flags. W and the
    partial gradients are worked on where they start on a cache line (``_aligned``)."""
    K, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    rows, ahead, S, G, Z, E, row_max, row_total, grad = _epoch_scratch(T, C, D, W.dtype, block)
    kernel = new_scratch(T, C, D, block, X, W)
    flags = np.zeros(MEETING_SLOTS * T, np.int64)
    step_loss = np.zeros((n_steps, K))
    step_correct = np.zeros((n_steps, K))
    thread_seen = np.zeros((T, 2), np.int64)
    W_work, parts_work = _aligned(W), _aligned(parts_W)
    for k in prange(T):  # the whole epoch: at T = 1, one fork-join per epoch
        _sample_thread(k, T, X, y, sample_weight, perm, lr_steps, batch_size, momentum, alpha,
                       W_work, b, vel_W, vel_b, parts_work, parts_b, rows[k], ahead[k], S[k],
                       G[k], Z[k], E[k], row_max[k], row_total[k], grad[k],
                       thread_scratch(kernel, k), flags, step_loss, step_correct, block,
                       patience, thread_seen[k])
    if W_work.ctypes.data != W.ctypes.data:
        W[:, :] = W_work
    seen[0] = thread_seen[0, 0]
    seen[1] = thread_seen[:, 1].sum()
    return _sum_steps(step_loss), _sum_steps(step_correct)


@njit(parallel=True, cache=True)
def _stepwise_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size,
                    momentum, alpha, parts_W, parts_b, T, patience, seen, block):
    """The epoch for threads that may not all run at once: ``_sample_epoch``'s chunk
    gradients and update, with two fork-joins per step in place of its meetings; it counts
    no waits and never stops early."""
    K, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    rows, ahead, S, G, Z, E, row_max, row_total, grad = _epoch_scratch(T, C, D, W.dtype, block)
    kernel = new_scratch(T, C, D, block, X, W)
    step_loss = np.zeros((n_steps, K))
    step_correct = np.zeros((n_steps, K))
    W_work, parts_work = _aligned(W), _aligned(parts_W)
    for t in range(n_steps):
        for k in prange(T):
            j0, j1 = _thread_chunks(k, T, K)
            for j in range(j0, j1):
                step_loss[t, j], step_correct[t, j] = _chunk_gradient(
                    j, K, j0, j1, t, X, y, sample_weight, perm, batch_size, W_work, b,
                    parts_work[j], parts_b[j], rows[k], ahead[k], S[k], G[k], Z[k], E[k],
                    row_max[k], row_total[k], thread_scratch(kernel, k), block)
        for k in prange(T):
            _update_share(k, T, lr_steps[t], momentum, alpha, W_work, b, vel_W, vel_b,
                          parts_work, parts_b, grad[k])
    if W_work.ctypes.data != W.ctypes.data:
        W[:, :] = W_work
    seen[0] = n_steps
    seen[1] = 0
    return _sum_steps(step_loss), _sum_steps(step_correct)


def sgd_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
              alpha, parts_W, parts_b, n_threads=None, patience=0, seen=None):
    """One epoch of minibatch SGD (the contract in ``fastlr/backends/contract.py``).

    Parameters
    ----------
    X : (N, D) float32 or float64, C-contiguous
    y : (N,) int64, labels in 0..C-1
    sample_weight : (N,) X's dtype
    perm : (M,) int64, the samples of the epoch in order; step t takes
        ``perm[t*batch_size:(t+1)*batch_size]``
    W, b, vel_W, vel_b : (C, D), (C,) X's dtype, updated in place
    lr_steps : (S,) float64, the learning rate of each step
    batch_size : int
    momentum, alpha : float, momentum and L2 strength
    parts_W, parts_b : (K, C, D), (K, C) X's dtype, the partial gradients of the K chunks of
        every batch
    n_threads : int, T, the threads that share the chunks (default K)
    patience : int, the long waits after which the threads stop at the end of a step (0:
        never)
    seen : (2,) int64, optional; written: the steps run, the long waits seen

    Returns
    -------
    loss_sum : float
        The sum of ``s_i l_i`` over the steps run, each loss at the weights of its step.
    correct_sum : float
        The sum of ``s_i`` over the samples whose highest score at those weights is their
        label (the first one on a tie).
    """
    args = (X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
            alpha, parts_W, parts_b)
    block = samples_per_block(X.shape[1] * X.itemsize)
    T = parts_W.shape[0] if n_threads is None else int(n_threads)
    seen = np.zeros(2, np.int64) if seen is None else seen
    if not _threads_run_at_once(T):
        return _stepwise_epoch(*args, T, patience, seen, block)
    # A team of T: at T = 1 no idle thread waits out the epoch at the region's end.
    pool = get_num_threads()
    set_num_threads(T)
    try:
        return _sample_epoch(*args, T, patience, seen, block)
    finally:
        set_num_threads(pool)
