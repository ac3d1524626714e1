"""Coverage-guided fuzzing of the readers of untrusted files, with atheris (libFuzzer).

Targets, picked by the first byte of each input:

- ``idx``: the IDX reader (``parse_idx``);
- ``model``: the model loader (``SoftmaxRegression.load``: the zip archive, its ``.npy``
  members, the metadata);
- ``image``: the image reader (``read_image``);
- ``npy``: ``predict``'s reader of an input file (``read_inputs``: ``.npy`` arrays through the
  bounded reader, or IDX, or an image, by content);
- ``stream``: a per-class ``.npy`` file opened for streaming and read by rows (``RowFile``);
- ``cache``: the decoded-data cache: a cache file of the fuzzed bytes, under the name a source
  file's cached copy has, read back through ``_read_decoded``.

Whatever the bytes, a reader must return or raise its one error class (DataError;
ModelFileError for models); any other exception is a finding, and libFuzzer stops and writes
the input that caused it. A model the loader accepts must also predict; the cache must give
the source's own array, whatever its cache file holds.

Run it (not part of the pytest suite; ``pip install -e ".[fuzz]"``), all targets or those in
``FASTLR_FUZZ_TARGETS`` (comma-separated)::

    mkdir -p /tmp/fuzz-corpus
    python tests/fuzz_readers.py --seed-corpus /tmp/fuzz-corpus
    python tests/fuzz_readers.py /tmp/fuzz-corpus -max_total_time=600 -rss_limit_mb=2048

The corpus starts from valid files of each kind (written by ``--seed-corpus``), which the
fuzzer then mutates, keeping the inputs that reach new code.
"""

import gzip
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import numpy as np
    # The plugins Image.open tries first, imported here so that their code is instrumented.
    from PIL import (BmpImagePlugin, GifImagePlugin, Image, ImageOps,  # noqa: F401
                     JpegImagePlugin, PngImagePlugin)

    from fastlr import DataError, ModelFileError, SoftmaxRegression
    from fastlr import data as fastlr_data
    from fastlr.data import parse_idx
    from fastlr.images import read_image, read_inputs
    from fastlr.streaming import _npy_rows

TARGETS = ("idx", "model", "image", "npy", "stream", "cache")
ENABLED = set(filter(None, os.environ.get("FASTLR_FUZZ_TARGETS", "").split(","))) or set(TARGETS)
# Small limits keep each run fast; the limit checks themselves are what is being fuzzed.
IDX_LIMIT = 1 << 20
SCRATCH = Path(tempfile.mkdtemp(prefix="fastlr-fuzz-", dir="/dev/shm"
                                if os.path.isdir("/dev/shm") else None))


def fuzz_idx(raw):
    try:
        array = parse_idx(raw, "fuzzed", max_bytes=IDX_LIMIT)
    except DataError:
        return
    assert array.dtype == np.uint8 and array.size <= IDX_LIMIT


def fuzz_model(raw):
    path = SCRATCH / "fuzzed.npz"
    path.write_bytes(raw)
    try:
        model = SoftmaxRegression.load(path)
    except ModelFileError:
        return
    proba = model.predict_proba(np.zeros((1, model.n_features_in_)))
    assert proba.shape == (1, len(model.classes_))


def fuzz_image(raw):
    path = SCRATCH / "fuzzed.img"
    path.write_bytes(raw)
    try:
        digit = read_image(path)
    except DataError:
        return
    assert digit.shape == (28, 28) and np.isfinite(digit).all()


def fuzz_npy(raw):
    path = SCRATCH / "fuzzed-input"
    path.write_bytes(raw)
    try:
        rows = read_inputs(path, 16, (4, 4))
    except DataError:
        return
    assert rows.dtype == np.float32 and rows.shape[1] == 16 and np.isfinite(rows).all()
    assert 0 <= rows.min() and rows.max() <= 1


