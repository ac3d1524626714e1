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
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
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
    rates = [1e-4, 1.0]

    def pipeline(**params):
        return make_pipeline(StandardScaler(), SoftmaxRegression(epochs=1, backend="numpy",
                                                                 **params))

    search = GridSearchCV(pipeline(), {"softmaxregression__learning_rate": rates}, cv=3,
                          scoring="neg_log_loss")
    search.fit(X, labels)
    # The grid's parameter reaches the estimator inside the pipeline: each rate scores as a
    # pipeline built with that rate by hand, and the two rates score differently (a rate of
    # 1e-4 leaves the probabilities near 1/3 each).
    by_hand = [cross_val_score(pipeline(learning_rate=rate), X, labels, cv=3,
                               scoring="neg_log_loss").mean() for rate in rates]
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], by_hand)
    assert by_hand[1] > by_hand[0] + 0.1
    assert search.best_params_ == {"softmaxregression__learning_rate": 1.0}
    assert (search.predict(X) == labels).mean() > 0.9
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


def test_feature_names_are_checked_as_scikit_learn_checks_them():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((40, 3)), columns=["a", "b", "c"])
    y = np.arange(40) % 2
    named = SoftmaxRegression(epochs=1, backend="numpy").fit(X, y)
    with pytest.raises(ValueError, match="feature names should match"):
        named.predict(X.rename(columns={"a": "z"}))
    with pytest.warns(UserWarning, match="X does not have valid feature names, but "
                                         "SoftmaxRegression was fitted with feature names"):
        named.predict(X.to_numpy())
    unnamed = SoftmaxRegression(epochs=1, backend="numpy").fit(X.to_numpy(), y)
    with pytest.warns(UserWarning, match="X has feature names, but SoftmaxRegression was "
                                         "fitted without feature names"):
        unnamed.predict(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        named.predict(X)
        unnamed.predict(X.to_numpy())


def test_jupyter_shows_the_parameters_and_what_was_fitted():
    model = SoftmaxRegression(epochs=2, lr_schedule="constant", backend="numpy")
    text = model._repr_html_()
    assert "not fitted" in text and "<b>2</b>" in text and "<b>&#x27;constant&#x27;</b>" in text
    assert "<td>batch_size</td><td>64</td>" in text  # a default, not in bold
    model.fit(np.random.default_rng(0).random((30, 4)), np.arange(30) % 3)
    assert "fitted: 3 classes, 4 features, 2 epochs on the numpy backend" in model._repr_html_()
