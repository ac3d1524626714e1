"""Fuzzing the readers of untrusted files: IDX data, model files, .npy arrays.

Whatever the bytes, random or a valid file with flipped bits or cut short, a reader raises
DataError (IDX, .npy) or ModelFileError (model), never another exception, and returns promptly.
The coverage-guided harness (tests/fuzz_readers.py, atheris) runs for two minutes in the
extended tier; the regressions it found are pinned here.
"""

import gzip
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT

from fastlr import DataError, ModelFileError, SoftmaxRegression
from fastlr.data import parse_idx, read_idx

FUZZ = settings(max_examples=200,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def idx_bytes(array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big")
                                                    for n in array.shape)
    return header + array.tobytes()


VALID_IDX = idx_bytes(np.arange(60, dtype=np.uint8).reshape(3, 4, 5))
VALID_IDX_GZ = gzip.compress(VALID_IDX, mtime=0)


def model_bytes():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), np.arange(40) % 3
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(X, y)
    with tempfile.TemporaryDirectory() as directory:
        return model.save(Path(directory) / "valid.npz").read_bytes()


VALID_MODEL = model_bytes()


def mutations(valid):
    """Bit flips, byte overwrites, truncations and insertions of a valid file."""
    flips = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 7)),
                     min_size=1, max_size=8)
    overwrites = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)),
                          min_size=1, max_size=8)

    def flip(pairs):
        raw = bytearray(valid)
        for position, bit in pairs:
            raw[position] ^= 1 << bit
        return bytes(raw)

    def overwrite(pairs):
        raw = bytearray(valid)
        for position, value in pairs:
            raw[position] = value
        return bytes(raw)

    return st.one_of(
        flips.map(flip),
        overwrites.map(overwrite),
        st.integers(0, len(valid) - 1).map(lambda n: valid[:n]),
        st.tuples(st.integers(0, len(valid)), st.binary(min_size=1, max_size=64)).map(
            lambda t: valid[:t[0]] + t[1] + valid[t[0]:]),
    )


def check_idx(raw):
    try:
        array = parse_idx(raw, "fuzzed")
    except DataError:
        return
    assert array.dtype == np.uint8


@FUZZ
@given(st.binary(max_size=512))
def test_idx_reader_on_random_bytes(raw):
    check_idx(raw)
    check_idx(b"\x00\x00\x08" + raw)
    check_idx(gzip.compress(raw, mtime=0))


@FUZZ
@given(st.one_of(mutations(VALID_IDX), mutations(VALID_IDX_GZ)))
def test_idx_reader_on_mutated_files(raw):
    check_idx(raw)


def test_idx_header_declaring_huge_shape_is_refused_without_allocating():
    with pytest.raises(DataError, match="beyond the limit"):
        parse_idx(bytes([0, 0, 8, 3]) + b"\xff\xff\xff\xff" * 3 + b"\x00" * 10, "huge")
    # Found by atheris: an empty shape whose other sizes overflow made NumPy's reshape raise.
    with pytest.raises(DataError, match="beyond the limit"):
        parse_idx(bytes([0, 0, 8, 3]) + b"\x00" * 4 + b"\xff\xff\xff\xff" * 2, "empty")
    assert parse_idx(bytes([0, 0, 8, 3]) + b"\x00" * 4 + (28).to_bytes(4, "big") * 2).shape == (
        0, 28, 28)


@pytest.mark.parametrize("ndim", [0, 65, 122, 255])
def test_idx_header_declaring_more_dimensions_than_numpy_has_is_refused(ndim):
    # 122 dimensions of size 1 was found by atheris: NumPy's reshape raised ValueError.
    with pytest.raises(DataError, match=f"declares {ndim} dimensions"):
        parse_idx(bytes([0, 0, 8, ndim]) + (1).to_bytes(4, "big") * ndim + b"\x07", "many")


@FUZZ
@given(st.binary(max_size=512))
def test_read_idx_on_random_files(tmp_path, raw):
    path = tmp_path / "random-idx"
    path.write_bytes(raw)
    try:
        read_idx(path)
    except DataError:
        pass


def check_model(tmp_path, raw):
    path = tmp_path / "fuzzed.npz"
    path.write_bytes(raw)
    try:
        model = SoftmaxRegression.load(path)
    except ModelFileError:
        return
    # A mutation the reader accepted (e.g. in the metadata text) is still a usable model.
    proba = model.predict_proba(np.zeros((1, model.n_features_in_)))
    assert proba.shape == (1, len(model.classes_))


@FUZZ
@given(st.binary(max_size=1024))
def test_model_loader_on_random_bytes(tmp_path, raw):
    check_model(tmp_path, raw)
    check_model(tmp_path, b"PK\x03\x04" + raw)


@FUZZ
@given(mutations(VALID_MODEL))
def test_model_loader_on_mutated_files(tmp_path, raw):
    check_model(tmp_path, raw)


@FUZZ
@given(st.sampled_from(["coef", "intercept", "classes", "metadata"]),
       st.binary(max_size=256))
