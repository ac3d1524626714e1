"""Pixels: uint8 images standing for the features ``X / 255``, kept as bytes for the kernels.

Shapes: N images, D pixels per image.

MNIST's pixels are bytes, and a linear model on MNIST trains on the floats ``X / 255``. The
kernels of the numba and cython backends (``takes_pixels``) read the bytes themselves, with the
1/255 folded into their arithmetic (``fastlr/backends/__init__.py``): a quarter of the memory
traffic of float32, and a faster epoch (docs/journal/).
The model they train is the float model, within the tolerances the backends are checked to.

A plain uint8 array keeps the meaning scikit-learn gives it, its values as numbers (0-255);
wrapping it says which one is meant::

    X, y, X_test, y_test = load_mnist(dtype=np.uint8)
    model = SoftmaxRegression().fit(Pixels(X), y)
    model.score(Pixels(X_test), y_test)

``SoftmaxRegression`` hands the bytes to a backend that takes pixels and the floats to one
that does not (converted once per call); preprocessing (deskewing) works on the floats.
``np.asarray(Pixels(X))`` is the float32 features, so code that knows nothing of pixels sees
the features they stand for.
"""

import sys

import numpy as np

from .errors import DataError


def is_dask_array(data):
    """Whether ``data`` is a Dask array. Never imports Dask: if it is not loaded, data is not
    one."""
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(data, dask_array.Array)


def pixel_features(pixels, dtype=np.float32, out=None):
    """The features ``pixels / 255`` (N, D) of uint8 ``pixels`` in float ``dtype``, in one pass
    (the same values as ``pixels.astype(dtype) / 255``, the reference's), into ``out`` if
    given."""
    dtype = np.dtype(dtype)
    if out is None:
        out = np.empty(pixels.shape, dtype)
    np.divide(pixels, dtype.type(255), out=out, dtype=dtype)
    return out


class Pixels:
    """uint8 images (N, D) whose features are ``data / 255``.

    Parameters
    ----------
    data : array-like (N, D) of uint8
        Kept as it is if it is already C-contiguous (a memory map stays one), else copied. A
        Dask array is kept as it is, its blocks on its cluster (``fastlr.distributed``).

    Attributes
    ----------
    data : (N, D) uint8 ndarray, C-contiguous
    shape : (N, D)
    dtype : numpy.dtype
        float32: the dtype of the features the pixels stand for, and of a model fitted on them.

    Raises
    ------
    DataError
        If ``data`` is not a non-empty 2-D array of uint8.
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, data):
        lazy = is_dask_array(data)  # a Dask array's blocks stay on its cluster
        data = data if lazy else np.asarray(data)
        if data.dtype != np.uint8:
            raise DataError(f"Pixels needs uint8 images (bytes 0-255), got dtype {data.dtype}; "
                            f"pass float features to the model directly")
        if data.ndim != 2:
            raise DataError(f"Pixels needs a 2-D array (n_images, n_pixels), got shape "
                            f"{data.shape}; flatten each image, e.g. X.reshape(len(X), -1)")
        if data.shape[0] == 0 or data.shape[1] == 0:
            raise DataError(f"Pixels needs at least one image of at least one pixel, got shape "
                            f"{data.shape}")
        self.data = data if lazy else np.ascontiguousarray(data)

    @property
    def shape(self):
        return self.data.shape

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, rows):
        """The images ``rows`` (an index array, a mask or a slice) as Pixels."""
        return Pixels(np.atleast_2d(self.data[rows]))

    def __repr__(self):
        return f"Pixels({self.shape[0]} images of {self.shape[1]} pixels)"

    def features(self, dtype=np.float32):
        """The float features ``data / 255`` (N, D), a new array."""
        return pixel_features(self.data, dtype)

    def __array__(self, dtype=None, copy=None):
        features = self.features(np.float32)
        return features if dtype is None else features.astype(dtype, copy=False)


def for_kernels(X, backend, dtype):
    """What ``backend``'s kernels read for X: the bytes of Pixels if the backend takes pixels,
    else the features in ``dtype``; any other X as it is."""
    if not isinstance(X, Pixels):
        return X
    if getattr(backend, "takes_pixels", False):
        return X.data
    return X.features(dtype)
