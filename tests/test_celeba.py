"""common/celeba.py + image_cache.py (finding, decoding and caching face images) and DCGAN-CelebA.py end to end.

The images are small JPEGs drawn with PIL at CelebA's odd sizes (178 x 218 and others), laid out
the ways people have CelebA on disk, plus the damaged and unusual files real folders contain.
"""

import csv
import io
import json
import os
import random

import numpy as np
import pytest
import torch
from conftest import load_script, run_script
from PIL import Image, ImageDraw

from common import celeba, image_cache
from common.batches import Batches

SIZES = ((178, 218), (218, 178), (200, 260), (160, 160), (300, 220))


def face(size: tuple[int, int] = (178, 218), seed: int = 0) -> Image.Image:
    """A coloured background with a disc and a bar in it: something with shape and colour."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    w, h = size
    r = min(w, h) // 4
    draw.ellipse((w // 2 - r, h // 2 - r, w // 2 + r, h // 2 + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    draw.rectangle((0, 0, w // 5, h // 3), fill=tuple(rng.randrange(256) for _ in range(3)))
    return img


def write_faces(folder, n: int, start: int = 0):
    """n JPEGs named like CelebA's (000001.jpg ...), of varied sizes; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        face(SIZES[i % len(SIZES)], seed=i).save(folder / f"{i + 1:06d}.jpg", quality=90)
    return folder


