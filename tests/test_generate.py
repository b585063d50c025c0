"""DCGAN-MNIST.py and CDCGAN-MNIST.py end to end, and generate.py on a run of every model kind."""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import generate, load_script, make_idx_dataset, run_script
from PIL import Image, ImageDraw, ImageFont

TINY_GAN = ["--epochs=1", "--batch_size=64"]
# one short run per model kind, trained once for the whole module: (script, extra arguments)
KINDS = {
    "vae": ("VAE-MNIST.py", ["--hidden=32", "--channels=8"]),
    "gan": ("GAN-MNIST.py", ["--hidden=32"]),
    "cgan": ("GAN-MNIST.py", ["--hidden=32", "--conditional=true"]),
    "dcgan": ("DCGAN-MNIST.py", ["--ngf=8", "--ndf=8"]),
    "cdcgan": ("CDCGAN-MNIST.py", ["--ngf=8", "--ndf=8"]),
    "cdcgan-fashion": ("CDCGAN-MNIST.py", ["--ngf=8", "--ndf=8", "--dataset=fashion-mnist"]),
    "celeba": ("DCGAN-CelebA.py", ["--dataset=fake", "--image_size=32", "--ngf=8", "--ndf=8", "--batch_size=32"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders of one-epoch runs of every model kind, keyed by kind."""
    base = tmp_path_factory.mktemp("runs")
    data_dir = make_idx_dataset(base / "data")
    make_idx_dataset(data_dir, "FashionMNIST")
    folders = {}
    for kind, (script, extra) in KINDS.items():
        out = base / kind
        no_eval = [] if script == "DCGAN-CelebA.py" else ["--eval_every=0"]  # metrics have their own tests
        result = run_script(script, f"--data_dir={data_dir}", f"--out_dir={out}", *TINY_GAN, *no_eval, *extra)
        assert result.returncode == 0, f"{script}: {result.stderr[-2000:]}"
        folders[kind] = out
    return folders


@pytest.mark.parametrize("kind", ["dcgan", "cdcgan"])
def test_dcgan_scripts_write_every_output(runs, kind):
    out = runs[kind]
    for name in ("samples/epoch_001.png", "loss.png", "progress.gif", "checkpoints/last.pt", "config.json"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "losses.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert 0 < float(row["d_real"]) < 1 and 0 < float(row["d_fake"]) < 1 and float(row["loss_g"]) > 0


def test_cdcgan_grid_has_one_row_per_class_with_names(runs):
    with Image.open(runs["cdcgan-fashion"] / "samples" / "epoch_001.png") as grid:
        # 10 rows x 10 columns of 28 px cells (2 px padding), drawn at 2x, plus a label margin
        assert grid.size[1] == 2 * (10 * 30 + 2) and grid.size[0] > 2 * (10 * 30 + 2)
    assert json.loads((runs["cdcgan-fashion"] / "config.json").read_text())["dataset"] == "fashion-mnist"


def test_cdcgan_columns_share_noise_and_rows_share_a_class():
    cdcgan = load_script("CDCGAN-MNIST.py")
    generator = cdcgan.build_models({"LATENT_DIM": 100, "NGF": 8, "NDF": 8})["generator"].eval()
    z = torch.randn(3, 100)
    same_z = generator(z[:1].repeat(2, 1), torch.tensor([3, 7]))
    assert not torch.allclose(same_z[0], same_z[1])  # the label changes the image
    discriminator = cdcgan.build_models({"LATENT_DIM": 100, "NGF": 8, "NDF": 8})["discriminator"].eval()
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    assert not torch.allclose(discriminator(x, torch.tensor([0, 0])), discriminator(x, torch.tensor([1, 1])))


@pytest.mark.parametrize("kind", list(KINDS))
def test_generate_png_and_npz_for_every_kind(runs, kind, tmp_path):
    png = tmp_path / "g.png"
    assert generate(runs[kind], "--n", 12, "--out", png) == 0
    with Image.open(png) as im:
        assert im.size[0] > 50
    npz = tmp_path / "g.npz"
    assert generate(runs[kind], "--n", 12, "--out", npz) == 0
    arrays = np.load(npz)
    colour = kind == "celeba"
    assert arrays["images"].dtype == np.uint8
    assert arrays["images"].shape == ((12, 32, 32, 3) if colour else (12, 28, 28))
    conditional = kind in ("cgan", "cdcgan", "cdcgan-fashion")
    assert ("labels" in arrays) == conditional
    if conditional:  # without --label the classes come in turn
        assert arrays["labels"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_label_by_index_and_by_name(runs, tmp_path):
    by_name, by_index = tmp_path / "name.npz", tmp_path / "index.npz"
    assert generate(runs["cdcgan-fashion"], "--label", "ankle boot", "--n", 5, "--out", by_name) == 0
    assert generate(runs["cdcgan-fashion"], "--label", 9, "--n", 5, "--out", by_index) == 0
    assert np.load(by_name)["labels"].tolist() == [9] * 5
    assert np.array_equal(np.load(by_name)["images"], np.load(by_index)["images"])
    assert generate(runs["cgan"], "--label", 7, "--n", 4, "--out", by_index) == 0
    assert np.load(by_index)["labels"].tolist() == [7] * 4


def test_same_seed_same_images_other_seed_other_images(runs, tmp_path):
    files = [tmp_path / f"{i}.npz" for i in range(3)]
    for path, seed in zip(files, (1, 1, 2), strict=True):
        assert generate(runs["dcgan"], "--seed", seed, "--n", 8, "--out", path) == 0
    images = [np.load(p)["images"] for p in files]
    assert np.array_equal(images[0], images[1]) and not np.array_equal(images[0], images[2])


def test_interpolation_strips(runs, tmp_path):
    out = tmp_path / "interp.npz"
    assert generate(runs["vae"], "--interpolate", "--n", 3, "--steps", 6, "--out", out) == 0
    strips = np.load(out)["images"].reshape(3, 6, 28, 28).astype(float)
    # neighbours along a strip are closer than its two ends
    step = np.abs(strips[:, 1:] - strips[:, :-1]).mean()
    ends = np.abs(strips[:, -1] - strips[:, 0]).mean()
    assert step < ends
    assert generate(runs["cdcgan"], "--interpolate", "--n", 2) == 0
    assert (runs["cdcgan"] / "interpolation.png").exists()


def test_slerp_keeps_the_ends_and_the_norm():
    gen = load_script("generate.py")
    a, b = torch.randn(4, 100), torch.randn(4, 100)
    path = gen.slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(path[:, 0], a, atol=1e-4) and torch.allclose(path[:, -1], b, atol=1e-4)
    assert path.norm(dim=-1).min() > 0.8 * min(a.norm(dim=-1).min(), b.norm(dim=-1).min())


def test_blur_smooths(runs, tmp_path):
    sharp, soft = tmp_path / "sharp.npz", tmp_path / "soft.npz"
    assert generate(runs["dcgan"], "--n", 8, "--out", sharp) == 0
    assert generate(runs["dcgan"], "--n", 8, "--blur", 1.0, "--out", soft) == 0

    def roughness(path):
        x = np.load(path)["images"].astype(float)
        return np.abs(np.diff(x, axis=2)).mean()

    assert roughness(soft) < 0.8 * roughness(sharp)


def test_a_chosen_class_from_several_runs_side_by_side(runs, tmp_path, capsys):
    side, png = tmp_path / "side.npz", tmp_path / "side.png"
    assert generate(runs["cgan"], runs["cdcgan"], runs["vae"], "--label", 7, "--n", 5, "--out", side) == 0
    saved = np.load(side)
    assert saved["images"].shape == (15, 28, 28) and [str(r) for r in saved["runs"]] == [
        "cgan (1 ep.)",
        "cdcgan (1 ep.)",
        "vae (1 ep.)",
    ]
    for row, kind in enumerate(("cgan", "cdcgan")):  # each row is what the run draws alone for that class
        assert generate(runs[kind], "--label", 7, "--n", 5, "--out", tmp_path / f"{kind}.npz") == 0
        assert np.array_equal(saved["images"][5 * row : 5 * row + 5], np.load(tmp_path / f"{kind}.npz")["images"])
    assert generate(runs["cgan"], runs["cdcgan-fashion"], "--label", "7", "--n", 5, "--out", png) == 0
    with Image.open(png) as grid:  # two rows of 28 px cells (2 px padding) at scale 2, and room for the names
        label = ImageDraw.Draw(grid).textlength("cdcgan-fashion (1 ep.)", font=ImageFont.load_default())
        assert grid.size[1] == 2 * (2 * 30 + 2) and grid.size[0] >= 2 * (5 * 30 + 2) + label
    capsys.readouterr()
    for args, words in [
        ((runs["cgan"], runs["cdcgan"]), "several run folders take --label"),
        ((runs["cgan"], runs["dcgan"], "--label", 7), "needs a conditional model"),
        ((runs["cgan"], runs["celeba"], "--label", 0), "different shapes"),
    ]:
        assert generate(*args) == 2, args
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


def test_generate_errors_are_one_line(runs, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    (foreign / "checkpoints").mkdir(parents=True)
    torch.save({"weights": torch.zeros(3)}, foreign / "checkpoints" / "last.pt")
    (tmp_path / "empty").mkdir()
    cases = [
        ((tmp_path / "missing",), "is not a folder"),
        ((tmp_path / "empty",), "no checkpoint in"),
        ((foreign,), "holds no readable checkpoint"),
        ((runs["dcgan"], "--label", 3), "needs a conditional model"),
        ((runs["cdcgan"], "--label", "cat"), "is not a class; use 0-9"),
        ((runs["cdcgan"], "--label", 10), "is not a class"),
        ((runs["dcgan"], "--out", tmp_path / "x.jpg"), "must end in .png or .npz"),
    ]
    for args, words in cases:
        assert generate(*args) == 2, args
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    # and from the command line: one line, no traceback
    result = run_script("generate.py", str(runs["dcgan"]), "--label", "3")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: --label needs a conditional model")


def test_score_a_finished_run_with_as_many_samples_as_asked(runs, tmp_path, capsys):
    assert generate(runs["cdcgan"], "--score", "--n", 200) == 0
    line = capsys.readouterr().out
    assert "200 samples: FID" in line and "label acc" in line and "evaluator" in line
    assert "after epoch 1 (last.pt, G's moving average)" in line  # CDCGAN-MNIST's average draws (EMA=0.999)
    assert "precision " in line and "coverage " in line  # the k-NN scores
    assert generate(runs["cdcgan"], "--score", "--n", 100, "--seed", 1) == 0  # a second row, appended
    with open(runs["cdcgan"] / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["n"] for r in rows] == ["200", "100"] and float(rows[0]["fid"]) > float(rows[0]["fid_floor"])
    assert sum(float(rows[0][f"share_{k}"]) for k in range(10)) == pytest.approx(1.0)
    assert 0 <= float(rows[0]["label_acc"]) <= 1
    assert rows[0]["checkpoint"] == "last.pt" and 0 <= float(rows[0]["recall"]) <= float(rows[0]["recall_floor"]) + 0.1


def test_score_refuses_a_run_it_cannot_score(runs, capsys):
    assert generate(runs["celeba"], "--score") == 2
    assert "--score needs a run on MNIST" in capsys.readouterr().err
