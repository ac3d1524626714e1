"""Inputs for ``fastlr predict``: photos and drawings of digits made to look like MNIST, and
arrays already in MNIST's form.

MNIST's recipe (LeCun et al.), applied by :func:`mnist_like`: grey levels; ink bright on a
dark background (an image with a light background is inverted); the digit's bounding box
scaled, keeping its aspect ratio, to fit a 20x20 box with anti-aliasing; then placed in a
28x28 field so that its centre of mass lies at the centre. MNIST's own training images have
their centre of mass at (14.0, 14.0) in pixel-index coordinates, measured on the first
20,000, so that is where the centre goes.

The explain page (``fastlr/page.py``) repeats :func:`mnist_like` step for step in its script,
``fastlr/page_assets/page.js``, Pillow's Lanczos resampling included; ``tests/test_page.py``
checks in a browser that the two agree. A change here is a change there.

Pixel scale: everything is returned as float32 in [0, 1], the scale ``load_mnist`` gives and
fastlr models are trained on. ``.npy`` arrays of an integer type are read as 0-255 and
divided by 255; float arrays must already lie in [0, 1]. IDX files are unsigned bytes, 0-255.
"""

import warnings
from pathlib import Path

import numpy as np

from .data import max_idx_bytes, read_idx_stream
from .datasets import image_shape_of
from .errors import DataError
from .reading import NPY_MAGIC, open_once, read_npy

SIDE = 28
BOX = 20
CENTRE = 14.0
# Ink below this share of the darkest-to-lightest range is background noise, not the digit.
INK_THRESHOLD = 0.1
# Images of more pixels are refused from their header, before they are decoded: a 12-megapixel
# photo fits, and a 171-byte run-length-encoded BMP declaring 33.6 million pixels (found by
# fuzzing) took 11 s and 800 MB to read.
MAX_PIXELS = 4096 * 4096


def mnist_like(grey):
    """Turn a grey image into a 28x28 MNIST-style digit.

    Parameters
    ----------
    grey : (H, W) float array in [0, 1], any size; dark ink on light paper or the reverse.

    Returns
    -------
    (28, 28) float32 in [0, 1], ink bright on black.

    Raises
    ------
    DataError
        If the image is blank (no ink stands out from the background).
    """
    from PIL import Image

    grey = np.asarray(grey, dtype=np.float32)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    ink = 1.0 - grey if background > 0.5 else grey.copy()
    background = min(background, 1.0 - background)
    # Stretch so the background is 0 and the strongest ink 1, as on MNIST's scans.
    span = float(ink.max()) - background
    if span <= INK_THRESHOLD:
        raise DataError("the image is blank: no digit stands out from the background")
    ink = np.clip((ink - background) / span, 0.0, 1.0)
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS)
    digit = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    return _centre_by_mass(digit)


def _centre_by_mass(digit):
    """Place ``digit`` (h, w) in a 28x28 field with its centre of mass at (14, 14)."""
    total = float(digit.sum())
    h, w = digit.shape
    if total == 0:
        cy, cx = (h - 1) / 2, (w - 1) / 2
    else:
        cy = float(digit.sum(axis=1) @ np.arange(h)) / total
        cx = float(digit.sum(axis=0) @ np.arange(w)) / total
    top, left = int(round(CENTRE - cy)), int(round(CENTRE - cx))
    # Clamp so the whole digit stays inside the field.
    top, left = min(max(top, 0), SIDE - h), min(max(left, 0), SIDE - w)
    field = np.zeros((SIDE, SIDE), dtype=np.float32)
    field[top:top + h, left:left + w] = digit
    return field


