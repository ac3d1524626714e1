"""The exceptions fastlr raises for problems a user can fix; the CLI prints them as one line."""

import functools
import sys


class FastlrError(Exception):
    """Base class: an error whose message is meant for the user, without a traceback."""


class DataError(FastlrError, ValueError):
    """A data file or array is missing, malformed or unusable."""


class DataTypeError(DataError, TypeError):
    """An array holds something that is not a number (a TypeError, as NumPy raises)."""


class BackendError(FastlrError, ImportError):
    """A requested backend is unknown or not available on this machine."""


class MissingDependencyError(FastlrError, ImportError):
    """An optional package a feature needs is not installed; the message says how to get it."""


class ModelFileError(FastlrError, ValueError):
    """A model file is missing, truncated, foreign or unsafe."""


class WriteError(FastlrError, OSError):
    """A file could not be written (a full disk, a read-only directory, a path under a file);
    the old file, if there was one, is left as it was."""


class DivergenceError(FastlrError, FloatingPointError):
    """The training loss became NaN or infinite; the last finite weights were kept."""


class NotFittedError(FastlrError, ValueError, AttributeError):
    """A model was asked to predict (or save) before it was fitted."""


class DataConversionWarning(UserWarning):
    """Input of an unexpected shape was converted, e.g. a column vector y raveled."""


def sklearn_compatible(cls):
    """``cls``, or, when scikit-learn is loaded, a subclass of it that is also scikit-learn's
    class of the same name.

    scikit-learn is not a dependency (importing it costs a second of start-up), so fastlr's
    errors cannot inherit from its classes statically. But code that catches
    ``sklearn.exceptions.NotFittedError`` has imported scikit-learn, and then the error fastlr
    raises is one too; ``except fastlr.NotFittedError`` works either way.
    """
    sklearn_exceptions = sys.modules.get("sklearn.exceptions")
    if sklearn_exceptions is None or not hasattr(sklearn_exceptions, cls.__name__):
        return cls
    return _with_sklearn_base(cls, getattr(sklearn_exceptions, cls.__name__))


@functools.lru_cache(maxsize=None)
def _with_sklearn_base(cls, sklearn_cls):
    return type(cls.__name__, (cls, sklearn_cls), {"__module__": cls.__module__,
                                                   "__doc__": cls.__doc__})


class InvalidParameterError(FastlrError, ValueError):
    """A hyperparameter (of the estimator, a flag, or a model file's metadata) is not allowed."""
