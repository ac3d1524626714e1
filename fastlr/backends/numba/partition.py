"""How the T threads share the work: which samples and which weights each one takes.

Shapes: B batch, C classes, D features, T threads.

Both partitions depend on T alone, never on the thread pool, so a given T always gives the same
bits: ``_chunk_bounds`` cuts a batch into T contiguous chunks of samples (each thread's partial
gradient), ``_aligned_slice`` cuts the C D weights into T slices on cache-line bounds (each
thread's share of the update), so no two threads write one line.
"""

from numba import njit


@njit(cache=True)
def _chunk_bounds(start, stop, k, T):
    """Rows [lo, hi) of thread k's contiguous chunk of the batch [start, stop). Depends on T
    only, never on the thread pool, so a given T always gives the same partition."""
    size = stop - start
    return start + (k * size) // T, start + ((k + 1) * size) // T


@njit(cache=True)
def _aligned_slice(D, k, T):
    """Columns [lo, hi) of W that thread k updates: T slices whose bounds are multiples of 16
    floats, so no two threads write the same cache line."""
    lo = min(D, ((k * D) // T + 15) // 16 * 16)
    hi = D if k == T - 1 else min(D, (((k + 1) * D) // T + 15) // 16 * 16)
    return lo, hi
