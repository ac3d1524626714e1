"""The study: figures (their panels), the pairwise separability against a pair-by-pair
brute force, the report, history files and the plot/explain commands."""

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

from fastlr import DataError, SoftmaxRegression, load_mnist
from fastlr import plots
from fastlr.explain import (confusion_matrix, explain, first_epoch_captions,
                            first_epoch_weights, most_confused, pairwise_separability,
                            template_correlations)
from fastlr.history import write_history

MNIST_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"


def naive_accuracy(W, b, classes, X, y):
    """Accuracy of the linear model (W, b), one image at a time."""
    correct = 0
    for x, label in zip(X.astype(np.float64), y):
        scores = [float(np.dot(W[k], x) + b[k]) for k in range(len(classes))]
        correct += classes[int(np.argmax(scores))] == label
    return correct / len(y)


@pytest.fixture(scope="module")
def small_mnist():
    """800 training and 300 test images of the digits 0-9 (and a model fit on them)."""
    X_train, y_train, X_test, y_test = load_mnist(MNIST_DIR)
    X_train, y_train, X_test, y_test = X_train[:800], y_train[:800], X_test[:300], y_test[:300]
    model = SoftmaxRegression(epochs=3, batch_size=32, backend="numpy").fit(
        X_train, y_train, eval_set=(X_test, y_test), eval_name="test")
    return X_train, y_train, X_test, y_test, model


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


# --- figures -------------------------------------------------------------------------------------

def test_weights_figure_has_one_panel_per_class_and_a_colorbar(small_mnist):
    model = small_mnist[4]
    fig = plots.weights_figure(model.coef_, model.classes_)
    panels = image_axes(fig)
    assert len(panels) == 10 and len(fig.axes) == 11
    assert [ax.get_title() for ax in panels] == [str(c) for c in range(10)]
    for ax in panels:
        assert not ax.axison
        low, high = ax.images[0].get_clim()
        assert low == -high and ax.images[0].get_cmap().name == "RdBu"


def test_weights_figure_shows_the_first_epoch_above_the_final_weights(small_mnist):
    X_train, y_train, X_test, y_test, model = small_mnist
    coef, intercept = first_epoch_weights(model, X_train, y_train)
    captions = first_epoch_captions(model, coef, intercept, X_test, y_test)
    assert captions[0].startswith("after the first epoch: ")
    assert captions[0].endswith("% of the test images")
    assert captions[1] == f"the final weights: {100 * model.score(X_test, y_test):.2f}%"
    fig = plots.weights_figure(model.coef_, model.classes_, first_epoch=(coef, *captions))
    panels = image_axes(fig)
    assert len(panels) == 20 and len(fig.axes) == 22  # two rows of ten, a colorbar each
    np.testing.assert_array_equal(panels[0].images[0].get_array().ravel(), coef[0])
    np.testing.assert_array_equal(panels[10].images[0].get_array().ravel(), model.coef_[0])
    assert [t.get_text() for ax in panels for t in ax.texts] == list(captions)


def test_the_replayed_first_epoch_is_the_models_own(small_mnist):
    """Same settings, seed and backend: the replay of a one-epoch model is that model, bitwise,
    and a longer model's replay is what its own first epoch left."""
    X_train, y_train, _, _, model = small_mnist
    one = SoftmaxRegression(**dict(model.get_params(), epochs=1)).fit(X_train, y_train)
    coef, intercept = first_epoch_weights(one, X_train, y_train)
    np.testing.assert_array_equal(coef, one.coef_)
    np.testing.assert_array_equal(intercept, one.intercept_)
    seen = []
    again = SoftmaxRegression(**model.get_params())
    again.fit(X_train, y_train, on_epoch=lambda record: seen.append(again.coef_.copy()))
    np.testing.assert_array_equal(again.coef_, model.coef_)
    np.testing.assert_array_equal(first_epoch_weights(model, X_train, y_train)[0], seen[0])
    assert not np.array_equal(seen[0], model.coef_)


def test_curves_figure_plots_train_and_eval(small_mnist):
    history = small_mnist[4].history_
    fig = plots.curves_figure(history)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert [line.get_label() for line in ax.get_lines()] == ["train", "test"]
        assert len(ax.get_lines()[0].get_xdata()) == len(history)
    without_eval = [{k: v for k, v in r.items() if not k.startswith("test_")} for r in history]
    assert all(len(ax.get_lines()) == 1 for ax in plots.curves_figure(without_eval).axes)


def test_other_figures_have_their_panels(small_mnist):
    X_train, y_train, _, _, model = small_mnist
    counts = np.arange(100).reshape(10, 10)
    assert len(image_axes(plots.confusion_figure(counts, range(10)))) == 2
    rows = [("true 4\npredicted 9", X_train[:3], np.array([0.9, 0.8, 0.7])),
            ("true 3\npredicted 5", X_train[3:8], np.full(5, 0.6))]
    gallery = plots.gallery_figure(rows, 6)
    assert len(gallery.axes) == 12 and len(image_axes(gallery)) == 8
    means = np.stack([X_train[y_train == c].mean(axis=0) for c in range(10)])
    templates = plots.templates_figure(means, X_train.mean(axis=0), model.coef_, range(10),
                                       np.zeros(10))
    assert len(image_axes(templates)) == 30
    accuracy = np.full((10, 10), 0.99)
    np.fill_diagonal(accuracy, np.nan)
    assert len(image_axes(plots.pairwise_figure(accuracy, accuracy, range(10)))) == 2


