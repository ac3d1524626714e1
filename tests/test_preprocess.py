"""Deskewing: geometry on synthetic images, agreement with a per-pixel loop, and the model's
``preprocessing`` parameter, recorded in the model file and applied on load."""

import json

import numpy as np
import pytest

from fastlr import DataError, ModelFileError, SoftmaxRegression
from fastlr.preprocess import deskew, skew_moments


def naive_deskew(image):
    """One image (S, S), pixel by pixel: moments by loops, then bilinear sampling at
    (r0 + r - m, c0 + c - m + alpha (r - m)) with zeros outside."""
    s = image.shape[0]
    m = (s - 1) / 2
    total = sum(image[r, c] for r in range(s) for c in range(s))
    if total <= 0:
        return image.copy()
    r0 = sum(r * image[r, c] for r in range(s) for c in range(s)) / total
    c0 = sum(c * image[r, c] for r in range(s) for c in range(s)) / total
    var_r = sum((r - r0) ** 2 * image[r, c] for r in range(s) for c in range(s)) / total
    cov = sum((r - r0) * (c - c0) * image[r, c] for r in range(s) for c in range(s)) / total
    alpha = cov / var_r if var_r > 1e-9 else 0.0

    def pixel(r, c):
        return image[r, c] if 0 <= r < s and 0 <= c < s else 0.0

    out = np.zeros_like(image)
    for r in range(s):
        for c in range(s):
            y = r0 + r - m
            x = c0 + c - m + alpha * (r - m)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            fy, fx = y - y0, x - x0
            out[r, c] = ((1 - fy) * (1 - fx) * pixel(y0, x0) + (1 - fy) * fx * pixel(y0, x0 + 1)
                         + fy * (1 - fx) * pixel(y0 + 1, x0) + fy * fx * pixel(y0 + 1, x0 + 1))
    return out


def bar(slope, side=28, rows=(4, 24), width=2.0):
    """A bar of ``width`` pixels through the image centre whose column moves by ``slope`` per
    row (0: vertical), anti-aliased so its moments are those of the ideal bar."""
    image = np.zeros((side, side))
    centre = (side - 1) / 2
    for r in range(*rows):
        middle = centre + slope * (r - centre)
        for c in range(side):
            overlap = min(c + 0.5, middle + width / 2) - max(c - 0.5, middle - width / 2)
            image[r, c] = max(overlap, 0.0)
    return image


def row_centroids(image):
    inked = image.sum(axis=1) > 0.5
    cols = np.arange(image.shape[1])
    return (image @ cols)[inked] / image.sum(axis=1)[inked]


def test_slanted_bar_becomes_vertical():
    slanted = bar(0.4)
    assert np.ptp(row_centroids(slanted)) > 7          # leans 0.4 px per row over 20 rows
    upright = deskew(slanted.reshape(1, -1)).reshape(28, 28)
    centroids = row_centroids(upright)
    assert np.ptp(centroids) < 0.2
    assert centroids.mean() == pytest.approx(13.5, abs=0.1)
    _, _, alpha = skew_moments(upright[None])
    assert abs(alpha[0]) < 0.01
    assert upright.sum() == pytest.approx(slanted.sum(), rel=0.02)


def test_upright_centred_image_is_left_as_it_was():
    image = bar(0.0) + np.flipud(bar(0.0)).T * 0.5     # a vertical bar and a horizontal one
    result = deskew(image.reshape(1, -1)).reshape(28, 28)
    np.testing.assert_allclose(result, image, atol=1e-6)


def test_agrees_with_a_per_pixel_loop():
    rng = np.random.default_rng(0)
    images = np.stack([bar(0.3), bar(-0.5, rows=(2, 20)), rng.random((28, 28)) ** 4,
                       np.roll(bar(0.2), 3, axis=1)])
    expected = np.stack([naive_deskew(im) for im in images])
    got = deskew(images.reshape(len(images), -1)).reshape(images.shape)
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_degenerate_images_are_not_sheared():
    blank = np.zeros((1, 49))
    np.testing.assert_array_equal(deskew(blank), blank)
    one_row = np.zeros((7, 7))
    one_row[3, 1:6] = 1.0                              # var(r) = 0: no slant to remove
    np.testing.assert_allclose(deskew(one_row.reshape(1, -1)).reshape(7, 7), one_row,
                               atol=1e-12)


def test_dtypes_and_shapes():
    images = np.stack([bar(0.3), bar(-0.2)]).reshape(2, -1)
    assert deskew(images.astype(np.float32)).dtype == np.float32
    assert deskew(images).dtype == np.float64
    assert deskew((images * 100).astype(np.uint8)).dtype == np.float32
    with pytest.raises(DataError, match="square"):
        deskew(np.zeros((2, 10)))
    # Chunking must not change anything: more images than one chunk.
    many = np.repeat(images, 300, axis=0)
    np.testing.assert_array_equal(deskew(many)[::300], deskew(images))


# --- the model's preprocessing parameter ---------------------------------------------------------

def slanted_digits(n=200, seed=0):
    """Bars leaning left (class 0) or right (class 1) by a random amount, at random offsets."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    slopes = np.where(y == 1, 1, -1) * rng.uniform(0.1, 0.5, n)
    X = np.stack([np.roll(bar(s), rng.integers(-3, 4), axis=1) for s in slopes])
    return X.reshape(n, -1).astype(np.float32), y


def test_preprocessing_is_recorded_and_applied_on_load(tmp_path):
    X, y = slanted_digits()
    model = SoftmaxRegression(epochs=2, batch_size=16, backend="numpy",
                              preprocessing="deskew").fit(X, y)
    scores = deskew(X) @ model.coef_.T + model.intercept_
    # Two classes: the decision function is the log-odds of the second class.
    expected = scores[:, 1] - scores[:, 0]
    np.testing.assert_allclose(model.decision_function(X), expected, rtol=1e-5, atol=1e-5)
    path = model.save(tmp_path / "model.npz")
    loaded = SoftmaxRegression.load(path)
    assert loaded.preprocessing == "deskew"
    np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))
    raw_scores = X @ model.coef_.T + model.intercept_
    assert not np.allclose(loaded.decision_function(X), raw_scores[:, 1] - raw_scores[:, 0],
                           atol=1e-3)


def test_plain_model_has_no_preprocessing(tmp_path):
    X, y = slanted_digits()
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(X, y)
    assert SoftmaxRegression.load(model.save(tmp_path / "m.npz")).preprocessing is None
    scores = X @ model.coef_.T + model.intercept_
    np.testing.assert_allclose(model.decision_function(X), scores[:, 1] - scores[:, 0],
                               rtol=1e-5, atol=1e-5)


def test_bad_preprocessing_is_refused(tmp_path):
    X, y = slanted_digits(50)
    with pytest.raises(ValueError, match="preprocessing"):
        SoftmaxRegression(preprocessing="blur").fit(X, y)
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(X, y)
    path = model.save(tmp_path / "m.npz")
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    metadata = json.loads(str(arrays["metadata"]))
    metadata["params"]["preprocessing"] = "blur"
    arrays["metadata"] = np.array(json.dumps(metadata))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match="preprocessing"):
        SoftmaxRegression.load(tmp_path / "bad.npz")
