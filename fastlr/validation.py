"""What fastlr accepts as input, written once: the estimator, the CLI and the model loader ask here.

Two kinds of checks live in this module:

- **Parameter constraints.** :data:`PARAMETER_CONSTRAINTS` maps each hyperparameter of
  :class:`fastlr.SoftmaxRegression` to the values it allows (as scikit-learn's
  ``_parameter_constraints`` does). :func:`check_params` applies them to the estimator's
  parameters and to a model file's metadata; :func:`argument_type` turns a constraint into an
  argparse ``type=``, so ``--lr 0`` and ``learning_rate=0`` fail by the same rule with the same
  words: ``must be a finite number > 0, got 0``.
- **Limits.** :func:`size_limit` reads the largest input size a reader accepts (IDX payloads,
  model files) from its environment variable; :func:`cap_threads` caps a thread count at the
  cores this process may use, whoever asked for it (a flag, the estimator, a model file).
- **Data checks.** :func:`check_features`, :func:`check_labels`, :func:`check_sample_weight` and
  the label encoders validate and convert X, y and sample weights. Shapes: X (N, D), y (N,),
  sample_weight (N,), classes (C,).
"""

import argparse
import math
import os
import warnings
from numbers import Integral, Real

import numpy as np

from .backends import AUTO_ORDER, default_n_threads
from .errors import (DataConversionWarning, DataError, DataTypeError, InvalidParameterError,
                     sklearn_compatible)
from .pixels import Pixels
from .preprocess import PREPROCESSING
from .sgd import LR_SCHEDULES

# --- parameter constraints -----------------------------------------------------------------------


class Interval:
    """Whole numbers (``Integral``) or finite real numbers (``Real``) between two bounds.

    ``closed`` says which bounds belong to the interval: "left", "right", "both" or "neither";
    a bound of None is no bound. Booleans are not numbers here, although Python says they are.
    """

    def __init__(self, kind, low=None, high=None, closed="left"):
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def accepts(self, value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, self.kind):
            return False
        if self.kind is Real and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (value == self.low and
                                                          self.closed in ("right", "neither"))):
            return False
        return self.high is None or value < self.high or (value == self.high and
                                                          self.closed in ("right", "both"))

    def parse(self, text):
        """The number ``text`` spells, as int or float; ValueError if it spells none."""
        return int(text) if self.kind is Integral else float(text)

    def __str__(self):
        noun = "a whole number" if self.kind is Integral else "a finite number"
        if self.low is not None and self.high is not None:
            left = "[" if self.closed in ("left", "both") else "("
            right = "]" if self.closed in ("right", "both") else ")"
            return f"{noun} in {left}{self.low}, {self.high}{right}"
        if self.low is not None:
            return f"{noun} {'>=' if self.closed in ('left', 'both') else '>'} {self.low}"
        if self.high is not None:
            return f"{noun} {'<=' if self.closed in ('right', 'both') else '<'} {self.high}"
        return noun


class Options:
    """One of a fixed set of values (``True`` is not ``1`` here, nor ``1`` ``True``)."""

    def __init__(self, *choices):
        self.choices = choices

    def accepts(self, value):
        return any(isinstance(value, type(choice)) and value == choice
                   and isinstance(value, bool) == isinstance(choice, bool)
                   for choice in self.choices)

    def __str__(self):
        return "one of " + ", ".join(repr(choice) for choice in self.choices)


class InstanceOf:
    """An instance of a type (e.g. a NumPy Generator for ``random_state``)."""

    def __init__(self, cls, description):
        self.cls, self.description = cls, description

    def accepts(self, value):
        return isinstance(value, self.cls)

    def __str__(self):
        return self.description


BOOLEAN = InstanceOf((bool, np.bool_), "True or False")
POSITIVE_WHOLE = Interval(Integral, 1)
NON_NEGATIVE_WHOLE = Interval(Integral, 0)
SEED = NON_NEGATIVE_WHOLE

