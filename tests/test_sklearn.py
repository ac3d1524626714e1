"""scikit-learn compatibility: the estimator checks, Pipeline, GridSearchCV, clone, pickle.

scikit-learn is a development dependency only; these tests are skipped without it.
"""

import pickle
import warnings

import numpy as np
import pytest

from fastlr import SoftmaxRegression

pytest.importorskip("sklearn")

from sklearn.base import clone, is_classifier  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

# The one check an SGD estimator cannot pass, with the reason; scikit-learn declares the same
# for its own SGDClassifier. (Its sparse twin does not run: sparse input is not supported.)
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "minibatch SGD: a weight of 2 equals a duplicated sample only on average, since "
        "removing or repeating samples changes which samples share a minibatch"),
}


with warnings.catch_warnings():
    # SoftmaxRegression implements the protocol without inheriting BaseEstimator, on purpose
    # (see its docstring); scikit-learn warns about that when it collects the checks.
    warnings.filterwarnings("ignore", message=".*does not inherit from")
    estimator_checks = parametrize_with_checks(
        [SoftmaxRegression()],
        expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS)


@estimator_checks
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def blobs(n=240, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(c, d))
    y = rng.integers(0, c, n)
    return centers[y] + rng.normal(size=(n, d)), y


def test_pipeline_and_grid_search():
    X, y = blobs()
    labels = np.array(["ant", "bee", "cow"])[y]
    pipeline = make_pipeline(StandardScaler(), SoftmaxRegression(epochs=5, backend="numpy"))
    search = GridSearchCV(pipeline, {"softmaxregression__learning_rate": [0.1, 1.0]}, cv=3)
    search.fit(X, labels)
    assert search.best_params_["softmaxregression__learning_rate"] in (0.1, 1.0)
    assert search.score(X, labels) > 0.9
    assert set(search.predict(X)) <= {"ant", "bee", "cow"}
    assert is_classifier(SoftmaxRegression())


def test_clone_and_pickle_round_trip():
    X, y = blobs()
    model = SoftmaxRegression(epochs=3, learning_rate=0.5, backend="numpy").fit(X, y)
    fresh = clone(model)
    assert fresh.get_params() == model.get_params() and not hasattr(fresh, "coef_")
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))


def test_not_fitted_error_is_sklearns_too():
    with pytest.raises(NotFittedError, match="not fitted"):
        SoftmaxRegression().predict(np.zeros((1, 3)))


def test_binary_decision_function_is_log_odds():
    X, y = blobs(c=2)
    labels = np.array([3, 17])[y]
    model = SoftmaxRegression(epochs=3, backend="numpy").fit(X, labels)
    decision = model.decision_function(X)
    assert decision.shape == (len(X),)
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-decision)), rtol=1e-6)
    np.testing.assert_array_equal(model.predict(X), np.where(decision > 0, 17, 3))
