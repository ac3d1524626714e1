"""fastlr: multinomial logistic (softmax) regression on MNIST, from scratch, fast.

Public API: :class:`SoftmaxRegression`, :func:`load_mnist`, :func:`load_dataset` (MNIST and the
data sets published in its format, by name), :func:`available_backends`, and the errors fastlr
raises for problems a user can fix.
"""

from ._version import __version__
from .backends import available_backends
from .data import load_dataset, load_mnist
from .errors import (BackendError, DataError, DivergenceError, FastlrError, InvalidParameterError,
                     ModelFileError, WriteError)
from .model import SoftmaxRegression

__all__ = [
    "SoftmaxRegression",
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
