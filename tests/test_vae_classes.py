"""A chosen class from the VAE: class Gaussians in the unconditional VAE's latent space, and the
conditional VAE (VAE-MNIST.py --conditional=True), end to end with generate.py --label and --score."""

import csv
import json
import shutil
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from conftest import generate, load_script, make_idx_dataset, run_script
from PIL import Image

from common import class_regions, data, evaluation

VAE = load_script("VAE-MNIST.py")
GENERATE = load_script("generate.py")
SMALL = ["--eval_every=1", "--batch_size=64", "--hidden=32", "--channels=8"]
SCORED = ["--eval_samples=200", "--iwae_k=2"]  # a quick evaluation (the evaluator is cached beforehand)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One-epoch runs, keyed by kind: the VAE and the CVAE (evaluated every epoch), a Fashion-MNIST VAE."""
    base = tmp_path_factory.mktemp("vae-classes")
    data_dir = make_idx_dataset(base / "data")
    make_idx_dataset(data_dir, "FashionMNIST")
    # a one-epoch evaluator, cached where the runs and generate.py --score look for it
    evaluation.Evaluator.for_dataset(data.load("mnist", data_dir, False, "cpu"), data_dir, "cpu", epochs=1)
    kinds = {
        "vae": ([f"--out_dir={base / 'vae'}", *SCORED], base / "vae"),
        # no --out_dir: the CVAE's default folder has the -conditional suffix
        "cvae": (["--conditional=true", *SCORED], base / "outputs" / "VAE-MNIST-conditional"),
        "fashion": ([f"--out_dir={base / 'fashion'}", "--dataset=fashion-mnist", "--eval_every=0"], base / "fashion"),
    }
    folders = {"data": data_dir}
    for kind, (args, out) in kinds.items():
        result = run_script("VAE-MNIST.py", f"--data_dir={data_dir}", "--epochs=1", *SMALL, *args, cwd=base)
        assert result.returncode == 0, f"{kind}: {result.stderr[-2000:]}"
        folders[kind] = out
    return folders


def last(run) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)


def trained_vae(state: dict) -> torch.nn.Module:
    """The run's VAE, rebuilt from its checkpoint on the CPU, in eval mode."""
    vae = VAE.build_models(state["config"], tuple(state["image_shape"]), len(state["classes"]))["vae"]
    vae.load_state_dict(state["models"]["vae"])
    return vae.eval()


def test_class_statistics_are_fitted_to_each_class_and_saved(runs):
    state = last(runs["vae"])
    mean, cov, count = (state[f"class_latent_{k}"] for k in ("mean", "cov", "count"))
    assert mean.shape == (10, 20) and cov.shape == (10, 20, 20) and mean.device.type == "cpu"
    train = data.load("mnist", runs["data"], False, "cpu").train
    assert count.tolist() == torch.bincount(train.labels, minlength=10).tolist()
    # each class's mean is that of its own training images' posterior means (not of all, not of another class)
    means = class_regions.posterior_means(trained_vae(state), train)
    for k in range(10):
        assert torch.allclose(mean[k], means[train.labels == k].mean(0), atol=1e-5), k
    assert not torch.allclose(mean[3], mean[8], atol=1e-3)
    assert torch.allclose(cov, cov.transpose(1, 2)) and torch.linalg.eigvalsh(cov).min() > 0  # ridge: invertible


def test_label_on_the_vae_decodes_the_class_gaussian(runs, tmp_path):
    out = {k: tmp_path / f"{k}.npz" for k in ("8", "3", "none")}
    assert generate(runs["vae"], "--label", 8, "--n", 200, "--out", out["8"]) == 0
    assert generate(runs["vae"], "--label", 3, "--n", 200, "--out", out["3"]) == 0
    assert generate(runs["vae"], "--n", 200, "--out", out["none"]) == 0
    eights = np.load(out["8"])
    assert eights["labels"].tolist() == [8] * 200 and "labels" not in np.load(out["none"])
    # the images are the decoded z = mean_8 + L_8 eps for generate.py's noise eps (seed 0)
    state = last(runs["vae"])
    latents = {k: state[f"class_latent_{k}"] for k in ("mean", "cov", "count")}
    eps = torch.randn(200, 20, generator=torch.Generator().manual_seed(0))
    z = class_regions.place(latents, eps, torch.full((200,), 8))
    expected = GENERATE.to_uint8(trained_vae(state).sample(z))
    assert np.abs(eights["images"].astype(int) - expected.astype(int)).max() <= 1
    # those z come from class 8's Gaussian: their mean is nearest to mean_8 (Mahalanobis distance under cov_8)
    gap = z.mean(0) - latents["mean"]
    distance = (gap[:, None] @ torch.linalg.solve(latents["cov"][8], gap[:, :, None])).flatten()
    assert distance.argmin().item() == 8
    # another class or none draws other images from the same noise
    assert not np.array_equal(eights["images"], np.load(out["3"])["images"])
    assert not np.array_equal(eights["images"], np.load(out["none"])["images"])


