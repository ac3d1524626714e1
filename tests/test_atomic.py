"""The atomic writer: a file fastlr writes is the complete new file or the untouched old one."""

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import ROOT

from fastlr import SoftmaxRegression, WriteError, atomic, model_file
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


# --- the writer behaves like cp: modes, symlinks, devices, long names --------------------------

@pytest.fixture(params=[True, False], ids=["O_TMPFILE", "named temporary"])
def either_scheme(request, monkeypatch):
    """Each test runs with the unnamed temporary file and with the named fallback."""
    if request.param and not atomic.USE_O_TMPFILE:
        pytest.skip("no O_TMPFILE here")
    monkeypatch.setattr(atomic, "USE_O_TMPFILE", request.param)


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_the_mode_the_umask_allows(tmp_path, either_scheme, mask, mode):
    with umask(mask):
        atomic.write_bytes(tmp_path / "new.bin", b"new")
        fitted().save(tmp_path / "model.npz")
        write_history(tmp_path / "history.csv", [{"epoch": 1, "train_loss": 0.5}])
    for name in ("new.bin", "model.npz", "history.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_a_replaced_file_keeps_its_mode(tmp_path, either_scheme):
    path = tmp_path / "shared.txt"
    path.write_text("old")
    path.chmod(0o640)
    with umask(0o077):
        atomic.write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_symlink_is_replaced_and_its_target_left_alone(tmp_path, either_scheme):
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    link = tmp_path / "link.txt"
    link.symlink_to(target.name)
    atomic.write_text(link, "new")
    assert not link.is_symlink() and link.read_text() == "new"
    assert target.read_text() == "precious"
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to("nowhere")
    atomic.write_text(dangling, "new")
    assert not dangling.is_symlink() and dangling.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.txt", "link.txt",
                                                          "precious.txt"]


