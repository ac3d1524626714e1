"""The one training engine (fastlr/sgd.py): its schedule, its memory bounds, and the same loop
under every source.

Memory is measured with ``tracemalloc``, which counts NumPy's allocations: what must hold on
any machine is that a bound does not grow with N, C or the number of epochs.
"""

import tracemalloc

import numpy as np
import pytest

from fastlr import DivergenceError, SoftmaxRegression, sgd
from fastlr.backends import available_backends, get_backend

from conftest import make_problem


class StopTraining(Exception):
    """Raised from the progress callback to end a run after a few epochs."""


def peak_bytes(run):
    """The peak of NumPy's (and Python's) allocations while ``run()`` runs, in bytes."""
    tracemalloc.start()
    try:
        run()
    except StopTraining:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# --- the schedule ---------------------------------------------------------------------------------

def test_the_schedule_is_made_an_epoch_at_a_time_with_the_rates_of_the_whole_run():
    schedule = sgd.Schedule("linear", 0.8, 7)
    whole = 0.8 * (1.0 - np.arange(7 * 13) / (7 * 13))
    epochs = np.concatenate([schedule.rates(epoch, 13) for epoch in range(7)])
    np.testing.assert_array_equal(epochs, whole)  # bit for bit
    assert schedule.rates(10**9 - 1, 13).shape == (13,)
    np.testing.assert_array_equal(sgd.Schedule("constant", 0.3, 10**12).rates(5, 4), 0.3)
    with pytest.raises(ValueError, match="constant or linear"):
        sgd.Schedule("cosine", 0.1, 1)


def test_a_billion_epochs_train_in_the_memory_of_two():
    """The run's rates are not made before it starts: the second epoch of a 1e9-epoch run is
    reached with the memory of a 2-epoch run."""
    rng = np.random.default_rng(0)
    X, y, _, _, _ = make_problem(rng, 3000, 20, 4, np.float32)

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise StopTraining

    def run(epochs):
        model = SoftmaxRegression(epochs=epochs, batch_size=16, backend="numpy")
        return lambda: model.fit(X, y, on_epoch=stop_after_two)

    two = peak_bytes(run(2))
    billion = peak_bytes(run(10**9))
    assert billion < two + (64 << 10)


# --- scoring in blocks ----------------------------------------------------------------------------

@pytest.mark.parametrize("backend_name,n", [
    *[(name, 200_000) for name in available_backends()],
    pytest.param("auto", 1_000_000, marks=pytest.mark.extended)])
def test_scoring_a_million_rows_of_345_classes_stays_in_blocks(backend_name, n):
    """A million rows of 345 classes: all the scores at once would be 1.4 GB in float32 and
    twice that in float64, with log-sum-exp temporaries beside them; scored in blocks,
    evaluation and predict hold a few blocks (``SCORING_BLOCK_BYTES``) at any N and C (the
    default tier checks it at 200,000 rows, the bound being the same)."""
    backend = get_backend(backend_name)
    rng = np.random.default_rng(1)
    d, c = 4, 345
    X = rng.random((n, d), dtype=np.float32)
    y = rng.integers(0, c, n)
    W = rng.standard_normal((c, d)).astype(np.float32)
    b = np.zeros(c, np.float32)
    limit = 8 * sgd.SCORING_BLOCK_BYTES
    peak = peak_bytes(lambda: sgd.evaluate(backend, X, y, W, b, 1))
    assert peak < limit
    model = SoftmaxRegression(backend=backend_name)
    model.coef_, model.intercept_, model.classes_ = W, b, np.arange(c)
    model.n_features_in_ = d
    labels = []
    assert peak_bytes(lambda: labels.append(model.predict(X))) < limit + 8 * n
    # The blocks give the scores of scoring the whole array at once.
    some = X[:5000]
    whole = np.empty((5000, c), np.float32)
    backend.predict_scores(some, W, b, whole, 1)
    np.testing.assert_array_equal(labels[0][:5000], whole.argmax(axis=1))


def test_evaluate_weights_and_subsets_as_the_formulas_say():
    rng = np.random.default_rng(2)
    backend = get_backend("numpy")
    X, y, sw, W, b = make_problem(rng, 500, 7, 3, np.float64, weight_scale=1.0, weighted=True)
    scores = X @ W.T + b
    losses = np.log(np.exp(scores).sum(axis=1)) - scores[np.arange(500), y]
    right = scores.argmax(axis=1) == y
    assert sgd.evaluate(backend, X, y, W, b, 1) == pytest.approx((losses.mean(), right.mean()))
    assert sgd.evaluate(backend, X, y, W, b, 1, sw) == pytest.approx(
        (np.average(losses, weights=sw), np.average(right, weights=sw)))
    rows = np.arange(0, 500, 3)
    assert sgd.evaluate(backend, X, y, W, b, 1, rows=rows) == pytest.approx(
        (losses[rows].mean(), right[rows].mean()))
    # All weights zero: the means over the samples.
    assert sgd.evaluate(backend, X, y, W, b, 1, np.zeros(500)) == pytest.approx(
        (losses.mean(), right.mean()))


