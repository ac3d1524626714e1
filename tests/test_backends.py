"""The reference is the spec; every other backend is checked against it.

The reference itself is checked against central finite differences and against closed forms on
hard inputs. Then each fast backend from ``available_backends()`` must reproduce the reference's
loss, gradient, scores and k-step SGD trajectory, in float32 and float64, on inputs chosen to
break careless kernels.
"""

import numpy as np
import pytest

from fastlr.backends import available_backends, get_backend, reference
from fastlr.backends.check import TRAJECTORY_TOLERANCE
from fastlr.backends.contract import SGDState, Samples, Steps, make_threads

from conftest import assert_matches, in_float64, make_problem, run_epochs, run_loss_and_grad

FAST_BACKENDS = [name for name in available_backends() if name != "numpy"]


# --- the reference against mathematics ---------------------------------------------------------

def test_reference_gradient_matches_central_differences():
    rng = np.random.default_rng(0)
    X, y, sw, W, b = make_problem(rng, 7, 5, 4, np.float64, weight_scale=1.0, weighted=True)
    _, grad_W, grad_b = run_loss_and_grad(reference, X, y, sw, W, b)

    def loss_at(W_, b_):
        return run_loss_and_grad(reference, X, y, sw, W_, b_)[0]

    h = 1e-6
    numeric_W = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        Wp, Wm = W.copy(), W.copy()
        Wp[idx] += h
        Wm[idx] -= h
        numeric_W[idx] = (loss_at(Wp, b) - loss_at(Wm, b)) / (2 * h)
    numeric_b = np.zeros_like(b)
    for k in range(len(b)):
        bp, bm = b.copy(), b.copy()
        bp[k] += h
        bm[k] -= h
        numeric_b[k] = (loss_at(W, bp) - loss_at(W, bm)) / (2 * h)

    for analytic, numeric in ((grad_W, numeric_W), (grad_b, numeric_b)):
        rel = np.linalg.norm(analytic - numeric) / np.linalg.norm(numeric)
        assert rel < 1e-6


def test_reference_softmax_and_loss_for_huge_logits():
    scores = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4], [-1e4, -1e4, -1e4 - 1.0]])
    p = reference.softmax(scores)
    assert np.all(np.isfinite(p))
    e = np.exp(-1.0)
    np.testing.assert_allclose(p, [[1, 0, 0], [0, 0.5, 0.5], [1 / (2 + e), 1 / (2 + e),
                                                             e / (2 + e)]], atol=1e-300)
    # A label scored -1e4 against a winner at +1e4 costs 2e4, not inf.
    np.testing.assert_allclose(reference.cross_entropy(scores, np.array([2, 0, 2])),
                               [2e4, 1e4 + np.log(2), 1.0 + np.log(2 + e)])


def test_reference_all_equal_logits_give_uniform_probabilities():
    scores = np.full((3, 10), 123.0)
    np.testing.assert_allclose(reference.softmax(scores), 0.1)
    np.testing.assert_allclose(reference.cross_entropy(scores, np.array([0, 5, 9])), np.log(10))


