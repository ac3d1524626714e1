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

The kernel contract is documented in ``fastlr/backends/__init__.py``.
"""

import numpy as np

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


def predict_scores(X, W, b, out, n_threads):
    """Scores ``X W^T + b`` of X (N, D) written into ``out`` (N, C). ``n_threads`` is unused:
    NumPy's BLAS picks its own threads."""
    np.matmul(features(X, W.dtype), W.T, out=out)
    out += b


def loss_and_grad(X, y, sample_weight, W, b, grad_W, grad_b, parts_W, parts_b):
    """Mean weighted cross-entropy of one batch, and its gradient written into grad_W, grad_b.

    Parameters
    ----------
    X : (B, D) float32 or float64, or uint8 pixels (features X / 255)
    y : (B,) int64, labels in 0..C-1
    sample_weight : (B,) W's dtype
    W : (C, D), b : (C,) the current weights, float32 or float64 (X's dtype if X is float)
    grad_W : (C, D), grad_b : (C,) outputs
    parts_W : (T, C, D), parts_b : (T, C) per-thread scratch; unused here

    Returns
    -------
    float
        ``L = (1/B) sum_i s_i l_i``.
    """
    batch = X.shape[0]
    X = features(X, W.dtype)
    scores = X @ W.T + b
    losses = cross_entropy(scores, y)
    delta = softmax(scores)
    delta[np.arange(batch), y] -= 1.0
    delta *= (sample_weight / batch)[:, None]
    grad_W[...] = delta.T @ X
    grad_b[...] = delta.sum(axis=0)
    return float(np.dot(sample_weight, losses) / batch)


def sgd_epoch(X, y, sample_weight, perm, W, b, vel_W, vel_b, lr_steps, batch_size, momentum,
              alpha, parts_W, parts_b):
    """One epoch of minibatch SGD over the samples in ``perm`` order, updating W, b in place.

    Step t uses samples ``perm[t*batch_size : (t+1)*batch_size]`` (the last batch may be
    smaller) and learning rate ``lr_steps[t]``.

    Parameters
    ----------
    X : (N, D), y : (N,) int64, sample_weight : (N,)
    perm : (M,) int64, indices into X in the order they are visited (M <= N: a validation
        split is simply left out of perm)
    W : (C, D), b : (C,) updated in place
    vel_W : (C, D), vel_b : (C,) momentum buffers, updated in place (untouched if momentum == 0)
    lr_steps : (S,) float64 with S = ceil(M / batch_size)
    batch_size : int; momentum, alpha : float
    parts_W : (T, C, D), parts_b : (T, C) per-thread scratch; unused here

    Returns
    -------
    loss_sum : float
        The sum over the epoch of ``s_i l_i``, each loss taken at the weights of its step.
        Divided by the sum of the weights it is the running mean loss; it is not finite if
        training diverged.
    correct_sum : float
        The sum over the epoch of ``s_i`` for the samples whose highest score (the first, on a
        tie, as ``argmax``) is their label, at the same weights: divided by the sum of the
        weights, the running accuracy.
    """
    grad_W = np.empty_like(W)
    grad_b = np.empty_like(b)
    loss_sum = 0.0
    correct_sum = 0.0
    for step, start in enumerate(range(0, len(perm), batch_size)):
        idx = perm[start:start + batch_size]
        scores = X[idx] @ W.T + b
        correct_sum += float(np.sum(sample_weight[idx] * (scores.argmax(axis=1) == y[idx])))
        batch_loss = loss_and_grad(X[idx], y[idx], sample_weight[idx], W, b, grad_W, grad_b,
                                   parts_W, parts_b)
        loss_sum += batch_loss * len(idx)
        step_W = grad_W + alpha * W
        step_b = grad_b
        if momentum != 0.0:
            vel_W[...] = momentum * vel_W + step_W
            vel_b[...] = momentum * vel_b + step_b
            step_W, step_b = vel_W, vel_b
        W -= lr_steps[step] * step_W
        b -= lr_steps[step] * step_b
    return loss_sum, correct_sum