# --- the numbers ---------------------------------------------------------------------------------

def test_pairwise_separability_matches_training_each_pair_by_hand(small_mnist):
    X_train, y_train, X_test, y_test, _ = small_mnist
    keep = np.isin(y_train, [1, 4, 7, 9])
    keep_test = np.isin(y_test, [1, 4, 7, 9])
    result = pairwise_separability(X_train[keep], y_train[keep], X_test[keep_test],
                                   y_test[keep_test], epochs=2, batch_size=16,
                                   learning_rate=0.5, backend="numpy", random_state=3)
    assert result["classes"].tolist() == [1, 4, 7, 9]
    for i, j in combinations(range(4), 2):
        pair = [result["classes"][i], result["classes"][j]]
        train = np.isin(y_train, pair)
        test = np.isin(y_test, pair)
        model = SoftmaxRegression(epochs=2, batch_size=16, learning_rate=0.5,
                                  backend="numpy", random_state=3).fit(X_train[train],
                                                                       y_train[train])
        assert result["train_accuracy"][i, j] == pytest.approx(
            naive_accuracy(model.coef_, model.intercept_, model.classes_, X_train[train],
                           y_train[train]))
        assert result["test_accuracy"][j, i] == pytest.approx(
            naive_accuracy(model.coef_, model.intercept_, model.classes_, X_test[test],
                           y_test[test]))
    assert np.isnan(np.diag(result["train_accuracy"])).all()
    np.testing.assert_array_equal(result["train_accuracy"], result["train_accuracy"].T)


def test_confusion_matrix_and_correlations_against_loops():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    expected = np.zeros((4, 4), dtype=int)
    for t, p in zip(y_true, y_pred):
        expected[t, p] += 1
    counts = confusion_matrix(y_true, y_pred, np.arange(4))
    np.testing.assert_array_equal(counts, expected)
    top = most_confused(counts, 3)
    off = sorted(((expected[i, j], i, j) for i in range(4) for j in range(4) if i != j),
                 key=lambda c: (-c[0], c[1], c[2]))
    assert top == [(i, j, n) for n, i, j in off[:3]]

    coef, means, overall = rng.normal(size=(3, 16)), rng.random((3, 16)), rng.random(16)
    expected_r = [np.corrcoef(coef[k], means[k] - overall)[0, 1] for k in range(3)]
    np.testing.assert_allclose(template_correlations(coef, means, overall), expected_r)


def test_explain_writes_the_report_and_its_figures(small_mnist, tmp_path):
    X_train, y_train, X_test, y_test, model = small_mnist
    numbers = explain(model, X_train, y_train, X_test, y_test, tmp_path / "report",
                      pair_epochs=1, backend="numpy")
    report = (tmp_path / "report" / "report.md").read_text()
    for name in ("weights", "templates", "confusion", "misclassified", "pairwise"):
        path = numbers["files"][name]
        assert path.parent == tmp_path / "report" and path.stat().st_size > 1000
        assert f"]({path.name})" in report
    n99 = int(np.sum(np.triu(numbers["pairwise"]["train_accuracy"] >= 0.99, 1)))
    assert f"separates {n99} of the 45 pairs" in numbers["paragraph"]
    assert numbers["paragraph"] in report
    assert numbers["test_accuracy"] == pytest.approx(model.score(X_test, y_test))


# --- history files and the commands --------------------------------------------------------------

def test_history_files(tmp_path, small_mnist):
    history = small_mnist[4].history_
    write_history(tmp_path / "h.json", history)
    assert json.loads((tmp_path / "h.json").read_text()) == history
    write_history(tmp_path / "h.csv", history)
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert lines[0].split(",")[:5] == ["epoch", "train_loss", "train_accuracy", "test_loss",
                                       "test_accuracy"]
    assert len(lines) == len(history) + 1
    with pytest.raises(DataError, match=".csv or .json"):
        write_history(tmp_path / "h.txt", history)


def test_plot_commands(small_mnist, tmp_path):
    path = small_mnist[4].save(tmp_path / "model.npz")
    for figure in ("weights", "curves"):
        out = tmp_path / "figures" / f"{figure}.png"
        result = run_cli("plot", figure, str(path), "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert out.stat().st_size > 1000
        if figure == "weights":  # the model file names no data set to replay on
            assert "the final weights only" in result.stdout
    assert_one_line_error(run_cli("plot"), "weights or curves")
    assert_one_line_error(run_cli("plot", "weights", str(tmp_path / "none.npz")), "none.npz")
    assert_one_line_error(run_cli("train", "--history", str(tmp_path / "h.txt")),
                          ".csv or .json")