def test_the_cvae_draws_the_asked_class_from_its_gaussian_or_from_its_prior(runs, tmp_path):
    eights, threes, turns, prior = (tmp_path / f"{name}.npz" for name in ("8", "3", "turns", "prior"))
    assert generate(runs["cvae"], "--label", 8, "--n", 5, "--out", eights) == 0
    assert generate(runs["cvae"], "--label", "3", "--n", 5, "--out", threes) == 0
    assert generate(runs["cvae"], "--n", 12, "--out", turns) == 0
    assert generate(runs["cvae"], "--label", 8, "--n", 5, "--sampler", "prior", "--out", prior) == 0
    assert np.load(eights)["labels"].tolist() == [8] * 5
    assert np.load(turns)["labels"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]  # without --label: in turn
    state = last(runs["cvae"])
    assert state["config"]["SAMPLER"] == "mixture"
    latents = {k: state[f"class_latent_{k}"] for k in ("mean", "cov", "count")}
    vae = trained_vae(state)
    train = data.load("mnist", state["config"]["DATA_DIR"], False).train  # the fit: z given the class, class 8's
    with torch.no_grad():
        codes = vae.encoder(data.to_unit(train.images), train.labels)[0]
    assert torch.allclose(latents["mean"][8], codes[train.labels == 8].mean(0), atol=1e-4)
    eps, labels = torch.randn(5, 20, generator=torch.Generator().manual_seed(0)), torch.full((5,), 8)
    from_gaussian = vae.sample(class_regions.place(latents, eps, labels), labels)  # the run's sampler
    for drawn, expected in ((eights, from_gaussian), (prior, vae.sample(eps, labels))):
        assert np.abs(np.load(drawn)["images"].astype(int) - GENERATE.to_uint8(expected).astype(int)).max() <= 1
    assert not np.array_equal(np.load(eights)["images"], np.load(prior)["images"])
    assert not np.array_equal(np.load(eights)["images"], np.load(threes)["images"])  # same noise, other class


def test_class_names_pick_the_class_and_a_bad_label_is_one_line(runs, tmp_path, capsys):
    by_name, by_index = tmp_path / "name.npz", tmp_path / "index.npz"
    assert generate(runs["fashion"], "--label", "Ankle boot", "--n", 4, "--out", by_name) == 0
    assert generate(runs["fashion"], "--label", 9, "--n", 4, "--out", by_index) == 0
    assert np.load(by_name)["labels"].tolist() == [9] * 4
    assert np.array_equal(np.load(by_name)["images"], np.load(by_index)["images"])
    capsys.readouterr()
    for kind, bad in (("fashion", "cat"), ("vae", 10), ("cvae", "eight")):
        assert generate(runs[kind], "--label", bad) == 2
        err = capsys.readouterr().err
        assert "is not a class; use 0-9" in err and err.count("\n") == 1, err


def test_cvae_grid_and_resume(runs):
    out = runs["cvae"]
    with Image.open(out / "samples" / "epoch_001.png") as grid:  # 10 labelled rows of 10 columns, drawn at 2x
        assert grid.size[1] == 2 * (10 * 30 + 2) and grid.size[0] > 2 * (10 * 30 + 2)
    assert json.loads((out / "config.json").read_text())["conditional"] is True
    assert (out / "latent.png").exists()
    first = last(out)
    args = [f"--data_dir={runs['data']}", f"--out_dir={out}", "--epochs=2", *SMALL, "--conditional=true", *SCORED]
    result = run_script("VAE-MNIST.py", *args)
    assert result.returncode == 0, result.stderr
    assert "Resuming" in result.stdout and "epoch 1/2" not in result.stdout and "epoch 2/2" in result.stdout
    second = last(out)
    assert second["epoch"] == 2 and torch.equal(first["fixed_noise"], second["fixed_noise"])
    assert second["history"][0] == first["history"][0] and (out / "samples" / "epoch_002.png").exists()
    # a conditional checkpoint does not resume as an unconditional run
    unconditional = [f"--data_dir={runs['data']}", f"--out_dir={out}", "--epochs=3", *SMALL]
    result = run_script("VAE-MNIST.py", *unconditional)
    assert result.returncode == 2 and "--conditional (saved True, now False)" in result.stderr