# name -> the values allowed; a value passes if any constraint of its list accepts it.
PARAMETER_CONSTRAINTS = {
    "epochs": [POSITIVE_WHOLE],
    "batch_size": [POSITIVE_WHOLE],
    "learning_rate": [Interval(Real, 0, closed="neither")],
    "lr_schedule": [Options(*LR_SCHEDULES)],
    "momentum": [Interval(Real, 0, 1, closed="left")],
    "alpha": [Interval(Real, 0, closed="left")],
    "backend": [Options("auto", *AUTO_ORDER)],
    "n_threads": [None, POSITIVE_WHOLE],
    "random_state": [None, SEED, InstanceOf(np.random.Generator, "a numpy Generator")],
    "verbose": [BOOLEAN],
    "early_stopping": [BOOLEAN],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "n_iter_no_change": [POSITIVE_WHOLE],
    "preprocessing": [Options(*PREPROCESSING)],
}


def _accepts(constraint, value):
    return value is None if constraint is None else constraint.accepts(value)


def describe(constraints):
    """The values ``constraints`` allow, in words: ``"None or a whole number >= 1"``."""
    return " or ".join("None" if c is None else str(c) for c in constraints)


def check_param(name, value):
    """Raise :class:`InvalidParameterError` unless ``value`` is allowed for parameter ``name``."""
    constraints = PARAMETER_CONSTRAINTS[name]
    if not any(_accepts(constraint, value) for constraint in constraints):
        raise InvalidParameterError(f"{name} must be {describe(constraints)}, got {value!r}")


def check_params(params):
    """Check every known parameter in the dict ``params``; names not in the table are ignored.

    Raises
    ------
    InvalidParameterError
        Naming the first parameter whose value is not allowed.
    """
    for name, value in params.items():
        if name in PARAMETER_CONSTRAINTS:
            check_param(name, value)


def argument_type(constraint):
    """An argparse ``type=`` that parses a number and checks it against ``constraint``.

    Its messages are the estimator's: ``must be a whole number >= 1, got 0``.
    """
    def parse(text):
        try:
            value = constraint.parse(text)
        except ValueError:
            noun = "a whole number" if constraint.kind is Integral else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not constraint.accepts(value):
            raise argparse.ArgumentTypeError(f"must be {constraint}, got {text}")
        return value

    parse.__name__ = str(constraint)
    return parse


def param_type(name):
    """The argparse ``type=`` of a command-line flag that sets the parameter ``name``."""
    numeric = [c for c in PARAMETER_CONSTRAINTS[name] if isinstance(c, Interval)]
    return argument_type(numeric[0])


# --- limits --------------------------------------------------------------------------------------

def size_limit(variable, default):
    """The largest input size in bytes a reader accepts: ``$variable`` if set, else ``default``.

    Raises
    ------
    DataError
        If the variable is set to anything but a whole number >= 1.
    """
    text = os.environ.get(variable)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"{variable} must be a whole number of bytes >= 1, got {text!r}")
    return value


def cap_threads(n_threads):
    """The thread count to run on: ``n_threads`` (all cores when None), at most the cores this
    process may use.

    More threads than cores only wait for each other, and each one costs a (C, D) partial
    gradient buffer, so a count from a flag or a model file (``10**15``) must not reach the
    kernels as it is.
    """
    cores = default_n_threads()
    return min(int(n_threads or cores), cores)


# --- data checks ---------------------------------------------------------------------------------

def _is_sparse(X):
    return type(X).__module__.startswith("scipy.sparse")


def feature_names(X):
    """The column names of a DataFrame X (D,) object, if all are strings; otherwise None.

    As scikit-learn's ``feature_names_in_``: a model fitted on named columns refuses, at
    predict time, the same columns in another order, which an array would let through as
    other features.
    """
    columns = getattr(X, "columns", None)
    if columns is None or _is_sparse(X):
        return None
    names = np.asarray(list(columns), dtype=object)
    if len(names) == 0 or not all(isinstance(name, str) for name in names):
        return None
    return names


def _check_n_features(X, n_features):
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(f"X has {X.shape[1]} features, but SoftmaxRegression is expecting "
                        f"{n_features} features as input (the number it was trained on)")


