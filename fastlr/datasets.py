"""The data sets fastlr knows by name: MNIST and the best-known drop-ins published in its format.

Each entry says what the four files must be (their published checksums), where to download them
(the public mirrors), what the labels mean (the class names), the license, and the image shape.
Only MNIST ships with fastlr (``data/mnist``); the others are downloaded into the user cache by
``--dataset NAME`` / :func:`fastlr.load_dataset`. The format itself, the lookup and the checked
download live in :mod:`fastlr.data`.

A data set is known by its images, not by their compression: where we could check them, the
checksums are the SHA-256 of each file's decompressed content, so a copy decompressed, or
compressed again at another level or by another tool, is still the named data set (with its
class names) in the cache and in ``--data-dir``:

- MNIST: the SHA-256 of each file's decompressed content, as ``data/mnist/SHA256SUMS`` lists
  them for the copy fastlr ships.
- Fashion-MNIST: computed from Debian's package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``), whose files are the published ones compressed again.
  They were checked against the MD5 of each ``.gz`` that the README of
  github.com/zalandoresearch/fashion-mnist publishes: Debian's deflate streams, given back the
  published files' gzip header (the file name, and the time 2017-08-31 10:50 UTC), are those
  files byte for byte; ``tests/test_datasets.py`` repeats that check wherever the package is
  installed.
- Kuzushiji-MNIST: still the MD5 of each ``.gz`` file, torchvision's
  (``torchvision.datasets.KMNIST.resources``; the authors, github.com/rois-codh/kmnist, publish
  none). No copy of its files could be had where these checksums were made (no network, and no
  Debian or PyPI package ships them), so there is no checked content to take a SHA-256 of. A
  copy decompressed or compressed again does not match an MD5 of the ``.gz``, and is read as an
  unnamed IDX data set.
"""

import math
from dataclasses import dataclass

import numpy as np

# The four files of a data set in MNIST's format, by role.
FILE_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# The shapes of MNIST's four files, which its drop-ins share.
MNIST_SHAPES = {
    "train-images-idx3-ubyte": (60000, 28, 28),
    "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28),
    "t10k-labels-idx1-ubyte": (10000,),
}


@dataclass(frozen=True)
class KnownDataset:
    """A data set fastlr knows by name.

    Attributes
    ----------
    name : str
        What ``--dataset`` takes, e.g. ``"fashion-mnist"``.
    title : str
        How output names it, e.g. ``"Fashion-MNIST"``.
    class_names : tuple of str
        The meaning of label ``k``, for k = 0 ... C-1.
    license, homepage : str
    mirrors : tuple of str
        Base URLs, tried in turn; a file's URL is the base plus its name and ``.gz``.
    checksum : str
        ``"sha256-content"`` (SHA-256 of the decompressed file) or ``"md5-gz"`` (MD5 of the
        ``.gz`` file as published).
    digests : dict
        File stem -> hex digest of that kind.
    shapes : dict
        File stem -> array shape.
    bundled : bool
        True if fastlr ships the files.
    """

    name: str
    title: str
    class_names: tuple
    license: str
    homepage: str
    mirrors: tuple
    checksum: str
    digests: dict
    shapes: dict
    bundled: bool = False

    @property
    def image_shape(self):
        """(H, W) of one image."""
        return self.shapes[FILE_STEMS["train_images"]][1:]


DATASETS = {dataset.name: dataset for dataset in (
    KnownDataset(
        name="mnist",
        title="MNIST",
        class_names=tuple(str(digit) for digit in range(10)),
        license="CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. J. C. Burges)",
        homepage="http://yann.lecun.com/exdb/mnist/",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"),
        checksum="sha256-content",
        digests={
            "t10k-images-idx3-ubyte":
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte":
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            "train-images-idx3-ubyte":
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte":
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        },
        shapes=MNIST_SHAPES,
        bundled=True),
    KnownDataset(
        name="fashion-mnist",
        title="Fashion-MNIST",
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
        license="MIT (Zalando SE)",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/"
                 "fashion/"),
        checksum="sha256-content",
        digests={
            "train-images-idx3-ubyte":
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte":
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte":
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte":
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        shapes=MNIST_SHAPES),
    KnownDataset(
        name="kmnist",
        title="Kuzushiji-MNIST",
        # The modern hiragana of each class, romanized (the labels of rois-codh/kmnist).
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        license="CC BY-SA 4.0 (KMNIST Dataset, CODH, adapted from the Kuzushiji Dataset, "
                "NIJL and others, doi:10.20676/00000341)",
        homepage="https://github.com/rois-codh/kmnist",
        mirrors=("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
                 "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
        checksum="md5-gz",
        digests={
            "train-images-idx3-ubyte": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        shapes=MNIST_SHAPES),
)}


def class_label(label, class_names):
    """How output shows the label ``label``: its name when the data set has names (and the label
    is an index into them), else the label itself."""
    if class_names and isinstance(label, (int, np.integer)) and 0 <= label < len(class_names):
        return class_names[label]
    return str(label)


def image_shape_of(n_features, record=None):
    """(H, W) of the images behind rows of ``n_features`` pixels: the shape the data set
    ``record`` (a model file's, see :meth:`fastlr.data.Dataset.record`) gives, else a square
    when ``n_features`` is a square number, else one row (1, D)."""
    if record and record.get("image_shape"):
        return tuple(record["image_shape"])
    side = math.isqrt(n_features)
    return (side, side) if side * side == n_features else (1, n_features)
