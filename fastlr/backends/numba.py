"""Numba backend: fused softmax-regression kernels compiled with @njit.

Shapes: N samples, D features, C classes, B batch, S steps in an epoch, T threads,
K = 4 samples in a register block.

The kernels (contract in ``fastlr/backends/__init__.py``, math in ``reference.py``)
------------------------------------------------------------------------------------
``sgd_epoch``       the whole epoch in compiled code, in one parallel region (v11): thread k
                    of T takes the k-th contiguous chunk of every minibatch, in blocks of 64
                    samples: the block's scores with register tiles (4 samples x 5 classes)
                    that read the rows of X where they are, the stable softmax (a
                    vectorizable exp), then the block's gradient into the thread's partial
                    gradient with a register tile of 10 classes x 2 vectors held across all 64
                    samples; as that tile sweeps the features, sample s asks for the same
                    columns of the row that takes its place in the next block (``prefetcht1``),
                    so the next rows arrive while the FMAs run. Then the threads meet (atomic
                    flags), each sums the T partials in order k = 0..T-1 over its slice of the
                    weights and applies the update there (thread 0 also the bias), and they
                    meet again, with W whole for the next step. No Python runs between steps.
``loss_and_grad``   one batch with v8's chunk kernel (packed panels), partials reduced in
                    fixed order.
``predict_scores``  X W^T + b with the 4 x 5 score tiles on the rows in place, T row chunks.

The partition depends on T alone (v9, v10: columns ``_column_slice(D, k, T)``; v1-v8, v11 and the
other kernels: chunk k is rows [k B / T, (k+1) B / T)), never on the thread pool, so a given T
always gives the same bits. float32 is the fast path; float64 runs the same code (8 lanes instead of
16). Fast-math is limited to reassociation and contraction, and only in the score and gradient
loops; the tiles use explicit FMAs and a fixed reduction tree; softmax, the loss and the update
keep strict IEEE semantics.

The register tiles are LLVM vector IR emitted through ``numba.core.extending.intrinsic``
(``_score_tile``, ``_make_grad_tile``): Numba keeps a local array of accumulators in memory,
so a loop over one cannot be FMA-bound; in the intrinsics the accumulators are allocas that
LLVM promotes to zmm registers, and the loop bodies are vector loads, broadcasts and
``vfmadd231ps`` only (checked with ``inspect_asm``). The epoch allocates its scratch (the
packed panel, the scores and their gradient: 64 x D + 2 x 64 x C floats per thread) once
per call, not per step, because the contract's signature has no place for it and an
allocation is negligible against an epoch.

The ladder (``KERNEL_VERSIONS``; timed by ``python -m fastlr bench --kernels all``, checked
by ``tests/test_numba_ladder.py``). v1-v3 and v4-v5 repeat their step loops around different
chunk kernels on purpose: a Numba function that takes another as an argument, or closes over
it, is not loaded from the cache in a new process (tried), and every rung should load like the
chosen one. ms per 60000-sample MNIST epoch, float32, median of 5, on a 2-core AMD EPYC
Zen 4 whose NumPy sgemm runs at 103 (1 thread) / 191-205 (2 threads) GFLOP/s; the NumPy
reference takes 96-106 ms at batch 64 and 77-98 / 67-76 ms at batch 1024. v1-v7 from one
run, v8 from a later run with v7 re-timed beside it (v7 numbers in brackets):

    version               batch 64      batch 1024    what it changed
                          1 thr  2 thr  1 thr  2 thr
    v1-naive               444    247    444    226   scalar fused loops, strict FP order
    v2-vectorized          106     78     95     54   reassociation: zmm FMAs in the dots
    v3-blocked              64     56     61     32   K = 4 samples share each W/grad row load
    v4-parallel-update      64     55     65     32   update split by columns in a 2nd prange
    v5-blocked-2x4          59     45     58     28   2 classes x 4 samples for the scores
    v6-one-sync             58     47     58     27   one prange per step, private W copies
    v7-vector-update        58     35     59     27   the update vectorized
    v8-register-tiles       41     30     40     21   register tiles, packed panels,
                          [(53)   (40)   (51)   (26)]  prefetch of the next panel
    v9-column-split         37     23     38     20   threads split the features; one exp
                          [(43)   (29)   (41)   (22)]  per lane; prefetch in the gradient
    v10-panel-sync          39     20     36     20   one parallel region per epoch, threads
                          [(39)   (23)   (38)   (20)]  meet per 128-sample panel
    v11-sample-split        26     18     25     13   threads split the samples again; rows
                          [(38)   (20)   (38)   (20)]  read in place, next block asked for
                                                      line by line in the gradient (chosen)

v11 and v10 (in brackets): the ``bench --kernels all`` run the README shows (NumPy beside them:
95 / 96 ms at batch 64, 80 / 67 ms at batch 1024; sgemm 104 / 203 GFLOP/s; batch 256: v11 25.4 /
14.1 ms, v10 37.9 / 19.6). v9 and v8 (in brackets) from one standalone run later still (NumPy in
the harness beside it: 93 ms at batch 64 on 1 and 2 threads, 84 / 65 ms at batch 1024; sgemm
103 / 196 GFLOP/s). At batch 256 v9 takes 37 / 20 ms (v8: 40 / 24). v10 and v9 (in brackets):
medians of 7 in a quiet run with both side by side (the ladder script since folded into
``python -m fastlr bench --kernels all``) (NumPy beside them: 96 / 97 ms at batch 64, 76 / 64 ms
at batch 1024; sgemm 103 / 206 GFLOP/s): 38.7 / 19.6 / 36.0 / 19.8 against 38.6 / 23.4 / 38.4 /
20.3. When another process takes CPU time, both suffer: in disturbed runs v9 at batch 64 on 2
threads took 32.6-39.3 ms against v10's 21.4-24.0, but one harness run had v10 at 31.7 ms at
batch 1024 on 2 threads (v9 24.2; the same v10 as the harness's "numba" engine took 21.3 in that
run): a descheduled thread stalls the other at the next panel.

Why v8: in isolation (a packed 64-row panel in cache) its score tile runs at 105 GFLOP/s and
its gradient tile at 112 GFLOP/s, against v5's 69 and 48: the gradient is no longer a
read-modify-write of the gradient rows per block of 4 samples but 20 accumulators held in
registers for the whole panel, 4 vector loads and 5 broadcasts per 20 FMAs. With the rows of
X in cache a 1-thread epoch at batch 64 went from 38.5 ms (v7) to 28.8 ms: scores 10, gradient
8, the copy into the panel 3.7, softmax 3.6. Reading X in permutation order from DRAM adds
~12 ms on one thread; prefetching the next panel's rows into L2 (``prefetcht1``) while the
scores run is what made packing pay: without it v8 took 73 ms (the copy stalls on every row),
with ``prefetcht0`` 53 ms, ``prefetchnta`` 74 ms, ``prefetcht1`` 41 ms. The copy itself must
be a loop over d: a slice assignment ``Xp[s, :] = X[i]`` cost 46 ms per epoch against 22.

v6/v7's structure carries over: at T = 2 a step costs one fork-join (~1.7 us with the OpenMP
layer; ~85 us with the workqueue layer, which is why a machine without OpenMP or TBB should
use T = 1); each chunk keeps a private copy of (W, b, vel) and applies step t-1's update itself
from double-buffered partials at the start of step t (``test_numba_ladder`` checks v6/v7
against v5 bit for bit).

Where the time goes at T = 2, batch 64 (v8, cache-resident rows 24 ms, DRAM 30 ms): per
thread and step ~15 us of tiles and softmax, ~2 us of redundant update, ~1.7 us fork-join,
and ~5 us reading the other thread's 31 KB partial gradient across cores (an experiment that
read only its own partial ran 26.7 instead of 32 ms).

Why v9: v8 splits the samples, so at T = 2 every step each thread read the other's 31 KB
partial gradient across cores (~5 us) and both ran the whole update. v9 splits the features:
each thread's gradient and update cover only its columns and stay in its own cache; what
crosses cores is the partial scores. Its softmax runs redundantly in every thread (each needs
all of G), so it had to get cheap: ``_exp_nonpositive`` (Cody-Waite reduction, degree-13
Taylor polynomial, 2^k by setting the exponent bits, within 2 ulp of libm) vectorizes over
the whole batch where a call to libm's exp cannot (softmax 4.5 -> ~1 ms per epoch per
thread), and each thread takes the logs of the loss for 1/T of the rows. Its sums differ from
v8's (scores are summed over column blocks) within the tolerances.

Where v9's time goes at T = 2 (per thread, per epoch, batch 1024): packing the half rows and
the score tiles 12-13 ms, of which the tiles alone (rows in cache) are 5 ms and the packing
alone (no tiles) 12 ms: the scores pass is bound by reading X in permutation order from DRAM
(188 MB per epoch at ~16 GB/s for rows of 1.6 KB; sequential reads reach 31 GB/s); gradient
and update 4.7 ms; softmax ~1 ms. Fetching the next step's first 32 half rows during the
gradient overlaps some of the memory time with the tiles. At T = 1 the whole batch is packed
(3.2 MB at batch 1024, in L3, not L2), which v8 avoids with 64-row panels, yet v9 is still a
little faster there because of the softmax.

The v9 steps, batch 64 / 1024 on 2 threads: first cut 34.0 / 32.2 ms; the copy into the panel
indexed ``row[d_lo + d]`` (a negative-index check per element: the copy stopped vectorizing and
took 2.6x as long) instead of a view starting at d_lo: 25.1 / 22.7; the vectorizable exp and
the prefetch in the gradient: 23.0 / 20.0.

Tried and dropped in v9: prefetching the whole next batch during the gradient (batch 1024, 2
threads: 25.2 instead of 22.7 ms: 1.6 MB per thread thrashes L2), so it asks for 32 rows
(``PREFETCH_LEAD``; 32 to 256 measured within noise, 64 no better); the packing's prefetch
distance (``PREFETCH_ROWS`` 4 to 64: 11.8-12.8 ms for pack and tiles alone, no trend).

Tried and dropped before v9: 8-sample blocks (no faster than 4), 2-class gradient blocks in
plain Numba (40 vs 48 GFLOP/s), slicing the gradient over D (37-43 vs 48 GFLOP/s), software
prefetch of the next 4-sample block's rows in v7 (57-61 vs 52-54 ms); a first column split on
v7's kernels with non-contiguous column slices (copies and zeroing stopped vectorizing) and a
whole next batch prefetched: 65 / 85 ms at batch 64 on 1 / 2 threads; v9 is that idea with
contiguous per-thread buffers and a bounded prefetch.

Why v10: v9 forks and joins once per step (938 times an epoch at batch 64) and at batch 1024
packs the whole batch of half rows (1.6 MB per thread, more than the 1 MB L2) before the
gradient reads them again. v10 runs the epoch as one ``prange`` over the T threads; the
threads meet once per panel of SYNC_PANEL = 128 samples through per-thread atomic counters
(``_publish``: a release store; ``_wait_until``: acquire loads with ``pause``), the partial
scores double-buffered by panel parity, and each panel's gradient is taken from the packed
half rows while they are in L2. It runs v9's tiles and sums in v9's order, so W, b and the
loss are v9's bit for bit (tested). Since the threads spin on each other, all T must run at
once: ``sgd_epoch_v10`` is a Python function that runs v9 when T exceeds Numba's thread
count (reading that count inside a kernel keeps it out of the cache). Batch 64 on 2 threads
gains the fork-joins (~2 ms); batch 1024 does not move (20 ms): the scores pass still waits
on DRAM for X, and the gradient from L2 gains nothing measurable over v9's from L3.

Tried and dropped in v10 (batch 1024, 2 threads, beside v9 in the same run): a ring of 64
packed rows for the scores and packing the half rows again from X for the gradient (33.3 ms
against v9's 25.6: the re-read comes from L3 at DRAM-like speed); v9 with its gradient over
the panels in reverse order, so the most recently packed are read first (22.5 against 21.8,
within noise); for v10, SYNC_PANEL 64 / 128 / 256 with 32 to 128 rows asked for during the
gradient: 20.0-20.9 ms at batch 1024 and 20.9-22.2 at batch 64, no clear trend (128 and 32
kept).

Why v11: v10 stayed at 20 ms at batch 1024 on 2 threads (47% of sgemm) while the Cython kernel,
which splits the samples and reads rows of X in place, took 14. v11 does what it does, in
Numba: each thread takes its chunk of the batch in blocks of BLOCK = 64 samples and the tiles
read the rows through the block's list of row numbers (``_gather_score_tile``,
``_make_gather_grad_tile``): no packing copy, whole 3 KB rows instead of 1.6 KB half rows, and
the softmax of a sample runs in one thread only. The gradient tile covers 10 classes x 2
vectors, so one sweep over D reads each row once. W is shared; after a step's partial
gradients the threads meet, each sums the T partials into the update of its slice of W, and
they meet again. First cut beside v10 and Cython in one run (batch 64 / 1024, 1 / 2 threads):
v11 38.6 / 22.7 / 32.0 / 16.1 ms, v10 36.5 / 20.5 / 35.3 / 19.9, Cython 28.5 / 19.6 / 26.0 / 13.6.

With every row in cache (the permutation replaced by ``arange(N) % 64``), that first cut took
28.4 ms at batch 64 on 1 thread and Cython 26.9: v11 lost 10 ms to DRAM where Cython lost 1.6.
Its prefetch asked for three whole next rows (147 lines) between gradient tiles; Zen 4 tracks
only a few dozen misses per core, so the bursts likely stalled. Measured side by side (batch 64
/ 1024, 1 thread; 1024 on 2 threads): whole rows in bursts 44.5 / 40.2 / 21.4 ms; before each
gradient tile, its columns of all 64 next rows 39.0 / 32.5 / 19.9; inside the tile, at sample s,
its columns of the s-th next row (kept) 37.8 / 30.1 / 18.9; no prefetch at all (another run)
42.2 / 36.9. Then the update: indexing ``W[lo + j]`` costs a negative-index check per element
and the loops stopped vectorizing, 8 us per step; over views that start at lo (``_flat_update``)
1 us: batch 64, 1 thread, rows in cache, 29.6 -> 22.8 ms.

Tried and dropped in v11: asking for rows 32, 64 or 128 samples further ahead than the next
block (no trend within noise); blocks of 32 or 128 samples (no trend); the second meeting per
step (removed for timing only: 16.9 against 16.7 ms at batch 64 on 2 threads, 13.0 against 13.0
at 1024, so a scheme with one meeting and a redundant update per thread has nothing to win).

Where v11's time goes: with the rows in cache it takes 20.3 ms at batch 1024 on 1 thread and
11.4 on 2, against 24.6 and 13.2 reading them from DRAM in permutation order; on one thread a
64-sample block costs 9.8 us of scores and 9.4 of gradient (both ~100 GFLOP/s, the one-thread
sgemm rate), 2.1 of softmax and, per step, 1.2 of update. The README run: batch 64 / 256 / 1024
on 1 thread 26.2 / 25.4 / 24.6 ms (3.6x / 3.5x / 3.3x NumPy, 69-74% of sgemm), on 2 threads 17.5
/ 14.1 / 13.2 (5.4x / 6.1x / 5.0x, 53% / 66% / 70%). Like v10 it spins, so with more chunks
than Numba runs at once v9 runs instead.

Compile time: first call in float32, empty cache: sgd_epoch (v11, T = 2) 20 s, v10 18 s, v9 18 s
(v8: 11-12 s, v7: 8.4 s), loss_and_grad 4.2 s, predict_scores 3.9 s (both still on v8's chunk
kernel); ``cache=True`` makes it 0.1 s in the next process. Import compiles (or loads) one tiny
parallel probe and raises ImportError if numba cannot compile here, so the registry falls back.
"""

