"""SoftmaxRegression: reproducibility, accuracy on MNIST, model files, divergence."""

from pathlib import Path

import numpy as np
import pytest

from fastlr import DataError, DivergenceError, ModelFileError, SoftmaxRegression, load_mnist

MNIST_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(MNIST_DIR)


def blobs(n=300, d=8, c=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(c, d))
    y = rng.integers(0, c, n)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_seeded_fit_is_bitwise_reproducible(backend):
    X, y = blobs()
    models = [SoftmaxRegression(epochs=3, batch_size=16, backend=backend, n_threads=2,
                                random_state=7).fit(X, y) for _ in range(2)]
    np.testing.assert_array_equal(models[0].coef_, models[1].coef_)
    np.testing.assert_array_equal(models[0].intercept_, models[1].intercept_)
    other_seed = SoftmaxRegression(epochs=3, batch_size=16, backend=backend, n_threads=2,
                                   random_state=8).fit(X, y)
    assert not np.array_equal(other_seed.coef_, models[0].coef_)


def test_one_epoch_on_mnist_reaches_90_percent(mnist):
    X_train, y_train, X_test, y_test = mnist
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(X_train, y_train)
    assert model.score(X_test, y_test) >= 0.90
    assert model.backend_ == "numpy"
    assert model.coef_.shape == (10, 784) and model.intercept_.shape == (10,)
    assert len(model.history_) == 1


def test_history_records_every_epoch():
    X, y = blobs()
    model = SoftmaxRegression(epochs=4, batch_size=32, backend="numpy")
    model.fit(X[:200], y[:200], eval_set=(X[200:], y[200:]))
    assert [r["epoch"] for r in model.history_] == [1, 2, 3, 4]
    assert all(0.0 <= r["val_accuracy"] <= 1.0 for r in model.history_)
    assert model.history_[-1]["train_loss"] < model.history_[0]["train_loss"] * 1.5


def test_history_reports_running_figures_and_on_request_the_end_of_epoch_score():
    """The running train loss and accuracy come from the epoch itself; score_train adds the
    training set scored at the epoch's final weights, which the running figures trail."""
    X, y = blobs(n=400)
    plain = SoftmaxRegression(epochs=3, batch_size=16, backend="numpy").fit(X, y)
    assert "end_train_accuracy" not in plain.history_[-1]
    scored = SoftmaxRegression(epochs=3, batch_size=16, backend="numpy").fit(X, y,
                                                                              score_train=True)
    np.testing.assert_array_equal(scored.coef_, plain.coef_)
    first = scored.history_[0]
    assert first["train_accuracy"] == plain.history_[0]["train_accuracy"]
    assert scored.history_[-1]["end_train_accuracy"] == pytest.approx(scored.score(X, y))
    assert first["train_loss"] > first["end_train_loss"]  # the first steps' weights are worse


def test_early_stopping_scores_its_training_rows_only_on_request():
    X, y = blobs(n=400)
    model = SoftmaxRegression(epochs=2, batch_size=16, backend="numpy", early_stopping=True)
    model.fit(X, y, score_train=True)
    assert all("end_train_loss" in r and "val_accuracy" in r for r in model.history_)


def test_predict_proba_is_softmax_of_decision_function():
    X, y = blobs()
    model = SoftmaxRegression(epochs=2, backend="numpy").fit(X, y)
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    scores = model.decision_function(X).astype(np.float64)
    expected = np.exp(scores - scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(proba, expected / expected.sum(axis=1, keepdims=True),
                               rtol=1e-6)
    np.testing.assert_array_equal(model.predict(X), model.classes_[proba.argmax(axis=1)])


def test_string_labels_round_trip():
    X, y = blobs()
    names = np.array(["cat", "dog", "emu"])[y]
    model = SoftmaxRegression(epochs=3, backend="numpy").fit(X, names)
    assert set(model.predict(X)) <= {"cat", "dog", "emu"}
    assert model.score(X, names) > 0.9


def test_save_and_load_round_trip(tmp_path):
    X, y = blobs()
    model = SoftmaxRegression(epochs=2, learning_rate=0.3, backend="numpy").fit(X, y + 5)
    path = model.save(tmp_path / "sub" / "model.npz")
    assert not list(path.parent.glob(".*"))
    loaded = SoftmaxRegression.load(path)
    np.testing.assert_array_equal(loaded.coef_, model.coef_)
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    assert loaded.learning_rate == 0.3 and loaded.history_ == model.history_
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_model_file_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, coef=np.zeros((2, 3)), intercept=np.zeros(2),
             classes=np.array([object(), object()], dtype=object), metadata=np.array("{}"))
    with pytest.raises(ModelFileError, match="pickle"):
        SoftmaxRegression.load(path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"not a model at all"])
