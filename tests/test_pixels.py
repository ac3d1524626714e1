"""uint8 pixels: X as MNIST stores it, its features X / 255 folded into the kernels' arithmetic.

The reference defines the path (``reference.features``); each backend that declares
``takes_pixels`` must give, from the bytes, the float model of X / 255 within the tolerances of
``fastlr/backends/check.py``: loss and gradient, scores, and a k-step SGD trajectory.
"""

import numpy as np
import pytest

from fastlr.backends import available_backends, get_backend, reference
from conftest import assert_matches, run_epochs, run_loss_and_grad

PIXEL_BACKENDS = [name for name in available_backends()
                  if getattr(get_backend(name), "takes_pixels", False)]
DTYPES = [np.float32, np.float64]
# (backend, dtype) pairs. Numba compiles uint8 pixels with float64 weights as a specialization
# of its own, which only a float64 model reaches (the estimator trains on pixels in float32);
# compiling it costs more than the rest of this file, so that pair is in the extended tier.
PIXEL_CASES = [pytest.param(name, dtype, marks=pytest.mark.extended)
               if name == "numba" and dtype == np.float64 else (name, dtype)
               for name in PIXEL_BACKENDS for dtype in DTYPES]


def pixel_problem(rng, n, d, c, dtype):
    """uint8 X with some 0 and 255 in it, and the float64 problem of its features X / 255."""
    X = rng.integers(0, 256, size=(n, d)).astype(np.uint8)
    X[:, : d // 4] = 0
    X[0, :] = 255
    y = rng.integers(0, c, size=n).astype(np.int64)
    W = (rng.standard_normal((c, d)) * 0.01).astype(dtype)
    b = (rng.standard_normal(c) * 0.1).astype(dtype)
    sw = rng.uniform(0.5, 2.0, size=n).astype(dtype)
    floats = (X / 255.0, y, sw.astype(np.float64), W.astype(np.float64), b.astype(np.float64))
    return (X, y, sw, W, b), floats


def test_reference_pixels_are_their_features():
    rng = np.random.default_rng(0)
    (X, y, sw, W, b), (Xf, _, swf, Wf, bf) = pixel_problem(rng, 50, 20, 3, np.float64)
    got = run_loss_and_grad(reference, X, y, sw, W, b)
    expected = run_loss_and_grad(reference, Xf, y, swf, Wf, bf)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-14, atol=1e-15)


def test_the_backends_that_take_pixels():
    assert "numpy" in PIXEL_BACKENDS
    assert "numba" in PIXEL_BACKENDS or "numba" not in available_backends()


@pytest.mark.parametrize("backend_name,dtype", PIXEL_CASES)
@pytest.mark.parametrize("d", [784, 37])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_pixel_loss_grad_and_scores_match_the_float_model(backend_name, dtype, d, n_threads):
    backend = get_backend(backend_name)
    rng = np.random.default_rng(d + n_threads)
    pixels, floats = pixel_problem(rng, 203, d, 10, dtype)
    got = run_loss_and_grad(backend, *pixels, n_threads=n_threads)
    expected = run_loss_and_grad(reference, *floats)
    for g, e in zip(got, expected):
        assert_matches(g, e, dtype)
    X, _, _, W, b = pixels
    out = np.full((X.shape[0], 10), np.nan, dtype=dtype)
    backend.predict_scores(X, W, b, out, n_threads)
    scores = np.empty((X.shape[0], 10))
    reference.predict_scores(floats[0], floats[3], floats[4], scores, 1)
    assert_matches(out, scores, dtype)


