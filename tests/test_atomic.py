"""The atomic writer: a file fastlr writes is the complete new file or the untouched old one."""

import json

import numpy as np
import pytest

from fastlr import SoftmaxRegression, atomic, model_file
from fastlr.history import write_history


def test_success_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    atomic.write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    atomic.write_text(tmp_path / "sub" / "out.txt", "line\n")
    assert (tmp_path / "sub" / "out.txt").read_text() == "line\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out.bin", "out.txt", "sub"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, OSError])
def test_an_error_mid_write_keeps_the_old_file_and_no_temporary(tmp_path, error):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old contents")
    with pytest.raises(error):
        with atomic.atomic_write(path) as fh:
            fh.write(b"half of the new")
            raise error("the disk is full")
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_an_error_before_the_first_write_creates_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic.atomic_write(tmp_path / "new.txt", "w"):
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_read_modes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="writing only"):
        with atomic.atomic_write(tmp_path / "x", "rb"):
            pass


def fitted():
    X = np.arange(12, dtype=np.float64).reshape(6, 2)
    return SoftmaxRegression(epochs=1, backend="numpy").fit(X, [0, 1, 0, 1, 0, 1])


def test_a_failed_model_save_keeps_the_old_model(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    fitted().save(path)
    before = path.read_bytes()

    def savez_then_interrupt(fh, **arrays):
        fh.write(b"PK\x03\x04 the start of a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(model_file.np, "savez", savez_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fitted().save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_a_failed_history_write_keeps_the_old_history(tmp_path, monkeypatch):
    path = tmp_path / "history.json"
    write_history(path, [{"epoch": 1, "train_loss": 0.5}])
    before = path.read_text()

    def full_disk(fd):  # a full disk often shows only when the data is flushed to it
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(OSError):
        write_history(path, [{"epoch": 1, "train_loss": 0.25}])
    assert path.read_text() == before and json.loads(before)[0]["train_loss"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]
