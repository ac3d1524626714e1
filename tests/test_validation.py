"""The parameter constraints: one rule, in the same words, from the estimator, the CLI and the
model loader; and the constraint types themselves."""

import json
from numbers import Real

import numpy as np
import pytest

from fastlr import DataError, ModelFileError, SoftmaxRegression
from fastlr.cli import main
from fastlr.errors import InvalidParameterError
from fastlr.validation import (PARAMETER_CONSTRAINTS, Interval, Options, check_features,
                               check_param)

X = np.arange(12, dtype=np.float64).reshape(6, 2)
Y = np.array([0, 1, 0, 1, 0, 1])


def saved_model_with(tmp_path, name, value):
    """A valid model file whose metadata says ``params[name] = value``."""
    path = tmp_path / "model.npz"
    SoftmaxRegression(epochs=1, backend="numpy").fit(X, Y).save(path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = dict(archive)
    metadata = json.loads(str(arrays["metadata"]))
    metadata["params"][name] = value
    arrays["metadata"] = np.array(json.dumps(metadata))
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("name,value,flag,text", [
    ("epochs", 0, "--epochs", "0"),
    ("epochs", -5, "--epochs", "-5"),
    ("batch_size", 0, "--batch-size", "0"),
    ("learning_rate", 0, "--lr", "0"),
    ("learning_rate", -1, "--lr", "-1"),
    ("learning_rate", float("inf"), "--lr", "inf"),
    ("momentum", 1, "--momentum", "1"),
    ("alpha", -0.5, "--l2", "-0.5"),
    ("n_threads", 0, "--threads", "0"),
    ("random_state", -1, "--seed", "-1"),
])
def test_estimator_cli_and_loader_give_the_same_rule(tmp_path, capsys, name, value, flag, text):
    with pytest.raises(InvalidParameterError) as from_estimator:
        SoftmaxRegression(**{name: value}).fit(X, Y)
    assert main(["train", flag, text]) == 2
    cli_line = capsys.readouterr().err.strip()
    assert f"argument {flag}: must be " in cli_line and f", got {text}" in cli_line
    rule = cli_line.split("must be ", 1)[1].split(", got")[0]
    assert str(from_estimator.value).startswith(f"{name} must be ")
    assert rule in str(from_estimator.value)
    with pytest.raises(ModelFileError) as from_loader:
        SoftmaxRegression.load(saved_model_with(tmp_path, name, value))
    assert f"{name} must be " in str(from_loader.value) and rule in str(from_loader.value)


@pytest.mark.parametrize("name,value", [("backend", "bogus"), ("lr_schedule", "cosine"),
                                        ("preprocessing", "blur"), ("early_stopping", "yes")])
def test_loader_refuses_choices_the_estimator_refuses(tmp_path, name, value):
    with pytest.raises(InvalidParameterError, match=f"{name} must be one of|{name} must be True"):
        SoftmaxRegression(**{name: value}).fit(X, Y)
    with pytest.raises(ModelFileError, match=f"{name} must be"):
        SoftmaxRegression.load(saved_model_with(tmp_path, name, value))


def test_every_estimator_parameter_has_a_constraint():
    assert set(SoftmaxRegression().get_params()) == set(PARAMETER_CONSTRAINTS)
    for name, value in SoftmaxRegression().get_params().items():
        check_param(name, value)


@pytest.mark.parametrize("value,accepted", [
    (1, True), (np.int64(3), True), (0, False), (True, False), (1.0, False), ("1", False)])
def test_whole_numbers_are_not_bools_or_floats(value, accepted):
    assert PARAMETER_CONSTRAINTS["epochs"][0].accepts(value) is accepted


@pytest.mark.parametrize("closed,low_in,high_in,text", [
    ("left", True, False, "a finite number in [0, 1)"),
    ("right", False, True, "a finite number in (0, 1]"),
    ("both", True, True, "a finite number in [0, 1]"),
    ("neither", False, False, "a finite number in (0, 1)"),
])
def test_interval_bounds_and_their_words(closed, low_in, high_in, text):
    interval = Interval(Real, 0, 1, closed=closed)
    assert interval.accepts(0) is low_in and interval.accepts(1) is high_in
    assert interval.accepts(0.5) and not interval.accepts(float("nan"))
    assert str(interval) == text


def test_options_compare_type_and_value():
    flags = Options(True, False)
    assert flags.accepts(False) and not flags.accepts(0)
    assert Options(None, "deskew").accepts(None) and not Options("a").accepts(None)
    assert Options(1, 2).accepts(2) and not Options(1, 2).accepts(True)


@pytest.mark.parametrize("bad,message", [(np.nan, "NaN"), (np.inf, "infinite"),
                                         (-np.inf, "infinite")])
def test_features_with_a_nan_or_an_infinity_are_refused(bad, message):
    X = np.ones((50, 7), np.float32)
    X[31, 4] = bad
    with pytest.raises(DataError, match=message):
        check_features(X)


def test_finite_features_whose_sum_overflows_are_accepted():
    X = np.full((4, 3), np.finfo(np.float32).max, np.float32)
    assert check_features(X) is not None
