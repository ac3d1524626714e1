"""The kernel contract: the records every backend's kernels take, defined once.

Shapes: N samples, D features, C classes, B batch, M samples visited in an epoch, S steps in an
epoch, T threads, K chunks of a batch.

A backend is a module with a ``name``, a ``takes_pixels`` flag (True if its kernels accept
uint8 X) and three functions. They only compute: they validate nothing, print nothing, draw no
random numbers, and write their results into arrays the driver (``fastlr/sgd.py``) allocated.

``predict_scores(X, W, b, out, n_threads)``
    X (N, D), W (C, D), b (C,) -> out (N, C) = X W^T + b, on ``n_threads`` threads.

``loss_and_grad(samples, W, b, grad_W, grad_b, threads) -> float``
    One batch, ``samples`` = :class:`Samples` of B rows. Returns the mean weighted
    cross-entropy ``(1/B) sum_i s_i l_i`` and writes its gradient into grad_W (C, D),
    grad_b (C,).

``sgd_epoch(samples, state, steps, threads) -> (loss_sum, correct_sum)``
    One epoch of minibatch SGD over :class:`Samples`, updating the :class:`SGDState` in place
    as :class:`Steps` says: step t takes the rows ``perm[t*batch_size:(t+1)*batch_size]`` (the
    last batch may be smaller), computes the gradient of that whole batch at the current
    weights and applies ``v = momentum v + (grad + alpha W); W -= lr_steps[t] v`` (the bias
    the same, without alpha). Returns two floats, the running metrics of the epoch at no extra
    pass: the sum of ``s_i l_i`` over the epoch, each loss taken at the weights of its step,
    and the sum of ``s_i`` over the samples whose highest score at those weights (the first
    one on a tie, as ``argmax``) is their label. It may stop early, at the end of a step,
    when :class:`Threads` says so (``patience``); ``threads.seen`` then says how many steps
    it ran, and the metrics are those of these steps.

How a batch is shared (every compiled backend does it so; the reference has no threads): the
batch ``[start, stop)`` is cut into K = ``parts_W.shape[0]`` contiguous chunks, chunk j the
rows ``start + j (stop - start) // K`` to ``start + (j + 1) (stop - start) // K``; chunk j's
partial gradient goes to ``parts_W[j]``, ``parts_b[j]``, and the K partials are summed in the
order j = 0..K-1. Thread k of T computes the chunks ``k K // T`` to ``(k + 1) K // T - 1``.
So the model's bits depend on K, never on T: any thread count, and an epoch that changes its
thread count at a step's end, gives the same model (``fastlr/threads.py`` chooses K from the
batch and the shape, T from the idle cores).

The driver guarantees:

- every array is C-contiguous;
- X, sample_weight, the weights, velocities, gradients, partials and ``out`` share one float
  dtype, float32 (the fast path) or float64; or X is uint8 pixels, whose features are
  ``X / 255`` (``reference.features``), and the others share the float dtype;
- y and perm are int64; labels lie in ``0..C-1``; lr_steps is float64 with one rate per step;
- ``threads.n_threads`` is T >= 1, the partials are (K, C, D) and (K, C) with K >= 1, and
  ``threads.seen`` is (2,) int64.

The math is specified, and checked, in ``reference.py``. A backend must agree with it within
the tolerances of ``check.py``, and, for a given K, give bitwise the same result on every run
and at every T.

Why records and not positions: ``sgd_epoch`` has seventeen inputs, and the same list used to be
spelled out by the driver, the stream, the checks, the tests, the benchmarks and the lab. Here
they are named once; a compiled backend unpacks them once, at its boundary
(:func:`epoch_arguments`, :func:`team_arguments`), into the positional arguments its kernels
are compiled for.
"""

from typing import NamedTuple

import numpy as np


class Samples(NamedTuple):
    """The rows a kernel reads: X (N, D) float or uint8 pixels, y (N,) int64 labels,
    sample_weight (N,) of the weights' dtype."""

    X: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray


class SGDState(NamedTuple):
    """What an epoch updates in place: the weights W (C, D), b (C,) and their momentum
    buffers vel_W (C, D), vel_b (C,)."""

    W: np.ndarray
    b: np.ndarray
    vel_W: np.ndarray
    vel_b: np.ndarray


class Steps(NamedTuple):
    """How an epoch walks the samples: the order ``perm`` (M,) int64 of row indices, the rate
    ``lr_steps`` (S,) float64 of each step, S = ceil(M / batch_size), and the momentum and L2
    strength ``alpha`` of the update."""

    perm: np.ndarray
    lr_steps: np.ndarray
    batch_size: int
    momentum: float
    alpha: float


class Threads(NamedTuple):
    """Who computes a batch, and where its partial gradients go.

    n_threads : int, T, the threads that share the K chunks of every batch
    parts_W : (K, C, D), parts_b : (K, C), the partial gradient of each chunk, summed in the
        order 0..K-1 (see the module docstring)
    patience : int, how many long waits (a thread that waited for another so long that it
        yielded its core: another process took that one's core) the T threads may see before
        they stop at the end of the step; 0: never stop early
    seen : (2,) int64, written by ``sgd_epoch``: the steps it ran, and the long waits its
        threads saw
    """

    n_threads: int
    parts_W: np.ndarray
    parts_b: np.ndarray
    patience: int = 0
    seen: np.ndarray = None


def make_threads(n_threads, n_classes, n_features, dtype, chunks=None):
    """:class:`Threads` for T = ``n_threads`` with K = ``chunks`` (default T) zeroed partials
    of ``dtype``, never stopping early."""
    chunks = int(n_threads if chunks is None else chunks)
    return Threads(int(n_threads), np.zeros((chunks, n_classes, n_features), dtype=dtype),
                   np.zeros((chunks, n_classes), dtype=dtype), 0, np.zeros(2, np.int64))


def epoch_arguments(samples, state, steps, threads):
    """The records of ``sgd_epoch`` as the positional arguments the compiled kernels take:
    ``X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum, alpha,
    parts_W, parts_b``."""
    return (samples.X, samples.y, samples.sample_weight, steps.perm, state.W, state.b,
            state.vel_W, state.vel_b, steps.lr_steps, int(steps.batch_size),
            float(steps.momentum), float(steps.alpha), threads.parts_W, threads.parts_b)


def team_arguments(threads):
    """The last arguments of the compiled ``sgd_epoch``, after :func:`epoch_arguments`':
    ``n_threads, patience, seen`` (a scratch ``seen`` if the record has none)."""
    seen = np.zeros(2, np.int64) if threads.seen is None else threads.seen
    return int(threads.n_threads), int(threads.patience), seen


def batch_arguments(samples, W, b, grad_W, grad_b, threads):
    """The arguments of ``loss_and_grad`` as the compiled kernels take them: ``X, y,
    sample_weight, W, b, grad_W, grad_b, parts_W, parts_b, n_threads``."""
    return (samples.X, samples.y, samples.sample_weight, W, b, grad_W, grad_b, threads.parts_W,
            threads.parts_b, int(threads.n_threads))
