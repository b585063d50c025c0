"""The uint8 image cache: each image decoded once (centre crop, antialiased resize), saved as one .npy.

Each file of a Source (a folder and its image files, as common/celeba.py finds them) is
centre-cropped to a CROP x CROP square (the DCGAN tradition is 108 of CelebA's 178 x 218 faces),
resized with antialiasing to SIZE x SIZE, and the lot is decoded once, in parallel, into a uint8
.npy cache next to the image folder, keyed on the folder, its file list, CROP and SIZE. Later runs
load the cache in a second; unreadable files are skipped and named in one warning line.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from common import files, shared_lock
from common.config import fail

CACHE_FORMAT = 1  # bump when decoding changes, so old caches are not reused
_SHOW_BAD = 5  # bad file names shown in the warning line


@dataclass
class Source:
    """Where the images are: the layout found, the folder, and its image files (sorted, relative)."""

    layout: str
    folder: Path
    files: list[str]


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
    tmp = files.own_name(path)
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
    files.write_text(path.with_suffix(".json"), json.dumps(meta, indent=1) + "\n", "the image cache's index")
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
    """uint8 [N, 3, size, size] from the cache when it matches, else decoded now and cached (one process at a
    time: the others wait, then read it)."""
    path = cache_path(source, crop, size)
    found = None if rebuild else _cached(source, crop, size, path)
    if found is not None:
        return found
    with shared_lock.preparing(path, "the image cache"):
        found = None if rebuild else _cached(source, crop, size, path, quiet=True)  # built meanwhile?
        if found is not None:
            return found
        print(f"Building the cache of {len(source.files):,} images (crop {crop}, {size}x{size}); once only")
        return build_cache(source, crop, size, workers, path)[0]


def _cached(source: Source, crop: int, size: int, path: Path, quiet: bool = False) -> np.ndarray | None:
    """The cache at `path` when it is whole and of these files, crop and size; else None."""
    meta_path = path.with_suffix(".json")
    if not (path.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(path)
        if meta["key"] == cache_key(source, crop, size) and images.shape == (meta["images"], 3, size, size):
            print(f"Loaded the cache {path} ({len(images):,} images)")
            _warn_bad(meta["skipped"], meta["files"], source.folder)
            return images
    except Exception as exc:  # damaged cache: say so and decode again
        if not quiet:
            print(f"warning: rebuilding the unreadable cache {path} ({type(exc).__name__})")
    return None
