"""NumPy reference backend: the specification of fastlr's math, and the oracle for the others.

Written for clarity, not speed. Every fast backend is tested against these functions.

Shapes: N samples, D features, C classes, B batch, T threads.

The model
---------
Scores (logits) of one sample x (D,) are ``z = W x + b`` with ``W`` (C, D) and ``b`` (C,).

Softmax, stable form (subtracting the maximum changes nothing mathematically and keeps every
``exp`` argument <= 0, so nothing overflows)::

    m   = max_k z_k
    p_c = exp(z_c - m) / sum_k exp(z_k - m)

Cross-entropy of a sample with label y, through log-sum-exp::

    l = log sum_k exp(z_k) - z_y = m + log sum_k exp(z_k - m) - z_y

Loss of a batch of B samples with sample weights s_i (all 1 unless the user gives weights)::

    L = (1/B) sum_i s_i l_i

Gradient: ``dL/dz_i = s_i (p_i - onehot(y_i)) / B``, so with G (B, C) holding those rows::

    grad_W = G^T X      (C, D)
    grad_b = sum_i G_i  (C,)

One SGD step t with learning rate lr_t, momentum mu and L2 strength alpha (bias not
regularized; with mu = 0 this is exactly ``W -= lr_t * (grad_W + alpha * W)``)::

    v_W = mu v_W + (grad_W + alpha W)      W -= lr_t v_W
    v_b = mu v_b +  grad_b                 b -= lr_t v_b

Pixels: X may also be uint8 (MNIST's bytes as they are, a quarter of the memory traffic);
its features are then ``x = X / 255`` in W's dtype, and everything else is as above.

The kernel contract (its records and guarantees) is ``fastlr/backends/contract.py``. The epoch
below is composed of the functions above it, so every formula is written once.
"""

import numpy as np

from .contract import Samples

name = "numpy"
takes_pixels = True  # uint8 X: features X / 255 (``features``)


def softmax(scores):
    """Row-wise softmax of ``scores`` (B, C), computed with the row maximum subtracted."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def log_sum_exp(scores):
    """Row-wise ``log sum_k exp(scores_k)`` (B,), stable for any finite scores."""
    m = scores.max(axis=1)
    return m + np.log(np.exp(scores - m[:, None]).sum(axis=1))


def cross_entropy(scores, y):
    """Per-sample cross-entropy ``log sum_k exp(z_k) - z_y`` (B,) of scores (B, C), labels (B,)."""
    return log_sum_exp(scores) - scores[np.arange(len(y)), y]


def features(X, dtype):
    """The features of X (N, D): X itself if it is float, ``X / 255`` in ``dtype`` if it is
    uint8 pixels."""
    if X.dtype == np.uint8:
        return X.astype(dtype) / dtype.type(255)
    return X


def scores(X, W, b):
    """Scores ``z = x W^T + b`` (N, C) of the features of X (N, D)."""
    return features(X, W.dtype) @ W.T + b


def predict_scores(X, W, b, out, n_threads):
    """Scores of X (N, D) written into ``out`` (N, C). ``n_threads`` is unused: NumPy's BLAS
    picks its own threads."""
    out[...] = scores(X, W, b)


def batch_gradient(samples, W, b, grad_W, grad_b):
    """One batch's weighted sums and its gradient: the heart of every step.

    Parameters
    ----------
    samples : :class:`~fastlr.backends.contract.Samples` of B rows
    W : (C, D), b : (C,) the current weights
    grad_W : (C, D), grad_b : (C,) outputs: the gradient of ``L = (1/B) sum_i s_i l_i``

    Returns
    -------
    loss_sum : float, ``sum_i s_i l_i``
    correct_sum : float, ``sum_i s_i`` over the samples whose highest score (the first, on a
        tie) is their label
    """
    X, y, sample_weight = samples
    batch = X.shape[0]
    rows = np.arange(batch)
    x = features(X, W.dtype)
    z = scores(x, W, b)
    losses = cross_entropy(z, y)
    correct = z.argmax(axis=1) == y
    delta = softmax(z)
    delta[rows, y] -= 1.0
    delta *= (sample_weight / batch)[:, None]
    grad_W[...] = delta.T @ x
    grad_b[...] = delta.sum(axis=0)
    return float(np.dot(sample_weight, losses)), float(np.dot(sample_weight, correct))


def loss_and_grad(samples, W, b, grad_W, grad_b, threads):
    """Mean weighted cross-entropy ``L = (1/B) sum_i s_i l_i`` of one batch (``samples``, B
    rows), and its gradient written into grad_W (C, D), grad_b (C,). ``threads`` is unused."""
    loss_sum, _ = batch_gradient(samples, W, b, grad_W, grad_b)
    return loss_sum / samples.X.shape[0]


def sgd_update(state, grad_W, grad_b, lr, momentum, alpha):
    """One step of the update rule in the module docstring, in place on ``state``
    (:class:`~fastlr.backends.contract.SGDState`)."""
    W, b, vel_W, vel_b = state
    step_W = grad_W + alpha * W
    step_b = grad_b
    if momentum != 0.0:
        vel_W[...] = momentum * vel_W + step_W
        vel_b[...] = momentum * vel_b + step_b
        step_W, step_b = vel_W, vel_b
    W -= lr * step_W
    b -= lr * step_b


def sgd_epoch(samples, state, steps, threads):
    """One epoch of minibatch SGD: step t takes the rows ``perm[t*batch_size :
    (t+1)*batch_size]`` (the last batch may be smaller) at rate ``lr_steps[t]``.

    Parameters
    ----------
    samples : :class:`~fastlr.backends.contract.Samples`, N rows
    state : :class:`~fastlr.backends.contract.SGDState`, updated in place
    steps : :class:`~fastlr.backends.contract.Steps`; ``perm`` (M,) may leave rows out (a
        validation split is simply not visited)
    threads : :class:`~fastlr.backends.contract.Threads`; one thread computes every batch
        whole and never waits, so it runs every step: ``threads.seen`` gets (S, 0)

    Returns
    -------
    loss_sum : float
        The sum over the epoch of ``s_i l_i``, each loss taken at the weights of its step;
        divided by the sum of the weights, the running mean loss. Not finite if training
        diverged.
    correct_sum : float
        The sum over the epoch of ``s_i`` for the samples whose highest score at the same
        weights is their label: divided by the sum of the weights, the running accuracy.
    """
    X, y, sample_weight = samples
    grad_W = np.empty_like(state.W)
    grad_b = np.empty_like(state.b)
    loss_sum = 0.0
    correct_sum = 0.0
    for t, start in enumerate(range(0, len(steps.perm), steps.batch_size)):
        idx = steps.perm[start:start + steps.batch_size]
        batch = Samples(X[idx], y[idx], sample_weight[idx])
        batch_loss, batch_correct = batch_gradient(batch, state.W, state.b, grad_W, grad_b)
        loss_sum += batch_loss
        correct_sum += batch_correct
        sgd_update(state, grad_W, grad_b, steps.lr_steps[t], steps.momentum, steps.alpha)
    if threads.seen is not None:
        threads.seen[:] = (-(-len(steps.perm) // steps.batch_size), 0)
    return loss_sum, correct_sum
