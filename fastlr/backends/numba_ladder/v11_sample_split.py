"""v11, the threads split the samples again and read the rows of X where they are.

Shapes: N samples, D features, C classes, B batch, T threads.

The chosen epoch (``fastlr.backends.numba.epoch``) with the blocks it had when it was chosen on
Zen 4: 64 samples, 200 KB of MNIST's float32 rows. Each thread takes its contiguous chunk of
every minibatch, scores a block straight from the rows with the register tiles, runs its
softmax, and accumulates its gradient while the next block's rows are asked for; the threads
meet twice per step in one parallel region. v12 (``v12-tuned-blocks``) is the same epoch in
the blocks the CPU's tuning picks (``tuning.py``: 100 KiB of rows, 32 of MNIST's float32
rows), which on Sapphire Rapids were 1.1-1.2x faster than these (docs/kernels.md).
"""

from ..numba.epoch import epoch_in_blocks

ZEN4_BLOCK = 64  # samples per block, as chosen on Zen 4


def sgd_epoch_v11(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size,
                  momentum, alpha, parts_W, parts_b):
    """The ``sgd_epoch`` contract, the chosen epoch in blocks of 64 samples."""
    return epoch_in_blocks(ZEN4_BLOCK, X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps,
                           batch_size, momentum, alpha, parts_W, parts_b)