def fuzz_stream(raw):
    path = SCRATCH / "class.npy"
    path.write_bytes(raw)
    try:
        rows = _npy_rows(path)
        n = min(rows.shape[0], 64)
        block = rows.rows(0, n)
        head = rows.head(n).rows(max(n - 3, 0), n)
    except DataError:
        return
    assert block.dtype == np.uint8 and block.shape == (n, rows.shape[1])
    np.testing.assert_array_equal(head, block[max(n - 3, 0):n])


# The source file whose cached copy the cache target fuzzes, and its decoded array.
CACHE_SOURCE = SCRATCH / "cache-source-idx"
CACHE_ARRAY = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)


def fuzz_cache(raw):
    import hashlib
    source_raw = CACHE_SOURCE.read_bytes()
    key = f"{CACHE_SOURCE.name}-{hashlib.sha256(source_raw).hexdigest()[:32]}"
    cache = fastlr_data.decoded_cache_dir()
    for stale in cache.glob(f"{key}-*.npy"):
        stale.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"{key}-{'0' * 64}.npy").write_bytes(raw)
    try:
        file = fastlr_data._read_decoded(CACHE_SOURCE)
    except DataError:
        return
    np.testing.assert_array_equal(np.asarray(file.array), CACHE_ARRAY)
    assert file.array.dtype == np.uint8


def test_one_input(data):
    if not data:
        return
    target = TARGETS[data[0] % len(TARGETS)]
    if target not in ENABLED:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning on stderr is a finding too
        {"idx": fuzz_idx, "model": fuzz_model, "image": fuzz_image, "npy": fuzz_npy,
         "stream": fuzz_stream, "cache": fuzz_cache}[target](data[1:])


def seed_corpus(directory):
    """Write one valid input of each kind into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    idx = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape)
    idx += images.tobytes()
    rng = np.random.default_rng(0)
    model = SoftmaxRegression(epochs=1, backend="numpy").fit(rng.random((30, 4)),
                                                              np.arange(30) % 3)
    model_raw = model.save(SCRATCH / "seed.npz").read_bytes()
    encoded = {}
    for kind, mode in (("PNG", "LA"), ("JPEG", "L"), ("GIF", "P")):
        buffer = io.BytesIO()
        Image.fromarray(images[1]).convert(mode).save(buffer, format=kind)
        encoded[kind] = buffer.getvalue()
    arrays = {"c-u1": images[:, :4, :4].copy(), "f-u1": np.asfortranarray(images[:, :4, :4]),
              "flat-f4": (images[:, :4, :4].reshape(3, 16) / 255).astype(">f4"),
              "one-i2": images[0, :4, :4].astype("<i2")}
    npys = {}
    for name, array in arrays.items():
        buffer = io.BytesIO()
        np.save(buffer, array)
        npys[name] = buffer.getvalue()
    cache_seed = io.BytesIO()
    np.save(cache_seed, CACHE_ARRAY)
    seeds = {"idx": idx, "idx-gz": gzip.compress(idx, mtime=0), "model": model_raw,
             **{f"image-{kind.lower()}": raw for kind, raw in encoded.items()},
             **{f"npy-{name}": raw for name, raw in npys.items()},
             **{f"stream-{name}": raw for name, raw in npys.items()},
             "cache": cache_seed.getvalue()}
    for name, raw in seeds.items():
        kind = name.split("-")[0]
        (directory / f"seed-{name}").write_bytes(bytes([TARGETS.index(kind)]) + raw)


def _cache_source():
    """The source file of the cache target, and a private cache directory for it."""
    idx = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in CACHE_ARRAY.shape)
    CACHE_SOURCE.write_bytes(idx + CACHE_ARRAY.tobytes())
    os.environ["XDG_CACHE_HOME"] = str(SCRATCH / "xdg-cache")


_cache_source()

if __name__ == "__main__":
    if sys.argv[1:2] == ["--seed-corpus"]:
        seed_corpus(sys.argv[2])
    else:
        atheris.Setup(sys.argv, test_one_input)
        atheris.Fuzz()