@pytest.mark.parametrize("backend_name", PIXEL_BACKENDS)
def test_pixels_same_thread_count_is_bitwise_reproducible(backend_name):
    backend = get_backend(backend_name)
    rng = np.random.default_rng(5)
    pixels, _ = pixel_problem(rng, 1000, 784, 10, np.float32)
    perms = [rng.permutation(1000).astype(np.int64) for _ in range(2)]
    runs = [run_epochs(backend, *pixels, perms, 64, 0.5, 0.0, 0.0, n_threads=2)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


# --- Pixels: the estimator and the CLI hand the bytes to the kernels ---------------------------

import types  # noqa: E402

from fastlr import Pixels, SoftmaxRegression, load_mnist, sgd  # noqa: E402
from fastlr.errors import DataError  # noqa: E402
from fastlr.preprocess import deskew  # noqa: E402

from conftest import write_small_dataset  # noqa: E402


def digit_images(rng, n, d=784, c=4):
    """uint8 images of c classes that a linear model separates partly: class k brightens the
    k-th quarter of the pixels."""
    y = rng.integers(0, c, size=n)
    X = rng.integers(0, 120, size=(n, d))
    for k in range(c):
        X[y == k, k * d // c:(k + 1) * d // c] += 120
    return X.astype(np.uint8), y


def recording(backend, seen):
    """A copy of ``backend`` whose kernels append the dtype of the X they are given to
    ``seen``."""
    def wrap(function):
        def recorded(first, *args):
            seen.append(getattr(first, "X", first).dtype)  # Samples, or X itself
            return function(first, *args)
        return recorded
    return types.SimpleNamespace(
        name=backend.name, takes_pixels=backend.takes_pixels,
        sgd_epoch=wrap(backend.sgd_epoch), predict_scores=wrap(backend.predict_scores),
        loss_and_grad=wrap(backend.loss_and_grad))


@pytest.mark.parametrize("data,fragment", [
    (np.zeros((3, 4), np.float32), "needs uint8 images"),
    (np.zeros(4, np.uint8), "needs a 2-D array"),
    (np.zeros((0, 4), np.uint8), "at least one image"),
])
def test_pixels_refuse_what_are_not_images(data, fragment):
    with pytest.raises(DataError, match=fragment):
        Pixels(data)


def test_pixels_stand_for_the_float_features_the_loader_gives():
    X_bytes = load_mnist(dtype=np.uint8)[2]
    X_float = load_mnist()[2]
    pixels = Pixels(X_bytes)
    assert pixels.shape == X_float.shape and len(pixels) == len(X_float)
    np.testing.assert_array_equal(np.asarray(pixels), X_float)
    np.testing.assert_array_equal(pixels.features(), X_float)
    np.testing.assert_array_equal(pixels[[3, 1]].data, X_bytes[[3, 1]])
    np.testing.assert_array_equal(pixels[5].data, X_bytes[5:6])


@pytest.mark.parametrize("takes_pixels", [True, False])
def test_the_driver_gives_the_bytes_only_to_a_backend_that_takes_them(takes_pixels):
    rng = np.random.default_rng(2)
    X, y = digit_images(rng, 300)
    seen = []
    backend = recording(types.SimpleNamespace(**{**vars(reference), "takes_pixels": takes_pixels}),
                        seen)
    results = []
    for data in (Pixels(X), Pixels(X).features()):
        state = sgd.TrainingState.zeros(4, 784, np.float32, np.random.default_rng(0))
        source = sgd.ArraySource(backend, data, y.astype(np.int64), np.ones(300, np.float32),
                                 state.W, state.b)
        sgd.train(backend, source, state, sgd.Schedule("linear", 0.5, 2),
                  sgd.StepSettings(32, 0.0, 0.0, 1), epochs=2,
                  evaluation=sgd.Evaluation("val", data[:50], y[:50].astype(np.int64)))
        results.append((state.W, state.b, [r["val_accuracy"] for r in state.history]))
    pixel_dtypes, float_dtypes = seen[:len(seen) // 2], seen[len(seen) // 2:]
    assert set(pixel_dtypes) == {np.dtype(np.uint8) if takes_pixels else np.dtype(np.float32)}
    assert set(float_dtypes) == {np.dtype(np.float32)}
    # The reference computes the same features from the bytes: the same model, bit for bit.
    for got, expected in zip(results[0], results[1]):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("backend_name", PIXEL_BACKENDS)
def test_a_model_fitted_on_pixels_is_the_float_model(backend_name):
    rng = np.random.default_rng(4)
    X, y = digit_images(rng, 1000)
    X_test, y_test = digit_images(rng, 200)
    params = dict(backend=backend_name, epochs=3, batch_size=64, random_state=0, n_threads=2)
    on_pixels = SoftmaxRegression(**params).fit(Pixels(X), y,
                                                eval_set=(Pixels(X_test), y_test))
    on_floats = SoftmaxRegression(**params).fit(X / np.float32(255), y,
                                                eval_set=(X_test / np.float32(255), y_test))
    assert on_pixels.coef_.dtype == np.float32
    tolerance = 0 if backend_name == "numpy" else 1e-4
    np.testing.assert_allclose(on_pixels.coef_, on_floats.coef_, rtol=0, atol=tolerance)
    np.testing.assert_allclose(on_pixels.predict_proba(Pixels(X_test)),
                               on_floats.predict_proba(X_test / np.float32(255)), atol=1e-4)
    assert on_pixels.score(Pixels(X_test), y_test) > 0.9
    # A model fitted on floats predicts from pixels, and the other way round.
    np.testing.assert_array_equal(on_floats.predict(Pixels(X_test)),
                                  on_floats.predict(X_test / np.float32(255)))


def test_pixels_with_early_stopping_partial_fit_and_deskewing():
    rng = np.random.default_rng(6)
    X, y = digit_images(rng, 400)
    features = Pixels(X).features()
    model = SoftmaxRegression(backend="numpy", early_stopping=True, epochs=4, random_state=1)
    assert model.fit(Pixels(X), y).score(Pixels(X), y) > 0.9
    # A float64 model continued on pixels stays float64.
    model = SoftmaxRegression(backend="numpy", random_state=1).fit(features.astype(np.float64), y)
    model.partial_fit(Pixels(X), y)
    assert model.coef_.dtype == np.float64
    deskewed = SoftmaxRegression(backend="numpy", preprocessing="deskew", epochs=2,
                                 random_state=1)
    plain = SoftmaxRegression(backend="numpy", epochs=2, random_state=1)
    np.testing.assert_array_equal(deskewed.fit(Pixels(X), y).coef_,
                                  plain.fit(deskew(features), y).coef_)


def test_train_hands_the_kernels_the_bytes(tmp_path, monkeypatch, capsys):
    from fastlr import backends
    from fastlr.cli import main
    write_small_dataset(tmp_path, n_train=200, n_test=50, side=8)
    seen = []
    real = backends.get_backend
    monkeypatch.setattr("fastlr.model.get_backend",
                        lambda name: recording(real(name), seen))
    assert main(["train", "--data-dir", str(tmp_path), "--backend", "numpy", "--epochs", "2",
                 "--no-progress"]) == 0
    assert seen and set(seen) == {np.dtype(np.uint8)}
    assert "test accuracy" in capsys.readouterr().out