def test_names_up_to_the_file_systems_limit_work(tmp_path, either_scheme):
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    for name in ("m" * (name_max - 4) + ".npz", "é" * ((name_max - 4) // 2) + ".npz"):
        fitted().save(tmp_path / name)
        fitted().save(tmp_path / name)  # over an existing file: the temporary name is needed
        assert SoftmaxRegression.load(tmp_path / name).coef_.shape == (2, 2)
    assert len(list(tmp_path.iterdir())) == 2
    with pytest.raises(WriteError, match="File name too long"):
        atomic.write_bytes(tmp_path / ("m" * (name_max + 1)), b"x")


def test_a_character_device_is_written_through_not_replaced(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    fitted().save(null)
    assert stat.S_ISCHR(null.stat().st_mode)
    link = tmp_path / "stdout-like"
    link.symlink_to(null)
    atomic.write_text(link, "through the link to a device")
    assert link.is_symlink() and stat.S_ISCHR(null.stat().st_mode)


def test_a_fifo_is_written_through_and_one_without_a_reader_is_an_error(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(WriteError, match="no process reads"):
        atomic.write_bytes(fifo, b"x")
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    for _ in range(200):  # until the reader has the pipe open
        try:
            atomic.write_bytes(fifo, b"through the pipe")
            break
        except WriteError:
            time.sleep(0.01)
    reader.join(10)
    assert received == [b"through the pipe"] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to("dir")
    for name in ("dir", "link"):
        with pytest.raises(WriteError, match="Is a directory"):
            atomic.write_bytes(tmp_path / name, b"x")
    assert (tmp_path / "link").is_symlink()


# --- SIGTERM or SIGKILL at any moment: the old file or the new one, no temporary that stays ---

WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from fastlr import atomic
atomic.USE_O_TMPFILE = {use_tmpfile!r}
path, size = sys.argv[1], 1 << 20
print("ready", flush=True)
for generation in range(10**9):
    with atomic.atomic_write(path) as fh:
        for _ in range(16):  # in pieces, so a signal can land mid-write
            fh.write(bytes([generation % 251]) * (size // 16))
"""


def killed_writer(tmp_path, use_tmpfile, signal_number, delay):
    path = tmp_path / "victim.bin"
    script = WRITER.format(root=str(ROOT), use_tmpfile=use_tmpfile)
    process = subprocess.Popen([sys.executable, "-c", script, str(path)],
                               stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"ready\n"
    time.sleep(delay)
    process.send_signal(signal_number)
    process.wait(30)
    process.stdout.close()
    return path


@pytest.mark.parametrize("use_tmpfile", [True, False], ids=["O_TMPFILE", "named temporary"])
@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGTERM],
                         ids=["SIGKILL", "SIGTERM"])
def test_a_killed_writer_leaves_a_whole_file_and_the_next_write_no_temporary(
        tmp_path, use_tmpfile, signal_number):
    if use_tmpfile and not atomic.USE_O_TMPFILE:
        pytest.skip("no O_TMPFILE here")
    for delay in np.random.default_rng(signal_number).uniform(0.05, 0.4, 6):
        path = killed_writer(tmp_path, use_tmpfile, signal_number, delay)
        raw = path.read_bytes() if path.exists() else None
        if raw is not None:  # the old file (the last round's "after", on a slow machine,
            # when the writer was killed before its first rename) or a whole generation's
            assert raw == b"after" or (len(raw) == 1 << 20 and raw == raw[:1] * len(raw))
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != "victim.bin"]
        # An unnamed file has a name only between its link and its rename: a kill in that
        # window (microseconds, unless the process is descheduled there) can leave one.
        assert len(leftovers) <= 1
        atomic.write_bytes(path, b"after")
        assert [p.name for p in tmp_path.iterdir()] == ["victim.bin"]


def test_the_next_write_spares_a_temporary_a_live_writer_holds(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "USE_O_TMPFILE", False)
    path = tmp_path / "out.bin"
    with atomic.atomic_write(path) as fh:
        fh.write(b"slow writer")
        atomic.write_bytes(path, b"fast writer")  # a second writer meanwhile
        assert len([p for p in tmp_path.iterdir() if p.name.endswith(".part")]) == 1
    assert path.read_bytes() == b"slow writer"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


# --- every file through the one writer: no other way to write in the package --------------------

def _writes_outside_the_writer(path):
    """The lines of the module at ``path`` that write a file other than through
    ``fastlr.atomic``: open() for writing, Path.write_text / write_bytes, os.open with a
    writing flag, and np.save* or savefig into anything but the writer's handle or a buffer."""
    import ast
    tree = ast.parse(path.read_text(), str(path))
    handles = set()  # names bound by `with atomic_write(...) as NAME` or `NAME = io.BytesIO()`
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if (isinstance(call, ast.Call) and "atomic_write" in ast.unparse(call.func)
                        and isinstance(item.optional_vars, ast.Name)):
                    handles.add(item.optional_vars.id)
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and ast.unparse(node.value.func) in ("io.BytesIO", "io.StringIO")):
            handles.update(t.id for t in node.targets if isinstance(t, ast.Name))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        text = ast.unparse(node)
        first = ast.unparse(node.args[0]) if node.args else ""
        if first == "os.devnull":  # not a file: where a closed stream's writes go
            continue
        if func == "open" and len(node.args) > 1 and any(
                c in ast.unparse(node.args[1]) for c in "wax+"):
            found.append(text)
        elif func.endswith((".write_text", ".write_bytes")) and not func.startswith("atomic."):
            found.append(text)
        elif func == "os.open" and any(flag in text for flag in ("O_WRONLY", "O_RDWR", "O_CREAT")):
            found.append(text)
        elif (func.endswith(("np.save", "np.savez", "np.savez_compressed", ".savefig"))
              and first not in handles):
            found.append(text)
    return found


def test_no_module_writes_a_file_but_through_the_writer():
    package = ROOT / "fastlr"
    offenders = {str(path.relative_to(ROOT)): found
                 for path in sorted(package.rglob("*.py")) if path.name != "atomic.py"
                 for found in [_writes_outside_the_writer(path)] if found}
    assert offenders == {}
