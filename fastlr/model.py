"""SoftmaxRegression: a scikit-learn-style estimator around the SGD driver.

The estimator validates its input (:mod:`fastlr.validation`), hands the arrays to the driver
(:mod:`fastlr.sgd`) and predicts with the backend's kernels; its file format lives in
:mod:`fastlr.model_file`.
"""

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class _TrainingData:
    """What ``fit`` learns of its training data before training: the classes (C,), the
    number of features D, the float dtype, the DataFrame's column names (or None), and either
    a ready source (a cluster's, a stream) or the checked arrays (X, y_encoded, sample_weight)
    of data in memory."""

    classes: np.ndarray
    n_features: int
    dtype: np.dtype
    names: object
    source: object
    arrays: tuple


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
        The rate at the first step (the defaults were chosen on MNIST: docs/journal/).
    lr_schedule : {"linear", "constant"}, default "linear"
        ``linear`` decays the rate to 0 over the run. :meth:`partial_fit` always uses the
        constant rate ``learning_rate``.
    momentum : float, default 0.0
    alpha : float, default 0.0
        L2 penalty on the weights (not the bias).
    backend : {"auto", "numba", "cython", "numpy"}, default "auto"
    n_threads : int, optional
        Threads for the kernels, never more than the cores this process may use. Default:
        the cores other processes leave idle, one fewer from the step where the threads
        waited for each other because another process took a core (:mod:`fastlr.threads`).
        The thread count never changes the model.
    random_state : int, Generator or None, default 0
        Seeds the permutations (and the validation split). Same seed: bitwise the same
        model, on any number of threads.
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
    n_threads_ : int, the most threads a step of the training ran on
    thread_changes_ : list of dict, how many threads trained from which epoch and step, and
        why (:attr:`fastlr.threads.ThreadPlan.changes`); :func:`fastlr.threads.describe_changes`
        says it in words
    history_ : list of dict, one record per epoch (see :func:`fastlr.sgd.train`)
    n_iter_ : int, the epochs the model has trained (all calls of ``partial_fit`` counted)
    best_epoch_ : int or None, with ``early_stopping``: the epoch whose weights were kept
        when it stopped, None if it ran all ``epochs``
    validation_size_ : int, with ``early_stopping``: the samples held out to decide it
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
            score_train=False, eval_name="val"):
        """Train from scratch on X (N, D), y (N,).

        Parameters
        ----------
        X : array-like (N, D), numeric, finite; or :class:`fastlr.Pixels`; or a Dask array
            (or Pixels of one); or a :class:`fastlr.streaming.StreamingSource` (with y None)
        y : array-like (N,), any labels (numbers or strings) with at least two distinct values
        sample_weight : array-like (N,), optional, non-negative
            Scales each sample's loss. Minibatches are drawn from all samples, so a weight of
            2 is like a duplicate sample only on average, not step by step.
        eval_set : (X_eval, y_eval), optional
            Scored after every epoch; its loss and accuracy land in ``history_`` as
            ``{eval_name}_loss`` and ``{eval_name}_accuracy``.
        on_epoch : callable(record), optional
            Called after every epoch with its ``history_`` record (progress bars use it).
        score_train : bool, default False
            Also score the whole training set after every epoch (``end_train_loss`` and
            ``end_train_accuracy`` in ``history_``). Without it ``train_loss`` and
            ``train_accuracy`` are the running figures the kernel counts during the epoch,
            at no extra pass.
        eval_name : str, default "val"
            The name of ``eval_set`` in the history's columns (``train`` on the command line
            names the test set ``test``).

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
        Wherever the data lives, one engine trains on it (:func:`fastlr.sgd.train`); only the
        source of its minibatches differs. A Dask array trains on its Dask cluster, by
        synchronous model averaging over its row blocks (:mod:`fastlr.distributed`); a
        :class:`fastlr.streaming.StreamingSource` trains on data on disk, streamed a shuffle
        buffer at a time (:mod:`fastlr.streaming`).
        """
        self._check_hyperparameters()
        backend = get_backend(self.backend)
        data = self._training_data(X, y, sample_weight)
        if self.early_stopping:  # refused before the fitted model is reset
            self._validation_size(data.arrays[0].shape[0])
        evaluation = None
        if eval_set is not None and not self.early_stopping:
            X_eval, y_eval, _ = self._prepare(*eval_set, classes=data.classes,
                                              known_as="the training labels",
                                              dtype=data.dtype, n_features=data.n_features)
            evaluation = sgd.Evaluation(str(eval_name), X_eval, y_eval)
        self._initialize(data.classes, data.n_features, data.dtype, data.names)
        early_stopping = None
        if data.source is not None:  # a cluster's or a stream's
            source = data.source
            if hasattr(source, "start"):  # a cluster: one thread per task unless asked
                self.n_threads_ = int(self.n_threads or 1)
                source.start(backend.name, self._settings(cluster=True),
                             self._schedule(self.epochs),
                             self._state.rng.integers(2 ** 63))
        else:
            X, y_encoded, sw = data.arrays
            rows = None
            if self.early_stopping:
                rows, evaluation = self._hold_out(X, y_encoded)
                early_stopping = sgd.EarlyStopping(int(self.n_iter_no_change))
            source = sgd.ArraySource(backend, X, y_encoded, sw, self.coef_, self.intercept_,
                                     rows)
        outcome = self._train(backend, source, self._schedule(self.epochs), int(self.epochs),
                              evaluation=evaluation, early_stopping=early_stopping,
                              on_epoch=on_epoch, score_train=score_train)
        if early_stopping is not None:
            self.validation_size_ = len(evaluation.y)
            self.best_epoch_ = outcome.best_epoch
        return self

    def _training_data(self, X, y, sample_weight):
        """The training data of ``fit``, checked: a _TrainingData."""
        from . import distributed, streaming
        if distributed.is_dask_input(X):
            if self.early_stopping:
                raise DataError("early_stopping does not work on Dask arrays; pass eval_set "
                                "to follow the accuracy per round instead")
            source = distributed.DaskSource.from_arrays(X, y, sample_weight,
                                                        self.preprocessing)
            return _TrainingData(source.classes, source.n_features, source.dtype, None,
                                 source, None)
        if isinstance(X, streaming.StreamingSource):
            if y is not None or sample_weight is not None:
                raise DataError("a StreamingSource holds its own labels; pass y=None and no "
                                "sample_weight")
            if self.early_stopping:
                raise DataError("early_stopping does not work on a streamed data set; pass "
                                "eval_set to follow the accuracy per epoch instead")
            if self.preprocessing is not None:
                raise DataError(f"preprocessing={self.preprocessing!r} does not work on a "
                                f"streamed data set")
            return _TrainingData(X.classes, X.n_features, np.dtype(np.float32), None, X, None)
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
        return _TrainingData(classes, X.shape[1], X.dtype, names, None, (X, y_encoded, sw))

    def _validation_size(self, n_samples):
        """The samples early stopping holds out of ``n_samples``: ``validation_fraction`` of
        them, at least one, and fewer than all."""
        n_val = max(1, int(round(self.validation_fraction * n_samples)))
        if n_val >= n_samples:
            raise DataError("too few samples to hold out a validation set")
        return n_val

    def _hold_out(self, X, y_encoded):
        """The rows to train on and the validation :class:`~fastlr.sgd.Evaluation` of early
        stopping: ``validation_fraction`` of the samples, drawn from the model's generator."""
        order = self._state.rng.permutation(X.shape[0])
        n_val = self._validation_size(X.shape[0])
        val_index = np.sort(order[:n_val])
        rows = np.sort(order[n_val:]).astype(np.int64)
        return rows, sgd.Evaluation("val", X[val_index], y_encoded[val_index])

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
            if not hasattr(self, "_state"):  # a loaded model: fresh momentum and shuffling
                self._state = sgd.TrainingState(
                    self.coef_, self.intercept_, np.zeros_like(self.coef_),
                    np.zeros_like(self.intercept_), _as_generator(self.random_state),
                    self.history_)
            self.backend_ = get_backend(self.backend).name
            self.n_threads_ = cap_threads(self.n_threads)
        backend = get_backend(self.backend_)
        source = sgd.ArraySource(backend, X, y_encoded, sw, self.coef_, self.intercept_)
        first = len(self.history_)
        self._train(backend, source, sgd.Schedule("constant", self.learning_rate, 1),
                    first + 1, first_epoch=first)
        return self

    def _initialize(self, classes, n_features, dtype, names=None):
        """Fresh zero weights, momentum, history and generator for C classes and D features
        (named ``names`` (D,), when X was a DataFrame)."""
        backend = get_backend(self.backend)
        if names is None:
            self.__dict__.pop("feature_names_in_", None)
        else:
            self.feature_names_in_ = names
        for fitted in ("validation_size_", "best_epoch_", "thread_changes_"):
            self.__dict__.pop(fitted, None)
        self.classes_ = classes
        self.n_features_in_ = int(n_features)
        self.backend_ = backend.name
        self.n_threads_ = cap_threads(self.n_threads)
        self._state = sgd.TrainingState.zeros(len(classes), n_features, dtype,
                                              _as_generator(self.random_state))
        self.coef_ = self._state.W
        self.intercept_ = self._state.b
        self.history_ = self._state.history
        self.n_iter_ = 0

    def _schedule(self, epochs):
        return sgd.Schedule(self.lr_schedule, self.learning_rate, epochs)

    def _settings(self, cluster=False):
        """The engine's StepSettings: the threads asked for or, by default, the cores this
        process may use, fewer while other processes take them; on a cluster's workers one
        thread per task unless asked."""
        if cluster:
            return sgd.StepSettings(int(self.batch_size), float(self.momentum),
                                    float(self.alpha), int(self.n_threads or 1))
        return sgd.StepSettings(int(self.batch_size), float(self.momentum), float(self.alpha),
                                cap_threads(self.n_threads),
                                adapt_threads=self.n_threads is None)

    def _train(self, backend, source, schedule, epochs, first_epoch=0, **options):
        """Run the engine on ``source`` for epochs ``first_epoch .. epochs - 1``; n_iter_
        counts the epochs the model has trained."""
        on_epoch = options.pop("on_epoch", None)
        if self.verbose:
            user_callback = on_epoch

            def on_epoch(record):
                self._print_epoch(record)
                if user_callback is not None:
                    user_callback(record)

        try:
            return sgd.train(backend, source, self._state, schedule, self._settings(),
                             epochs=epochs, first_epoch=first_epoch, on_epoch=on_epoch,
                             **options)
        finally:
            self.n_iter_ = len(self.history_)
            plan = self._state.threads
            if plan is not None and plan.used is not None:
                self.n_threads_ = plan.used
                self.thread_changes_ = [dict(change) for change in plan.changes]

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

    def _fitted_classes(self):
        """``classes_``, or NotFittedError before any fit."""
        if not self.__sklearn_is_fitted__():
            raise sklearn_compatible(NotFittedError)(
                "this SoftmaxRegression is not fitted yet; call fit (or partial_fit) first")
        return self.classes_

    def _score_blocks(self, X):
        """N and the scores ``X W^T + b`` of X block by block, (start, stop, scores
        (stop - start, C) float64): O(block x C) memory at any N
        (:func:`fastlr.sgd.score_blocks`)."""
        self._fitted_classes()
        self._check_feature_names(feature_names(X))
        X = self._prepare_features(X, dtype=self.coef_.dtype, n_features=self.n_features_in_)
        backend = get_backend_or_auto(getattr(self, "backend_", "auto"))
        return X.shape[0], sgd.score_blocks(backend, X, self.coef_, self.intercept_,
                                            cap_threads(getattr(self, "n_threads_", None)))

    def _per_row(self, X, width, per_block, dtype=np.float64):
        """``per_block(scores)`` of every block of X's scores, gathered into an (N,) array
        (``width`` None) or an (N, width) one."""
        n, blocks = self._score_blocks(X)
        out = np.empty((n,) if width is None else (n, width), dtype=dtype)
        for start, stop, scores in blocks:
            out[start:stop] = per_block(scores)
        return out

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
        n_classes = len(self._fitted_classes())
        if n_classes == 2:
            return self._per_row(X, None, lambda scores: scores[:, 1] - scores[:, 0])
        return self._per_row(X, n_classes, lambda scores: scores)

    def predict_log_proba(self, X):
        """Log class probabilities (N, C), columns in the order of ``classes_``."""
        return self._per_row(X, len(self._fitted_classes()),
                             lambda z: z - reference.log_sum_exp(z)[:, None])

    def predict_proba(self, X):
        """Class probabilities (N, C), columns in the order of ``classes_``."""
        return self._per_row(X, len(self._fitted_classes()), reference.softmax)

    def predict(self, X):
        """The most probable label of each row of X."""
        index = self._per_row(X, None, lambda scores: np.argmax(scores, axis=1), np.int64)
        return self._fitted_classes()[index]

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
            thread_changes=getattr(self, "thread_changes_", None),
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
        if contents.thread_changes is not None:
            model.thread_changes_ = contents.thread_changes
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