def test_metrics_report_the_asked_class_accuracy_of_both_routes(runs):
    with open(runs["vae"] / "metrics.csv") as f:
        (vae_row,) = list(csv.DictReader(f))
    with open(runs["cvae"] / "metrics.csv") as f:
        cvae_row = list(csv.DictReader(f))[0]
    assert 0 <= float(vae_row["region_acc"]) <= 1 and "label_acc" not in vae_row
    assert 0 <= float(cvae_row["label_acc"]) <= 1 and "region_acc" not in cvae_row
    assert "label_acc_9" in cvae_row


@pytest.mark.parametrize(("kind", "column"), [("vae", "region_acc"), ("cvae", "label_acc")])
def test_score_reports_the_asked_class_accuracy(runs, kind, column, capsys):
    assert generate(runs[kind], "--score", "--n", 100) == 0
    line = capsys.readouterr().out
    assert f"{column.split('_')[0]} acc" in line
    with open(runs[kind] / "scores.csv") as f:
        row = list(csv.DictReader(f))[-1]
    assert 0 <= float(row[column]) <= 1
    if kind == "vae":  # the number of the latent regions in the checkpoint, with generate.py's noise
        state = last(runs["vae"])
        latents = {k: state[f"class_latent_{k}"] for k in ("mean", "cov", "count")}
        ds = data.load("mnist", runs["data"], False, "cpu")
        evaluator = evaluation.Evaluator.for_dataset(ds, runs["data"], "cpu")
        expected = class_regions.region_scores(trained_vae(state), latents, 100, 0, evaluator)["region_acc"]
        assert float(row[column]) == pytest.approx(expected)


def test_a_vae_checkpoint_without_class_statistics_says_how_to_fit_them(runs, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(runs["vae"], old)
    state = last(old)
    for name in ("mean", "cov", "count"):  # a run from before the statistics were saved
        del state[f"class_latent_{name}"]
    state["config"].pop("CONDITIONAL")
    state.pop("best")  # nor best.pt, which generate.py would read first
    torch.save(state, old / "checkpoints" / "last.pt")
    (old / "checkpoints" / "previous.pt").unlink(missing_ok=True)
    (old / "checkpoints" / "best.pt").unlink()
    capsys.readouterr()
    assert generate(old, "--label", 8) == 2
    err = capsys.readouterr().err
    assert "has none" in err and err.count("\n") == 1, err
    command = err.split("this fits them: ")[1].split()
    assert command[:2] == ["python", "VAE-MNIST.py"] and f"--out_dir={old}" in command
    assert "--epochs=2" in command and "--hidden=32" in command and "--channels=8" in command
    # the command resumes the old run, which fits them; then --label works
    result = run_script(command[1], *command[2:], "--eval_every=0")
    assert result.returncode == 0, result.stderr
    assert "note: the checkpoint has no class_latent_mean; it starts afresh" in result.stdout
    assert last(old)["class_latent_count"].sum() == 256
    assert generate(old, "--label", 8, "--n", 3) == 0
    # an unfitted placeholder (a run stopped before its first fit) is refused the same way
    state = last(old)
    state["class_latent_count"].zero_()
    torch.save(state, old / "checkpoints" / "last.pt")
    assert generate(old, "--label", 8) == 2 and "has none" in capsys.readouterr().err
    # and from the command line: one line, no traceback
    result = run_script("generate.py", str(old), "--label", "8")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: --label on this VAE needs the class statistics")


def test_the_mixture_of_class_gaussians_recovers_known_gaussians(monkeypatch):
    """Codes drawn from three known Gaussians: the fit finds them, and the mixture draws each class at its share."""
    gen = torch.Generator().manual_seed(0)
    means = torch.tensor([[3.0, 0.0], [-3.0, 1.0], [0.0, -4.0]])
    scales, counts = torch.tensor([0.5, 1.0, 0.3]), [3000, 1000, 2000]
    codes = torch.cat([means[k] + scales[k] * torch.randn(n, 2, generator=gen) for k, n in enumerate(counts)])
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(counts)])
    monkeypatch.setattr(class_regions, "posterior_means", lambda vae, split: codes)  # the encoder's codes
    latents = class_regions.blank(3, 2)
    class_regions.fit(None, data.Split(torch.zeros(len(codes), 1, 1, 1, dtype=torch.uint8), labels), latents)
    assert torch.allclose(latents["mean"], means, atol=0.05)
    for k in range(3):
        assert torch.allclose(latents["cov"][k], scales[k] ** 2 * torch.eye(2), rtol=0.1, atol=0.05)
    picked = class_regions.components(latents, torch.rand(60_000, generator=gen))
    shares = torch.bincount(picked, minlength=3) / 60_000
    assert torch.allclose(shares, torch.tensor(counts) / 6000, atol=0.01)
    z = class_regions.place(latents, torch.randn(60_000, 2, generator=gen), picked)
    for k in range(3):
        assert torch.allclose(z[picked == k].mean(0), means[k], atol=0.05)


