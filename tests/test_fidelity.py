"""The levers of the unconditional GANs' fidelity: self-conditioning (clusters of D's features that G and D are
conditioned on instead of labels) and truncation of z at sampling time (generate.py --truncation)."""

import numpy as np
import pytest
import torch
from conftest import generate, load_script, make_idx_dataset, run_script

from common import checkpoint, clusters, ema, gan, mnist_files

TINY = ["--epochs=2", "--batch_size=64", "--eval_every=0", "--recluster=200"]
WIDTHS = {"DCGAN-MNIST.py": ["--ngf=8", "--ndf=8"], "GAN-MNIST.py": ["--hidden=16"]}


def blobs(sizes, dim=8, seed=0):
    """Points in well-separated Gaussian blobs, and the blob of each."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[: len(sizes)] * 20
    points = torch.cat([c + torch.randn(n, dim, generator=gen) for c, n in zip(centres, sizes, strict=True)])
    return points, torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])


def test_kmeans_finds_separated_blobs_and_repeats_by_seed():
    points, truth = blobs([50, 120, 30])
    found = clusters.kmeans(points, 3, seed=0)
    pairs = {(int(f), int(t)) for f, t in zip(found, truth, strict=True)}
    assert len(pairs) == 3  # each cluster is exactly one blob, whatever its number
    assert torch.equal(found, clusters.kmeans(points, 3, seed=0))


def test_a_refit_keeps_the_numbers_of_the_clusters_it_found_before():
    old = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    new = torch.tensor([2, 2, 0, 0, 1, 1, 0])  # the same clusters renumbered, one image moved
    assert clusters.matched(new, old, 3).tolist() == [0, 0, 1, 1, 2, 2, 1]


def test_refit_labels_every_image_and_returns_the_shares():
    points, truth = blobs([40, 20, 20])
    found = clusters.Clusters(3, len(points), "cpu")
    shares = found.refit(lambda x: x, points, seed=1, batch=16)
    assert sorted(shares.tolist()) == pytest.approx([0.25, 0.25, 0.5])
    assert len({(int(f), int(t)) for f, t in zip(found.labels, truth, strict=True)}) == 3


def test_z_picks_clusters_in_proportion_to_their_shares_and_always_the_same():
    shares = torch.tensor([0.5, 0.1, 0.4])
    z = torch.randn(20_000, 5, generator=torch.Generator().manual_seed(0))
    picked = clusters.pick(z, shares)
    assert torch.bincount(picked, minlength=3).float().div(len(z)).tolist() == pytest.approx([0.5, 0.1, 0.4], abs=0.02)
    assert torch.equal(picked, clusters.pick(z.clone(), shares))
    assert clusters.pick(torch.full((1, 5), 9.0), shares).item() == 2  # the top of the CDF: the last cluster


def test_the_clusters_are_fitted_before_the_first_epoch_then_every_so_many_images():
    due = [e for e in range(1, 31) if clusters.due(e, images_per_epoch=3968, every=40_000)]
    assert due == [1, 12, 22]  # 40,000 images seen after 11 epochs of 3,968, 80,000 after 21
    assert [e for e in range(1, 6) if clusters.due(e, 60_000, 40_000)] == [1, 2, 3, 4, 5]  # full MNIST: every epoch


def test_the_self_conditioned_discriminator_starts_as_the_unconditional_one():
    module = load_script("DCGAN-MNIST.py")
    torch.manual_seed(0)
    plain = module.Discriminator(8)
    torch.manual_seed(0)
    conditioned = module.Discriminator(8, clusters=4)
    x = torch.randn(5, 1, 28, 28)
    assert torch.allclose(plain(x), conditioned(x, torch.tensor([0, 1, 2, 3, 0])))
    generator = module.Generator(10, 8, clusters=4)
    assert generator(torch.randn(6, 10)).shape == (6, 1, 28, 28)  # the cluster picked by z when none is given


def shuffled_labels(root):
    """The tiny MNIST at root with its training labels permuted: the same images, other labels."""
    raw = root / "MNIST" / "raw"
    images = mnist_files.read_idx(raw / "train-images-idx3-ubyte")
    labels = mnist_files.read_idx(raw / "train-labels-idx1-ubyte")
    mnist_files.write_idx(raw, images, np.roll(labels, 1), "train")
    return root


@pytest.mark.parametrize("script", ["DCGAN-MNIST.py", "GAN-MNIST.py"])
def test_a_self_conditioned_run_never_reads_the_labels_and_resumes_number_for_number(tmp_path, script):
    data_dir = make_idx_dataset(tmp_path / "data")
    other = shuffled_labels(make_idx_dataset(tmp_path / "other"))
    args = [*TINY, *WIDTHS[script], "--clusters=3"]
    for name, folder in (("straight", data_dir), ("other_labels", other)):
        result = run_script(script, f"--data_dir={folder}", f"--out_dir={tmp_path / name}", *args)
        assert result.returncode == 0, result.stderr[-2000:]
    resumed = tmp_path / "resumed"
    for epochs in (1, 2):  # the clusters are fitted again in epoch 2 (200 images): after the resume
        cut = [a for a in args if not a.startswith("--epochs")]
        result = run_script(script, f"--data_dir={data_dir}", f"--out_dir={resumed}", *cut, f"--epochs={epochs}")
        assert result.returncode == 0, result.stderr[-2000:]
    states = {
        name: checkpoint.read(tmp_path / name / "checkpoints" / "last.pt")
        for name in ("straight", "other_labels", "resumed")
    }
    found = states["straight"]["clusters"]
    assert len(found) == 256 and set(found.tolist()) == {0, 1, 2}  # every image in one of the 3 clusters
    shares = states["straight"]["models"]["generator"]["shares"]
    assert torch.allclose(shares, torch.bincount(found, minlength=3).float() / 256)
    for name in ("other_labels", "resumed"):  # labels shuffled, or the run stopped between the fits: the same run
        assert torch.equal(states[name]["clusters"], found), name
        for key, weights in states["straight"]["models"]["generator"].items():
            assert torch.equal(states[name]["models"]["generator"][key], weights), (name, key)


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("truncation")
    data_dir = make_idx_dataset(base / "data")
    out = base / "dcgan"
    args = [*TINY, *WIDTHS["DCGAN-MNIST.py"], "--epochs=1", "--clusters=3", "--ema=0.9"]
    result = run_script("DCGAN-MNIST.py", f"--data_dir={data_dir}", f"--out_dir={out}", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_truncation_draws_inside_the_threshold_and_repeats_by_seed(dcgan_run, tmp_path):
    generate_module = load_script("generate.py")
    state, sampler = generate_module.open_run(dcgan_run, torch.device("cpu"), "last")
    z = torch.randn(500, sampler.latent_dim, generator=torch.Generator().manual_seed(0)) * 3
    cut = sampler.truncated(z, 0.5, seed=4)
    assert cut[:, :-1].abs().max() <= 0.5 and (cut[:, :-1] != z[:, :-1]).any()
    assert torch.equal(cut[:, -1], z[:, -1])  # the coordinate that picks the cluster is left as drawn
    assert torch.equal(cut, sampler.truncated(z, 0.5, seed=4)) and not torch.equal(cut, sampler.truncated(z, 0.5, 5))
    kept = z.abs() <= 0.5
    assert torch.equal(cut[kept], z[kept])  # only the coordinates beyond the threshold are redrawn
    drawn = {}
    for name, extra in (("a", ["--truncation", "1"]), ("b", ["--truncation", "1"]), ("none", [])):
        assert generate(dcgan_run, "--checkpoint", "last", "--n", 16, "--out", tmp_path / f"{name}.npz", *extra) == 0
        drawn[name] = np.load(tmp_path / f"{name}.npz")["images"]
    assert np.array_equal(drawn["a"], drawn["b"]) and not np.array_equal(drawn["a"], drawn["none"])


@pytest.mark.parametrize("value", ["0", "-1", "nan", "x"])
def test_a_truncation_outside_its_domain_is_one_line(dcgan_run, value, capsys):
    code = generate(dcgan_run, "--checkpoint", "last", "--truncation", value)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--truncation" in err, err


def test_top_k_keeps_the_fakes_d_rates_highest_on_a_shrinking_schedule():
    logits = torch.tensor([0.3, -2.0, 1.5, 0.9, -0.1, 2.2, -1.0, 0.0])
    assert sorted(gan.top(logits, 0.5).tolist()) == pytest.approx([0.3, 0.9, 1.5, 2.2])
    assert torch.equal(gan.top(logits, 1.0), logits) and gan.top(logits, 0.01).tolist() == pytest.approx([2.2])
    shares = [gan.top_k_share(0.5, step) for step in (1, 10, 11, 690, 691, 5000)]
    assert shares == [1.0, 1.0, 0.99, pytest.approx(0.99**68), 0.5, 0.5]
    assert gan.top_k_share(1.0, 5000) == 1.0  # TOP_K = 1: every fake, always


def test_a_generator_step_under_top_k_learns_only_from_the_kept_fakes():
    module = load_script("DCGAN-MNIST.py")
    torch.manual_seed(0)
    generator, discriminator = module.Generator(4, 4), module.Discriminator(4)
    seen = []
    discriminator.register_forward_hook(lambda m, i, out: seen.append(out))
    opt = torch.optim.SGD(generator.parameters(), lr=0.0)
    loss = gan.g_step(generator, discriminator, opt, 8, keep=0.25)
    (logits,) = seen
    assert loss.item() == pytest.approx(gan.g_loss(logits.detach().topk(2).values).item())


def test_generate_draws_from_the_moving_average_unless_asked_for_g_itself(dcgan_run, tmp_path, capsys):
    generate_module = load_script("generate.py")
    state = checkpoint.read(dcgan_run / "checkpoints" / "last.pt")
    for model, kept in ((None, "generator_ema"), ("average", "generator_ema"), ("raw", "generator")):
        _, sampler = generate_module.open_run(dcgan_run, torch.device("cpu"), "last", model=model)
        drawn = sampler.module_models["generator"].state_dict()
        assert all(torch.equal(drawn[k], state["models"][kept][k]) for k in drawn), model
    assert generate(dcgan_run, "--checkpoint", "last", "--model", "raw", "--out", tmp_path / "raw.png") == 0
    assert "G itself" in capsys.readouterr().out


def test_a_run_without_an_average_refuses_model_average_and_clusters_refuse_conditional(tmp_path, capsys):
    out = tmp_path / "plain"
    args = ["--dataset=mnist-sample", "--epochs=1", "--batch_size=500", "--eval_every=0", "--hidden=16", "--ema=0"]
    assert run_script("GAN-MNIST.py", *args, f"--out_dir={out}").returncode == 0
    assert generate(out, "--model", "average") == 2
    err = capsys.readouterr().err
    assert "kept no moving average" in err and err.count("\n") == 1
    result = run_script("GAN-MNIST.py", *args, "--conditional=True", "--clusters=3", f"--out_dir={tmp_path / 'c'}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--clusters" in result.stderr


def test_more_clusters_than_images_is_one_line(tmp_path):
    args = [
        "--dataset=fake",
        "--epochs=1",
        "--batch_size=64",
        "--eval_every=0",
        "--ngf=4",
        "--ndf=4",
        "--clusters=100000",
    ]
    result = run_script("DCGAN-MNIST.py", *args, f"--out_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--clusters=100000 is more clusters than the" in result.stderr


def test_the_moving_average_follows_its_warm_up_schedule():
    model = torch.nn.Linear(1, 1, bias=False)
    averages = ema.Averages()
    average = averages.add("generator_ema", "generator", model, 0.999)
    for t, expected_step in ((0, 0.9), (1000, 1 - 1001 / 1010), (100_000, 0.001)):
        with torch.no_grad():
            model.weight.fill_(1.0)
            average.weight.fill_(0.0)
        averages.update(t)  # the average moves 1 - min(decay, (1 + t) / (10 + t)) of the way to the model
        assert average.weight.item() == pytest.approx(expected_step, rel=1e-4), t


def test_r1_adds_the_squared_gradient_of_d_at_the_real_images():
    module = load_script("DCGAN-MNIST.py")
    real = torch.rand(6, 1, 28, 28) * 2 - 1
    losses = {}
    for r1 in (0.0, 2.0):
        torch.manual_seed(0)
        generator, discriminator = module.Generator(4, 4), module.Discriminator(4)
        opt = torch.optim.SGD(discriminator.parameters(), lr=0.0)  # no move: both see the same D
        torch.manual_seed(1)
        losses[r1] = gan.d_step(generator, discriminator, opt, real, r1=r1)["loss_d"].item()
    x = real.clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(discriminator(x).sum(), x)  # the same D, in train mode as in the step
    expected = 2.0 / 2 * slope.square().flatten(1).sum(1).mean().item()
    assert losses[2.0] - losses[0.0] == pytest.approx(expected, rel=1e-3) and expected > 0


def test_lazy_r1_is_every_nth_step_n_times_as_strong_with_the_same_mean():
    weights = [gan.r1_weight(1.5, 4, step) for step in range(1, 13)]
    assert weights == [6.0, 0, 0, 0] * 3 and sum(weights) / len(weights) == 1.5
    assert [gan.r1_weight(1.5, 1, step) for step in (1, 2, 3)] == [1.5] * 3  # every step
    assert gan.r1_weight(0.0, 4, 1) == 0.0


@pytest.mark.parametrize("script", ["DCGAN-MNIST.py", "GAN-MNIST.py"])
def test_the_training_step_applies_r1_on_the_lazy_schedule(script):
    """D's loss in train_step carries R1 exactly on the steps r1_weight names: on the others it is R1's off loss."""
    module = load_script(script)
    cfg = {name: getattr(module, name) for name in dir(module) if name.isupper()}
    cfg.update(R1=1.0, R1_EVERY=3, CLUSTERS=0, TOP_K=1.0, K_STEPS=1, CONDITIONAL=False, HIDDEN=16, NGF=4, NDF=4)
    real, labels = torch.rand(8, 1, 28, 28) * 2 - 1, torch.zeros(8, dtype=torch.long)
    losses = {}
    for step in (1, 2, 4):
        for r1 in (0.0, 1.0):
            torch.manual_seed(0)
            nets = module.build_models({**cfg, "R1": r1})
            opts = {"opt_g": torch.optim.SGD(nets["generator"].parameters(), lr=0.0),
                    "opt_d": torch.optim.SGD(nets["discriminator"].parameters(), lr=0.0)}  # fmt: skip
            torch.manual_seed(1)
            losses[step, r1] = module.train_step({**cfg, "R1": r1}, nets, opts, real, labels, step)["loss_d"].item()
    assert losses[1, 1.0] > losses[1, 0.0] and losses[4, 1.0] > losses[4, 0.0]  # steps 1 and 4: R1
    assert losses[2, 1.0] == losses[2, 0.0]  # step 2: none


@pytest.mark.parametrize("script", ["DCGAN-MNIST.py", "GAN-MNIST.py"])
def test_the_training_step_counts_from_the_runs_start_across_epochs_and_a_resume(tmp_path, monkeypatch, script):
    """Lazy R1's and K_STEPS' count runs on across epochs and resumes: it never restarts at an epoch's start."""
    module = load_script(script)
    steps, step = [], module.train_step
    monkeypatch.setattr(module, "train_step", lambda *a, **k: steps.append(a[5]) or step(*a, **k))
    tiny = ["--ngf=4", "--ndf=4"] if script == "DCGAN-MNIST.py" else ["--hidden=16"]
    for epochs in (2, 3):  # the second run resumes the first and trains its third epoch
        argv = [*tiny, "--dataset=mnist-sample", "--batch_size=500", "--eval_every=0", "--device=cpu"]
        monkeypatch.setattr("sys.argv", [script, *argv, f"--epochs={epochs}", f"--out_dir={tmp_path / 'run'}"])
        module.main()
    assert steps == list(range(1, 25))  # the sample at batch 500: 8 steps an epoch