def read_image(path, fh=None):
    """Decode a PNG or JPEG (or any image Pillow reads) and make it MNIST-like, (28, 28).

    ``fh``, if given, is the file ``path`` opened (binary), read instead of opening ``path``.

    Raises
    ------
    DataError
        If the file cannot be read, is not an image, or is blank.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        # Pillow warns of an image past its pixel limit (and refuses one past twice that); both
        # are refused here, as one error rather than two lines of warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if fh is None else fh) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise DataError(f"{path}: {image.width}x{image.height} pixels, more than "
                                    f"the {MAX_PIXELS:,} a digit is read from; scale it down")
                image = ImageOps.exif_transpose(image)
                if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                    image = _on_paper(image.convert("RGBA"))
                grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: too large to read as a digit ({exc})") from None
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read (PNG or JPEG), a .npy array "
                        f"or an IDX file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: a broken or truncated image ({exc})") from None
    try:
        return mnist_like(grey)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def _on_paper(rgba):
    """An RGBA image laid on paper that contrasts with its ink: white paper under dark ink,
    black paper under light ink (white ink drawn on a transparent background)."""
    from PIL import Image

    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32)
    grey = np.asarray(rgba.convert("L"), dtype=np.float32)
    drawn = alpha > 127
    light_ink = drawn.any() and float(grey[drawn].mean()) > 127.5
    paper = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light_ink else (255, 255, 255, 255))
    return Image.alpha_composite(paper, rgba)


def pixels_from_array(array, source, n_features, image_shape=None):
    """Rows of pixels in [0, 1] from an array: one image or a batch.

    Accepted shapes: (H, W) or (D,) for one image; (N, H, W) or (N, D) for a batch, where
    D = ``n_features`` and (H, W) = ``image_shape`` (by default square). Integer arrays are
    0-255; float arrays must lie in [0, 1].

    Returns
    -------
    (N, D) float32
    """
    image_shape = tuple(image_shape or image_shape_of(n_features))
    shape = array.shape
    if array.dtype.kind not in "biuf":
        raise DataError(f"{source}: holds {array.dtype} values, not pixels")
    if array.ndim == 1 or array.shape == image_shape:
        array = array.reshape(1, -1)
    elif array.ndim >= 3:
        array = array.reshape(array.shape[0], -1)
    if array.ndim != 2 or array.shape[1] != n_features or array.shape[0] == 0:
        height, width = image_shape
        raise DataError(f"{source}: shape {shape} does not hold images of "
                        f"{n_features} pixels (the model's input); expected ({height}, "
                        f"{width}), ({n_features},), (N, {height}, {width}) or "
                        f"(N, {n_features})")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise DataError(f"{source}: contains NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise DataError(f"{source}: float pixels must lie in [0, 1], found "
                            f"{array.min():g} to {array.max():g}; store 0-255 pixels as uint8")
        pixels = array.astype(np.float32)
    else:
        if array.min() < 0 or array.max() > 255:
            raise DataError(f"{source}: integer pixels must lie in 0-255, found "
                            f"{array.min()} to {array.max()}")
        pixels = array.astype(np.float32) / np.float32(255)
    _refuse_blank(pixels, source)
    return pixels


def _refuse_blank(pixels, source):
    """An image whose pixels are all one value holds no digit: refused, as a blank picture
    is by :func:`mnist_like`, rather than read as whatever the biases favour."""
    blank = np.flatnonzero(pixels.max(axis=1) == pixels.min(axis=1))
    if blank.size:
        which = "the image is blank" if len(pixels) == 1 else (
            f"image {blank[0]} of {len(pixels)} is blank" if blank.size == 1 else
            f"{blank.size} of its {len(pixels)} images are blank (the first is image "
            f"{blank[0]})")
        raise DataError(f"{source}: {which}: every pixel has the same value, so there is no "
                        f"digit to read")


def read_inputs(path, n_features, image_shape=None):
    """The images in one file, as rows of pixels in [0, 1].

    The content decides the kind, not the name: ``.npy`` arrays and IDX files (plain or gzip)
    are taken as they are, anything else is decoded as an image and made MNIST-like.

    ``image_shape`` (H, W) is the model's (by default square); pictures are made MNIST-like,
    so they need a model of 28x28 images.

    Returns
    -------
    (N, D) float32, N = 1 for an image.

    Raises
    ------
    DataError
        If the file is missing, unreadable, not one of those kinds, or of another size than
        the model's input.
    """
    path = Path(path)
    limit = max_idx_bytes()
    # Opened once: a pipe (/dev/stdin) cannot be read a second time.
    with open_once(path, limit) as opened:
        if opened.size == 0:
            raise DataError(f"{path}: is empty")
        try:
            head = opened.fh.read(8)
            opened.fh.seek(0)
            if head.startswith(NPY_MAGIC):
                array = read_npy(opened.fh, path, opened.size, limit,
                                 limit_hint="; set FASTLR_MAX_IDX_BYTES to read larger data")
                return pixels_from_array(array, path, n_features, image_shape)
            if head[:2] in (b"\x00\x00", b"\x1f\x8b"):
                return pixels_from_array(read_idx_stream(opened.fh, str(path), limit), path,
                                         n_features, image_shape)
            if tuple(image_shape or image_shape_of(n_features)) != (SIDE, SIDE):
                raise DataError(f"{path}: pictures are made MNIST-like, {SIDE}x{SIDE}, so they "
                                f"need a model of {SIDE}x{SIDE} images; this one takes "
                                f"{n_features} pixels (give a .npy array or an IDX file of its "
                                f"images instead)")
            return read_image(path, opened.fh).reshape(1, -1)
        except OSError as exc:
            raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