# --- one loop for every call ----------------------------------------------------------------------

def test_partial_fit_continues_the_history_and_counts_iterations():
    rng = np.random.default_rng(3)
    X, y, _, _, _ = make_problem(rng, 600, 10, 3, np.float32)
    model = SoftmaxRegression(epochs=2, backend="numpy").fit(X, y)
    assert model.n_iter_ == 2
    model.partial_fit(X[:300], y[:300])
    model.partial_fit(X[300:], y[300:])
    assert [r["epoch"] for r in model.history_] == [1, 2, 3, 4] and model.n_iter_ == 4
    assert [r["lr"] for r in model.history_[2:]] == [model.learning_rate] * 2


def test_early_stopping_says_what_it_held_out_and_which_epoch_it_kept():
    rng = np.random.default_rng(4)
    X, y, _, _, _ = make_problem(rng, 400, 10, 3, np.float32)
    y = (X[:, 0] > 0.5).astype(int) + (X[:, 1] > 0.5)  # learnable within an epoch or two
    model = SoftmaxRegression(epochs=30, early_stopping=True, n_iter_no_change=2,
                              backend="numpy").fit(X, y)
    assert model.validation_size_ == 40
    assert all("val_accuracy" in r for r in model.history_)
    if model.best_epoch_ is not None:
        assert model.best_epoch_ < model.n_iter_ <= 30
        best = max(r["val_accuracy"] for r in model.history_)
        kept = model.history_[model.best_epoch_ - 1]["val_accuracy"]
        assert kept >= best - 1e-4
    plain = SoftmaxRegression(epochs=1, backend="numpy").fit(X, y)
    assert not hasattr(plain, "best_epoch_")


def test_the_eval_set_is_named_in_the_history():
    rng = np.random.default_rng(5)
    X, y, _, _, _ = make_problem(rng, 200, 6, 3, np.float32)
    model = SoftmaxRegression(epochs=2, backend="numpy").fit(X, y, eval_set=(X, y),
                                                           eval_name="test")
    assert {"test_loss", "test_accuracy"} <= set(model.history_[-1])
    assert "val_accuracy" not in model.history_[-1]


@pytest.mark.parametrize("backend_name", available_backends())
def test_every_backend_reports_the_same_running_accuracy_on_pixels(backend_name):
    """The running accuracy is counted on the features of the pixels, X / 255, in every
    backend: the reference's own epoch included."""
    from fastlr import Pixels
    rng = np.random.default_rng(6)
    pixels = rng.integers(0, 256, (2000, 64)).astype(np.uint8)
    y = (pixels[:, :32].mean(axis=1) > pixels[:, 32:].mean(axis=1)).astype(int)
    reference = SoftmaxRegression(epochs=2, backend="numpy", n_threads=1).fit(Pixels(pixels), y)
    model = SoftmaxRegression(epochs=2, backend=backend_name, n_threads=1).fit(Pixels(pixels),
                                                                               y)
    for got, expected in zip(model.history_, reference.history_):
        assert got["train_accuracy"] == pytest.approx(expected["train_accuracy"], abs=2e-3)
        assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-4)
    assert reference.history_[-1]["train_accuracy"] > 0.7


def test_a_diverged_epoch_is_rolled_back_on_every_path(tmp_path):
    """One loop checks every source's epoch: the in-memory and the streamed fit both keep the
    weights of the last epoch that finished."""
    from fastlr import streaming
    rng = np.random.default_rng(7)
    for k, level in enumerate((20, 220)):
        np.save(tmp_path / f"c{k}.npy", rng.integers(level - 20, level + 20, (300, 16))
                .astype(np.uint8))
    source = streaming.open_source(tmp_path, chunk_size=32, buffer_size=64, test_size=20)
    X = rng.standard_normal((300, 16)).astype(np.float32) * 1e18
    y = rng.integers(0, 2, 300)
    for fit in (lambda m: m.fit(source), lambda m: m.fit(X, y)):
        model = SoftmaxRegression(learning_rate=1e38, epochs=3, backend="numpy")
        with pytest.raises(DivergenceError, match="diverged in epoch 1"):
            fit(model)
        assert not model.coef_.any() and model.history_ == [] and model.n_iter_ == 0
