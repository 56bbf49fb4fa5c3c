"""Fashion-MNIST for the benchmark drivers that run a peer framework on the same data: the IDX
files asgd reads with --dataset fashion-mnist, normalised as asgd does."""
import gzip
import os

import numpy as np


def fashion_mnist_dir():
    """asgd's fashion_mnist_dir(): $ASGD_FASHION_MNIST_DIR or the Debian package's folder."""
    return os.environ.get("ASGD_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    """An IDX file of unsigned bytes (gzip or plain, as asgd's reader accepts) as an array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise SystemExit(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def idx_part(folder, part, kind):
    stem = os.path.join(folder, f"{part}-{kind}-idx{3 if kind == 'images' else 1}-ubyte")
    for path in (stem, stem + ".gz"):
        if os.path.exists(path):
            return path
    raise SystemExit(f"{stem}[.gz] not found: install dataset-fashion-mnist or set "
                     "ASGD_FASHION_MNIST_DIR")


def load_fashion_mnist(folder):
    """(x_train, y_train, x_test, y_test) as float32 [rows, 784] and int64 labels, scaled as
    asgd's `--normalize auto` does for IDX files (normalize_unit): every value of both sets
    divided, in float32, by the largest absolute value of the training set (255 here)."""
    sets = []
    for part in ("train", "t10k"):
        x = read_idx(idx_part(folder, part, "images")).astype(np.float32)
        y = read_idx(idx_part(folder, part, "labels")).astype(np.int64)
        sets.append((x.reshape(x.shape[0], -1), y))
    (xtr, ytr), (xte, yte) = sets
    largest = np.float32(np.abs(xtr).max())
    if largest > 0 and np.isfinite(largest):
        xtr = xtr / largest
        xte = xte / largest
    return xtr, ytr, xte, yte, float(largest)
