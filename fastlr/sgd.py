"""The SGD driver: epochs, shuffling, learning-rate schedules, history, early stopping.

The driver owns everything a kernel must not do: it checks dtypes, contiguity and shapes,
allocates every buffer, draws the permutations from a seeded generator, checks that the loss
stays finite and raises the errors. The kernels (``fastlr/backends``) only compute.
"""

import time

import numpy as np

from .backends import reference
from .errors import DivergenceError
from .pixels import for_kernels

LR_SCHEDULES = ("constant", "linear")


def learning_rates(schedule, learning_rate, total_steps):
    """The learning rate of every step of a run, (total_steps,) float64.

    ``constant``: ``lr_t = learning_rate``. ``linear``: ``lr_t = learning_rate * (1 - t / S)``
    for t = 0..S-1, decaying towards 0 over the S steps of the run.
    """
    if schedule == "constant":
        return np.full(total_steps, float(learning_rate))
    if schedule == "linear":
        return float(learning_rate) * (1.0 - np.arange(total_steps) / total_steps)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose constant or linear")


def allocate_parts(n_threads, n_classes, n_features, dtype):
    """Per-thread partial gradients: parts_W (T, C, D) and parts_b (T, C)."""
    return (np.zeros((n_threads, n_classes, n_features), dtype=dtype),
            np.zeros((n_threads, n_classes), dtype=dtype))


def predict_scores(backend, X, W, b, n_threads):
    """Scores X W^T + b (N, C) through ``backend``; X float of W's dtype, or Pixels."""
    X = for_kernels(X, backend, W.dtype)
    out = np.empty((X.shape[0], W.shape[0]), dtype=W.dtype)
    backend.predict_scores(X, W, b, out, n_threads)
    return out


def evaluate(backend, X, y, W, b, n_threads, sample_weight=None):
    """Mean (weighted) cross-entropy and accuracy of the model (W, b) on X, y."""
    scores = predict_scores(backend, X, W, b, n_threads).astype(np.float64)
    losses = reference.cross_entropy(scores, y)
    correct = scores.argmax(axis=1) == y
    if sample_weight is None:
        return float(losses.mean()), float(correct.mean())
    weights = np.asarray(sample_weight, dtype=np.float64)
    total = weights.sum()
    if total <= 0:
        return float(losses.mean()), float(correct.mean())
    # Elementwise products, not ``weights @ losses``: a BLAS call between epochs leaves
    # OpenBLAS's threads spinning for a while, and they take the cores from the next epoch's
    # kernel threads (measured: 2-thread Numba epochs of 79 ms instead of 30 in `train`).
    return (float((weights * losses).sum() / total),
            float((weights * correct).sum() / total))


def divergence_error(epoch, learning_rate, became_nan):
    """The DivergenceError of epoch ``epoch`` (0-based) whose loss became NaN (``became_nan``)
    or infinite, saying which weights are kept and what rate to try."""
    became = "NaN" if became_nan else "infinite"
    kept = (f"The weights from the end of epoch {epoch} are kept" if epoch
            else "The weights are not trained")
    return DivergenceError(
        f"training diverged in epoch {epoch + 1} (the loss became {became}): the learning rate "
        f"{learning_rate:g} is too high; try a smaller one, e.g. --lr "
        f"{min(learning_rate / 10, 1.0):g}. {kept}")


def _check_contract(backend, X, y, sample_weight, W, b):
    """The kernel contract's preconditions; a failure here is a bug in the caller, not bad
    user input (the model validates that)."""
    dtype = W.dtype
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"weights must be float32 or float64, got {dtype}")
    pixels = X.dtype == np.uint8 and getattr(backend, "takes_pixels", False)
    if not (X.dtype == dtype or pixels) or not X.flags.c_contiguous:
        raise TypeError(f"X must be C-contiguous {dtype} (or uint8 for a backend that takes "
                        f"pixels), got {X.dtype}")
    for name, array in (("sample_weight", sample_weight), ("W", W), ("b", b)):
        if array.dtype != dtype or not array.flags.c_contiguous:
            raise TypeError(f"{name} must be C-contiguous {dtype}, got {array.dtype}")
    if y.dtype != np.int64 or not y.flags.c_contiguous:
        raise TypeError(f"y must be C-contiguous int64, got {y.dtype}")
    n, d = X.shape
    c = W.shape[0]
    if W.shape != (c, d) or b.shape != (c,) or y.shape != (n,) or sample_weight.shape != (n,):
        raise ValueError(f"inconsistent shapes X {X.shape}, y {y.shape}, "
                         f"sample_weight {sample_weight.shape}, W {W.shape}, b {b.shape}")