import numpy as np

try:
    from llvmlite import ir
    from numba import get_num_threads, njit, prange, threading_layer, types
    from numba.core import cgutils
    from numba.core.extending import intrinsic
except ImportError as exc:  # the registry reads ImportError as "not available"
    raise ImportError(f"numba is not installed ({exc})") from exc

name = "numba"

# Reassociation lets LLVM vectorize the dot-product reductions; contraction gives FMAs. The
# other fast-math flags (no NaN, no inf, approximate functions) are left off: softmax must
# see an inf or a NaN if the weights diverge, so the driver can report it.
FAST = {"reassoc", "contract"}


# --- the pieces every version shares -------------------------------------------------------

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


@njit(cache=True)
def _chunk_bounds(start, stop, k, T):
    """Rows [lo, hi) of thread k's contiguous chunk of the batch [start, stop). Depends on T
    only, never on the thread pool, so a given T always gives the same partition."""
    size = stop - start
    return start + (k * size) // T, start + ((k + 1) * size) // T


@njit(cache=True)
def _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr, momentum, alpha, col_lo, col_hi,
                  with_bias):
    """Reduce the T partial gradients in fixed order and apply the SGD step to the columns
    [col_lo, col_hi) of W (and to b if ``with_bias``):
    ``v = momentum v + (grad + alpha W); W -= lr v``, the bias without alpha."""
    T, C, _ = parts_W.shape
    lr_ = W.dtype.type(lr)
    mu = W.dtype.type(momentum)
    al = W.dtype.type(alpha)
    for c in range(C):
        for d in range(col_lo, col_hi):
            g = parts_W[0, c, d]
            for k in range(1, T):
                g += parts_W[k, c, d]
            g += al * W[c, d]
            if momentum != 0.0:
                g += mu * vel_W[c, d]
                vel_W[c, d] = g
            W[c, d] -= lr_ * g
    if with_bias:
        for c in range(C):
            g = parts_b[0, c]
            for k in range(1, T):
                g += parts_b[k, c]
            if momentum != 0.0:
                g += mu * vel_b[c]
                vel_b[c] = g
            b[c] -= lr_ * g


