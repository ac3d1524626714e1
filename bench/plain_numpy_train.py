"""The job ``python -m fastlr train`` does, written as the plain NumPy script a user would write
instead: the baseline that ``bench/user_speed.py`` times whole processes against.

    python bench/plain_numpy_train.py [DATA_DIR]

It reads MNIST's four ``.gz`` IDX files, scales the pixels to [0, 1] as float32, runs the same
minibatch SGD as fastlr's defaults (10 epochs, batch 64, learning rate 1.0 decaying linearly to 0
over the run, one seeded permutation per epoch, softmax cross-entropy, no L2, no momentum) with
NumPy's BLAS, then prints the test accuracy. Nothing here imports fastlr.
"""

import gzip
import sys
from pathlib import Path

import numpy as np

EPOCHS = 10
BATCH_SIZE = 64
LEARNING_RATE = 1.0


def read_idx_gz(path):
    """The array in a gzipped IDX file (uint8 pixels or labels)."""
    raw = gzip.decompress(Path(path).read_bytes())
    n_dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(n_dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def main(data_dir):
    data_dir = Path(data_dir)
    X_train = read_idx_gz(data_dir / "train-images-idx3-ubyte.gz").reshape(60000, -1)
    y_train = read_idx_gz(data_dir / "train-labels-idx1-ubyte.gz").astype(np.int64)
    X_test = read_idx_gz(data_dir / "t10k-images-idx3-ubyte.gz").reshape(10000, -1)
    y_test = read_idx_gz(data_dir / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    X_train = X_train.astype(np.float32) / 255
    X_test = X_test.astype(np.float32) / 255

    n, d = X_train.shape
    c = 10
    W = np.zeros((c, d), dtype=np.float32)
    b = np.zeros(c, dtype=np.float32)
    steps = -(-n // BATCH_SIZE)
    rates = LEARNING_RATE * (1.0 - np.arange(steps * EPOCHS) / (steps * EPOCHS))
    rng = np.random.default_rng(0)
    t = 0
    for _ in range(EPOCHS):
        perm = rng.permutation(n)
        for start in range(0, n, BATCH_SIZE):
            rows = perm[start:start + BATCH_SIZE]
            x, y = X_train[rows], y_train[rows]
            z = x @ W.T + b
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(rows)), y] -= 1
            p /= len(rows)
            W -= np.float32(rates[t]) * (p.T @ x)
            b -= np.float32(rates[t]) * p.sum(axis=0)
            t += 1
    accuracy = ((X_test @ W.T + b).argmax(axis=1) == y_test).mean()
    print(f"test accuracy {accuracy:.2%}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "data"
         / "mnist")
