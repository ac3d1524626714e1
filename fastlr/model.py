"""SoftmaxRegression: a scikit-learn-style estimator around the SGD driver.

The estimator validates its input (:mod:`fastlr.validation`), hands the arrays to the driver
(:mod:`fastlr.sgd`) and predicts with the backend's kernels; its file format lives in
:mod:`fastlr.model_file`.
"""

import sys

import numpy as np

from . import model_file, sgd
from .backends import default_n_threads, get_backend, get_backend_or_auto
from .backends import reference
from .errors import DataError, NotFittedError, sklearn_compatible
from .preprocess import apply_preprocessing
from .validation import (PARAMETER_CONSTRAINTS, cap_threads, check_classes, check_features,
                         check_labels, check_params, check_sample_weight, encode_labels,
                         feature_names, plain, unique_labels)


def _as_generator(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


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
        Threads for the kernels; default: all cores, and never more than the cores
        this process may use.
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

    Input
    -----
    X is a float array (float64 stays float64, anything else becomes float32), or
    :class:`fastlr.Pixels`: uint8 images whose features are ``X / 255``, which the numba and
    cython kernels read as bytes, a quarter of float32's memory traffic (``fastlr/pixels.py``).

    Attributes
    ----------
    coef_ : (C, D) array
    intercept_ : (C,) array
    classes_ : (C,) array, the labels seen in ``fit`` (or given to ``partial_fit``), sorted
    n_features_in_ : int
    feature_names_in_ : (D,) object array, the column names of a DataFrame X given to fit (only
        then; a model read from a file has none)
    backend_ : str, the backend actually used
    n_threads_ : int, the thread count actually used
    history_ : list of dict, one record per epoch (see :func:`fastlr.sgd.run_sgd`)
    dataset_ : dict or None, set by :meth:`load`: the training data set the model file
        records (name, title, image shape, class names; see :mod:`fastlr.model_file`)

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

    _PARAM_NAMES = tuple(PARAMETER_CONSTRAINTS)

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
        """Raise InvalidParameterError (a ValueError) for a parameter outside its constraints."""
        check_params(self.get_params())

    def _prepare_features(self, X, dtype=None, n_features=None):
        """X (N, D) checked, converted and preprocessed, for training or prediction."""
        return apply_preprocessing(self.preprocessing,
                                   check_features(X, dtype=dtype, n_features=n_features))

    def _prepare(self, X, y, *, classes=None, known_as=None, dtype=None, n_features=None):
        """X checked and preprocessed, y checked and encoded: the one way input enters a model.

        With ``classes`` None the classes are the distinct labels of y; otherwise y must hold
        labels among ``classes`` (called ``known_as`` in messages). ``dtype`` and
        ``n_features`` are those of a fitted model, when there is one.

        Returns
        -------
        X : (N, D) float array, y_encoded : (N,) int64 indices into classes, classes : (C,)
        """
        X = self._prepare_features(X, dtype=dtype, n_features=n_features)
        y = check_labels(y, X.shape[0])
        if classes is None:
            classes, y_encoded = unique_labels(y)
        else:
            y_encoded = encode_labels(y, classes, known_as)
        return X, y_encoded, classes

    def fit(self, X, y=None, sample_weight=None, eval_set=None, on_epoch=None,
            score_train=False):
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
        score_train : bool, default False
            Also score the whole training set after every epoch (``end_train_loss`` and
            ``end_train_accuracy`` in ``history_``). Without it ``train_loss`` and
            ``train_accuracy`` are the running figures the kernel counts during the epoch,
            at no extra pass.

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
        A :class:`fastlr.streaming.StreamingSource` X (with y None) trains on data on disk,
        streamed a shuffle buffer at a time: see :mod:`fastlr.streaming`.
        """
        # --- Dask arrays: data-parallel training on their cluster (fastlr/distributed.py) ---
        from . import distributed
        if distributed.is_dask_array(X):
            return distributed.fit(self, X, y, sample_weight, eval_set, on_epoch)
        # --- a data set on disk, streamed a shuffle buffer at a time (fastlr/streaming.py) --
        from . import streaming
        if isinstance(X, streaming.StreamingSource):
            if y is not None or sample_weight is not None:
                raise DataError("a StreamingSource holds its own labels; pass y=None and no "
                                "sample_weight")
            return streaming.fit(self, X, eval_set, on_epoch)
        # -------------------------------------------------------------------------------------
        self._check_hyperparameters()
        names = feature_names(X)
        X, y_encoded, classes = self._prepare(X, y)
        if len(classes) < 2:
            raise DataError(f"y holds one class only ({plain(classes)[1:-1]}); a classifier "
                            f"needs at least two classes")
        sw = check_sample_weight(sample_weight, X.shape[0], X.dtype)
        if sample_weight is not None:
            weighted = np.unique(y_encoded[sw > 0])
            if len(weighted) < 2:
                raise DataError(f"sample_weight leaves one class only "
                                f"({plain(classes[weighted])[1:-1]}) with non-zero weight; a "
                                f"classifier needs at least two classes")
        validation = None
        if eval_set is not None and not self.early_stopping:
            X_eval, y_eval, _ = self._prepare(*eval_set, classes=classes,
                                              known_as="the training labels", dtype=X.dtype,
                                              n_features=X.shape[1])
            validation = (X_eval, y_eval)

        self._initialize(classes, X.shape[1], X.dtype, names)
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
                      early_stopping=self.early_stopping, on_epoch=on_epoch,
                      score_train=score_train)
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
        fitted = self.__sklearn_is_fitted__()
        names = feature_names(X)
        if fitted:
            self._check_feature_names(names)
        if not fitted:
            if classes is None:
                raise DataError("the first call to partial_fit needs classes=: every label "
                                "the model will see, e.g. classes=range(10)")
            X, y_encoded, classes = self._prepare(X, y, classes=check_classes(classes),
                                                  known_as="classes")
        else:
            if classes is not None and not np.array_equal(check_classes(classes),
                                                          self.classes_):
                raise DataError(f"classes={plain(np.asarray(classes))} differs from the "
                                f"model's classes {plain(self.classes_)}")
            X, y_encoded, _ = self._prepare(X, y, classes=self.classes_,
                                            known_as="the model's classes",
                                            dtype=self.coef_.dtype,
                                            n_features=self.n_features_in_)
        sw = check_sample_weight(sample_weight, X.shape[0],
                                 self.coef_.dtype if fitted else X.dtype)
        if not fitted:
            self._initialize(classes, X.shape[1], X.dtype, names)
        else:
            if not hasattr(self, "_velocity"):  # a loaded model: fresh momentum and shuffling
                self._velocity = (np.zeros_like(self.coef_), np.zeros_like(self.intercept_))
                self._rng = _as_generator(self.random_state)
            self.backend_ = get_backend(self.backend).name
            self.n_threads_ = cap_threads(self.n_threads)
        first_epoch = len(self.history_) + 1
        self._run_sgd(X, y_encoded, sw, epochs=1, lr_schedule="constant")
        self.history_[-1]["epoch"] = first_epoch
        return self

    def _initialize(self, classes, n_features, dtype, names=None):
        """Fresh zero weights, momentum, history and generator for C classes and D features
        (named ``names`` (D,), when X was a DataFrame)."""
        backend = get_backend(self.backend)
        if names is None:
            self.__dict__.pop("feature_names_in_", None)
        else:
            self.feature_names_in_ = names
        self.classes_ = classes
        self.n_features_in_ = int(n_features)
        self.backend_ = backend.name
        self.n_threads_ = cap_threads(self.n_threads)
        self.coef_ = np.zeros((len(classes), n_features), dtype=dtype)
        self.intercept_ = np.zeros(len(classes), dtype=dtype)
        self.history_ = []
        self._velocity = (np.zeros_like(self.coef_), np.zeros_like(self.intercept_))
        self._rng = _as_generator(self.random_state)

    def _run_sgd(self, X, y_encoded, sw, *, epochs, lr_schedule, train_index=None,
                 validation=None, early_stopping=False, on_epoch=None, score_train=False):
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
                    history=self.history_, velocity=self._velocity, score_train=score_train)

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
        self._check_feature_names(feature_names(X))
        X = self._prepare_features(X, dtype=self.coef_.dtype, n_features=self.n_features_in_)
        backend = get_backend_or_auto(getattr(self, "backend_", "auto"))
        scores = sgd.predict_scores(backend, X, self.coef_, self.intercept_,
                                    cap_threads(getattr(self, "n_threads_", None)))
        return scores.astype(np.float64, copy=False)

    def _check_feature_names(self, names):
        """A DataFrame's columns must be those the model was fitted on, in the same order; as
        scikit-learn does, a model fitted with names warns of X without them, and the
        reverse."""
        fitted = getattr(self, "feature_names_in_", None)
        if fitted is not None and names is not None and not np.array_equal(names, fitted):
            raise DataError(f"The feature names should match those that were passed during "
                            f"fit, in the same order: fitted on {plain(fitted)}, got "
                            f"{plain(names)}")
        if (fitted is None) != (names is None):
            import warnings
            message = ("X does not have valid feature names, but {} was fitted with feature "
                       "names" if names is None else
                       "X has feature names, but {} was fitted without feature names")
            warnings.warn(message.format(type(self).__name__), UserWarning, stacklevel=3)

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

    def save(self, path, dataset=None):
        """Write the model to ``path`` (.npz), atomically; see :mod:`fastlr.model_file`.

        ``dataset`` is the record of the training data set (:meth:`fastlr.data.Dataset.record`)
        to keep in the file; by default the one the model was loaded with, if any.

        Returns
        -------
        Path
        """
        if not self.__sklearn_is_fitted__():
            raise sklearn_compatible(NotFittedError)(
                "this SoftmaxRegression is not fitted yet; nothing to save")
        return model_file.write_model(
            path, coef=self.coef_, intercept=self.intercept_, classes=self.classes_,
            params=self.get_params(), backend=self.backend_, n_threads=self.n_threads_,
            history=self.history_, dataset=dataset or getattr(self, "dataset_", None))

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`, without unpickling anything.

        Raises
        ------
        ModelFileError
            If the file is missing, truncated, not a fastlr model, of a newer format, holds
            anything but plain arrays, or hyperparameters outside their constraints.
        """
        contents = model_file.read_model(path)
        model = cls(**{k: v for k, v in contents.params.items() if k in cls._PARAM_NAMES})
        model.coef_ = contents.coef
        model.intercept_ = contents.intercept
        model.classes_ = contents.classes
        model.n_features_in_ = int(contents.coef.shape[1])
        model.backend_ = contents.backend
        model.n_threads_ = contents.n_threads
        model.history_ = contents.history
        model.metadata_ = contents.metadata
        model.dataset_ = contents.dataset
        return model

    def _repr_html_(self):
        """How Jupyter shows the estimator: its hyperparameters (those set away from the
        defaults, in bold) and, once fitted, what it was fitted to."""
        import html

        defaults = type(self)().get_params()
        rows = []
        for name, value in self.get_params().items():
            text = html.escape(repr(value))
            if not (type(value) is type(defaults[name]) and value == defaults[name]):
                text = f"<b>{text}</b>"
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{text}</td></tr>")
        if self.__sklearn_is_fitted__():
            state = (f"fitted: {len(self.classes_)} classes, {self.n_features_in_} features, "
                     f"{len(self.history_)} epochs on the {self.backend_} backend")
        else:
            state = "not fitted"
        return (f'<div><p><code>SoftmaxRegression</code>, {html.escape(state)}</p>'
                f'<table style="font-family: monospace">{"".join(rows)}</table></div>')
