"""fastlr: multinomial logistic (softmax) regression on MNIST, from scratch, fast.

Public API: :class:`SoftmaxRegression`, :class:`Pixels` (uint8 images the kernels read as
bytes), :func:`load_mnist`, :func:`load_dataset` (MNIST and the
data sets published in its format, by name), :func:`available_backends`, and the errors fastlr
raises for problems a user can fix.
"""

from ._version import __version__
from .backends import available_backends
from .data import load_dataset, load_mnist
from .errors import (BackendError, DataError, DivergenceError, FastlrError, InvalidParameterError,
                     ModelFileError, WriteError)
from .model import SoftmaxRegression
from .pixels import Pixels

__all__ = [
    "SoftmaxRegression",
    "Pixels",
    "load_mnist",
    "load_dataset",
    "available_backends",
    "FastlrError",
    "DataError",
    "BackendError",
    "ModelFileError",
    "InvalidParameterError",
    "DivergenceError",
    "WriteError",
    "__version__",
]