@njit(cache=True)
def _column_slice(D, k, T):
    """Columns [lo, hi) of W that thread k updates: T slices whose bounds are multiples of 16
    floats, so no two threads write the same cache line."""
    lo = min(D, ((k * D) // T + 15) // 16 * 16)
    hi = D if k == T - 1 else min(D, (((k + 1) * D) // T + 15) // 16 * 16)
    return lo, hi


# --- v1: straightforward fused loops ---------------------------------------------------------

@njit(cache=True)
def _chunk_grad_v1(X, y, sample_weight, rows, lo, hi, inv_batch, W, b, part_W, part_b):
    """Partial gradient of samples ``rows[lo:hi]`` into part_W (C, D), part_b (C,), one sample
    at a time, strict IEEE order; returns the chunk's sum of s_i l_i."""
    C, D = W.shape
    z = np.empty(C)
    G_row = np.empty(C)
    for c in range(C):
        part_b[c] = 0
        for d in range(D):
            part_W[c, d] = 0
    loss = 0.0
    for j in range(lo, hi):
        i = rows[j]
        for c in range(C):
            acc = b[c]
            for d in range(D):
                acc += W[c, d] * X[i, d]
            z[c] = acc
        loss += _softmax_row(z, y[i], sample_weight[i], G_row)
        for c in range(C):
            g = W.dtype.type(G_row[c] * inv_batch)
            part_b[c] += g
            for d in range(D):
                part_W[c, d] += g * X[i, d]
    return loss


@njit(parallel=True, cache=True)
def sgd_epoch_v1(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v1: per step, one prange over T sample chunks, then a serial reduction and update."""
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
            chunk_loss[k] = _chunk_grad_v1(X, y, sample_weight, perm, lo, hi, inv_batch, W, b,
                                           parts_W[k], parts_b[k])
        for k in range(T):
            loss_sum += chunk_loss[k]
        _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                      0, D, True)
    return loss_sum


# --- v2: vectorized dot products -------------------------------------------------------------

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


# --- v3: register blocks of K = 4 samples ------------------------------------------------------

@njit(fastmath=FAST, cache=True)
def _scores_block4(x0, x1, x2, x3, W, b, Z):
    """Scores of 4 samples into Z (4, C) float64: each W row is loaded once for 4 samples."""
    C, D = W.shape
    for c in range(C):
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
def _chunk_grad_v3(X, y, sample_weight, rows, lo, hi, inv_batch, W, b, part_W, part_b):
    """Partial gradient of samples ``rows[lo:hi]``, fused per block of 4 samples: scores,
    softmax and the gradient update while the 4 rows of X are still in L1. The last
    (hi - lo) % 4 samples go through the same code with the block padded by repeating
    the last row at weight 0."""
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
        _scores_block4(x0, x1, x2, x3, W, b, Z)
        for s in range(4):
            if s < n_live:
                i = rows[j + s]
                loss += _softmax_row(Z[s], y[i], sample_weight[i], G[s])
            else:
                G[s, :] = 0.0
        _accumulate_block4(x0, x1, x2, x3, G, inv_batch, part_W, part_b)
    return loss


@njit(parallel=True, cache=True)
def sgd_epoch_v3(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v3: v1's step structure around the 4-sample blocked chunk kernel."""
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
            chunk_loss[k] = _chunk_grad_v3(X, y, sample_weight, perm, lo, hi, inv_batch, W, b,
                                           parts_W[k], parts_b[k])
        for k in range(T):
            loss_sum += chunk_loss[k]
        _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                      0, D, True)
    return loss_sum


# --- v4: parallel reduction fused with the update ---------------------------------------------

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
            col_lo, col_hi = _column_slice(D, k, T)
            _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                          col_lo, col_hi, k == 0)
    return loss_sum


# --- v5: register blocks of 2 classes x 4 samples for the scores --------------------------

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


@njit(parallel=True, cache=True)
def sgd_epoch_v5(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v5: v4's step structure (serial at T = 1, else a prange over sample chunks and a
    prange over column slices for the update) around the 2-class x 4-sample kernel."""
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
            loss_sum += _chunk_grad_v5(X, y, sample_weight, perm, start, stop, inv_batch, W, b,
                                       parts_W[0], parts_b[0])
            _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                          0, D, True)
            continue
        for k in prange(T):
            lo, hi = _chunk_bounds(start, stop, k, T)
            chunk_loss[k] = _chunk_grad_v5(X, y, sample_weight, perm, lo, hi, inv_batch, W, b,
                                           parts_W[k], parts_b[k])
        for k in range(T):
            loss_sum += chunk_loss[k]
        for k in prange(T):
            col_lo, col_hi = _column_slice(D, k, T)
            _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                          col_lo, col_hi, k == 0)
    return loss_sum


# --- v6: one fork-join per step ----------------------------------------------------------------

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


# --- v7: a vectorized update ------------------------------------------------------------------

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


# --- v8: register-tiled micro-kernels in LLVM vector IR ---------------------------------------
#
# Numba cannot hold an array of accumulators in registers: a local array lives on the heap and
# every update goes through memory. These two intrinsics emit the loops directly as LLVM IR on
# vectors of one 64-byte register (16 float32 or 8 float64 lanes), with the accumulators in
# allocas that LLVM promotes to registers, and explicit llvm.fma calls (the rounding does not
# depend on what the optimizer contracts). The loop bodies compile to loads, broadcasts and
# vfmadd231ps only (checked with inspect_asm).

VECTOR_BYTES = 64
PANEL = 64          # samples packed at a time: 64 rows of MNIST are 200 KB, at home in L2
PREFETCH_LOCALITY = 2  # llvm.prefetch locality 2: prefetcht1, into L2
SCORE_SAMPLES = 4   # samples x classes of the score tile: 9 vector loads feed 20 FMAs
TILE_CLASSES = 5    # classes of both tiles; C = 10 is two tiles
GRAD_VECTORS = 4    # vectors of features of the wide gradient tile: 5 x 4 accumulators


def _lanes_of(context, array_type):
    element = context.get_data_type(array_type.dtype)
    lanes = VECTOR_BYTES // (array_type.dtype.bitwidth // 8)
    return element, ir.VectorType(element, lanes)


def _fma(builder, a, b, c):
    """a * b + c on vectors, one rounding."""
    vector = a.type
    suffix = f"v{vector.count}f{64 if isinstance(vector.element, ir.DoubleType) else 32}"
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                        "llvm.fma." + suffix)
    return builder.call(fn, [a, b, c])


def _vector_at(builder, base, index, vector):
    """Pointer to the vector starting at element ``index`` of ``base`` (unaligned)."""
    return builder.bitcast(builder.gep(base, [index]), vector.as_pointer())


def _splat(builder, value, vector):
    undef = ir.Constant(vector, ir.Undefined)
    first = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vector.count), [0] * vector.count)
    return builder.shuffle_vector(first, undef, mask)


def _horizontal_sum(builder, value):
    """Sum of the lanes of a vector by halving: a fixed tree, so a fixed rounding."""
    width = value.type.count
    while width > 1:
        half = width // 2
        low = builder.shuffle_vector(value, value, ir.Constant(
            ir.VectorType(ir.IntType(32), half), list(range(half))))
        high = builder.shuffle_vector(value, value, ir.Constant(
            ir.VectorType(ir.IntType(32), half), list(range(half, width))))
        value = builder.fadd(low, high)
        width = half
    return builder.extract_element(value, ir.Constant(ir.IntType(32), 0))


def _accumulators(builder, vector, count):
    slots = []
    for _ in range(count):
        slot = cgutils.alloca_once(builder, vector)
        builder.store(ir.Constant(vector, None), slot)
        slots.append(slot)
    return slots


def _row_length(context, builder, array_type, array):
    return cgutils.unpack_tuple(builder, array.shape, 2)[1]


def _llvm_prefetch(builder):
    """The ``llvm.prefetch`` function of the module being built."""
    i32 = ir.IntType(32)
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32,
                                                       i32]), "llvm.prefetch.p0")


def _prefetch_line(builder, fn, pointer):
    """``prefetcht1`` the cache line of one (byte) pointer: a read, into L2, data."""
    i32 = ir.IntType(32)
    builder.call(fn, [pointer, ir.Constant(i32, 0), ir.Constant(i32, PREFETCH_LOCALITY),
                      ir.Constant(i32, 1)])


def _emit_grad_tile(context, builder, x_type, xa, row_start, n_, ga, g_row, d0_, c0_, oa,
                    out_row, n_classes, n_vectors, overwrite=None, ask=None):
    """The body of the gradient tiles: for the n_classes classes c0.. and the n_vectors
    vectors of features from d0, ``out[c, d] (+)= sum_{s < n} G[s, c] x_s[d]`` with x_s the
    row of X starting at element ``row_start(s)``, summed over s in order in n_classes x
    n_vectors accumulators that stay in registers, and written to ``out`` once: added to it,
    or stored over it where the i1 value ``overwrite`` is true. ``ask(s)``, if given, emits
    the prefetches to issue at sample s."""
    element, vector = _lanes_of(context, x_type)
    lanes = vector.count
    intp = context.get_value_type(types.intp)
    acc = _accumulators(builder, vector, n_classes * n_vectors)
    with cgutils.for_range(builder, n_) as loop:
        s = loop.index
        if ask is not None:
            ask(s)
        x_at = builder.add(row_start(s), d0_)
        xs = [builder.load(_vector_at(builder, xa.data, builder.add(
            x_at, ir.Constant(intp, v * lanes)), vector), align=1) for v in range(n_vectors)]
        g_at = builder.add(builder.mul(s, g_row), c0_)
        for c in range(n_classes):
            gc = builder.load(builder.gep(ga.data, [builder.add(g_at, ir.Constant(intp, c))]))
            gv = _splat(builder, gc, vector)
            for v in range(n_vectors):
                slot = acc[c * n_vectors + v]
                builder.store(_fma(builder, gv, xs[v], builder.load(slot)), slot)
    for c in range(n_classes):
        out_at = builder.add(builder.mul(builder.add(c0_, ir.Constant(intp, c)), out_row), d0_)
        for v in range(n_vectors):
            ptr = _vector_at(builder, oa.data, builder.add(out_at, ir.Constant(intp, v * lanes)),
                             vector)
            total = builder.load(acc[c * n_vectors + v])
            added = builder.fadd(builder.load(ptr, align=1), total)
            if overwrite is not None:
                added = builder.select(overwrite, total, added)
            builder.store(added, ptr, align=1)


def _make_grad_tile(n_vectors):
    """An intrinsic ``grad_tile(Xp, n, G, d0, c0, out)``: for the TILE_CLASSES classes
    c0.. and the n_vectors vectors of features from d0,
    ``out[c, d] += sum_{s < n} G[s, c] Xp[s, d]``, summed over s in order in registers and
    added to ``out`` once. Xp (P, D), G (P, C), out (C, D), C-contiguous, one float dtype."""

    @intrinsic
    def grad_tile(typingctx, Xp, n, G, d0, c0, out):
        sig = types.void(Xp, n, G, d0, c0, out)

        def codegen(context, builder, signature, args):
            xp, n_, g, d0_, c0_, out_ = args
            x_type, _, g_type, _, _, out_type = signature.args
            xa = context.make_array(x_type)(context, builder, xp)
            ga = context.make_array(g_type)(context, builder, g)
            oa = context.make_array(out_type)(context, builder, out_)
            x_row = _row_length(context, builder, x_type, xa)
            _emit_grad_tile(context, builder, x_type, xa, lambda s: builder.mul(s, x_row), n_,
                            ga, _row_length(context, builder, g_type, ga), d0_, c0_, oa,
                            _row_length(context, builder, out_type, oa), TILE_CLASSES,
                            n_vectors)
            return context.get_dummy_value()

        return sig, codegen

    return grad_tile


_grad_tile_wide = _make_grad_tile(GRAD_VECTORS)
_grad_tile_narrow = _make_grad_tile(1)


def _make_gather_grad_tile(n_classes, n_vectors):
    """An intrinsic ``gather_grad_tile(X, rows, n, G, d0, c0, out, overwrite, ahead,
    n_ahead)`` (v11): for the n_classes classes c0.. and the n_vectors vectors of features
    from d0, ``out[c, d] = [out[c, d] +] sum_{s < n} G[s, c] X[rows[s], d]`` (``overwrite``
    true: no ``out[c, d] +``), the rows of X read where they are. At sample s < n_ahead it
    asks for the same columns of row ``ahead[s]`` of X (a sample of the next block), so a
    sweep of these tiles over all of D asks for every line of those rows, one or two
    prefetches per 2 n_classes FMAs. X (N, D), rows and ahead int64, G (P, C), out (C, D)."""

    @intrinsic
    def gather_grad_tile(typingctx, X, rows, n, G, d0, c0, out, overwrite, ahead, n_ahead):
        sig = types.void(X, rows, n, G, d0, c0, out, overwrite, ahead, n_ahead)

        def codegen(context, builder, signature, args):
            x_, rows_, n_, g, d0_, c0_, out_, overwrite_, ahead_, n_ahead_ = args
            x_type, rows_type, _, g_type, _, _, out_type, _, ahead_type, _ = signature.args
            xa = context.make_array(x_type)(context, builder, x_)
            ra = context.make_array(rows_type)(context, builder, rows_)
            aa = context.make_array(ahead_type)(context, builder, ahead_)
            ga = context.make_array(g_type)(context, builder, g)
            oa = context.make_array(out_type)(context, builder, out_)
            x_row = _row_length(context, builder, x_type, xa)
            intp = context.get_value_type(types.intp)
            fn = _llvm_prefetch(builder)
            byte = ir.IntType(8).as_pointer()
            n_lines = max(1, n_vectors * VECTOR_BYTES // 64)

            def row_start(s):
                return builder.mul(builder.load(builder.gep(ra.data, [s])), x_row)

            def ask(s):
                with builder.if_then(builder.icmp_signed("<", s, n_ahead_)):
                    row = builder.load(builder.gep(aa.data, [s]))
                    base = builder.bitcast(builder.gep(xa.data, [builder.add(
                        builder.mul(row, x_row), d0_)]), byte)
                    for m in range(n_lines):
                        _prefetch_line(builder, fn, builder.gep(base, [ir.Constant(intp,
                                                                                    64 * m)]))

            overwrite_bit = builder.icmp_unsigned("!=", overwrite_, ir.Constant(
                overwrite_.type, 0))
            _emit_grad_tile(context, builder, x_type, xa, row_start, n_, ga,
                            _row_length(context, builder, g_type, ga), d0_, c0_, oa,
                            _row_length(context, builder, out_type, oa), n_classes, n_vectors,
                            overwrite_bit, ask)
            return context.get_dummy_value()

        return sig, codegen

    return gather_grad_tile


def _emit_score_tile(context, builder, x_type, xa, row_starts, s0_, w_type, wa, c0_, nv,
                     s_type, sa):
    """The body of the score tiles: for the SCORE_SAMPLES rows of X starting at the elements
    ``row_starts`` and the TILE_CLASSES rows c0.. of W,
    ``S[s0 + s, c] = sum_{d < nv * lanes} x_s[d] W[c, d]``, each sum kept in one vector of
    lanes across d and reduced by a fixed halving tree."""
    element, vector = _lanes_of(context, x_type)
    lanes = vector.count
    intp = context.get_value_type(types.intp)
    w_row = _row_length(context, builder, w_type, wa)
    s_row = _row_length(context, builder, s_type, sa)
    w_starts = [builder.mul(builder.add(c0_, ir.Constant(intp, c)), w_row)
                for c in range(TILE_CLASSES)]
    acc = _accumulators(builder, vector, SCORE_SAMPLES * TILE_CLASSES)
    with cgutils.for_range(builder, nv) as loop:
        d = builder.mul(loop.index, ir.Constant(intp, lanes))
        xs = [builder.load(_vector_at(builder, xa.data, builder.add(start, d), vector), align=1)
              for start in row_starts]
        for c in range(TILE_CLASSES):
            wv = builder.load(_vector_at(builder, wa.data, builder.add(w_starts[c], d), vector),
                              align=1)
            for s in range(SCORE_SAMPLES):
                slot = acc[s * TILE_CLASSES + c]
                builder.store(_fma(builder, xs[s], wv, builder.load(slot)), slot)
    for s in range(SCORE_SAMPLES):
        s_at = builder.add(builder.mul(builder.add(s0_, ir.Constant(intp, s)), s_row), c0_)
        for c in range(TILE_CLASSES):
            total = _horizontal_sum(builder, builder.load(acc[s * TILE_CLASSES + c]))
            builder.store(total, builder.gep(sa.data, [builder.add(s_at, ir.Constant(intp, c))]))


@intrinsic
def _score_tile(typingctx, Xp, s0, W, c0, n_vectors, S):
    """``score_tile(Xp, s0, W, c0, n_vectors, S)``: for the SCORE_SAMPLES rows s0.. of Xp and
    the TILE_CLASSES rows c0.. of W, ``S[s, c] = sum_{d < n_vectors * lanes} Xp[s, d] W[c, d]``.
    Xp (P, D), W (C, D), S (P, C), one float dtype."""
    sig = types.void(Xp, s0, W, c0, n_vectors, S)

    def codegen(context, builder, signature, args):
        xp, s0_, w, c0_, nv, s_out = args
        x_type, _, w_type, _, _, s_type = signature.args
        intp = context.get_value_type(types.intp)
        xa = context.make_array(x_type)(context, builder, xp)
        x_row = _row_length(context, builder, x_type, xa)
        starts = [builder.mul(builder.add(s0_, ir.Constant(intp, s)), x_row)
                  for s in range(SCORE_SAMPLES)]
        _emit_score_tile(context, builder, x_type, xa, starts, s0_, w_type,
                         context.make_array(w_type)(context, builder, w), c0_, nv, s_type,
                         context.make_array(s_type)(context, builder, s_out))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _gather_score_tile(typingctx, X, rows, s0, W, c0, n_vectors, S):
    """``gather_score_tile(X, rows, s0, W, c0, n_vectors, S)`` (v11): ``_score_tile`` on the
    rows ``rows[s0 + s]`` of X (N, D), read where they are."""
    sig = types.void(X, rows, s0, W, c0, n_vectors, S)

    def codegen(context, builder, signature, args):
        x_, rows_, s0_, w, c0_, nv, s_out = args
        x_type, rows_type, _, w_type, _, _, s_type = signature.args
        intp = context.get_value_type(types.intp)
        xa = context.make_array(x_type)(context, builder, x_)
        ra = context.make_array(rows_type)(context, builder, rows_)
        x_row = _row_length(context, builder, x_type, xa)
        starts = [builder.mul(builder.load(builder.gep(ra.data, [builder.add(
            s0_, ir.Constant(intp, s))])), x_row) for s in range(SCORE_SAMPLES)]
        _emit_score_tile(context, builder, x_type, xa, starts, s0_, w_type,
                         context.make_array(w_type)(context, builder, w), c0_, nv, s_type,
                         context.make_array(s_type)(context, builder, s_out))
        return context.get_dummy_value()

    return sig, codegen


def _emit_prefetch(builder, base, n_lines):
    """``prefetcht1`` the n_lines cache lines from the byte pointer base on."""
    fn = _llvm_prefetch(builder)
    with cgutils.for_range(builder, n_lines) as loop:
        _prefetch_line(builder, fn, builder.gep(base, [builder.mul(
            loop.index, ir.Constant(n_lines.type, 64))]))


@intrinsic
def _prefetch_row(typingctx, X, i):
    """Ask for every cache line of row i of X (N, D) to be brought into L2 (``prefetcht1``)."""
    sig = types.void(X, i)

    def codegen(context, builder, signature, args):
        x_type = signature.args[0]
        xa = context.make_array(x_type)(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        row = _row_length(context, builder, x_type, xa)
        base = builder.bitcast(builder.gep(xa.data, [builder.mul(args[1], row)]),
                               ir.IntType(8).as_pointer())
        row_bytes = builder.mul(row, ir.Constant(intp, x_type.dtype.bitwidth // 8))
        n_lines = builder.udiv(builder.add(row_bytes, ir.Constant(intp, 63)),
                               ir.Constant(intp, 64))
        _emit_prefetch(builder, base, n_lines)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _prefetch_span(typingctx, X, i, lo, n):
    """Ask for the cache lines of X[i, lo:lo + n] (X (N, D)) to be brought into L2
    (``prefetcht1``): one line per 64 bytes from the first element, and one more for a span
    that does not start on a line (a prefetch never faults)."""
    sig = types.void(X, i, lo, n)

    def codegen(context, builder, signature, args):
        x_type = signature.args[0]
        xa = context.make_array(x_type)(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        row = _row_length(context, builder, x_type, xa)
        start = builder.add(builder.mul(args[1], row), args[2])
        base = builder.bitcast(builder.gep(xa.data, [start]), ir.IntType(8).as_pointer())
        n_bytes = builder.mul(args[3], ir.Constant(intp, x_type.dtype.bitwidth // 8))
        n_lines = builder.add(builder.udiv(n_bytes, ir.Constant(intp, 64)),
                              ir.Constant(intp, 1))
        _emit_prefetch(builder, base, n_lines)
        return context.get_dummy_value()

    return sig, codegen


@njit(fastmath=FAST, cache=True)
def _score_leftovers(x, W, z, c_tiles, d_tail):
    """What the score tiles leave of one sample's scores z (C,): whole dot products x . W[c]
    for the classes from c_tiles on, and the features from d_tail on for the classes before
    (added to the tile's sums in z)."""
    C, D = W.shape
    for c in range(c_tiles, C):
        w = W[c]
        acc = W.dtype.type(0)
        for d in range(D):
            acc += x[d] * w[d]
        z[c] = acc
    for c in range(c_tiles):
        w = W[c]
        acc = z[c]
        for d in range(d_tail, D):
            acc += x[d] * w[d]
        z[c] = acc


@njit(fastmath=FAST, cache=True)
def _panel_scores(Xp, n_rows, W, S, X, rows, next_lo, next_hi):
    """S[s, c] = Xp[s] . W[c] for s < n_rows (rounded up to SCORE_SAMPLES; rows past n_rows
    must be finite and are ignored): the tiles over whole vectors, then the leftover classes
    and features with plain loops. Along the way, prefetch the rows ``rows[next_lo:next_hi]``
    of X, the next panel, SCORE_SAMPLES rows per tile so the requests are spread out."""
    C, D = W.shape
    lanes = VECTOR_BYTES // Xp.itemsize
    n_vec = D // lanes
    d_tail = n_vec * lanes
    c_tiles = C - C % TILE_CLASSES
    n_next = next_hi - next_lo
    n_blocks = (n_rows + SCORE_SAMPLES - 1) // SCORE_SAMPLES
    per_block = (n_next + n_blocks - 1) // n_blocks
    for block in range(n_blocks):
        s0 = block * SCORE_SAMPLES
        for j in range(next_lo + block * per_block, min(next_hi, next_lo + (block + 1) * per_block)):
            _prefetch_row(X, rows[j])
        for c0 in range(0, c_tiles, TILE_CLASSES):
            _score_tile(Xp, s0, W, c0, n_vec, S)
        for s in range(s0, s0 + SCORE_SAMPLES):
            _score_leftovers(Xp[s], W, S[s], c_tiles, d_tail)


@njit(fastmath=FAST, cache=True)
def _panel_gradient(Xp, n_rows, G, part_W):
    """part_W (C, D) += G[:n_rows]^T Xp[:n_rows]: register tiles of TILE_CLASSES classes x
    GRAD_VECTORS (then 1) vectors of features, leftover classes and features with plain
    loops."""
    C, D = part_W.shape
    lanes = VECTOR_BYTES // Xp.itemsize
    wide = GRAD_VECTORS * lanes
    d_wide = D - D % wide
    d_narrow = D - D % lanes
    c_tiles = C - C % TILE_CLASSES
    for d0 in range(0, d_wide, wide):
        for c0 in range(0, c_tiles, TILE_CLASSES):
            _grad_tile_wide(Xp, n_rows, G, d0, c0, part_W)
    for d0 in range(d_wide, d_narrow, lanes):
        for c0 in range(0, c_tiles, TILE_CLASSES):
            _grad_tile_narrow(Xp, n_rows, G, d0, c0, part_W)
    for s in range(n_rows):
        x = Xp[s]
        for c in range(c_tiles):
            g = G[s, c]
            row = part_W[c]
            for d in range(d_narrow, D):
                row[d] += g * x[d]
        for c in range(c_tiles, C):
            g = G[s, c]
            row = part_W[c]
            for d in range(D):
                row[d] += g * x[d]




@njit(cache=True)
def _chunk_grad_v8(X, y, sample_weight, rows, lo, hi, inv_batch, W, b, part_W, part_b,
                   after_lo, after_hi, Xp, S, G, z, G_row):
    """Partial gradient of samples ``rows[lo:hi]`` in panels of up to PANEL samples: copy the
    panel's rows of X into the contiguous Xp (P, D), the scores with the register-tiled kernel
    into S (P, C) while prefetching the next panel's rows (after the last panel, those of
    ``rows[after_lo:after_hi]``, the first panel of this chunk in the next step), the softmax
    and loss per sample with ``G[s] = s_i (p - onehot) / B`` in W's dtype, then
    part_W += G^T Xp with the register-tiled gradient kernel. Xp, S, G, z, G_row are the
    caller's scratch."""
    C, D = W.shape
    part_W[:, :] = 0
    part_b[:] = 0
    loss = 0.0
    for p0 in range(lo, hi, PANEL):
        n_rows = min(PANEL, hi - p0)
        for s in range(n_rows):
            source = X[rows[p0 + s]]
            packed = Xp[s]
            for d in range(D):
                packed[d] = source[d]
        if p0 + PANEL < hi:
            next_lo, next_hi = p0 + PANEL, min(hi, p0 + 2 * PANEL)
        else:
            next_lo, next_hi = after_lo, min(after_hi, after_lo + PANEL)
        _panel_scores(Xp, n_rows, W, S, X, rows, next_lo, next_hi)
        for s in range(n_rows):
            i = rows[p0 + s]
            for c in range(C):
                z[c] = S[s, c] + b[c]
            loss += _softmax_row(z, y[i], sample_weight[i], G_row)
            for c in range(C):
                g = W.dtype.type(G_row[c] * inv_batch)
                G[s, c] = g
                part_b[c] += g
        _panel_gradient(Xp, n_rows, G, part_W)
    return loss


@njit(cache=True)
def _panel_scratch(T, C, D, dtype):
    """Per-chunk scratch of the v8 kernel: packed rows (zeroed once, so the rows past a short
    panel that the score tile reads are finite), scores, scaled gradient of the scores, and
    the softmax's float64 rows."""
    rows = (PANEL + SCORE_SAMPLES - 1) // SCORE_SAMPLES * SCORE_SAMPLES
    Xp = np.zeros((T, rows, D), dtype)
    S = np.zeros((T, rows, C), dtype)
    G = np.zeros((T, rows, C), dtype)
    z = np.zeros((T, C))
    G_row = np.zeros((T, C))
    return Xp, S, G, z, G_row


@njit(parallel=True, cache=True)
def sgd_epoch_v8(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                 alpha, parts_W, parts_b):
    """v8: v7's step structure around the packed, register-tiled chunk kernel."""
    T, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    grad_rows = np.empty((T, D), W.dtype)
    Xp, S, G, z, G_row = _panel_scratch(T, C, D, W.dtype)
    if T == 1:
        loss_sum = 0.0
        for t in range(n_steps):
            start = t * batch_size
            stop = min(start + batch_size, M)
            loss_sum += _chunk_grad_v8(X, y, sample_weight, perm, start, stop,
                                       1.0 / (stop - start), W, b, parts_W[0], parts_b[0],
                                       stop, min(stop + batch_size, M), Xp[0], S[0], G[0],
                                       z[0], G_row[0])
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
            after_lo, after_hi = _chunk_bounds(stop, min(stop + batch_size, M), k, T)
            chunk_loss[k] = _chunk_grad_v8(X, y, sample_weight, perm, lo, hi, inv_batch,
                                           W_copy[k], b_copy[k], grads_W[now, k],
                                           grads_b[now, k], after_lo, after_hi, Xp[k], S[k],
                                           G[k], z[k], G_row[k])
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


# --- v9: the threads split the features --------------------------------------------------------

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
            _score_leftovers(Xp[s], W_k, S_k[s], c_tiles, d_tail)


@intrinsic
def _two_to(typingctx, k):
    """2.0 ** k as a float64 for an integer -1022 <= k <= 1023: the exponent field, set
    directly (one shift and a bitcast, so a loop around it still vectorizes)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        bits = builder.shl(builder.add(args[0], ir.Constant(i64, 1023)), ir.Constant(i64, 52))
        return builder.bitcast(bits, ir.DoubleType())

    return sig, codegen


LOG2_E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01  # ln 2 in two parts (fdlibm): k LN2_HI is exact
LN2_LO = 1.90821492927058770002e-10


@njit(cache=True)
def _exp_nonpositive(x):
    """exp(x) in float64 for x <= 0, within 2 ulp, in plain IEEE operations that a loop can
    vectorize (a call to libm's exp cannot be): x = k ln2 + r with |r| <= ln2 / 2 (Cody-Waite),
    exp(r) by its Taylor polynomial to degree 13 (remainder < 5e-18), times 2^k. Below -708
    (exp < 3e-308, nothing next to the row maximum's 1) x is clamped there; a NaN stays NaN."""
    if x < -708.0:
        x = -708.0
    kf = np.floor(x * LOG2_E + 0.5)
    r = (x - kf * LN2_HI) - kf * LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    k = np.int64(kf) if kf >= -1022.0 else np.int64(-1022)
    return p * _two_to(k)


@njit(cache=True)
def _column_softmax(S_parts, n, inv_batch, b, y, sample_weight, perm, start, Z, E, row_max,
                    row_total, G, grad_b, loss_lo, loss_hi, loss):
    """The full scores of the samples ``perm[start:start + n]`` (a batch for v9, a panel for
    v10, a block of one thread's chunk for v11, with T = 1 part), ``Z = sum_k S_parts[k] + b``
    summed in order k = 0..T-1 in float64 into Z (P, C); the stable softmax with the vectorized
    ``_exp_nonpositive`` over all n samples at once; ``G[s] = s_i (p - onehot) * inv_batch`` in
    W's dtype and ``grad_b += G[s]`` for s in order. Returns ``loss`` plus s_i l_i for the
    samples [loss_lo, loss_hi) of the n, added in order (the threads share the logs)."""
    T = S_parts.shape[0]
    C = b.shape[0]
    for s in range(n):
        for c in range(C):
            acc = np.float64(S_parts[0, s, c])
            for k in range(1, T):
                acc += S_parts[k, s, c]
            Z[s, c] = acc + b[c]
    for s in range(n):
        m = Z[s, 0]
        for c in range(1, C):
            if Z[s, c] > m:
                m = Z[s, c]
        row_max[s] = m
        for c in range(C):
            E[s, c] = Z[s, c] - m
    flat = E.reshape(E.size)
    for j in range(n * C):
        flat[j] = _exp_nonpositive(flat[j])
    for s in range(n):
        total = 0.0
        for c in range(C):
            total += E[s, c]
        row_total[s] = total
        inv_total = 1.0 / total
        i = perm[start + s]
        weight = np.float64(sample_weight[i])
        y_i = y[i]
        for c in range(C):
            p = weight * E[s, c] * inv_total
            if c == y_i:
                p -= weight
            g = b.dtype.type(p * inv_batch)
            G[s, c] = g
            grad_b[c] += g
    for s in range(loss_lo, loss_hi):
        i = perm[start + s]
        loss += sample_weight[i] * (row_max[s] + np.log(row_total[s]) - Z[s, y[i]])
    return loss


@njit(cache=True)
def _softmax_scratch(T, rows, C, dtype):
    """Per-thread scratch of ``_column_softmax`` for up to ``rows`` samples: G (T, rows, C) in
    W's dtype, the float64 scores Z and exponentials E (T, rows, C), and the row maxima and
    sums (T, rows + 8: no two threads' rows on one cache line)."""
    return (np.zeros((T, rows, C), dtype), np.zeros((T, rows, C)), np.zeros((T, rows, C)),
            np.zeros((T, rows + 8)), np.zeros((T, rows + 8)))


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
    """The SGD step on the thread's columns of W and on its copy of b:
    ``v = momentum v + (grad + alpha W); W -= lr v``, the bias without alpha; the arithmetic
    of ``_apply_update_rows``."""
    C, Dk = W_k.shape
    lr_ = W_k.dtype.type(lr)
    mu = W_k.dtype.type(momentum)
    al = W_k.dtype.type(alpha)
    for c in range(C):
        w = W_k[c]
        g_row = grad_k[c]
        if momentum != 0.0:
            v = vel_k[c]
            for d in range(Dk):
                g = g_row[d] + al * w[d] + mu * v[d]
                v[d] = g
                w[d] -= lr_ * g
        else:
            for d in range(Dk):
                w[d] -= lr_ * (g_row[d] + al * w[d])
    for c in range(C):
        g = grad_b[c]
        if momentum != 0.0:
            g += mu * vel_b_k[c]
            vel_b_k[c] = g
        b_k[c] -= lr_ * g


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
        loss = _column_softmax(S_parts[(t - 1) % 2], n, 1.0 / n, b_k, y, sample_weight, perm,
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
    ``_column_slice(D, k, T)`` of W and vel_W in ``W_cols[k]``, ``vel_cols[k]`` (T, C, width),
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
        d_lo, d_hi = _column_slice(D, k, T)
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
    """v9: thread k owns the columns ``_column_slice(D, k, T)`` of W, in a contiguous private
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

# --- v10: one parallel region per epoch, the threads meet once per panel ---------------------

SYNC_PANEL = 128  # samples per meeting of the threads (v10): 200 KB of half rows per thread

@intrinsic
def _publish(typingctx, flags, j, value):
    """``flags[j] = value`` as an atomic store with release ordering: every store before it
    is visible to a thread that reads ``value`` with acquire ordering. flags: int64 array."""
    sig = types.void(flags, j, value)

    def codegen(context, builder, signature, args):
        fa = context.make_array(signature.args[0])(context, builder, args[0])
        builder.store_atomic(args[2], builder.gep(fa.data, [args[1]]), "release", 8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _wait_until(typingctx, flags, j, value):
    """Spin (``pause`` between tries) until ``flags[j] >= value``, read with acquire
    ordering."""
    sig = types.void(flags, j, value)

    def codegen(context, builder, signature, args):
        fa = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(fa.data, [args[1]])
        pause = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
        spin = builder.append_basic_block("spin")
        wait = builder.append_basic_block("wait")
        done = builder.append_basic_block("done")
        builder.branch(spin)
        builder.position_at_end(spin)
        seen = builder.load_atomic(ptr, "acquire", 8)
        builder.cbranch(builder.icmp_signed(">=", seen, args[2]), done, wait)
        builder.position_at_end(wait)
        builder.call(pause, [])
        builder.branch(spin)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


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
            loss = _column_softmax(S_ring[q % 2], rows, inv_batch, b_k, y, sample_weight,
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


def _threads_run_at_once(T):
    """Whether the T chunks of a ``prange(T)`` run on T threads at the same time, as kernels
    whose threads spin on each other need: the OpenMP and workqueue layers give every chunk
    its own thread if Numba has T; TBB's work stealing may run two chunks one after the
    other on one thread, which would never finish."""
    return T <= get_num_threads() and threading_layer() in ("omp", "workqueue")


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


# --- v11: the threads split the samples again, reading the rows of X where they are --------

BLOCK = 64  # samples of a thread's chunk taken together (v11): 64 rows of MNIST are 200 KB
GATHER_CLASSES = 10  # classes of v11's gradient tile: all of MNIST's in one sweep over X
GATHER_VECTORS = 2   # vectors of features of that tile: 10 x 2 accumulators

_gather_grad_wide = _make_gather_grad_tile(GATHER_CLASSES, GATHER_VECTORS)
_gather_grad_narrow = _make_gather_grad_tile(GATHER_CLASSES, 1)
_gather_grad_class = _make_gather_grad_tile(1, GATHER_VECTORS)
_gather_grad_class_narrow = _make_gather_grad_tile(1, 1)


@njit(fastmath=FAST, cache=True)
def _gather_scores(X, rows, n, W, S):
    """S[s, c] = X[rows[s]] . W[c] for s < n rounded up to SCORE_SAMPLES (``rows`` holds a
    valid row there; those scores are ignored): the register tiles over whole vectors, the
    leftover classes and features with plain loops."""
    C, D = W.shape
    lanes = VECTOR_BYTES // X.itemsize
    n_vec = D // lanes
    d_tail = n_vec * lanes
    c_tiles = C - C % TILE_CLASSES
    for s0 in range(0, n, SCORE_SAMPLES):
        for c0 in range(0, c_tiles, TILE_CLASSES):
            _gather_score_tile(X, rows, s0, W, c0, n_vec, S)
        for s in range(s0, s0 + SCORE_SAMPLES):
            _score_leftovers(X[rows[s]], W, S[s], c_tiles, d_tail)


@njit(fastmath=FAST, cache=True)
def _gather_gradient(X, rows, n, G, part_W, overwrite, ahead, n_ahead):
    """``part_W (C, D) [+]= G[:n]^T X[rows[:n]]`` (``overwrite``: no ``part_W +``) with the
    gather tiles, sweeping D once per class tile; the first class tile of each sweep step
    asks for the same columns of the rows ``X[ahead[:n_ahead]]`` (n_ahead <= n), the next
    block's, so every line of them is asked for once, spread over the whole pass. Leftover
    features with plain loops."""
    C, D = part_W.shape
    lanes = VECTOR_BYTES // X.itemsize
    wide = GATHER_VECTORS * lanes
    d_wide = D - D % wide
    d_narrow = D - D % lanes
    c_tiles = C - C % GATHER_CLASSES
    for d0 in range(0, d_wide, wide):
        ask = n_ahead
        for c0 in range(0, c_tiles, GATHER_CLASSES):
            _gather_grad_wide(X, rows, n, G, d0, c0, part_W, overwrite, ahead, ask)
            ask = 0
        for c in range(c_tiles, C):
            _gather_grad_class(X, rows, n, G, d0, c, part_W, overwrite, ahead, ask)
            ask = 0
    for d0 in range(d_wide, d_narrow, lanes):
        ask = n_ahead
        for c0 in range(0, c_tiles, GATHER_CLASSES):
            _gather_grad_narrow(X, rows, n, G, d0, c0, part_W, overwrite, ahead, ask)
            ask = 0
        for c in range(c_tiles, C):
            _gather_grad_class_narrow(X, rows, n, G, d0, c, part_W, overwrite, ahead, ask)
            ask = 0
    if d_narrow < D:
        if overwrite:
            part_W[:, d_narrow:] = 0
        for s in range(n):
            x = X[rows[s], d_narrow:]
            for c in range(C):
                g = G[s, c]
                row = part_W[c, d_narrow:]
                for d in range(D - d_narrow):
                    row[d] += g * x[d]


@njit(cache=True)
def _stream_rows(perm, batch_size, k, T, t, offset, count, out):
    """``out[:got]``: the rows of thread k's stream of samples (its chunk of step t, then its
    chunk of step t + 1, ...) from ``offset`` samples into step t's chunk on; returns
    got <= count (fewer at the end of the epoch)."""
    M = perm.shape[0]
    got = 0
    while got < count:
        start = t * batch_size
        if start >= M:
            break
        lo, hi = _chunk_bounds(start, min(start + batch_size, M), k, T)
        if offset >= hi - lo:
            offset -= hi - lo
            t += 1
            continue
        m = min(count - got, hi - lo - offset)
        for s in range(m):
            out[got + s] = perm[lo + offset + s]
        got += m
        offset += m
    return got


@njit(cache=True)
def _flat_update(W, vel, parts, lo, hi, lr, momentum, alpha, grad):
    """The SGD step on the elements [lo, hi) of the flat W (C D,) and vel, with the gradient
    ``grad = parts[0] + parts[1] + ... + parts[T-1]`` (parts (T, C D)) summed in that order
    into the scratch ``grad``; the arithmetic of ``_apply_update``. Every loop runs over views
    that start at lo: indexing ``W[lo + j]`` costs a negative-index check per element and the
    loops stop vectorizing (measured: the update took 8 us per step instead of 1)."""
    T = parts.shape[0]
    lr_ = W.dtype.type(lr)
    mu = W.dtype.type(momentum)
    al = W.dtype.type(alpha)
    n = hi - lo
    w = W[lo:hi]
    v = vel[lo:hi]
    first = parts[0, lo:hi]
    for j in range(n):
        grad[j] = first[j]
    for k in range(1, T):
        part = parts[k, lo:hi]
        for j in range(n):
            grad[j] += part[j]
    if momentum != 0.0:
        for j in range(n):
            g = grad[j] + al * w[j] + mu * v[j]
            v[j] = g
            w[j] -= lr_ * g
    else:
        for j in range(n):
            w[j] -= lr_ * (grad[j] + al * w[j])


@njit(cache=True)
def _barrier(flags, k, T, count):
    """Thread k's side of the count-th meeting of the T threads: publish the count, wait until
    every thread has."""
    _publish(flags, 8 * k, count)
    for j in range(T):
        _wait_until(flags, 8 * j, count)


@njit(cache=True)
def _sample_thread(k, T, X, y, sample_weight, perm, lr_steps, batch_size, momentum, alpha,
                   W, b, vel_W, vel_b, parts_W, parts_b, rows, ahead, S, G, Z, E, row_max,
                   row_total, grad, flags, step_loss):
    """Thread k's whole epoch in v11. Per step: the gradient of its chunk of the batch at
    the current W, block by block of BLOCK samples (the block's scores straight from the rows
    of X, its softmax, its gradient into parts_W[k] while the next block's rows are asked
    for); a meeting; the sum of the T parts in order k = 0..T-1 and the update of its slice
    of the flat W (thread 0 also updates b); a meeting, after which W is whole again. Its
    sum of s_i l_i for step t goes to ``step_loss[t, k]``."""
    M = perm.shape[0]
    C, D = W.shape
    n_steps = (M + batch_size - 1) // batch_size
    W_flat = W.reshape(C * D)
    vel_flat = vel_W.reshape(C * D)
    parts_flat = parts_W.reshape((T, C * D))
    flat_lo, flat_hi = _column_slice(C * D, k, T)
    part_W = parts_W[k]
    part_b = parts_b[k]
    meetings = 0
    for t in range(n_steps):
        start = t * batch_size
        stop = min(start + batch_size, M)
        inv_batch = 1.0 / (stop - start)
        lo, hi = _chunk_bounds(start, stop, k, T)
        loss = 0.0
        part_b[:] = 0
        if hi == lo:
            part_W[:, :] = 0
        for p0 in range(lo, hi, BLOCK):
            n = min(BLOCK, hi - p0)
            for s in range(n):
                rows[s] = perm[p0 + s]
            for s in range(n, (n + SCORE_SAMPLES - 1) // SCORE_SAMPLES * SCORE_SAMPLES):
                rows[s] = rows[n - 1]
            _gather_scores(X, rows, n, W, S[0])
            loss = _column_softmax(S, n, inv_batch, b, y, sample_weight, perm, p0, Z, E,
                                   row_max, row_total, G, part_b, 0, n, loss)
            n_ahead = _stream_rows(perm, batch_size, k, T, t, p0 - lo + n, n, ahead)
            # The first block overwrites the part: no pass to clear it.
            _gather_gradient(X, rows, n, G, part_W, p0 == lo, ahead, n_ahead)
        step_loss[t, k] = loss
        if T > 1:
            meetings += 1
            _barrier(flags, k, T, meetings)
        _flat_update(W_flat, vel_flat, parts_flat, flat_lo, flat_hi, lr_steps[t], momentum,
                     alpha, grad)
        if k == 0:
            _apply_update(W, b, vel_W, vel_b, parts_W, parts_b, lr_steps[t], momentum, alpha,
                          0, 0, True)
        if T > 1:
            meetings += 1
            _barrier(flags, k, T, meetings)


def sgd_epoch_v11(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                  alpha, parts_W, parts_b):
    """v11: the threads split the samples of each batch again (as v1-v8 did), in one parallel
    region per epoch with two meetings per step, and no row of X is packed: the tiles read
    the rows where they are, and the gradient pass asks for the next block's rows line by
    line as it sweeps D. W is shared and whole for the scores; the T partial gradients are
    summed in order by slices. The threads spin on each other: with more chunks than
    Numba runs at once, v9 runs instead."""
    args = (X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
            alpha, parts_W, parts_b)
    if not _threads_run_at_once(parts_W.shape[0]):
        return sgd_epoch_v9(*args)
    return _sample_epoch(*args)


@njit(parallel=True, cache=True)
def _sample_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
                  alpha, parts_W, parts_b):
    """The kernel of ``sgd_epoch_v11``, for T at most Numba's thread count."""
    T, C, D = parts_W.shape
    M = perm.shape[0]
    n_steps = (M + batch_size - 1) // batch_size
    if n_steps == 0:
        return 0.0
    dtype = W.dtype
    lanes = VECTOR_BYTES // W.itemsize
    # Per-thread scratch, each row padded so no two threads share a cache line.
    rows = np.zeros((T, BLOCK + 16), np.int64)
    ahead = np.zeros((T, BLOCK + 16), np.int64)
    S = np.zeros((T, 1, BLOCK, C), dtype)
    G, Z, E, row_max, row_total = _softmax_scratch(T, BLOCK, C, dtype)
    grad = np.zeros((T, (C * D) // T + 16 + lanes), dtype)
    flags = np.zeros(8 * T, np.int64)
    step_loss = np.zeros((n_steps, T))
    for k in prange(T):  # the whole epoch: at T = 1, one fork-join per epoch
        _sample_thread(k, T, X, y, sample_weight, perm, lr_steps, batch_size, momentum, alpha,
                       W, b, vel_W, vel_b, parts_W, parts_b, rows[k], ahead[k], S[k], G[k],
                       Z[k], E[k], row_max[k], row_total[k], grad[k], flags, step_loss)
    loss_sum = 0.0
    for t in range(n_steps):
        for k in range(T):
            loss_sum += step_loss[t, k]
    return loss_sum


# --- the chosen kernels -----------------------------------------------------------------------

KERNEL_VERSIONS = {
    "v1-naive": sgd_epoch_v1,
    "v2-vectorized": sgd_epoch_v2,
    "v3-blocked": sgd_epoch_v3,
    "v4-parallel-update": sgd_epoch_v4,
    "v5-blocked-2x4": sgd_epoch_v5,
    "v6-one-sync": sgd_epoch_v6,
    "v7-vector-update": sgd_epoch_v7,
    "v8-register-tiles": sgd_epoch_v8,
    "v9-column-split": sgd_epoch_v9,
    "v10-panel-sync": sgd_epoch_v10,
    "v11-sample-split": sgd_epoch_v11,
}

sgd_epoch = sgd_epoch_v11


@njit(parallel=True, cache=True)
def loss_and_grad(X, y, sample_weight, W, b, grad_W, grad_b, parts_W, parts_b):
    """Mean weighted cross-entropy of the batch X (B, D), its gradient into grad_W (C, D),
    grad_b (C,); T = parts_W.shape[0] sample chunks (the v8 chunk kernel) reduced in fixed
    order."""
    T, C, D = parts_W.shape
    B = X.shape[0]
    rows = np.arange(B)
    Xp, S, G, z, G_row = _panel_scratch(T, C, D, W.dtype)
    chunk_loss = np.zeros(T)
    inv_batch = 1.0 / B
    for k in prange(T):
        lo, hi = _chunk_bounds(0, B, k, T)
        chunk_loss[k] = _chunk_grad_v8(X, y, sample_weight, rows, lo, hi, inv_batch, W, b,
                                       parts_W[k], parts_b[k], hi, hi, Xp[k], S[k], G[k],
                                       z[k], G_row[k])
    _reduce_parts(parts_W, parts_b, grad_W, grad_b)
    loss = 0.0
    for k in range(T):
        loss += chunk_loss[k]
    return loss * inv_batch


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


@njit(cache=True)
def _scores_rows(X, W, b, lo, hi, out):
    """out[lo:hi] = X[lo:hi] W^T + b: the register-tiled score kernel on the rows of X in
    place for whole blocks of SCORE_SAMPLES rows, the 2-class x 4-sample kernel for the last
    partial block (repeating its last row)."""
    C = W.shape[0]
    whole = lo + (hi - lo) // SCORE_SAMPLES * SCORE_SAMPLES
    if whole > lo:
        block = out[lo:whole]
        _panel_scores(X[lo:whole], whole - lo, W, block, X, np.empty(0, np.int64), 0, 0)
        for s in range(whole - lo):
            for c in range(C):
                block[s, c] += b[c]
    Z = np.empty((4, C))
    for j in range(whole, hi, 4):
        n_live = min(4, hi - j)
        _scores_block4x2(X[j], X[j + min(1, n_live - 1)], X[j + min(2, n_live - 1)],
                         X[j + min(3, n_live - 1)], W, b, Z)
        for s in range(n_live):
            for c in range(C):
                out[j + s, c] = Z[s, c]


@njit(parallel=True, cache=True)
def predict_scores(X, W, b, out, n_threads):
    """out (N, C) = X (N, D) W^T (D, C) + b (C,), rows split in n_threads contiguous chunks."""
    N = X.shape[0]
    T = max(1, n_threads)
    if T == 1:
        _scores_rows(X, W, b, 0, N, out)
        return
    for k in prange(T):
        lo, hi = _chunk_bounds(0, N, k, T)
        _scores_rows(X, W, b, lo, hi, out)


@njit(parallel=True, cache=True)
def _parallel_probe(a):
    for k in prange(a.shape[0]):
        a[k] = k


try:
    _parallel_probe(np.zeros(2))
except Exception as exc:  # no working compiler or threading layer on this machine
    raise ImportError(f"numba is installed but cannot compile here ({exc})") from exc
