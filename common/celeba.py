"""CelebA (or any folder of images) as one uint8 tensor: find the files, decode them once, cache.

The images are looked for in DATA_DIR in the layouts people have (the Kaggle copy, a flat
img_align_celeba/, torchvision's celeba/), or in any folder named by IMAGE_DIR. Each image is
centre-cropped to a CROP x CROP square (the DCGAN tradition is 108 of CelebA's 178 x 218 faces),
resized with antialiasing to SIZE x SIZE, and the lot is decoded once, in parallel, into a uint8
.npy cache next to the image folder. Later runs load the cache in a second; training then draws
batches by index from it, as for MNIST.

    python -m common.celeba data            # find CelebA in data/, build the cache, preview grid
    python -m common.celeba path/to/images  # the same for any folder of images
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from common import data
from common.config import fail

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
CACHE_FORMAT = 1  # bump when decoding changes, so old caches are not reused
FAKE_SIZE = 1024  # images in the fake data set
_SHOW_BAD = 5  # bad file names shown in the warning line


@dataclass
class Source:
    """Where the images are: the layout found, the folder, and its image files (sorted, relative)."""

    layout: str
    folder: Path
    files: list[str]


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
    why = _download(data_dir)
    found = find(data_dir) if why is None else None
    if found is None:
        fail(f"CelebA is not in {data_dir}/ and the download failed ({why or 'no images after it'}): "
             f"{where_to_get(data_dir)}")  # fmt: skip
    return found


def crop_box(width: int, height: int, crop: float) -> tuple[float, float, float, float]:
    """The centred square (left, top, right, bottom) of side CROP, clamped to the smaller side."""
    side = min(crop, width, height) if crop > 0 else min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def decode(path: str | Path, crop: int, size: int) -> np.ndarray | None:
    """One image file -> uint8 [3, size, size] (centre crop, antialiased resize), or None if unreadable."""
    try:
        with Image.open(path) as img:
            side = min(crop, *img.size) if crop > 0 else min(img.size)  # the crop in the file's pixels
            full_width = img.width
            # let libjpeg decode at 1/2, 1/4 or 1/8 scale when the crop still covers size: big photos decode fast
            img.draft(None, (math.ceil(img.width * size / side), math.ceil(img.height * size / side)))
            img.load()  # truncated or corrupt files raise here (PIL's LOAD_TRUNCATED_IMAGES is off)
            side *= img.width / full_width  # the same crop in the (possibly reduced) decoded pixels
            ImageOps.exif_transpose(img, in_place=True)  # phone photos are often stored sideways
            rgb = img.convert("RGB")  # grey, CMYK, palette and RGBA alike
        # one resample from the crop box straight to size x size: square box, so no squashing;
        # bicubic widens its kernel with the scale factor, i.e. it antialiases when shrinking
        small = rgb.resize((size, size), Image.Resampling.BICUBIC, box=crop_box(rgb.width, rgb.height, side))
        return np.ascontiguousarray(np.asarray(small).transpose(2, 0, 1))
    except Exception:  # any unreadable file is skipped and reported, never fatal
        return None


def cache_key(source: Source, crop: int, size: int) -> str:
    """A hash of what the cache depends on: the folder, its file list, CROP, SIZE and the format."""
    record = {"format": CACHE_FORMAT, "folder": str(source.folder.resolve()), "files": source.files}
    record.update(crop=crop, size=size)
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()[:16]


def cache_path(source: Source, crop: int, size: int) -> Path:
    """The cache file beside the image folder, e.g. data/img_align_celeba-crop108-64px-<key>.npy."""
    name = f"{source.folder.resolve().name}-crop{crop}-{size}px-{cache_key(source, crop, size)}.npy"
    return source.folder.resolve().parent / name


def _warn_bad(bad: list[str], total: int, folder: Path) -> None:
    """One warning line naming the first few files that could not be read."""
    if not bad:
        return
    shown = ", ".join(bad[:_SHOW_BAD]) + (f" (+{len(bad) - _SHOW_BAD} more)" if len(bad) > _SHOW_BAD else "")
    print(f"warning: skipped {len(bad)} of {total:,} files in {folder} (unreadable, truncated or not images): {shown}")


def build_cache(source: Source, crop: int, size: int, workers: int, path: Path) -> tuple[np.ndarray, list[str]]:
    """Decode every image once (in `workers` processes) into `path`; returns (images, bad files)."""
    n = len(source.files)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:  # rows go straight to disk, so 200k faces (2.5 GB at 64 px) need not fit in memory twice
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
    except OSError as exc:
        print(f"warning: cannot write a cache beside {source.folder} ({exc.strerror or exc}); decoding into memory")
        tmp, out = None, np.empty((n, 3, size, size), dtype=np.uint8)
    try:
        kept, bad = _decode_all(source, crop, size, workers, out)
        if kept == 0:
            fail(f"none of the {n:,} files in {source.folder} could be read as an image")
        if tmp is None:
            return out[:kept], bad
        if kept < n:  # skipped files left unused rows at the end: write the first `kept` rows anew
            compact = tmp.with_suffix(".compact")
            with open(compact, "wb") as f:
                np.save(f, out[:kept])
            del out
            tmp.unlink()
            tmp = compact
        else:
            out.flush()
            del out
        os.replace(tmp, path)  # atomic: an interrupted build never leaves a half cache under the real name
    finally:  # an interrupted or failed build leaves no temporary files behind
        for leftover in (tmp, tmp and tmp.with_suffix(".compact")):
            if leftover is not None and leftover.exists():
                leftover.unlink()
    meta = {"key": cache_key(source, crop, size), "folder": str(source.folder.resolve()), "layout": source.layout}
    meta.update(crop=crop, size=size, files=n, images=kept, skipped=bad, format=CACHE_FORMAT)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"Wrote the cache {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return np.load(path), bad


def _decode_all(source: Source, crop: int, size: int, workers: int, out: np.ndarray) -> tuple[int, list[str]]:
    """Decode the files in order into the first rows of `out`; returns (rows written, bad names)."""
    paths = [str(source.folder / f) for f in source.files]
    job = functools.partial(decode, crop=crop, size=size)
    bad: list[str] = []
    kept = 0
    start = time.perf_counter()
    pool = multiprocessing.Pool(workers) if workers > 1 and len(paths) > 1 else None
    try:
        results = pool.imap(job, paths, chunksize=32) if pool else map(job, paths)
        for name, image in zip(
            source.files, tqdm(results, total=len(paths), desc="decoding", unit="img", mininterval=0.5), strict=True
        ):
            if image is None:
                bad.append(name)
            else:
                out[kept] = image
                kept += 1
    finally:
        if pool is not None:
            pool.terminate()
    seconds = time.perf_counter() - start
    rate = len(paths) / max(seconds, 1e-9)
    print(f"Decoded {kept:,} images in {seconds:.1f}s ({rate:.0f} img/s, {max(workers, 1)} process(es))")
    _warn_bad(bad, len(paths), source.folder)
    return kept, bad


def cached_images(source: Source, crop: int, size: int, workers: int = 1, rebuild: bool = False) -> np.ndarray:
    """uint8 [N, 3, size, size] from the cache when it matches, else decoded now and cached."""
    path = cache_path(source, crop, size)
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists() and not rebuild:
        try:
            meta = json.loads(meta_path.read_text())
            images = np.load(path)
            if meta["key"] == cache_key(source, crop, size) and images.shape == (meta["images"], 3, size, size):
                print(f"Loaded the cache {path} ({len(images):,} images)")
                _warn_bad(meta["skipped"], meta["files"], source.folder)
                return images
        except Exception as exc:  # damaged cache: say so and decode again
            print(f"warning: rebuilding the unreadable cache {path} ({type(exc).__name__})")
    print(f"Building the cache of {len(source.files):,} images (crop {crop}, {size}x{size}); once only")
    return build_cache(source, crop, size, workers, path)[0]


def make_fake(size: int = 64, n: int = FAKE_SIZE, seed: int = 0) -> torch.Tensor:
    """Random uint8 images [n, 3, size, size], for smoke runs with no data."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)


def place(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The images on the device when they fit in half its free memory, else left in host memory.

    Half, so the models, activations and the allocator keep room. Batches drawn from host memory
    are pinned and copied without blocking by `data.Batches.epoch(epoch, device)`.
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
        images = torch.from_numpy(cached_images(source, crop, size, workers, rebuild))
    images = place(images, device)
    return data.Split(images, torch.zeros(len(images), dtype=torch.long, device=images.device))


def preview(folder_or_data_dir: str, crop: int = 108, size: int = 64, out_dir: str | Path = "outputs/data") -> None:
    """Find the images, build (or load) the cache, and save an 8x8 grid of the first ones."""
    from common import plots

    given = Path(folder_or_data_dir)
    source = find(given) or find(given, image_dir=given)
    images = cached_images(source, crop, size, workers=os.cpu_count() or 1)
    path = plots.save_grid(data.to_gan(torch.from_numpy(images[:64])), Path(out_dir) / f"celeba-{size}px.png")
    print(f"{len(images):,} images of {images.shape[1:]}; preview: {path}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        fail("usage: python -m common.celeba DATA_DIR_OR_IMAGE_FOLDER")
    preview(sys.argv[1])