def run_sgd(backend, X, y, sample_weight, W, b, *, epochs, batch_size, learning_rate,
            lr_schedule="linear", momentum=0.0, alpha=0.0, n_threads=1, rng,
            train_index=None, validation=None, early_stopping=False, n_iter_no_change=3,
            tol=1e-4, on_epoch=None, history=None, velocity=None, lr_steps=None,
            score_train=False):
    """Train (W, b) in place with minibatch SGD for ``epochs`` epochs.

    The training loss and accuracy of each epoch are running metrics, counted by the kernel
    at no extra pass: every sample's loss, and whether its highest score is its label, at the
    weights of the step that trained on it (what Keras and Vowpal Wabbit report). They lag the
    weights at the end of the epoch a little; ``score_train`` adds an exact score of the
    training set at those weights, at the price of one more pass.

    Parameters
    ----------
    backend : module implementing the kernel contract (see ``fastlr.backends``)
    X : (N, D) float of W's dtype, or :class:`~fastlr.pixels.Pixels` (the bytes go to a backend
        that takes pixels, the features to any other); y : (N,) int64 labels 0..C-1;
        sample_weight : (N,) float
    W : (C, D), b : (C,) the starting weights, updated in place
    epochs, batch_size : int
    learning_rate : float; lr_schedule : "constant" or "linear"
    momentum, alpha : float, the momentum and the L2 strength
    n_threads : int, T, the thread count of the kernels
    rng : numpy.random.Generator, draws one permutation per epoch
    train_index : (M,) int64, optional; the rows of X to train on (default: all)
    validation : (X_val, y_val), optional; scored after every epoch with ``predict_scores``
    early_stopping : bool
        Stop when the validation accuracy has not improved by ``tol`` for ``n_iter_no_change``
        epochs, and restore the best weights. Needs ``validation``.
    on_epoch : callable(record), optional
        Called after every epoch with that epoch's history record.
    history : list, optional
        Records are appended to it as they are made, so a caller keeps them even if training is
        interrupted.
    velocity : (vel_W (C, D), vel_b (C,)), optional
        The momentum buffers, updated in place; pass them to carry momentum from one call to
        the next (``partial_fit`` does). Default: fresh zeros.
    lr_steps : (epochs * S,) float64, optional
        The rate of every step of this call, S = ceil(M / batch_size) steps per epoch, instead
        of the schedule ``lr_schedule`` makes from ``learning_rate``: a caller whose schedule
        spans several calls passes its slice (``fastlr.distributed`` does, one round a call).
    score_train : bool
        Also score the training set at the end of every epoch.

    Returns
    -------
    list of dict
        One record per epoch: ``epoch``, ``train_loss`` and ``train_accuracy`` (running, as
        above, weighted by the sample weights), ``lr`` (the rate of the epoch's last step),
        ``time_s`` (the epoch's SGD); with ``score_train``, ``end_train_loss`` and
        ``end_train_accuracy``; with validation, ``val_loss``, ``val_accuracy``.

    Raises
    ------
    DivergenceError
        If the loss or the weights stop being finite. W and b are restored to the weights at
        the start of the failing epoch, the last finite ones; the momentum buffers are zeroed.
    """
    X = for_kernels(X, backend, W.dtype)
    if validation is not None:
        validation = (for_kernels(validation[0], backend, W.dtype), validation[1])
    _check_contract(backend, X, y, sample_weight, W, b)
    if early_stopping and validation is None:
        raise ValueError("early stopping needs a validation set")
    if train_index is None:
        train_index = np.arange(X.shape[0], dtype=np.int64)
        X_train, y_train, sw_train = X, y, sample_weight
    else:  # the copy of the training rows only for score_train, which scores them
        X_train, y_train = (X[train_index], y[train_index]) if score_train else (None, None)
        sw_train = sample_weight[train_index]
    n_train = len(train_index)
    weight_total = float(np.sum(sw_train, dtype=np.float64))
    if not weight_total > 0:  # all weights zero: means over the samples, as ``evaluate``
        weight_total = float(n_train)
    steps_per_epoch = -(-n_train // batch_size)
    if lr_steps is None:
        lr_all = learning_rates(lr_schedule, learning_rate, steps_per_epoch * epochs)
    elif np.shape(lr_steps) != (steps_per_epoch * epochs,):
        raise ValueError(f"lr_steps has shape {np.shape(lr_steps)}, expected "
                         f"({steps_per_epoch * epochs},)")
    else:
        lr_all = np.asarray(lr_steps, dtype=np.float64)
    vel_W, vel_b = (np.zeros_like(W), np.zeros_like(b)) if velocity is None else velocity
    parts_W, parts_b = allocate_parts(n_threads, W.shape[0], W.shape[1], W.dtype)
    history = [] if history is None else history
    best = None
    for epoch in range(epochs):
        start = time.perf_counter()
        last_W, last_b = W.copy(), b.copy()
        perm = rng.permutation(train_index).astype(np.int64, copy=False)
        lr_steps = np.ascontiguousarray(lr_all[epoch * steps_per_epoch:
                                               (epoch + 1) * steps_per_epoch])
        # Divergence is detected below, with a clearer message than NumPy's warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            loss_sum, correct_sum = backend.sgd_epoch(
                X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size,
                float(momentum), float(alpha), parts_W, parts_b)
        elapsed = time.perf_counter() - start
        record = {"epoch": epoch + 1, "train_loss": loss_sum / weight_total,
                  "train_accuracy": correct_sum / weight_total, "lr": float(lr_steps[-1]),
                  "time_s": elapsed}
        if score_train:
            with np.errstate(over="ignore", invalid="ignore"):
                record["end_train_loss"], record["end_train_accuracy"] = evaluate(
                    backend, X_train, y_train, W, b, n_threads, sw_train)
        # Weights can stay finite while their scores overflow: the losses count too.
        losses = [loss_sum, record.get("end_train_loss", 0.0)]
        if not (np.isfinite(losses).all() and np.isfinite(W).all() and np.isfinite(b).all()):
            W[...] = last_W
            b[...] = last_b
            vel_W[...] = 0
            vel_b[...] = 0
            raise divergence_error(epoch, learning_rate, np.isnan(losses).any())
        if validation is not None:
            val_loss, val_acc = evaluate(backend, validation[0], validation[1], W, b, n_threads)
            record.update(val_loss=val_loss, val_accuracy=val_acc)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if early_stopping:
            if best is None or record["val_accuracy"] > best[0] + tol:
                best = (record["val_accuracy"], epoch, W.copy(), b.copy())
            elif epoch - best[1] >= n_iter_no_change:
                W[...] = best[2]
                b[...] = best[3]
                break
    return history
