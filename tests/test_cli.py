"""The command line, run as a user runs it: in a subprocess, reading stdout, stderr and the exit
code."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, env=None):
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "fastlr", *args], capture_output=True,
                          text=True, env=full_env, cwd=ROOT, timeout=600)


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_train_one_epoch_json(tmp_path):
    out = tmp_path / "model.npz"
    result = run_cli("train", "--epochs", "1", "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("test_accuracy", "train_accuracy", "train_time_s", "epochs", "batch_size",
                "backend", "threads"):
        assert key in summary
    assert summary["epochs"] == 1 and summary["batch_size"] == 64
    assert summary["test_accuracy"] >= 0.90
    assert out.is_file()

    evaluated = run_cli("evaluate", str(out), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert sorted(result["per_class_accuracy"]) == [str(d) for d in range(10)]


def test_train_prints_a_summary():
    result = run_cli("train", "--epochs", "1", "--backend", "numpy", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "backend         numpy" in result.stdout


def test_bad_data_dir_is_one_line_without_traceback(tmp_path):
    assert_one_line_error(run_cli("train", "--data-dir", str(tmp_path / "nowhere")),
                          "nowhere")
    assert_one_line_error(run_cli("train", "--data-dir", str(tmp_path)),
                          "missing", "train-images-idx3-ubyte")


@pytest.mark.parametrize("args,fragment", [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--batch-size", "many"], "--batch-size"),
    (["train", "--backend", "gpu"], "--backend"),
    (["evaluate", "missing-model.npz"], "missing-model.npz"),
    (["frobnicate"], "frobnicate"),
])
def test_user_errors_are_one_line(args, fragment):
    assert_one_line_error(run_cli(*args), fragment)


def test_info_lists_backends():
    result = run_cli("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert "numpy" in info["backends"] and info["cores"] >= 1