def check_features(X, dtype=None, n_features=None):
    """Validate and convert X to a C-contiguous 2-D float array.

    float64 input stays float64 (unless ``dtype`` says otherwise); anything else becomes
    float32, the fast path. :class:`~fastlr.pixels.Pixels` stay Pixels, for the kernels that
    read the bytes (they were checked when wrapped). The messages contain the phrases scikit-learn's own validation
    uses ("0 sample(s)", "Reshape your data", "is expecting N features"), so code written
    against scikit-learn recognises them.

    Raises
    ------
    DataError
        If X is not a non-empty 2-D numeric array of finite values, or, with ``n_features``,
        has another number of columns.
    DataTypeError
        If X is sparse or holds values that are not numbers.
    """
    if isinstance(X, Pixels):  # checked when wrapped; the kernels that can read the bytes
        _check_n_features(X, n_features)
        return X
    if _is_sparse(X):
        raise DataTypeError("X is a sparse matrix, and sparse input is not supported; pass a "
                            "dense array (X.toarray())")
    try:
        X = np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise DataError(f"X could not be read as an array: {exc}") from None
    if X.dtype.kind == "c":
        raise DataError("Complex data not supported: X has a complex dtype")
    if X.dtype.kind == "O":
        try:
            X = X.astype(np.float64)
        except TypeError as exc:
            raise DataTypeError(f"X holds a value that is not a number: {exc}") from None
        except ValueError as exc:
            raise DataError(f"X holds a value that is not a number: {exc}") from None
    if X.dtype.kind not in "biuf":
        raise DataTypeError(f"X must be numeric, got dtype {X.dtype}")
    if X.ndim == 1:
        raise DataError(f"X must be 2-D (n_samples, n_features), got a 1-D array of shape "
                        f"{X.shape}. Reshape your data with X.reshape(-1, 1) if it holds one "
                        f"feature or X.reshape(1, -1) if it holds one sample")
    if X.ndim != 2:
        raise DataError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise DataError(f"X is empty: found an array with 0 sample(s) (shape={X.shape})")
    if X.shape[1] == 0:
        raise DataError(f"X has no features: found an array with 0 feature(s) "
                        f"(shape={X.shape}) while a minimum of 1 is required.")
    _check_n_features(X, n_features)
    if dtype is None:
        dtype = np.float64 if X.dtype == np.float64 else np.float32
    X = np.ascontiguousarray(X, dtype=dtype)
    # One reduction without a temporary (np.isfinite(X) would be an N x D mask): a NaN or an
    # infinity makes the sum non-finite; a sum of finite values that overflows is settled by
    # the full check.
    with np.errstate(over="ignore", invalid="ignore"):
        total = X.sum()
    if not np.isfinite(total) and not np.isfinite(X).all():
        bad = "NaN" if np.isnan(X).any() else "infinite values"
        raise DataError(f"X contains {bad}; clean or impute the data first")
    return X


def check_labels(y, n_samples):
    """Validate class labels y for X of ``n_samples`` rows; returns a 1-D array.

    A column vector (N, 1) is raveled with a :class:`DataConversionWarning`, as scikit-learn
    does.

    Raises
    ------
    DataError
        If y is missing, not 1-D, of another length than X, NaN or infinite, or continuous
        (floats that are not whole numbers).
    """
    if y is None:
        raise DataError("SoftmaxRegression requires y to be passed, but the target y is None")
    try:
        y = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise DataError(f"y could not be read as an array: {exc}") from None
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(sklearn_compatible(DataConversionWarning)(
            "A column-vector y was passed when a 1d array was expected; it was raveled to "
            "shape (n_samples,)"), stacklevel=4)
        y = y.ravel()
    if y.ndim != 1:
        raise DataError(f"y must be 1-D (n_samples,), got shape {y.shape}")
    if len(y) != n_samples:
        raise DataError(f"X has {n_samples} samples but y has {len(y)} labels")
    if y.dtype.kind == "c":
        raise DataError("Complex data not supported: y has a complex dtype")
    if y.dtype.kind == "f":
        if np.isnan(y).any():
            raise DataError("Input y contains NaN; every sample needs a class label")
        if np.isinf(y).any():
            raise DataError("Input y contains infinity; every sample needs a class label")
        if (y != np.round(y)).any():
            raise DataError("Unknown label type: continuous. y holds numbers that are not "
                            "whole; a classifier needs class labels")
    return y