def test_the_learning_rates_fall_linearly_over_the_last_share_of_the_run():
    factors = [gan.lr_factor(0.25, step, 16) for step in range(1, 17)]
    assert factors == [1.0] * 12 + [1.0, 0.75, 0.5, 0.25]  # the last 4 steps: down to 1/4
    assert all(gan.lr_factor(0.0, step, 16) == 1.0 for step in range(1, 17))


def test_lr_decay_leaves_the_last_step_at_its_share_of_the_rates(tmp_path):
    out = tmp_path / "run"  # the sample at batch 500: 8 steps an epoch, 16 in all, the last 8 decaying
    args = ["--dataset=mnist-sample", "--epochs=2", "--batch_size=500", "--eval_every=0", "--ngf=4", "--ndf=4"]
    result = run_script("DCGAN-MNIST.py", *args, "--r1=0", "--lr_decay=0.5", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    state = checkpoint.read(out / "checkpoints" / "last.pt")
    rates = {name: state["optimizers"][name]["param_groups"][0]["lr"] for name in ("opt_g", "opt_d")}
    assert rates == pytest.approx({"opt_g": 4e-4 / 8, "opt_d": 1.6e-3 / 8})


def test_gan_mnist_keeps_a_moving_average_of_g_that_generate_draws(tmp_path):
    out = tmp_path / "gan"
    args = ["--dataset=mnist-sample", "--epochs=1", "--batch_size=500", "--eval_every=0", "--hidden=16", "--ema=0.9"]
    result = run_script("GAN-MNIST.py", *args, f"--out_dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    state = checkpoint.read(out / "checkpoints" / "last.pt")
    average, raw = state["models"]["generator_ema"], state["models"]["generator"]
    assert any(not torch.equal(average[k], raw[k]) for k in raw if raw[k].is_floating_point())
    _, sampler = load_script("generate.py").open_run(out, torch.device("cpu"), "last")
    drawn = sampler.module_models["generator"].state_dict()
    assert all(torch.equal(drawn[k], average[k]) for k in drawn)  # the average draws, not G itself
