"""SoftmaxRegression: a scikit-learn-style estimator around the SGD driver, with safe model files.

Model files are ``.npz`` archives holding plain numeric (or fixed-width string) arrays and the
metadata as JSON text. They are read member by member with NumPy's header parser, never
unpickled (the equivalent of ``allow_pickle=False``), so loading one never runs code.
"""

import json
import math
import os
import struct
import sys
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import sgd
from .backends import AUTO_ORDER, available_backends, default_n_threads, get_backend
from .backends import reference
from .errors import (DataConversionWarning, DataError, DataTypeError, ModelFileError,
                     NotFittedError, sklearn_compatible)
from .preprocess import PREPROCESSING, apply_preprocessing

MODEL_FORMAT = "fastlr-model"
MODEL_FORMAT_VERSION = 1

# What a model file says about the input its weights expect: the pixel scale, and the steps
# (``preprocessing``) applied to every X before the weights see it.
PIXEL_SCALE = "x / 255, in [0, 1]"


def _as_generator(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def _is_sparse(X):
    return type(X).__module__.startswith("scipy.sparse")


def check_features(X, dtype=None, n_features=None):
    """Validate and convert X to a C-contiguous 2-D float array.

    float64 input stays float64 (unless ``dtype`` says otherwise); anything else becomes
    float32, the fast path. The messages contain the phrases scikit-learn's own validation
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
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(f"X has {X.shape[1]} features, but SoftmaxRegression is expecting "
                        f"{n_features} features as input (the number it was trained on)")
    if dtype is None:
        dtype = np.float64 if X.dtype == np.float64 else np.float32
    X = np.ascontiguousarray(X, dtype=dtype)
    if not np.isfinite(X).all():
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
            "shape (n_samples,)"), stacklevel=3)
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


def _unique_labels(y):
    """The sorted distinct labels of y and y encoded as indices into them."""
    try:
        classes, encoded = np.unique(y, return_inverse=True)
    except TypeError:
        raise DataError("Unknown label type: y mixes labels of different types (e.g. "
                        "strings and numbers)") from None
    return classes, np.ascontiguousarray(encoded.ravel(), dtype=np.int64)


def _encode_labels(y, classes, known_as):
    """Map labels to 0..C-1 by the sorted ``classes``; labels outside them are an error."""
    try:
        index = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
        unknown = classes[index] != y
    except TypeError:
        raise DataError(f"y holds labels of another type than {known_as} "
                        f"({classes.dtype})") from None
    if unknown.any():
        raise DataError(f"y holds labels that are not in {known_as}: "
                        f"{_plain(np.unique(y[unknown])[:5])}; {known_as} is "
                        f"{_plain(classes)}")
    return np.ascontiguousarray(index, dtype=np.int64)


def _plain(array):
    """A short, readable rendering of labels in messages: [0, 1, 'cat'], not numpy reprs."""
    items = array.tolist()
    return str(items[:10])[:-1] + ", ...]" if len(items) > 10 else str(items)


class SoftmaxRegression:
    """Multinomial logistic (softmax) regression trained by minibatch SGD.

    A scikit-learn estimator: it passes ``sklearn.utils.estimator_checks.check_estimator``
    and works in ``Pipeline``, ``GridSearchCV``, ``clone`` and ``pickle``, but it does not
    need scikit-learn. It implements the estimator protocol itself (``get_params``,
    ``set_params``, ``__sklearn_tags__``, ``__sklearn_is_fitted__``) instead of inheriting
    ``BaseEstimator``: scikit-learn is not a runtime dependency and importing it costs a
    second of start-up, and a class whose bases changed with what is installed would make
    pickles and ``isinstance`` depend on the environment.

    Parameters
    ----------
    epochs : int, default 10
        Passes over the training data.
    batch_size : int, default 64
    learning_rate : float, default 1.0
        The rate at the first step. With the linear schedule, 10 epochs at batch 64 and rate
        1.0 reach 92.6-92.7% on MNIST's test set (seeds 0-2); rate 0.5 reaches 92.5%, and
        twice the epochs add nothing.
    lr_schedule : {"linear", "constant"}, default "linear"
        ``linear`` decays the rate to 0 over the run. :meth:`partial_fit` always uses the
        constant rate ``learning_rate``.
    momentum : float, default 0.0
    alpha : float, default 0.0
        L2 penalty on the weights (not the bias).
    backend : {"auto", "numba", "cython", "numpy"}, default "auto"
    n_threads : int, optional
        Threads for the kernels; default: all cores.
    random_state : int, Generator or None, default 0
        Seeds the permutations (and the validation split). Same seed, same thread count:
        bitwise the same model.
    verbose : bool, default False
        Write one line per epoch (loss and accuracy) to stderr.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the training data and stop when its accuracy has
        not improved for ``n_iter_no_change`` epochs; the best weights are kept. Not used by
        :meth:`partial_fit`.
    validation_fraction : float, default 0.1
    n_iter_no_change : int, default 3
    preprocessing : {None, "deskew"}, default None
        Applied to every X the model sees, in ``fit`` and in prediction: ``"deskew"`` shears
        each image upright (see :mod:`fastlr.preprocess`). It is saved in the model file, so a
        loaded model preprocesses its input the same way.

    Attributes
    ----------
    coef_ : (C, D) array
    intercept_ : (C,) array
    classes_ : (C,) array, the labels seen in ``fit`` (or given to ``partial_fit``), sorted
    n_features_in_ : int
    backend_ : str, the backend actually used
    n_threads_ : int, the thread count actually used
    history_ : list of dict, one record per epoch (see :func:`fastlr.sgd.run_sgd`)

    Notes
    -----
    Internally the model always has C score rows, also for two classes. For two classes
    :meth:`decision_function` returns, as scikit-learn expects, one score per sample: the
    log-odds ``s_1 - s_0`` of ``classes_[1]`` against ``classes_[0]``, positive when
    ``classes_[1]`` is predicted; ``predict_proba`` is its logistic sigmoid.
    """

    def __init__(self, epochs=10, batch_size=64, learning_rate=1.0, lr_schedule="linear",
                 momentum=0.0, alpha=0.0, backend="auto", n_threads=None, random_state=0,
                 verbose=False, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=3, preprocessing=None):
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.momentum = momentum
        self.alpha = alpha
        self.backend = backend
        self.n_threads = n_threads
        self.random_state = random_state
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.preprocessing = preprocessing

    # --- scikit-learn's estimator protocol ------------------------------------------------------

    _PARAM_NAMES = ("epochs", "batch_size", "learning_rate", "lr_schedule", "momentum", "alpha",
                    "backend", "n_threads", "random_state", "verbose", "early_stopping",
                    "validation_fraction", "n_iter_no_change", "preprocessing")

    def get_params(self, deep=True):
        """The constructor parameters, as a dict."""
        return {name: getattr(self, name) for name in self._PARAM_NAMES}

    def set_params(self, **params):
        """Set constructor parameters; returns self."""
        for name, value in params.items():
            if name not in self._PARAM_NAMES:
                raise ValueError(f"Invalid parameter {name!r} for SoftmaxRegression; valid "
                                 f"parameters are {', '.join(self._PARAM_NAMES)}")
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self):
        # Only scikit-learn calls this, so scikit-learn is importable here.
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags
        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(), input_tags=InputTags())

    def __sklearn_is_fitted__(self):
        return hasattr(self, "coef_")

    def __repr__(self):
        defaults = type(self)().get_params()
        changed = {k: v for k, v in self.get_params().items()
                   if not (type(v) is type(defaults[k]) and v == defaults[k])}
        return f"SoftmaxRegression({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # --- training ------------------------------------------------------------------------------

    def _check_hyperparameters(self):
        def number(value):
            return isinstance(value, (int, float, np.integer, np.floating)) \
                and not isinstance(value, bool)

        def whole(value):
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        checks = [
            (whole(self.epochs) and self.epochs >= 1,
             f"epochs must be a whole number >= 1, got {self.epochs!r}"),
            (whole(self.batch_size) and self.batch_size >= 1,
             f"batch_size must be a whole number >= 1, got {self.batch_size!r}"),
            (number(self.learning_rate) and np.isfinite(self.learning_rate)
             and self.learning_rate > 0,
             f"learning_rate must be > 0, got {self.learning_rate!r}"),
            (self.lr_schedule in sgd.LR_SCHEDULES,
             f"lr_schedule must be one of {', '.join(sgd.LR_SCHEDULES)}, "
             f"got {self.lr_schedule!r}"),
            (number(self.momentum) and 0.0 <= self.momentum < 1.0,
             f"momentum must be in [0, 1), got {self.momentum!r}"),
            (number(self.alpha) and np.isfinite(self.alpha) and self.alpha >= 0,
             f"alpha must be >= 0, got {self.alpha!r}"),
            (self.n_threads is None or (whole(self.n_threads) and self.n_threads >= 1),
             f"n_threads must be a whole number >= 1, got {self.n_threads!r}"),
            (number(self.validation_fraction) and 0.0 < self.validation_fraction < 1.0,
             f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}"),
            (whole(self.n_iter_no_change) and self.n_iter_no_change >= 1,
             f"n_iter_no_change must be a whole number >= 1, got {self.n_iter_no_change!r}"),
            (self.preprocessing in PREPROCESSING,
             f"preprocessing must be None or 'deskew', got {self.preprocessing!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def fit(self, X, y, sample_weight=None, eval_set=None, on_epoch=None):
        """Train from scratch on X (N, D), y (N,).

        Parameters
        ----------
        X : array-like (N, D), numeric, finite
        y : array-like (N,), any labels (numbers or strings) with at least two distinct values
        sample_weight : array-like (N,), optional, non-negative
            Scales each sample's loss. Minibatches are drawn from all samples, so a weight of
            2 is like a duplicate sample only on average, not step by step.
        eval_set : (X_eval, y_eval), optional
            Scored after every epoch; its accuracy lands in ``history_`` as ``val_accuracy``.
        on_epoch : callable(record), optional
            Called after every epoch with its ``history_`` record (progress bars use it).

        Returns
        -------
        self

        Raises
        ------
        DataError
            For unusable X, y or sample_weight.
        DivergenceError
            If the loss becomes NaN or infinite; the model keeps the last finite weights.

        Notes
        -----
        A Dask array X trains on its Dask cluster, by synchronous model averaging over its
        row blocks: see :mod:`fastlr.distributed`.
        """
        # --- Dask arrays: data-parallel training on their cluster (fastlr/distributed.py) ---
        from . import distributed
        if distributed.is_dask_array(X):
            return distributed.fit(self, X, y, sample_weight, eval_set, on_epoch)
        # -------------------------------------------------------------------------------------
        self._check_hyperparameters()
        X = apply_preprocessing(self.preprocessing, check_features(X))
        y = check_labels(y, X.shape[0])
        classes, y_encoded = _unique_labels(y)
        if len(classes) < 2:
            raise DataError(f"y holds one class only ({_plain(classes)[1:-1]}); a classifier "
                            f"needs at least two classes")
        sw = _check_sample_weight(sample_weight, X.shape[0], X.dtype)
        if sample_weight is not None:
            weighted = np.unique(y_encoded[sw > 0])
            if len(weighted) < 2:
                raise DataError(f"sample_weight leaves one class only "
                                f"({_plain(classes[weighted])[1:-1]}) with non-zero weight; a "
                                f"classifier needs at least two classes")
        validation = None
        if eval_set is not None and not self.early_stopping:
            X_eval = apply_preprocessing(self.preprocessing, check_features(
                eval_set[0], dtype=X.dtype, n_features=X.shape[1]))
            y_eval = check_labels(eval_set[1], X_eval.shape[0])
            validation = (X_eval, _encode_labels(y_eval, classes, "the training labels"))

        self._initialize(classes, X.shape[1], X.dtype)
        train_index = None
        if self.early_stopping:
            order = self._rng.permutation(X.shape[0])
            n_val = max(1, int(round(self.validation_fraction * X.shape[0])))
            if n_val >= X.shape[0]:
                raise DataError("too few samples to hold out a validation set")
            val_index = np.sort(order[:n_val])
            train_index = np.sort(order[n_val:]).astype(np.int64)
            validation = (X[val_index], y_encoded[val_index])
        self._run_sgd(X, y_encoded, sw, epochs=int(self.epochs), lr_schedule=self.lr_schedule,
                      train_index=train_index, validation=validation,
                      early_stopping=self.early_stopping, on_epoch=on_epoch)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch of SGD over the chunk X, y, continuing from the current weights.

        For data that does not fit in memory: call it once per chunk, as many passes over
        all the chunks as wanted. The weights and the momentum carry over from call to call
        (also after :meth:`fit`). The rate is the constant ``learning_rate``: the length of a
        stream is unknown, so a decaying schedule has no end to decay towards; to decay it,
        lower ``learning_rate`` between calls with :meth:`set_params`.

        Parameters
        ----------
        X : array-like (N, D)
        y : array-like (N,), labels among ``classes``
        classes : array-like, required on the first call
            Every label the model will ever see; a chunk may hold only some of them.
        sample_weight : array-like (N,), optional

        Returns
        -------
        self

        Raises
        ------
        DataError
            For unusable X, y or sample_weight, a first call without ``classes``, labels
            outside ``classes``, or a chunk with another number of features than before.
        DivergenceError
            If the loss becomes NaN or infinite; the model keeps the last finite weights.
        """
        self._check_hyperparameters()
        if not self.__sklearn_is_fitted__():
            if classes is None:
                raise DataError("the first call to partial_fit needs classes=: every label "
                                "the model will see, e.g. classes=range(10)")
            classes = _check_classes(classes)
            X = apply_preprocessing(self.preprocessing, check_features(X))
            y = check_labels(y, X.shape[0])
            y_encoded = _encode_labels(y, classes, "classes")
            sw = _check_sample_weight(sample_weight, X.shape[0], X.dtype)
            self._initialize(classes, X.shape[1], X.dtype)
        else:
            if classes is not None and not np.array_equal(_check_classes(classes),
                                                          self.classes_):
                raise DataError(f"classes={_plain(np.asarray(classes))} differs from the "
                                f"model's classes {_plain(self.classes_)}")
            X = apply_preprocessing(self.preprocessing, check_features(
                X, dtype=self.coef_.dtype, n_features=self.n_features_in_))
            y = check_labels(y, X.shape[0])
            y_encoded = _encode_labels(y, self.classes_, "the model's classes")
            sw = _check_sample_weight(sample_weight, X.shape[0], X.dtype)
            if not hasattr(self, "_velocity"):  # a loaded model: fresh momentum and shuffling
                self._velocity = (np.zeros_like(self.coef_), np.zeros_like(self.intercept_))
                self._rng = _as_generator(self.random_state)
            self.backend_ = get_backend(self.backend).name
            self.n_threads_ = int(self.n_threads or default_n_threads())
        first_epoch = len(self.history_) + 1
        self._run_sgd(X, y_encoded, sw, epochs=1, lr_schedule="constant")
        self.history_[-1]["epoch"] = first_epoch
        return self

    def _initialize(self, classes, n_features, dtype):
        """Fresh zero weights, momentum, history and generator for C classes and D features."""
        backend = get_backend(self.backend)
        self.classes_ = classes
        self.n_features_in_ = int(n_features)
        self.backend_ = backend.name
        self.n_threads_ = int(self.n_threads or default_n_threads())
        self.coef_ = np.zeros((len(classes), n_features), dtype=dtype)
        self.intercept_ = np.zeros(len(classes), dtype=dtype)
        self.history_ = []
        self._velocity = (np.zeros_like(self.coef_), np.zeros_like(self.intercept_))
        self._rng = _as_generator(self.random_state)

    def _run_sgd(self, X, y_encoded, sw, *, epochs, lr_schedule, train_index=None,
                 validation=None, early_stopping=False, on_epoch=None):
        if self.verbose:
            user_callback = on_epoch

            def on_epoch(record):
                self._print_epoch(record)
                if user_callback is not None:
                    user_callback(record)

        sgd.run_sgd(get_backend(self.backend_), X, y_encoded, sw, self.coef_, self.intercept_,
                    epochs=epochs, batch_size=int(self.batch_size),
                    learning_rate=float(self.learning_rate), lr_schedule=lr_schedule,
                    momentum=float(self.momentum), alpha=float(self.alpha),
                    n_threads=self.n_threads_, rng=self._rng, train_index=train_index,
                    validation=validation, early_stopping=early_stopping,
                    n_iter_no_change=int(self.n_iter_no_change), on_epoch=on_epoch,
                    history=self.history_, velocity=self._velocity)

    @staticmethod
    def _print_epoch(record):
        """One progress line per epoch on stderr, asked for with ``verbose=True``."""
        line = (f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, "
                f"train accuracy {record['train_accuracy']:.4f}")
        if "val_accuracy" in record:
            line += f", validation accuracy {record['val_accuracy']:.4f}"
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    # --- prediction -----------------------------------------------------------------------------

    def _scores(self, X):
        """All C scores ``X W^T + b``, shape (N, C), float64."""
        if not self.__sklearn_is_fitted__():
            raise sklearn_compatible(NotFittedError)(
                "this SoftmaxRegression is not fitted yet; call fit (or partial_fit) first")
        X = check_features(X, dtype=self.coef_.dtype, n_features=self.n_features_in_)
        X = apply_preprocessing(self.preprocessing, X)
        backend_name = getattr(self, "backend_", "auto")
        backend = get_backend(backend_name if backend_name in available_backends() else "auto")
        scores = sgd.predict_scores(backend, X, self.coef_, self.intercept_,
                                    getattr(self, "n_threads_", None) or default_n_threads())
        return scores.astype(np.float64, copy=False)

    def decision_function(self, X):
        """Scores ``X W^T + b``: shape (N, C), or (N,) for two classes (see Notes)."""
        scores = self._scores(X)
        if scores.shape[1] == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def predict_log_proba(self, X):
        """Log class probabilities (N, C), columns in the order of ``classes_``."""
        scores = self._scores(X)
        return scores - reference.log_sum_exp(scores)[:, None]

    def predict_proba(self, X):
        """Class probabilities (N, C), columns in the order of ``classes_``."""
        return reference.softmax(self._scores(X))

    def predict(self, X):
        """The most probable label of each row of X."""
        scores = self._scores(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on X, y (weighted by ``sample_weight`` if given)."""
        predicted = self.predict(X)
        correct = (predicted == check_labels(y, len(predicted))).astype(np.float64)
        if sample_weight is None:
            return float(correct.mean())
        return float(np.average(correct, weights=sample_weight))

    # --- model files ----------------------------------------------------------------------------

    def save(self, path):
        """Write the model to ``path`` (.npz), atomically: a temporary file renamed into place.

        The archive holds ``coef``, ``intercept``, ``classes`` and ``metadata``, a JSON text
        with the format and its version, the fastlr version, the hyperparameters, the
        preprocessing the model expects of its input, the number of features, the backend
        and the training history.
        """
        if not self.__sklearn_is_fitted__():
            raise sklearn_compatible(NotFittedError)(
                "this SoftmaxRegression is not fitted yet; nothing to save")
        from . import __version__
        path = Path(path)
        classes = self.classes_
        if classes.dtype.kind == "O":  # labels given as Python objects: store them plainly
            classes = np.array(classes.tolist())
        if classes.dtype.kind not in "biufU" or classes.shape != self.classes_.shape:
            raise ModelFileError(f"cannot save classes of dtype {self.classes_.dtype}; "
                                 f"use numbers or strings")
        metadata = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "fastlr_version": __version__,
            "params": self.get_params(),
            "preprocessing": {"pixel_scale": PIXEL_SCALE,
                              "steps": [self.preprocessing] if self.preprocessing else []},
            "n_features_in": int(self.n_features_in_),
            "backend": self.backend_,
            "n_threads": self.n_threads_,
            "history": self.history_,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, coef=self.coef_, intercept=self.intercept_, classes=classes,
                         metadata=np.array(json.dumps(metadata, default=_json_default)))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`.

        The archive is read member by member with NumPy's header parser and never unpickled:
        an object array is refused before its bytes are read, and each member's declared
        shape must match its length.

        Raises
        ------
        ModelFileError
            If the file is missing, truncated, not a fastlr model, of a newer format, or holds
            anything but plain arrays.
        """
        path = Path(path)
        return cls._from_arrays(_read_npz(path), path)

    @classmethod
    def _from_arrays(cls, arrays, path):
        missing = {"coef", "intercept", "classes", "metadata"} - set(arrays)
        if missing:
            raise ModelFileError(f"{path}: not a fastlr model file (missing "
                                 f"{', '.join(sorted(missing))})")
        metadata_array = arrays["metadata"]
        if metadata_array.dtype.kind != "U" or metadata_array.ndim != 0:
            raise ModelFileError(f"{path}: not a fastlr model file (no JSON metadata)")
        try:
            metadata = json.loads(str(metadata_array))
        except (ValueError, RecursionError):
            raise ModelFileError(f"{path}: the metadata is not valid JSON") from None
        if not isinstance(metadata, dict) or metadata.get("format") != MODEL_FORMAT:
            raise ModelFileError(f"{path}: not a fastlr model file")
        version = metadata.get("format_version")
        if version != MODEL_FORMAT_VERSION:
            raise ModelFileError(f"{path}: model format version {version!r} is not supported "
                                 f"(this fastlr reads version {MODEL_FORMAT_VERSION})")
        coef, intercept, classes = arrays["coef"], arrays["intercept"], arrays["classes"]
        if (coef.ndim != 2 or coef.dtype not in (np.float32, np.float64)
                or intercept.shape != (coef.shape[0],) or intercept.dtype != coef.dtype
                or classes.shape != (coef.shape[0],) or coef.shape[0] < 2
                or coef.shape[1] < 1 or metadata.get("n_features_in") != coef.shape[1]):
            raise ModelFileError(f"{path}: inconsistent model arrays (coef {coef.shape}, "
                                 f"intercept {intercept.shape}, classes {classes.shape})")
        if classes.dtype.kind not in "biufU" or not np.array_equal(np.unique(classes), classes):
            raise ModelFileError(f"{path}: the classes must be distinct sorted numbers or "
                                 f"strings")
        if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
            raise ModelFileError(f"{path}: the weights are not finite")
        params = metadata.get("params")
        history = metadata.get("history", [])
        if not isinstance(params, dict) or not isinstance(history, list):
            raise ModelFileError(f"{path}: the metadata lacks the hyperparameters or history")
        if params.get("preprocessing") not in PREPROCESSING:
            raise ModelFileError(f"{path}: unknown preprocessing {params['preprocessing']!r}")
        model = cls(**{k: v for k, v in params.items() if k in cls._PARAM_NAMES})
        model.coef_ = np.ascontiguousarray(coef)
        model.intercept_ = np.ascontiguousarray(intercept)
        model.classes_ = classes
        model.n_features_in_ = int(coef.shape[1])
        backend = metadata.get("backend")
        model.backend_ = backend if backend in AUTO_ORDER else "numpy"
        n_threads = metadata.get("n_threads")
        model.n_threads_ = n_threads if isinstance(n_threads, int) and n_threads >= 1 else None
        model.history_ = history
        model.metadata_ = metadata
        return model


def _check_classes(classes):
    """The ``classes`` argument of partial_fit: at least two distinct labels, sorted."""
    try:
        classes = np.unique(np.asarray(classes))
    except TypeError:
        raise DataError("classes mixes labels of different types") from None
    if classes.ndim != 1 or len(classes) < 2:
        raise DataError(f"classes must list at least two labels, got {_plain(classes)}")
    return classes


def _check_sample_weight(sample_weight, n_samples, dtype):
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


# Model files larger than this are refused before anything is read: a softmax model over
# MNIST takes 60 kB, and a hostile archive must not make the reader allocate gigabytes.
MAX_MODEL_BYTES = 1 << 30
MAX_MODEL_MEMBERS = 16


def _read_npz(path):
    """The arrays of an .npz archive, read without pickle and checked against their sizes."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_MODEL_MEMBERS:
                raise ModelFileError(f"{path}: not a fastlr model file ({len(infos)} members)")
            if sum(info.file_size for info in infos) > MAX_MODEL_BYTES:
                raise ModelFileError(f"{path}: too large for a fastlr model file")
            arrays = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise ModelFileError(f"{path}: not a fastlr model file (member "
                                         f"{info.filename!r} is not an array)")
                with archive.open(info) as fh:
                    arrays[info.filename[:-4]] = _read_npy_member(fh, info, path)
            return arrays
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, not a model file") from None
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error,
            NotImplementedError, RuntimeError, ValueError, struct.error, OverflowError,
            UnicodeDecodeError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path}: not a fastlr model file, or truncated "
                             f"({type(exc).__name__}: {exc})") from None


def _read_npy_member(fh, info, path):
    """One .npy member: its header parsed, object dtypes refused, its length checked."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ModelFileError(f"{path}: unsupported .npy version {version} in "
                             f"{info.filename!r}")
    if dtype.hasobject:
        raise ModelFileError(f"{path}: {info.filename!r} holds a pickled object array; "
                             f"refused, since loading it could run code")
    n_bytes = math.prod(shape) * dtype.itemsize
    header_bytes = 6 + 2 + (2 if version == (1, 0) else 4)
    if n_bytes > info.file_size:
        raise ModelFileError(f"{path}: truncated: {info.filename!r} declares shape {shape} "
                             f"but holds {info.file_size - header_bytes} bytes or fewer")
    raw = fh.read(n_bytes)
    if len(raw) != n_bytes:
        raise ModelFileError(f"{path}: truncated: {info.filename!r} ends after {len(raw)} of "
                             f"{n_bytes} bytes")
    array = np.frombuffer(raw, dtype=dtype)
    if fortran_order:
        return array.reshape(shape[::-1]).T.copy()
    return array.reshape(shape).copy()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.random.Generator):
        return None
    raise TypeError(f"cannot store {type(value).__name__} in a model file")