def test_the_vae_draws_from_its_mixture_and_generate_picks_either_sampler(runs, tmp_path, capsys):
    state = last(runs["vae"])
    assert state["config"]["SAMPLER"] == "mixture" and state["fixed_choice"].shape == (64,)
    latents = {k: state[f"class_latent_{k}"] for k in ("mean", "cov", "count")}
    vae, z, u = trained_vae(state), state["fixed_noise"], state["fixed_choice"]
    with torch.no_grad():
        mixture = class_regions.sample(vae, z, None, u, latents, "mixture")
        prior = class_regions.sample(vae, z, None, u, latents, "prior")
        assert torch.equal(prior, vae.sample(z)) and not torch.equal(mixture, prior)
        assert torch.equal(mixture, class_regions.sample(vae, z, None, u, latents, "mixture"))  # reproducible
    files = {}
    for sampler in ("prior", "mixture", "mixture"):
        out = tmp_path / f"{sampler}-{len(files)}.npz"
        assert generate(runs["vae"], "--sampler", sampler, "--n", 16, "--seed", 3, "--out", out) == 0
        files[out] = np.load(out)["images"]
    first, second, third = files.values()
    assert np.array_equal(second, third) and not np.array_equal(first, second)  # the same seed, the same draw
    for sampler in ("prior", "mixture"):
        assert generate(runs["vae"], "--sampler", sampler, "--score", "--n", 100) == 0
    capsys.readouterr()


@pytest.mark.parametrize("kind", ["vae", "cvae"])
def test_a_vae_checkpoint_without_a_fit_refuses_the_mixture_in_one_line(runs, tmp_path, capsys, kind):
    old = tmp_path / "old"
    shutil.copytree(runs[kind], old)
    state = last(old)
    state["class_latent_count"].zero_()  # stopped before its first fit
    torch.save(state, old / "checkpoints" / "last.pt")
    (old / "checkpoints" / "best.pt").unlink()
    capsys.readouterr()
    assert generate(old, "--sampler", "mixture") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --sampler mixture needs the class statistics") and err.count("\n") == 1, err
    assert generate(old, "--sampler", "prior", "--n", 4) == 0  # the prior needs no fit


def test_the_bounds_under_bf16_autocast_stay_those_of_fp32():
    """The run's autocast speeds the test ELBO and the IWAE bound; the bounds stay fp32's, and IWAE the tighter."""
    torch.manual_seed(0)
    train, test = data.load_sample()
    cfg = {**{k: getattr(VAE, k) for k in dir(VAE) if k.isupper()}, "HIDDEN": 64, "CHANNELS": 8}
    vae = VAE.build_models(cfg, (1, 28, 28), 10)["vae"]
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for start in range(0, 1024, 128):  # a few steps: a model that has begun to fit, not a random one
        VAE.train_step(cfg, {"vae": vae}, {"opt": opt}, data.to_unit(train.images[start : start + 128]), None)
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    test = data.Split(test.images[:200], test.labels[:200])
    elbo, elbo_bf16 = (VAE.evaluate(vae, test, 1.0, autocast=a)[0] for a in (nullcontext, bf16))
    torch.manual_seed(1)
    iwae = VAE.iwae_bound(vae, test, 20, 200)
    torch.manual_seed(1)
    iwae_bf16 = VAE.iwae_bound(vae, test, 20, 200, autocast=bf16)
    assert abs(elbo_bf16 - elbo) < 1e-3 * elbo and abs(iwae_bf16 - iwae) < 1e-3 * iwae, (
        elbo,
        elbo_bf16,
        iwae,
        iwae_bf16,
    )
    assert iwae_bf16 < elbo_bf16