def test_reference_epoch_equals_hand_written_steps():
    """sgd_epoch is the loop of loss_and_grad and the update rule in the module docstring."""
    rng = np.random.default_rng(1)
    X, y, sw, W, b = make_problem(rng, 10, 6, 3, np.float64)
    perm = rng.permutation(10).astype(np.int64)
    lr_steps = np.array([0.3, 0.2, 0.1, 0.05])
    momentum, alpha, batch = 0.5, 0.01, 3
    Wh, bh = W.copy(), b.copy()
    vW, vb = np.zeros_like(W), np.zeros_like(b)
    for t, start in enumerate(range(0, 10, batch)):
        idx = perm[start:start + batch]
        _, gW, gb = run_loss_and_grad(reference, X[idx], y[idx], sw[idx], Wh, bh)
        vW = momentum * vW + gW + alpha * Wh
        vb = momentum * vb + gb
        Wh, bh = Wh - lr_steps[t] * vW, bh - lr_steps[t] * vb
    W2, b2 = W.copy(), b.copy()
    reference.sgd_epoch(Samples(X, y, sw), SGDState(W2, b2, np.zeros_like(W), np.zeros_like(b)),
                        Steps(perm, lr_steps, batch, momentum, alpha), make_threads(1, 3, 6, W.dtype))
    np.testing.assert_allclose(W2, Wh, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(b2, bh, rtol=1e-13, atol=1e-15)


# --- every fast backend against the reference --------------------------------------------------

DTYPES = [np.float32, np.float64]


def hard_cases(dtype):
    """(name, X, y, sw, W, b) batches on which careless kernels fail."""
    rng = np.random.default_rng(42)
    cases = []
    X, y, sw, W, b = make_problem(rng, 64, 784, 10, dtype)
    cases.append(("mnist-shaped", X, y, sw, W, b))
    X, y, sw, W, b = make_problem(rng, 37, 50, 10, dtype, weighted=True)
    cases.append(("weighted, odd batch", X, y, sw, W, b))
    X, y, sw, W, b = make_problem(rng, 1, 784, 10, dtype)
    cases.append(("one sample", X, y, sw, W, b))
    X, y, sw, W, b = make_problem(rng, 16, 33, 10, dtype)
    b = np.where(np.arange(10) % 2 == 0, 1e4, -1e4).astype(dtype)
    cases.append(("logits +-1e4", X, y, sw, W * 0, b))
    X, y, sw, W, b = make_problem(rng, 16, 33, 10, dtype)
    cases.append(("all-equal logits", X, y, sw, np.zeros_like(W), np.full_like(b, 7.0)))
    X, y, sw, W, b = make_problem(rng, 12, 17, 3, dtype)
    cases.append(("three classes, odd D", X, y, sw, W, b))
    # Classes left over after the register tiles (of 5 or 10 classes).
    X, y, sw, W, b = make_problem(rng, 37, 100, 26, dtype)
    cases.append(("26 classes", X, y, sw, W, b))
    X, y, sw, W, b = make_problem(rng, 33, 61, 62, dtype, weighted=True)
    cases.append(("62 classes, odd D", X, y, sw, W, b))
    X, y, sw, W, b = make_problem(rng, 37, 784, 100, dtype)
    cases.append(("100 classes, W beyond L2", X, y, sw, W, b))
    return cases


def _case_ids():
    return [case[0] for case in hard_cases(np.float64)]


@pytest.mark.parametrize("backend_name", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_index", range(len(_case_ids())), ids=_case_ids())
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_loss_and_grad_matches_reference(backend_name, dtype, case_index, n_threads):
    backend = get_backend(backend_name)
    _, X, y, sw, W, b = hard_cases(dtype)[case_index]
    ref_loss, ref_gW, ref_gb = run_loss_and_grad(reference, *in_float64(X, y, sw, W, b))
    loss, gW, gb = run_loss_and_grad(backend, X, y, sw, W, b, n_threads)
    assert_matches(loss, ref_loss, dtype)
    assert_matches(gW, ref_gW, dtype)
    assert_matches(gb, ref_gb, dtype)


@pytest.mark.parametrize("backend_name", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_predict_scores_matches_reference(backend_name, dtype, n_threads):
    backend = get_backend(backend_name)
    rng = np.random.default_rng(3)
    X, _, _, W, b = make_problem(rng, 1001, 784, 10, dtype)
    expected = np.empty((1001, 10))
    reference.predict_scores(X.astype(np.float64), W.astype(np.float64),
                             b.astype(np.float64), expected, 1)
    out = np.full((1001, 10), np.nan, dtype=dtype)
    backend.predict_scores(X, W, b, out, n_threads)
    assert_matches(out, expected, dtype)


def trajectory_problem(kind, rng, n):
    """A weighted problem of ``kind`` (float32, float64, or uint8 pixels with float32 or
    float64 weights) for the backend, and the same problem in float64 for the reference."""
    dtype = np.float32 if kind.endswith("32") else np.float64
    X, y, sw, W, b = make_problem(rng, n, 784, 10, dtype, weighted=True)
    if not kind.startswith("pixels"):
        return (X, y, sw, W, b), in_float64(X, y, sw, W, b)
    pixels = rng.integers(0, 256, size=(n, 784)).astype(np.uint8)
    pixels[:, :196] = 0  # MNIST's empty borders: whole zero lines
    pixels[0] = 255
    return (pixels, y, sw, W * dtype(0.1), b), in_float64(pixels / 255.0, y, sw, W * 0.1, b)


KINDS = ["float32", "float64", "pixels-float32", "pixels-float64"]
# Numba compiles uint8 pixels with float64 weights as a specialization of its own, which only a
# float64 model reaches (the estimator trains on pixels in float32): the extended tier.
BACKEND_KINDS = [pytest.param(name, kind, marks=pytest.mark.extended)
                 if (name, kind) == ("numba", "pixels-float64") else (name, kind)
                 for name in FAST_BACKENDS for kind in KINDS]


@pytest.mark.parametrize("backend_name,kind", BACKEND_KINDS)
@pytest.mark.parametrize("n_threads", [1, 2, 3])
# Small batches get a small rate: with ||x||^2 ~ 260 a step of lr 0.05 on one sample
# overshoots, training oscillates (mean loss ~20), and a one-ulp change of W grows ~1000-fold;
# there even the float32 reference misses the float64 one by 4e-4.
@pytest.mark.parametrize("batch_size,momentum,alpha,lr", [(64, 0.0, 0.0, 0.05),
                                                          (10, 0.9, 1e-3, 0.005),
                                                          (1, 0.0, 1e-4, 0.005),
                                                          (500, 0.5, 0.0, 0.05)])
def test_sgd_trajectory_matches_reference(backend_name, kind, n_threads, batch_size, momentum,
                                          alpha, lr):
    """Three epochs with injected permutations: both backends see the same minibatches and
    must end at the same weights with the same running loss and accuracy (a near tie in
    float32 may flip a sample or two: the accuracy may differ by two samples' weight)."""
    backend = get_backend(backend_name)
    rng = np.random.default_rng(7)
    problem, floats = trajectory_problem(kind, rng, 301)
    dtype = problem[3].dtype
    perms = [rng.permutation(301).astype(np.int64) for _ in range(3)]
    ref_W, ref_b, ref_sums = run_epochs(reference, *floats, perms, batch_size, lr, momentum,
                                        alpha)
    got_W, got_b, got_sums = run_epochs(backend, *problem, perms, batch_size, lr, momentum,
                                        alpha, n_threads)
    assert got_W.dtype == dtype
    assert_matches(got_W, ref_W, dtype, TRAJECTORY_TOLERANCE)
    assert_matches(got_b, ref_b, dtype, TRAJECTORY_TOLERANCE)
    assert_matches(got_sums[:, 0], ref_sums[:, 0], dtype, TRAJECTORY_TOLERANCE)
    assert np.abs(got_sums[:, 1] - ref_sums[:, 1]).max() <= 2 * problem[2].max()
    assert (ref_sums[:, 1] > 0).all()  # there were samples to count


@pytest.mark.parametrize("backend_name", FAST_BACKENDS)
@pytest.mark.parametrize("n_classes,d", [(2, 100), (26, 100), (62, 100), (345, 784)])
def test_pixel_epoch_at_many_class_counts_matches_reference(backend_name, n_classes, d):
    """uint8 pixels (the fast path) with classes left over after the register tiles, and D
    (100) not a multiple of the vectors; and a W of 1 MB, beyond the size at which the tiles
    take the classes outermost: one epoch on two threads."""
    backend = get_backend(backend_name)
    rng = np.random.default_rng(23)
    pixels = rng.integers(0, 256, size=(301, d)).astype(np.uint8)
    _, y, sw, W, b = make_problem(rng, 301, d, n_classes, np.float32, weighted=True)
    perm = rng.permutation(301).astype(np.int64)
    ref_W, ref_b, ref_sums = run_epochs(reference, *in_float64(pixels / 255.0, y, sw, W, b),
                                        [perm], 64, 0.05, 0.0, 0.0)
    got_W, got_b, got_sums = run_epochs(backend, pixels, y, sw, W, b, [perm], 64, 0.05, 0.0,
                                        0.0, n_threads=2)
    assert_matches(got_W, ref_W, np.float32, TRAJECTORY_TOLERANCE)
    assert_matches(got_b, ref_b, np.float32, TRAJECTORY_TOLERANCE)
    assert_matches(got_sums[:, 0], ref_sums[:, 0], np.float32, TRAJECTORY_TOLERANCE)


def run_counted_epoch(backend, X, y, sw, W, b, perm, lr_steps, batch_size, n_threads=1):
    """One epoch from copies of (W, b); returns its (loss_sum, correct_sum)."""
    W, b = W.copy(), b.copy()
    return backend.sgd_epoch(Samples(X, y, sw), SGDState(W, b, np.zeros_like(W), np.zeros_like(b)),
                             Steps(perm, lr_steps, batch_size, 0.0, 0.0),
                             make_threads(n_threads, *W.shape, W.dtype))


@pytest.mark.parametrize("backend_name", available_backends())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_threads", [1, 3])
def test_epoch_counts_the_weight_of_the_samples_scored_right(backend_name, dtype, n_threads):
    """With a learning rate of 0 the weights stay put, so the count is exactly the weighted
    number of samples whose argmax score is their label; at all-equal scores (zero weights)
    argmax takes the first class, and so must the kernels."""
    backend = get_backend(backend_name)
    rng = np.random.default_rng(17)
    X, y, sw, W, b = make_problem(rng, 203, 784, 10, dtype, weight_scale=0.5, weighted=True)
    perm = rng.permutation(203).astype(np.int64)
    lr_steps = np.zeros(-(-203 // 16))
    weights = sw.astype(np.float64)
    right = (X.astype(np.float64) @ W.T.astype(np.float64) + b).argmax(axis=1) == y
    loss_sum, correct_sum = run_counted_epoch(backend, X, y, sw, W, b, perm, lr_steps, 16,
                                              n_threads)
    assert 0 < right.sum() < len(y)
    assert correct_sum == pytest.approx(weights[right].sum(), rel=1e-6)
    _, tied_sum = run_counted_epoch(backend, X, y, sw, np.zeros_like(W), np.zeros_like(b), perm,
                                    lr_steps, 16, n_threads)
    assert tied_sum == pytest.approx(weights[y == 0].sum(), rel=1e-6)


@pytest.mark.parametrize("backend_name", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_running_count_follows_the_reference_while_training(backend_name, dtype):
    """Each sample is counted at the weights of its step, as the reference does; float32
    scores may flip a near tie, so a sample or two may differ."""
    backend = get_backend(backend_name)
    rng = np.random.default_rng(19)
    X, y, sw, W, b = make_problem(rng, 301, 784, 10, dtype)
    perm = rng.permutation(301).astype(np.int64)
    lr_steps = np.full(-(-301 // 10), 0.01)
    _, expected = run_counted_epoch(reference, *in_float64(X, y, sw, W, b), perm, lr_steps, 10)
    _, got = run_counted_epoch(backend, X, y, sw, W, b, perm, lr_steps, 10, n_threads=2)
    assert abs(got - expected) <= 2


@pytest.mark.parametrize("backend_name", FAST_BACKENDS)
def test_epoch_over_a_subset_leaves_other_samples_unread(backend_name):
    """perm may hold fewer indices than X has rows (a held-out validation split)."""
    backend = get_backend(backend_name)
    rng = np.random.default_rng(11)
    X, y, sw, W, b = make_problem(rng, 200, 30, 4, np.float64)
    perm = rng.permutation(200)[:150].astype(np.int64)
    X_poisoned = X.copy()
    X_poisoned[np.setdiff1d(np.arange(200), perm)] = np.nan
    ref_W, ref_b, _ = run_epochs(reference, X, y, sw, W, b, [perm], 32, 0.1, 0.0, 0.0)
    got_W, got_b, _ = run_epochs(backend, X_poisoned, y, sw, W, b, [perm], 32, 0.1, 0.0, 0.0)
    assert_matches(got_W, ref_W, np.float64, TRAJECTORY_TOLERANCE)
    assert_matches(got_b, ref_b, np.float64, TRAJECTORY_TOLERANCE)


@pytest.mark.parametrize("backend_name", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_same_thread_count_is_bitwise_reproducible(backend_name, dtype):
    backend = get_backend(backend_name)
    rng = np.random.default_rng(5)
    X, y, sw, W, b = make_problem(rng, 1000, 784, 10, dtype)
    perms = [rng.permutation(1000).astype(np.int64) for _ in range(2)]
    runs = [run_epochs(backend, X, y, sw, W, b, perms, 64, 0.5, 0.0, 0.0, n_threads=2)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    one_thread = run_epochs(backend, X, y, sw, W, b, perms, 64, 0.5, 0.0, 0.0, n_threads=1)
    assert_matches(one_thread[0], runs[0][0], dtype, TRAJECTORY_TOLERANCE)
