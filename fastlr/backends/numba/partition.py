"""How the T threads share the work: which samples and which weights each one takes.

Shapes: B batch, C classes, D features, T threads, K chunks of a batch.

A batch is cut into K chunks whatever T is (the contract, ``fastlr/backends/contract.py``):
``_chunk_bounds`` gives chunk j's samples (its partial gradient), ``_thread_chunks`` the
chunks thread k computes, and ``_thread_stream`` the rows thread k reads next, chunk after
chunk, step after step (what it asks for ahead of time); ``_aligned_slice`` cuts the C D
weights into T slices on cache-line bounds (each thread's share of the update), so no two
threads write one line. The update is element by element, so its slices change no bits, and
the chunks depend on K alone: any T gives the same model.
"""

from numba import njit


@njit(cache=True)
def _chunk_bounds(start, stop, j, K):
    """Rows [lo, hi) of chunk j of the K contiguous chunks of the batch [start, stop)."""
    size = stop - start
    return start + (j * size) // K, start + ((j + 1) * size) // K


@njit(cache=True)
def _thread_chunks(k, T, K):
    """Chunks [j0, j1) of the K of a batch that thread k of T computes: contiguous, so a
    thread reads one run of the batch's rows."""
    return (k * K) // T, ((k + 1) * K) // T


@njit(cache=True)
def _thread_stream(perm, batch_size, K, j0, j1, t, j, offset, count, out):
    """``out[:got]``: the rows a thread that computes chunks [j0, j1) of every step reads next
    (chunk j of step t from ``offset`` samples into it, then the rest of its chunks of step t,
    then its chunks of step t + 1, ...); returns got <= count (fewer at the end of the epoch).
    perm (M,) int64, the epoch's order."""
    M = perm.shape[0]
    got = 0
    while got < count and j1 > j0:
        start = t * batch_size
        if start >= M:
            break
        lo, hi = _chunk_bounds(start, min(start + batch_size, M), j, K)
        if offset >= hi - lo:
            offset -= hi - lo
            j += 1
            if j == j1:
                j = j0
                t += 1
            continue
        m = min(count - got, hi - lo - offset)
        for s in range(m):
            out[got + s] = perm[lo + offset + s]
        got += m
        offset += m
    return got


@njit(cache=True)
def _aligned_slice(D, k, T):
    """Columns [lo, hi) of W that thread k updates: T slices whose bounds are multiples of 16
    floats, so no two threads write the same cache line."""
    lo = min(D, ((k * D) // T + 15) // 16 * 16)
    hi = D if k == T - 1 else min(D, (((k + 1) * D) // T + 15) // 16 * 16)
    return lo, hi