def write_odd_files(folder):
    """The files real folders hold: 2 unreadable and 4 unusual but good (grey, CMYK, RGBA, palette)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.jpg").write_bytes(os.urandom(3000))
    buffer = io.BytesIO()
    face(seed=99).save(buffer, format="JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    face(seed=1).convert("L").save(folder / "grey.jpg")
    face(seed=2).convert("CMYK").save(folder / "cmyk.jpg")
    face(seed=3).convert("RGBA").save(folder / "rgba.png")
    face(seed=4).convert("P").save(folder / "palette.png")
    (folder / "notes.txt").write_text("not an image, not even listed")


LAYOUTS = {
    "kaggle": "img_align_celeba/img_align_celeba",
    "flat": "img_align_celeba",
    "torchvision": "celeba/img_align_celeba",
}


@pytest.mark.parametrize("layout", [*LAYOUTS, "image_dir"])
def test_each_layout_is_found_and_named(tmp_path, capsys, layout):
    data_dir = tmp_path / "data"
    if layout == "image_dir":
        folder = write_faces(tmp_path / "my photos" / "set1", 4)
        write_faces(tmp_path / "my photos" / "set2", 3, start=4)  # sub-folders count too
        source = celeba.find(data_dir, image_dir=tmp_path / "my photos")
        expected = 7
    else:
        folder = write_faces(data_dir / LAYOUTS[layout], 7)
        if layout == "torchvision":  # torchvision's list files sit beside the images
            (data_dir / "celeba" / "list_eval_partition.txt").write_text("000001.jpg 0\n")
        source = celeba.find(data_dir)
        expected = 7
    assert source is not None and source.layout == layout
    assert len(source.files) == expected and source.files == sorted(source.files)
    assert source.folder == folder or layout == "image_dir"
    assert celeba.LAYOUTS[layout] in capsys.readouterr().out


def test_missing_and_empty_folders_are_one_line_errors(tmp_path, capsys):
    assert celeba.find(tmp_path / "nothing") is None
    with pytest.raises(SystemExit) as exc:
        celeba.find(tmp_path, image_dir=tmp_path / "no-such-folder")
    assert exc.value.code == 2 and "--image_dir" in capsys.readouterr().err
    (tmp_path / "img_align_celeba").mkdir()
    with pytest.raises(SystemExit) as exc:
        celeba.find(tmp_path)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "holds no images" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        celeba.locate(tmp_path / "empty", download=False)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "jessicali9530/celeba-dataset" in err and celeba.OFFICIAL in err
    (tmp_path / "zipped").mkdir()
    (tmp_path / "zipped" / "archive.zip").write_bytes(b"PK")
    with pytest.raises(SystemExit):
        celeba.locate(tmp_path / "zipped", download=False)
    assert "unzip" in capsys.readouterr().err


def test_offline_download_fails_with_where_to_get_the_data(tmp_path):
    # OFFLINE_ENV (from run_script) makes any network attempt fail at once
    result = run_script("DCGAN-CelebA.py", f"--data_dir={tmp_path / 'data'}", f"--out_dir={tmp_path / 'out'}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    for text in ("download failed", "jessicali9530/celeba-dataset", celeba.OFFICIAL, "img_align_celeba/"):
        assert text in result.stderr
    assert not (tmp_path / "data" / "celeba").exists()  # no empty half-download folder left behind


def test_crop_is_centred_square_and_keeps_aspect(tmp_path):
    # a 178 x 218 picture: blue, with the centred 108 x 108 square red and a disc inside it
    img = Image.new("RGB", (178, 218), (0, 0, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((35, 55, 142, 162), fill=(255, 0, 0))
    draw.ellipse((59, 79, 118, 138), fill=(0, 255, 0))  # diameter 60 of the 108 crop
    img.save(tmp_path / "pattern.png")
    out = image_cache.decode(tmp_path / "pattern.png", crop=108, size=64)
    assert out.shape == (3, 64, 64) and out.dtype == np.uint8
    rgb = out.transpose(1, 2, 0).astype(int)
    # the border is the red square (no blue crept in: the crop sits exactly in the middle)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    assert (border[:, 0] > 200).all() and (border[:, 2] < 40).all()
    green = (rgb[:, :, 1] > 128) & (rgb[:, :, 0] < 128)
    rows, cols = np.flatnonzero(green.any(1)), np.flatnonzero(green.any(0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert abs(height - width) <= 1 and abs(width - 60 * 64 / 108) <= 2  # still round, scaled by 64/108
    assert abs((rows[0] + rows[-1]) / 2 - 31.5) <= 1 and abs((cols[0] + cols[-1]) / 2 - 31.5) <= 1

    # a crop larger than the picture is clamped to its shorter side: the disc stays round
    wide = Image.new("RGB", (300, 150), (0, 0, 0))
    ImageDraw.Draw(wide).ellipse((100, 25, 199, 124), fill=(255, 255, 255))
    wide.save(tmp_path / "wide.jpg", quality=95)
    out = image_cache.decode(tmp_path / "wide.jpg", crop=500, size=32)[0] > 128
    rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    assert abs((rows[-1] - rows[0]) - (cols[-1] - cols[0])) <= 1 and rows[-1] - rows[0] >= 18
    assert image_cache.crop_box(178, 218, 108) == (35.0, 55.0, 143.0, 163.0)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_jpegs_decoded_at_reduced_scale_crop_the_same_square(tmp_path, size):
    # at 16 and 32 px libjpeg decodes CelebA-sized JPEGs at 1/4 and 1/2 scale; the crop must follow
    img = Image.new("RGB", (178, 218), (0, 0, 255))
    ImageDraw.Draw(img).rectangle((35, 55, 142, 162), fill=(255, 0, 0))
    img.save(tmp_path / "pattern.jpg", quality=95, subsampling=0)  # 4:4:4, so colour edges stay sharp
    img.save(tmp_path / "pattern.png")
    from_jpeg = image_cache.decode(tmp_path / "pattern.jpg", crop=108, size=size).astype(int)
    from_png = image_cache.decode(tmp_path / "pattern.png", crop=108, size=size).astype(int)
    inner = from_jpeg[:, 1:-1, 1:-1]  # the outermost pixels mix with the blue at reduced scale
    assert (inner[0] > 200).all() and (inner[2] < 60).all()  # all red: the crop did not widen
    assert np.abs(from_jpeg - from_png).mean() < 6
    assert image_cache.crop_box(178, 218, 0) == (0.0, 20.0, 178.0, 198.0)


def test_bad_files_are_skipped_counted_and_named_in_one_warning(tmp_path, capsys):
    folder = write_faces(tmp_path / "img_align_celeba", 10)
    write_odd_files(folder)
    source = celeba.find(tmp_path)
    assert len(source.files) == 16  # the .txt is not an image
    images = image_cache.cached_images(source, crop=108, size=32, workers=2)  # 2 processes, as in a real run
    assert images.shape == (14, 3, 32, 32) and images.dtype == np.uint8
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "skipped 2 of 16" in warnings[0]
    assert "corrupt.jpg" in warnings[0] and "truncated.jpg" in warnings[0]
    # the grey, CMYK, RGBA and palette files are kept as 3-channel RGB; grey has equal channels
    kept = [f for f in source.files if f not in ("corrupt.jpg", "truncated.jpg")]
    grey, cmyk = images[kept.index("grey.jpg")], images[kept.index("cmyk.jpg")]
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[1], grey[2])
    face(seed=2).save(tmp_path / "rgb.png")  # the picture the CMYK file was made from
    assert np.abs(cmyk.astype(int) - image_cache.decode(tmp_path / "rgb.png", 108, 32).astype(int)).mean() < 8
    meta = json.loads(image_cache.cache_path(source, 108, 32).with_suffix(".json").read_text())
    assert meta["skipped"] == ["corrupt.jpg", "truncated.jpg"] and meta["images"] == 14
    # reusing the cache repeats the warning, so it is not lost after the first run
    image_cache.cached_images(source, crop=108, size=32)
    assert "skipped 2 of 16" in capsys.readouterr().out


def test_cache_is_built_once_reused_and_rebuilt_when_the_key_changes(tmp_path, monkeypatch, capsys):
    folder = write_faces(tmp_path / "img_align_celeba" / "img_align_celeba", 12)
    source = celeba.find(tmp_path)
    first = image_cache.cached_images(source, crop=108, size=32)
    path = image_cache.cache_path(source, 108, 32)
    assert path.exists() and path.parent == folder.parent and "crop108-32px" in path.name
    assert "Building the cache" in capsys.readouterr().out
    mtime = path.stat().st_mtime_ns

    real_decode = image_cache.decode

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although a matching cache exists")

    monkeypatch.setattr(image_cache, "decode", no_decoding)
    again = image_cache.cached_images(celeba.find(tmp_path), crop=108, size=32)
    assert np.array_equal(first, again) and path.stat().st_mtime_ns == mtime
    assert "Loaded the cache" in capsys.readouterr().out

    monkeypatch.setattr(image_cache, "decode", real_decode)
    other_crop = image_cache.cached_images(source, crop=140, size=32)  # another crop: another cache
    assert image_cache.cache_path(source, 140, 32) != path and not np.array_equal(other_crop, first)
    assert "Building the cache" in capsys.readouterr().out
    write_faces(folder, 1, start=12)  # one more file: the file list, so the key, changed
    grown = celeba.find(tmp_path)
    assert image_cache.cache_path(grown, 108, 32) != path and len(image_cache.cached_images(grown, 108, 32)) == 13
    rebuilt = image_cache.cached_images(grown, 108, 32, rebuild=True)  # --rebuild_cache=True
    assert len(rebuilt) == 13 and "Building the cache" in capsys.readouterr().out
    assert not list(folder.parent.glob(".*.tmp"))  # no temporary files left


def test_load_gives_a_split_for_batches_and_fake_data(tmp_path):
    write_faces(tmp_path / "img_align_celeba", 9)
    split = celeba.load("celeba", tmp_path, "", False, 108, 16, 1, torch.device("cpu"))
    assert split.images.shape == (9, 3, 16, 16) and split.labels.tolist() == [0] * 9
    fake = celeba.load("fake", tmp_path / "unused", "", False, 108, 32, 1, torch.device("cpu"))
    assert fake.images.shape == (celeba.FAKE_SIZE, 3, 32, 32) and fake.images.dtype == torch.uint8
    # an explicit device gives the same batches as the default
    batches = Batches(split, 4, seed=0)
    for (a, la), (b, lb) in zip(batches.epoch(1), batches.epoch(1, torch.device("cpu")), strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)


@pytest.mark.parametrize("size", [32, 64])
def test_dcgan_shapes_ranges_and_init(size):
    dcgan = load_script("DCGAN-CelebA.py")
    cfg = {"LATENT_DIM": 100, "NGF": 8, "NDF": 8}
    models = dcgan.build_models(cfg, (3, size, size))
    generator, discriminator = models["generator"], models["discriminator"]
    assert generator.latent_dim == 100
    fake = generator(torch.randn(4, 100))
    assert fake.shape == (4, 3, size, size) and fake.min() >= -1 and fake.max() <= 1
    assert discriminator(fake).shape == (4,)
    strided = [m for m in generator.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(strided) == int(np.log2(size)) - 1 and strided[0].stride == (1, 1)
    first_conv = next(m for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d))
    assert abs(first_conv.weight.std().item() - 0.02) < 0.005
    z = dcgan.slerp(torch.randn(3, 100), torch.randn(3, 100), 10)
    assert z.shape == (3, 10, 100)


def test_script_trains_writes_every_output_and_resumes(tmp_path):
    images = write_faces(tmp_path / "faces", 40)
    out = tmp_path / "out"
    args = [f"--image_dir={images}", f"--out_dir={out}", "--image_size=32", "--ngf=8", "--ndf=8", "--batch_size=16"]
    result = run_script("DCGAN-CelebA.py", *args, "--epochs=1", "--workers=2")
    assert result.returncode == 0, result.stderr
    assert "Building the cache" in result.stdout and "epoch 1/1" in result.stdout
    # no Inception weights offline: one line says FID was skipped and why, and the run still ends well
    (skipped,) = [line for line in result.stdout.splitlines() if line.startswith("Inception FID skipped: ")]
    assert "torch-fidelity" in skipped or "weights" in skipped
    assert not (out / "metrics.csv").exists()
    for name in ("config.json", "samples/epoch_001.png", "loss.png", "losses.csv", "progress.gif"):
        assert (out / name).exists(), name
    with Image.open(out / "samples" / "epoch_001.png") as grid:  # 8x8 cells of 34 px, scaled 2x
        assert grid.size == (2 * (8 * 34 + 2),) * 2
    with Image.open(out / "interpolation.png") as walk:  # 8 rows of 10 steps
        assert walk.size == (2 * (10 * 34 + 2), 2 * (8 * 34 + 2))
    with open(out / "losses.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert 0 < float(row["d_real"]) < 1 and 0 < float(row["d_fake"]) < 1 and float(row["img_per_s"]) > 0
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["script"] == "DCGAN-CelebA.py" and state["image_shape"] == (3, 32, 32) and state["classes"] == ()
    assert set(state["models"]) == {"generator", "discriminator"} and set(state["optimizers"]) == {"opt_g", "opt_d"}
    assert state["fixed_noise"].shape == (64, 100) and "rng" in state and state["config"]["CROP"] == 108

    result = run_script("DCGAN-CelebA.py", *args, "--epochs=2")
    assert result.returncode == 0, result.stderr
    assert "Loaded the cache" in result.stdout and "Resuming" in result.stdout and "epoch 1/2" not in result.stdout
    resumed = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert resumed["epoch"] == 2 and torch.equal(resumed["fixed_noise"], state["fixed_noise"])
    assert (out / "samples" / "epoch_002.png").exists()
