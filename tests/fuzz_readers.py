"""Coverage-guided fuzzing of the three readers of untrusted files, with atheris (libFuzzer).

Targets, picked by the first byte of each input: the IDX reader (``parse_idx``), the model
loader (``SoftmaxRegression.load``) and the image reader (``read_image``). Whatever the bytes,
a reader must return or raise its one error class (DataError; ModelFileError for models);
any other exception is a finding, and libFuzzer stops and writes the input that caused it.
A model the loader accepts must also predict.

Run it (not part of the pytest suite; ``pip install atheris``)::

    mkdir -p /tmp/fuzz-corpus
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
    from fastlr.data import parse_idx
    from fastlr.images import read_image

TARGETS = ("idx", "model", "image")
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


def test_one_input(data):
    if not data:
        return
    target = TARGETS[data[0] % len(TARGETS)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning on stderr is a finding too
        {"idx": fuzz_idx, "model": fuzz_model, "image": fuzz_image}[target](data[1:])


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
    seeds = {"idx": idx, "idx-gz": gzip.compress(idx, mtime=0), "model": model_raw,
             **{f"image-{kind.lower()}": raw for kind, raw in encoded.items()}}
    for name, raw in seeds.items():
        kind = name.split("-")[0]
        (directory / f"seed-{name}").write_bytes(bytes([TARGETS.index(kind)]) + raw)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--seed-corpus"]:
        seed_corpus(sys.argv[2])
    else:
        atheris.Setup(sys.argv, test_one_input)
        atheris.Fuzz()