def test_foreign_or_truncated_model_file_is_refused(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="bad.npz"):
        SoftmaxRegression.load(path)


def test_truncated_real_model_file_is_refused(tmp_path):
    X, y = blobs()
    path = SoftmaxRegression(epochs=1, backend="numpy").fit(X, y).save(tmp_path / "m.npz")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelFileError):
        SoftmaxRegression.load(path)


def test_diverging_learning_rate_keeps_last_finite_weights():
    X, y = blobs()
    X = X * 1e18
    model = SoftmaxRegression(epochs=3, learning_rate=1e20, lr_schedule="constant",
                              backend="numpy")
    with pytest.raises(DivergenceError, match="smaller"):
        model.fit(X, y)
    assert np.isfinite(model.coef_).all() and np.isfinite(model.intercept_).all()


@pytest.mark.parametrize("X,y,message", [
    (np.array([[0.0, np.nan]]), np.array([0]), "NaN"),
    (np.array([[0.0, np.inf], [1.0, 2.0]]), np.array([0, 1]), "infinite"),
    (np.array([0.0, 1.0]), np.array([0, 1]), "Reshape your data"),
    (np.zeros((2, 0)), np.array([0, 1]), "0 feature"),
    (np.zeros((2, 2)), np.array([0.5, 1.5]), "Unknown label type: continuous"),
    (np.zeros((2, 2)), np.array([0.0, np.nan]), "y contains NaN"),
    (np.zeros((0, 3)), np.zeros(0), "empty"),
    (np.zeros((3, 2)), np.array([1, 1, 1]), "one class only"),
    (np.zeros((3, 2)), np.array([0, 1]), "3 samples but y has 2"),
])
def test_bad_training_data_raises_data_error(X, y, message):
    with pytest.raises(DataError, match=message):
        SoftmaxRegression(backend="numpy").fit(X, y)


def test_wrong_number_of_features_at_predict():
    X, y = blobs()
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(X, y)
    with pytest.raises(DataError, match="X has 7 features, but SoftmaxRegression is expecting 8 features"):
        model.predict(X[:, :7])


def test_zero_sample_weights_are_refused():
    X, y = blobs()
    with pytest.raises(DataError, match="zero for every sample"):
        SoftmaxRegression(backend="numpy").fit(X, y, sample_weight=np.zeros(len(y)))
    with pytest.raises(DataError, match="one class only"):
        SoftmaxRegression(backend="numpy").fit(X, y, sample_weight=(y == 0).astype(float))


# --- partial_fit ---------------------------------------------------------------------------------

def test_partial_fit_in_chunks_matches_fit_on_mnist(mnist):
    X_train, y_train, X_test, y_test = mnist
    full = SoftmaxRegression(epochs=3, backend="numpy").fit(X_train, y_train)
    streamed = SoftmaxRegression(backend="numpy")
    # Three passes over six chunks, lowering the constant rate between passes by hand.
    for learning_rate in (1.0, 0.3, 0.03):
        streamed.set_params(learning_rate=learning_rate)
        for start in range(0, len(y_train), 10_000):
            streamed.partial_fit(X_train[start:start + 10_000], y_train[start:start + 10_000],
                                 classes=np.arange(10))
    assert len(streamed.history_) == 18 and streamed.history_[-1]["epoch"] == 18
    assert streamed.score(X_test, y_test) >= full.score(X_test, y_test) - 0.005


def test_partial_fit_continues_and_keeps_classes_from_the_first_call():
    X, y = blobs()
    model = SoftmaxRegression(backend="numpy", momentum=0.5)
    model.partial_fit(X[:100][y[:100] != 2], y[:100][y[:100] != 2], classes=[0, 1, 2])
    assert list(model.classes_) == [0, 1, 2] and model.coef_.shape == (3, 8)
    before = model.coef_.copy()
    model.partial_fit(X[100:], y[100:])
    assert not np.array_equal(model.coef_, before)
    assert model.score(X, y) > 0.8


@pytest.mark.parametrize("first,second,message", [
    ({}, None, "needs classes="),
    ({"classes": [0, 1, 2]}, {"y": np.full(300, 7)}, "not in the model's classes: [7]"),
    ({"classes": [0, 1, 2]}, {"X": np.zeros((300, 5))},
     "X has 5 features, but SoftmaxRegression is expecting 8"),
    ({"classes": [0, 1, 2]}, {"classes": [0, 1]}, "differs from the model's classes"),
    ({"classes": [0, 1]}, None, "not in classes: [2]"),
])
def test_partial_fit_bad_input(first, second, message):
    X, y = blobs()
    model = SoftmaxRegression(backend="numpy")
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        model.partial_fit(X, y, **first)
        arguments = {"X": X, "y": y, **second}
        model.partial_fit(**arguments)
