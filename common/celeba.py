"""CelebA (or any folder of images) as one uint8 tensor: find the files, or download them, and load them.

The images are looked for in DATA_DIR in the layouts people have (the Kaggle copy, a flat
img_align_celeba/, torchvision's celeba/), or in any folder named by IMAGE_DIR; when none is
there, torchvision's download is tried, and failing that one line says where to get CelebA.
The files are decoded once into a uint8 cache (common/image_cache.py); training then draws
batches by index from it, as for MNIST.

    python -m common.celeba data            # find CelebA in data/, build the cache, preview grid
    python -m common.celeba path/to/images  # the same for any folder of images
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from common import data, image_cache, shared_lock
from common.config import fail
from common.image_cache import Source

DATASETS = ("celeba", "fake")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LAYOUTS = {
    "kaggle": "the Kaggle copy (img_align_celeba/img_align_celeba/)",
    "flat": "a flat img_align_celeba/ folder",
    "torchvision": "torchvision's celeba/ folder",
    "image_dir": "the folder named by --image_dir",
}
KAGGLE = "https://www.kaggle.com/datasets/jessicali9530/celeba-dataset"
OFFICIAL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
FAKE_SIZE = 1024  # images in the fake data set


def list_images(folder: Path) -> list[str]:
    """Image files under a folder (recursively, hidden folders skipped) as sorted relative paths."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(root).relative_to(folder)
        found += [(rel / n).as_posix() for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def _has_images(folder: Path) -> bool:
    """Whether a folder directly holds at least one image file (cheap: stops at the first)."""
    with os.scandir(folder) as entries:
        return any(e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries)


def find(data_dir: str | Path, image_dir: str | Path = "") -> Source | None:
    """The images in IMAGE_DIR, else CelebA in one of DATA_DIR's layouts; None when absent.

    A folder that exists but holds no images is a one-line error, not a silent miss.
    """
    if str(image_dir):
        folder = Path(image_dir).expanduser()
        if not folder.is_dir():
            fail(f"--image_dir={folder} is not a folder")
        return _source("image_dir", folder)
    data_dir = Path(data_dir).expanduser()
    outer = data_dir / "img_align_celeba"
    candidates = [
        ("torchvision", data_dir / "celeba" / "img_align_celeba"),
        ("kaggle", outer / "img_align_celeba"),
        ("flat", outer),
    ]
    for layout, folder in candidates:
        if folder.is_dir() and (layout != "flat" or _has_images(folder)):
            return _source(layout, folder)
    if outer.is_dir():  # there, but neither nested nor flat images in it
        return _source("flat", outer)
    return None


def _source(layout: str, folder: Path) -> Source:
    """A Source for a folder, or a one-line error when it holds no images."""
    files = list_images(folder)
    if not files:
        kinds = ", ".join(IMAGE_EXTENSIONS)
        fail(f"{folder} holds no images ({kinds}); put the CelebA .jpg files there or see --help")
    print(f"Found {len(files):,} images in {LAYOUTS[layout]}: {folder}")
    return Source(layout, folder, files)


def where_to_get(data_dir: Path) -> str:
    """Where to download CelebA by hand and where to put it (one long line)."""
    return (
        f"get img_align_celeba.zip from Kaggle ({KAGGLE}, e.g. `kaggle datasets download -d "
        f"jessicali9530/celeba-dataset`) or from the official page {OFFICIAL} (Align&Cropped Images), "
        f"and unzip it into {data_dir}/ so the .jpg files are in {data_dir}/img_align_celeba/ "
        "(the Kaggle zip's nested img_align_celeba/img_align_celeba/ works too); "
        "or train on any folder of images with --image_dir=PATH"
    )


def _download(data_dir: Path) -> str | None:
    """Try torchvision's CelebA download (Google Drive, needs gdown); None on success, else why."""
    from torchvision import datasets

    celeba_dir = data_dir / "celeba"
    existed = celeba_dir.exists()
    print(f"CelebA not found in {data_dir}; trying torchvision's download (1.4 GB from Google Drive) ...", flush=True)
    try:
        datasets.CelebA(root=str(data_dir), split="all", target_type=[], download=True)
        return None
    except Exception as exc:  # offline, Drive quota page instead of the zip, gdown missing: all "not available"
        if not existed and celeba_dir.is_dir() and not any(celeba_dir.iterdir()):
            celeba_dir.rmdir()  # leave no empty folder that looks like a half download
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def locate(data_dir: str | Path, image_dir: str | Path = "", download: bool = True) -> Source:
    """Find the images (downloading CelebA when allowed), or exit saying where to get them."""
    data_dir = Path(data_dir).expanduser()
    found = find(data_dir, image_dir)
    if found is not None:
        return found
    zips = [str(p) for p in sorted(data_dir.glob("*.zip")) + sorted(data_dir.glob("celeba/*.zip"))]
    zips = [z for z in zips if "celeba" in Path(z).name.lower() or Path(z).name == "archive.zip"]
    if zips:
        fail(f"found {', '.join(zips)} but no images: unzip it in its folder, so that the .jpg files "
             f"end up in {data_dir}/img_align_celeba/ (or {data_dir}/celeba/img_align_celeba/)")  # fmt: skip
    if not download:
        fail(f"CelebA is not in {data_dir}/ and --download=False: {where_to_get(data_dir)}")
    with shared_lock.preparing(data_dir / "celeba", "CelebA"):  # one download at a time into a shared DATA_DIR
        found = find(data_dir, image_dir)  # (another process may have downloaded it while this one waited)
        why = _download(data_dir) if found is None else None
    found = found or (find(data_dir) if why is None else None)
    if found is None:
        fail(f"CelebA is not in {data_dir}/ and the download failed ({why or 'no images after it'}): "
             f"{where_to_get(data_dir)}")  # fmt: skip
    return found


def make_fake(size: int = 64, n: int = FAKE_SIZE, seed: int = 0) -> torch.Tensor:
    """Random uint8 images [n, 3, size, size], for smoke runs with no data."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)


def write_fake(folder: Path, n: int, seed: int = 0) -> Path:
    """n synthetic JPEGs at CelebA's aligned size (178x218) in folder: smooth colour fields plus grain, about the
    file size and decode cost of a real photo (bench.py's DataLoader path reads them)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (7, 6, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((178, 218), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.normal(0, 6, smooth.shape).astype(np.int16)
        Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(folder / f"{i + 1:06d}.jpg", quality=90)
    return folder


def place(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The images on the device when they fit in half its free memory, else left in host memory.

    Half, so the models, activations and the allocator keep room. Batches drawn from host memory
    are pinned and copied without blocking by `batches.Batches.epoch(epoch, device)`.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if images.nbytes > free // 2:
            print(
                f"The images ({images.nbytes / 1e9:.1f} GB) stay in host memory; {free / 1e9:.1f} GB free on {device}"
            )
            return images
    return images.to(device)


def load(
    dataset: str,
    data_dir: str | Path,
    image_dir: str | Path,
    download: bool,
    crop: int,
    size: int,
    workers: int,
    device: torch.device,
    rebuild: bool = False,
) -> data.Split:
    """The training images as a Split (labels all 0), on the device when they fit."""
    if dataset not in DATASETS:
        fail(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if dataset == "fake":
        images = make_fake(size)
    else:
        source = locate(data_dir, image_dir, download)
        images = torch.from_numpy(image_cache.cached_images(source, crop, size, workers, rebuild))
    images = place(images, device)
    return data.Split(images, torch.zeros(len(images), dtype=torch.long, device=images.device))


def preview(folder_or_data_dir: str, crop: int = 108, size: int = 64, out_dir: str | Path = "outputs/data") -> None:
    """Find the images, build (or load) the cache, and save an 8x8 grid of the first ones."""
    from common import plots

    given = Path(folder_or_data_dir)
    source = find(given) or find(given, image_dir=given)
    images = image_cache.cached_images(source, crop, size, workers=os.cpu_count() or 1)
    path = plots.save_grid(data.to_gan(torch.from_numpy(images[:64])), Path(out_dir) / f"celeba-{size}px.png")
    print(f"{len(images):,} images of {images.shape[1:]}; preview: {path}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        fail("usage: python -m common.celeba DATA_DIR_OR_IMAGE_FOLDER")
    preview(sys.argv[1])