def unique_labels(y):
    """The sorted distinct labels of y (C,) and y encoded as indices into them (N,) int64."""
    try:
        classes, encoded = np.unique(y, return_inverse=True)
    except TypeError:
        raise DataError("Unknown label type: y mixes labels of different types (e.g. "
                        "strings and numbers)") from None
    return check_label_values(classes, "y"), np.ascontiguousarray(encoded.ravel(),
                                                                   dtype=np.int64)


def check_label_values(classes, what):
    """``classes`` (C,), if every label is a number or a string, finite: what a model file can
    hold, so that a model trained on them can be saved and loaded again.

    Raises
    ------
    DataError
        For labels of another type (bytes, complex numbers, dates, integers beyond 64 bits,
        other objects), NaN or infinite labels. ``what`` names the argument in the message.
    """
    stored = classes
    if classes.dtype.kind == "O":
        try:
            stored = np.array(classes.tolist())
        except (TypeError, ValueError, OverflowError):
            pass
    if stored.dtype.kind not in "biufU" or stored.shape != classes.shape:
        raise DataError(f"{what} holds labels of type {classes.dtype} "
                        f"({str(classes[:3].tolist())[:80]}); a class label must be a number "
                        f"or a string")
    if stored.dtype.kind == "f" and not np.isfinite(stored).all():
        raise DataError(f"{what} holds NaN or infinity; a class label must be a finite number "
                        f"or a string")
    return classes


def encode_labels(y, classes, known_as):
    """Map labels to 0..C-1 by the sorted ``classes``; labels outside them are an error."""
    try:
        index = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
        unknown = classes[index] != y
    except TypeError:
        raise DataError(f"y holds labels of another type than {known_as} "
                        f"({classes.dtype})") from None
    if unknown.any():
        raise DataError(f"y holds labels that are not in {known_as}: "
                        f"{plain(np.unique(y[unknown])[:5])}; {known_as} is "
                        f"{plain(classes)}")
    return np.ascontiguousarray(index, dtype=np.int64)


def check_classes(classes):
    """The ``classes`` argument of partial_fit: at least two distinct labels, sorted, each a
    finite number or a string (see :func:`check_label_values`).

    Raises
    ------
    DataError
        For anything else: fewer than two labels, a nested list, mixed types, NaN.
    """
    try:
        given = np.asarray(classes)
    except (TypeError, ValueError) as exc:
        raise DataError(f"classes could not be read as a list of labels: {exc}") from None
    if given.ndim != 1:
        raise DataError(f"classes must be a flat list of labels, got shape {given.shape}")
    try:
        classes = np.unique(given)
    except TypeError:
        raise DataError("classes mixes labels of different types") from None
    if len(classes) < 2:
        raise DataError(f"classes must list at least two labels, got {plain(classes)}")
    return check_label_values(classes, "classes")


def check_sample_weight(sample_weight, n_samples, dtype):
    """Per-sample weights (N,) of ``dtype``: ones when None, a scalar broadcast.

    Raises
    ------
    DataError
        If the weights are not numbers, of another length, negative, infinite or all zero.
    """
    if sample_weight is None:
        return np.ones(n_samples, dtype=dtype)
    try:
        sw = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"sample_weight could not be read as numbers: {exc}") from None
    if sw.ndim == 0:
        sw = np.full(n_samples, float(sw))
    if sw.shape != (n_samples,):
        raise DataError(f"sample_weight has shape {sw.shape}, expected ({n_samples},)")
    if not np.isfinite(sw).all() or (sw < 0).any():
        raise DataError("sample_weight must be finite and non-negative")
    if not sw.any():
        raise DataError("sample_weight is zero for every sample: no sample carries any weight")
    return np.ascontiguousarray(sw, dtype=dtype)


def plain(array):
    """A short, readable rendering of labels in messages: [0, 1, 'cat'], not numpy reprs."""
    items = array.tolist()
    return str(items[:10])[:-1] + ", ...]" if len(items) > 10 else str(items)
