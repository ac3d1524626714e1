"""Preprocessing of images before the linear model: moment-based deskewing.

Shapes: N images, H x W pixels each (H = W for MNIST's 28 x 28), D = H W features per row.

Deskewing
---------
Handwriting slants. A shear that makes each digit's principal axis vertical removes most of that
variation before the model sees the pixels; the model stays linear in the (deskewed) pixels.

For an image with intensities ``I(r, c)`` (r the row, downwards, c the column), the intensity-
weighted moments are the centre of mass ``(r0, c0)``, ``var(r)`` and ``cov(r, c)``. The slant is
``alpha = cov(r, c) / var(r)``: the column of the ink moves by ``alpha`` per row. The output pixel
``(r, c)`` samples the input at::

    r_in = r0 + (r - m)
    c_in = c0 + (c - m) + alpha (r - m)          m = (H - 1) / 2, the image centre

so the sheared image has its principal axis vertical and its centre of mass at the centre,
interpolated bilinearly with zeros outside the image. Because the row offset ``r0 - m`` is the
same for a whole image and the column offset is the same along an output row, the bilinear
interpolation splits exactly into a blend of two source rows followed by a fractional shift of
the blended row. Both steps are gathers of whole rows in NumPy: MNIST's 70,000 images take
about 0.5 s of CPU time on one core (0.7-1.1 s of wall time when the two cores were shared with
other jobs), so no compiled kernel is needed.

Images without positive ink, or whose ink lies on one row (``var(r) = 0``), are not sheared.

The explain page's script (``fastlr/page_assets/page.js``) deskews the same way, in the same
two steps; ``tests/test_page.py`` checks in a browser that the two agree.
"""

import numpy as np

from .errors import DataError

PREPROCESSING = (None, "deskew")

# Images per chunk: small enough for the temporaries to stay in cache (measured: 256 images
# run twice as fast as 8192).
_CHUNK = 256


def apply_preprocessing(name, X):
    """Apply the preprocessing ``name`` (None or ``"deskew"``) to the rows of X (N, D), float
    features or :class:`~fastlr.pixels.Pixels` (which ``deskew`` reads as their features)."""
    if name is None:
        return X
    if name == "deskew":
        return deskew(X)
    raise ValueError(f"unknown preprocessing {name!r}")


def image_side(n_features):
    """The side of a square image with ``n_features`` pixels.

    Raises
    ------
    DataError
        If ``n_features`` is not a perfect square.
    """
    side = int(round(np.sqrt(n_features)))
    if side * side != n_features:
        raise DataError(f"deskewing needs square images, but a row has {n_features} pixels, "
                        f"not a square number")
    return side


def skew_moments(images):
    """Centre of mass and slant of each image.

    Parameters
    ----------
    images : (N, H, W) float

    Returns
    -------
    r0, c0, alpha : (N,) float64
        Row and column of the centre of mass (the image centre for an image without ink) and
        ``cov(r, c) / var(r)`` (0 where ``var(r)`` is 0).
    """
    n, h, w = images.shape
    mass = np.clip(images, 0, None).astype(np.float64, copy=False)
    row_mass = mass.sum(axis=2)                          # (N, H)
    col_mass = mass.sum(axis=1)                          # (N, W)
    total = row_mass.sum(axis=1)
    has_ink = total > 0
    safe_total = np.where(has_ink, total, 1.0)
    rows = np.arange(h, dtype=np.float64)
    cols = np.arange(w, dtype=np.float64)
    r0 = np.where(has_ink, row_mass @ rows / safe_total, (h - 1) / 2)
    c0 = np.where(has_ink, col_mass @ cols / safe_total, (w - 1) / 2)
    var_r = row_mass @ rows ** 2 / safe_total - r0 ** 2
    # sum_rc I r c, as rows^T I cols for each image
    cross = np.einsum("nhw,h,w->n", mass, rows, cols) / safe_total
    cov_rc = cross - r0 * c0
    sheared = has_ink & (var_r > 1e-9)
    alpha = np.where(sheared, cov_rc / np.where(sheared, var_r, 1.0), 0.0)
    return r0, c0, alpha


def deskew(X, side=None):
    """Deskew each row of X, read as a square image.

    Parameters
    ----------
    X : (N, D) float array, D = side * side, rows are images in row-major order
    side : int, optional
        The side of the images; default ``sqrt(D)``.

    Returns
    -------
    (N, D) array of X's float dtype (float32 for integer input), the deskewed images.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise DataError(f"deskew needs a 2-D array of images (N, D), got shape {X.shape}")
    dtype = X.dtype if X.dtype.kind == "f" else np.float32
    side = side or image_side(X.shape[1])
    if side * side != X.shape[1]:
        raise DataError(f"rows of {X.shape[1]} pixels are not {side} x {side} images")
    out = np.empty(X.shape, dtype=dtype)
    for start in range(0, X.shape[0], _CHUNK):
        stop = min(start + _CHUNK, X.shape[0])
        images = X[start:stop].reshape(-1, side, side).astype(dtype, copy=False)
        out[start:stop] = _deskew_images(images).reshape(stop - start, -1)
    return out


def _deskew_images(images):
    """Deskew (N, S, S) images; see the module docstring for the map."""
    n, s, _ = images.shape
    dtype = images.dtype
    centre = (s - 1) / 2
    r0, c0, alpha = skew_moments(images)

    # Zero border of one pixel: every out-of-image index is clipped onto it.
    padded = np.zeros((n, s + 2, s + 2), dtype=dtype)
    padded[:, 1:-1, 1:-1] = images

    # Step 1, rows: output row r blends source rows floor(r_in) and floor(r_in) + 1.
    shift_r = r0 - centre                                          # (N,)
    base_r = np.floor(shift_r)
    frac_r = (shift_r - base_r).astype(dtype)[:, None, None]
    top = np.arange(s)[None, :] + base_r.astype(np.int64)[:, None]  # (N, S) source rows
    top_idx = np.clip(top + 1, 0, s + 1)
    bottom_idx = np.clip(top + 2, 0, s + 1)
    take = np.arange(n)[:, None]
    blended = padded[take, top_idx]
    blended += frac_r * (padded[take, bottom_idx] - blended)

    # Step 2, columns: output row r is the blended row shifted by c0 - m + alpha (r - m).
    # Shifts beyond the image give zeros, so they are clipped to +-(S + 1) and the rows padded
    # by S + 2 zeros each side; a sliding-window view then turns the shift of each output row
    # into the pick of one window, a gather of N S rows instead of N S S pixels.
    shift_c = (c0 - centre)[:, None] + alpha[:, None] * (np.arange(s) - centre)[None, :]
    shift_c = np.clip(shift_c, -(s + 1), s + 1)
    base_c = np.floor(shift_c)
    frac_c = (shift_c - base_c).astype(dtype)[:, :, None]           # (N, S, 1)
    pad = s + 2
    wide = np.zeros((n, s, s + 2 * pad), dtype=dtype)
    wide[:, :, pad - 1:pad + s + 1] = blended
    windows = np.lib.stride_tricks.sliding_window_view(wide, s, axis=2)  # (N, S, ., S)
    start = base_c.astype(np.int64) + pad                          # (N, S)
    take_row = np.arange(s)[None, :]
    out = windows[take, take_row, start]
    out += frac_c * (windows[take, take_row, start + 1] - out)
    return out