def test_model_loader_on_mutated_members(tmp_path, member, payload):
    """A well-formed zip whose member is garbage, or a .npy header with a random tail."""
    for content in (payload, b"\x93NUMPY\x01\x00" + payload):
        buffer = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(VALID_MODEL)) as source, \
                zipfile.ZipFile(buffer, "w") as target:
            for info in source.infolist():
                data = content if info.filename == member + ".npy" else source.read(info)
                target.writestr(info.filename, data)
        check_model(tmp_path, buffer.getvalue())


def test_npy_member_declaring_a_huge_shape_is_refused_unread(tmp_path):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }"
    member = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("coef.npy", member + b"\x00" * 64)
    (tmp_path / "huge.npz").write_bytes(buffer.getvalue())
    with pytest.raises(ModelFileError, match="truncated"):
        SoftmaxRegression.load(tmp_path / "huge.npz")


def npy_member_with_header(header):
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("header", [
    "{'descr': '<f8', 'fortran_order': False, 'shape': (3,\n",  # found by atheris: TokenError
    "{'descr': '<f8', 'fortran_order': False, 'shape': (3,)) }\n",
    # found by atheris: NumPy warns of a Python 2 header (3L) on stderr, then reads it
    "{'descr': '<f8', 'fortran_order': False, 'shape': (3L,), }\n",
])
def test_npy_member_with_a_broken_header_is_a_model_file_error(tmp_path, header):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("coef.npy", npy_member_with_header(header) + b"\x00" * 24)
    (tmp_path / "broken.npz").write_bytes(buffer.getvalue())
    with pytest.raises(ModelFileError, match="'coef.npy': a (broken .npy header|.npy header of "
                                             "Python 2)"):
        SoftmaxRegression.load(tmp_path / "broken.npz")


@pytest.mark.parametrize("descr", ["2f4", "(2,3)u1", "[('a', '<f4'), ('b', '<i2')]"])
def test_a_npy_of_records_or_sub_arrays_is_refused(tmp_path, descr):
    """Found by atheris: a .npy header of dtype '2f4' (elements that are arrays themselves)
    made the reshape of the payload raise ValueError."""
    from fastlr.images import read_inputs
    header = "{'descr': %s, 'fortran_order': False, 'shape': (3, 13), }" % (
        descr if descr.startswith("[") else repr(descr))
    path = tmp_path / "records.npy"
    path.write_bytes(npy_member_with_header(header.ljust(117) + "\n") + bytes(3 * 13 * 8))
    with pytest.raises(DataError, match="records or sub-arrays"):
        read_inputs(path, 16, (4, 4))


@pytest.mark.parametrize("shape", ["(-1, 16)", "(3, -16)", "(-9223372036854775808,)"])
def test_a_npy_of_negative_size_is_refused(tmp_path, shape):
    """Found by atheris: NumPy's header parser accepts a negative size, and the byte count of
    the shape, negative, reached bytearray()."""
    from fastlr.images import read_inputs
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % shape
    path = tmp_path / "negative.npy"
    path.write_bytes(npy_member_with_header(header.ljust(117) + "\n") + bytes(64))
    with pytest.raises(DataError, match="of a negative size"):
        read_inputs(path, 16, (4, 4))



def test_a_npy_with_a_deprecated_dtype_alias_is_judged_without_a_warning(tmp_path):
    """Found by atheris: NumPy parses the alias 'a4' (bytes, 'S4') with a DeprecationWarning,
    which a program that turns warnings into errors met as a crash. The header is read and
    the byte strings refused as images, with no warning on the way."""
    import warnings

    from fastlr.images import read_inputs
    header = "{'descr': '>a4', 'fortran_order': False, 'shape': (3, 16), }"
    path = tmp_path / "alias.npy"
    path.write_bytes(npy_member_with_header(header.ljust(117) + "\n") + bytes(3 * 16 * 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError):
            read_inputs(path, 16, (4, 4))

FUZZ_SECONDS = 120


@pytest.mark.extended
def test_the_readers_survive_coverage_guided_fuzzing(tmp_path):
    """tests/fuzz_readers.py under atheris for two minutes from its seed corpus, every target
    but the decoded-data cache: no input may make a reader raise anything but its one error."""
    pytest.importorskip("atheris")
    harness = ROOT / "tests" / "fuzz_readers.py"
    env = dict(os.environ, PYTHONPATH=str(ROOT),
               FASTLR_FUZZ_TARGETS="idx,model,image,npy,stream")
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, str(harness), "--seed-corpus", str(corpus)], env=env,
                   check=True, capture_output=True, timeout=300)
    result = subprocess.run([sys.executable, str(harness), str(corpus),
                             f"-max_total_time={FUZZ_SECONDS}", "-rss_limit_mb=2048",
                             "-timeout=30", f"-artifact_prefix={tmp_path}/"],
                            env=env, capture_output=True, text=True,
                            timeout=FUZZ_SECONDS + 300)
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-",
                                                                                "timeout-",
                                                                                "oom-")))
    assert result.returncode == 0 and not crashes, result.stderr[-3000:]
