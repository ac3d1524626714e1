"""The microkernel interface: what the epoch asks of the tiles, and which provider answers.

Shapes: C classes, D features, T threads, n samples of a block, P rows of a block's score
scratch (``padded_rows(block)``).

The epoch (``epoch.py``) computes a block's scores and gradient through these functions alone,
whoever provides them:

``new_scratch(T, C, D, block, X, W)``   the provider's scratch for T threads, of its own type
``thread_scratch(scratch, k)``          thread k's part of it
``padded_rows(n)``                      the rows a block of n samples lists and scores: the
                                        provider reads whole groups of rows, the rows past n
                                        repeat a row and their scores are ignored
``pack_weights(X, W, n, scratch)``      once per thread's chunk of n samples in a step, before
                                        its blocks: W made ready for the provider's tiles
``score_block(X, rows, n, ahead, n_ahead, W, scratch, S)``
                                        ``S[s, c] = scale X[rows[s]] . W[c]`` for s < n
``accumulate_gradient(X, rows, n, ahead, n_ahead, G, part_W, overwrite, scratch)``
                                        ``part_W [+]= scale G[:n]^T X[rows[:n]]``

(``scale``: 1/255 for uint8 pixels, else 1; ``ahead[:n_ahead]`` are the rows of the thread's
next block, which the provider asks the memory for while it computes.)

Two providers, chosen here once from the tuning (``tuning.py``):

``tiles.py``   the register tiles in vector registers, for any CPU; no scratch (None)
``amx.py``     where ``TUNING.amx`` (the CPU has AMX-BF16 and the operating system gives the
               process its tile registers): uint8 pixels with float32 weights of at most 16
               classes on the AMX tiles, for chunks long enough to repay packing W; every
               other block through the vector tiles

``amx.py`` is imported only when it is chosen, so its tile instructions never reach a
compilation for a CPU without them. The on-disk cache keys every kernel on all the sources of
this package and on the tuning (``_cache.py``), so a kernel compiled with one provider is never
loaded with the other.
"""

from .tuning import TUNING

if TUNING.amx:
    from .amx import (accumulate_gradient, new_scratch, pack_weights,  # noqa: F401
                      padded_rows, score_block, thread_scratch)
else:
    from .tiles import (accumulate_gradient, new_scratch, pack_weights,  # noqa: F401
                        padded_rows, score_block, thread_scratch)
