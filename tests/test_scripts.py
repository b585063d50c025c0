"""VAE-MNIST.py and GAN-MNIST.py end to end as subprocesses on tiny real-digit IDX data."""

import csv
import json

import pytest
import torch
from conftest import load_script, run_script, test_device
from PIL import Image

from common import gan

TINY = ["--epochs=1", "--batch_size=64", "--eval_every=0"]


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_image(path, min_size=(40, 40)):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        return im.convert("L")


def test_vae_writes_every_output(tmp_path, mnist_root):
    out = tmp_path / "vae"
    result = run_script(
        "VAE-MNIST.py",
        f"--data_dir={mnist_root}",
        f"--out_dir={out}",
        "--epochs=2",
        "--latent_dim=2",
        "--batch_size=64",
    )
    assert result.returncode == 0, result.stderr
    for name in (
        "samples/epoch_001.png",
        "samples/epoch_002.png",
        "reconstructions/epoch_002.png",
        "loss.png",
        "latent.png",
        "manifold.png",
    ):
        assert_image(out / name)
    history = rows(out / "losses.csv")
    assert [r["epoch"] for r in history] == ["1", "2"]
    assert float(history[1]["test_neg_elbo"]) < 543  # below the 784 * log(2) of a coin-flip decoder
    with Image.open(out / "progress.gif") as gif:
        assert gif.n_frames == 2
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 2 and set(state) >= {"models", "optimizers", "rng", "fixed_noise", "config", "history"}
    assert "epoch 2/2" in result.stdout


def test_gan_writes_every_output_and_logs_d_outputs(tmp_path, mnist_root):
    out = tmp_path / "gan"
    args = [f"--data_dir={mnist_root}", f"--out_dir={out}", *TINY, "--k_steps=2", "--amp=true", "--fused_adam=auto"]
    result = run_script("GAN-MNIST.py", *args)
    assert result.returncode == 0, result.stderr
    # the switches are accepted and obeyed (bf16 autocast runs on any device), and said in one line
    line = f"speed: auto -> bf16 autocast on {test_device()}"
    assert line in result.stdout.splitlines()[0]
    saved = json.loads((out / "config.json").read_text())
    assert saved["amp"] is True and saved["fused_adam"] == "auto" and saved["speed"].startswith(line[7:])
    assert_image(out / "samples" / "epoch_001.png")
    assert_image(out / "loss.png")
    (row,) = rows(out / "losses.csv")
    assert 0 < float(row["d_real"]) < 1 and 0 < float(row["d_fake"]) < 1
    assert float(row["loss_d"]) > 0 and float(row["loss_g"]) > 0 and float(row["img_per_s"]) > 0


def test_conditional_gan_grid_has_a_labelled_row_per_class(tmp_path, mnist_root):
    out = tmp_path / "cgan"
    result = run_script("GAN-MNIST.py", f"--data_dir={mnist_root}", f"--out_dir={out}", *TINY, "--conditional=true")
    assert result.returncode == 0, result.stderr
    grid = assert_image(out / "samples" / "epoch_001.png")
    # 10 rows of 28x28 cells (2 px padding) at scale 2, plus a label margin on the left
    assert grid.size[1] == 2 * (10 * 30 + 2) and grid.size[0] > 2 * (10 * 30 + 2)
    assert json.loads((out / "config.json").read_text())["conditional"] is True


def test_resume_continues_with_the_same_fixed_noise_and_history(tmp_path, mnist_root):
    out = tmp_path / "gan"
    common_args = [f"--data_dir={mnist_root}", f"--out_dir={out}", "--batch_size=64"]
    assert run_script("GAN-MNIST.py", *common_args, "--epochs=1").returncode == 0
    first = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    result = run_script("GAN-MNIST.py", *common_args, "--epochs=2")
    assert result.returncode == 0, result.stderr
    assert "Resuming" in result.stdout and "epoch 1/2" not in result.stdout
    second = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert second["epoch"] == 2 and torch.equal(first["fixed_noise"], second["fixed_noise"])
    assert second["history"][0] == first["history"][0] and len(second["history"]) == 2
    assert [r["epoch"] for r in rows(out / "losses.csv")] == ["1", "2"]
    assert (out / "samples" / "epoch_002.png").exists()

    # a resumed run equals an uninterrupted one: same batches, same noise, same weights
    straight = tmp_path / "straight"
    assert (
        run_script(
            "GAN-MNIST.py", f"--data_dir={mnist_root}", f"--out_dir={straight}", "--batch_size=64", "--epochs=2"
        ).returncode
        == 0
    )
    third = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    for name, tensor in second["models"]["generator"].items():
        assert torch.allclose(tensor.float(), third["models"]["generator"][name].float(), atol=1e-5), name


def test_resume_refuses_changed_model_shape_and_resume_false_moves_aside(tmp_path, mnist_root):
    out = tmp_path / "vae"
    args = [f"--data_dir={mnist_root}", f"--out_dir={out}", *TINY]
    assert run_script("VAE-MNIST.py", *args).returncode == 0
    result = run_script("VAE-MNIST.py", *args, "--latent_dim=4", "--epochs=2")
    assert result.returncode == 2 and "--latent_dim (saved 20, now 4)" in result.stderr
    result = run_script("VAE-MNIST.py", *args, "--latent_dim=4", "--resume=false")
    assert result.returncode == 0, result.stderr
    siblings = [p for p in tmp_path.iterdir() if p.name.startswith("vae-")]
    assert len(siblings) == 1 and (siblings[0] / "checkpoints" / "last.pt").exists()
    assert json.loads((out / "config.json").read_text())["latent_dim"] == 4


def test_offline_mnist_trains_on_the_sample_and_says_so(tmp_path):
    out = tmp_path / "vae"
    result = run_script(
        "VAE-MNIST.py",
        f"--data_dir={tmp_path / 'nothing'}",
        f"--out_dir={out}",
        "--epochs=1",
        "--batch_size=500",
        "--eval_every=0",  # the metrics have their own tests (tests/test_metrics.py)
    )
    assert result.returncode == 0, result.stderr
    assert "REAL-DIGIT SAMPLE" in result.stdout
    assert json.loads((out / "config.json").read_text())["dataset"] == "mnist-sample"


@pytest.mark.parametrize("latent_dim", [2, 20])
def test_vae_shapes_and_ranges(latent_dim):
    vae_module = load_script("VAE-MNIST.py")
    cfg = {"LATENT_DIM": latent_dim, "HIDDEN": 64, "CHANNELS": 8}
    vae = vae_module.build_models(cfg)["vae"]
    x = torch.rand(5, 1, 28, 28)
    logits, mu, logvar = vae(x)
    assert logits.shape == x.shape and mu.shape == logvar.shape == (5, latent_dim)
    images = vae.sample(torch.randn(3, latent_dim))
    assert images.shape == (3, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert vae_module.vae_loss(logits, x, mu, logvar, 1.0).item() > 0


@pytest.mark.parametrize(
    ("conditional", "d_labels"),
    [
        (False, "projection"),
        (True, "concat"),
        (True, "projection"),
        (True, "classifier"),
        (True, "projection+classifier"),
    ],
)
def test_gan_shapes_and_ranges(conditional, d_labels):
    script = load_script("GAN-MNIST.py")
    models = script.build_models({"LATENT_DIM": 100, "HIDDEN": 32, "CONDITIONAL": conditional, "D_LABELS": d_labels})
    generator, discriminator = models["generator"], models["discriminator"]
    labels = torch.arange(4) if conditional else None
    fake = generator(torch.randn(4, 100), labels)
    assert fake.shape == (4, 1, 28, 28) and fake.min() >= -1 and fake.max() <= 1
    has_head = conditional and "classifier" in d_labels
    out = discriminator(fake, labels)
    logits = out[0] if has_head else out
    assert logits.shape == (4,) and (not has_head or out[1].shape == (4, 10))
    if conditional:  # the label really changes the output
        assert not torch.allclose(
            generator(torch.zeros(2, 100), torch.tensor([0, 1]))[0],
            generator(torch.zeros(2, 100), torch.tensor([0, 1]))[1],
        )
        same = fake[:1].repeat(2, 1, 1, 1)  # one image, two labels: D's verdict depends on the label unless
        verdict = gan.split(discriminator(same, torch.tensor([0, 1])))[0]  # only its class head uses it
        assert torch.allclose(verdict[0], verdict[1]) == (d_labels == "classifier")  # not bit-equal: row kernels
    first = discriminator.net[0].in_features  # the one-hot label is an input only with concat
    assert first == 784 + (10 if conditional and d_labels == "concat" else 0)
    assert (discriminator.embed is not None) == (conditional and "projection" in d_labels)


@pytest.mark.parametrize("minibatch_std", [False, True])
def test_gan_discriminator_sees_the_batch_spread_only_with_minibatch_std(minibatch_std):
    """With MINIBATCH_STD, D's verdict on one image depends on the batch around it: a batch of copies (a
    collapsed G) has no spread. Without it, D judges each image alone (it has no BatchNorm)."""
    script = load_script("GAN-MNIST.py")
    cfg = {"LATENT_DIM": 8, "HIDDEN": 16, "CONDITIONAL": False, "MINIBATCH_STD": minibatch_std}
    discriminator = script.build_models(cfg)["discriminator"]
    assert discriminator.net[-1].in_features == 16 + minibatch_std
    varied = torch.rand(8, 1, 28, 28) * 2 - 1
    copies = varied[:1].repeat(8, 1, 1, 1)
    assert torch.allclose(discriminator(varied)[0], discriminator(copies)[0]) != minibatch_std
    assert script.with_spread(torch.ones(4, 3))[:, -1].max() < 1e-3  # no spread, only the 1e-8 under the root
    assert torch.allclose(script.with_spread(torch.tensor([[0.0], [2.0]]))[:, -1], torch.tensor([1.0, 1.0]))
    old = {k: v for k, v in cfg.items() if k != "MINIBATCH_STD"}  # a checkpoint from before the constant
    assert script.build_models(old)["discriminator"].net[-1].in_features == 16


@pytest.mark.parametrize("d_labels", ["planes", "classifier"])
def test_cdcgan_discriminator_sees_the_label_as_set(d_labels):
    """planes: the verdict on one image depends on the label; classifier: D is label-blind and names the class."""
    models = load_script("CDCGAN-MNIST.py").build_models({"LATENT_DIM": 8, "NGF": 4, "NDF": 4, "D_LABELS": d_labels})
    same = torch.rand(1, 1, 28, 28).repeat(2, 1, 1, 1) * 2 - 1
    out = models["discriminator"](same, torch.tensor([0, 1]))
    if d_labels == "planes":
        assert out.shape == (2,) and out.unique().numel() == 2
    else:
        logits, classes = out
        assert logits.shape == (2,) and classes.shape == (2, 10)
        assert logits.unique().numel() == 1 and torch.equal(classes[0], classes[1])


def test_a_run_from_before_d_labels_resumes_with_its_setting_and_says_so_otherwise(tmp_path, mnist_root):
    out = tmp_path / "cgan"
    args = [f"--data_dir={mnist_root}", f"--out_dir={out}", *TINY, "--conditional=true", "--hidden=32"]
    assert run_script("GAN-MNIST.py", *args, "--d_labels=concat").returncode == 0
    path = out / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=False)
    del state["config"]["D_LABELS"]  # as an older version saved it: it did not know the constant
    torch.save(state, path)
    result = run_script("GAN-MNIST.py", *args, "--epochs=2")  # the default, projection, builds other layers
    assert result.returncode == 2 and "--d_labels=concat" in result.stderr and "Traceback" not in result.stderr
    result = run_script("GAN-MNIST.py", *args, "--epochs=2", "--d_labels=concat")
    assert result.returncode == 0, result.stderr


def test_each_network_resumes_at_its_own_changed_rate(tmp_path, mnist_root):
    out = tmp_path / "gan"
    args = [f"--data_dir={mnist_root}", f"--out_dir={out}", *TINY, "--hidden=32"]
    assert run_script("GAN-MNIST.py", *args).returncode == 0
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert [state["optimizers"][o]["param_groups"][0]["lr"] for o in ("opt_g", "opt_d")] == [2e-4, 8e-4]
    assert run_script("GAN-MNIST.py", *args, "--epochs=2", "--lr_d=0.0003").returncode == 0
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 2
    assert [state["optimizers"][o]["param_groups"][0]["lr"] for o in ("opt_g", "opt_d")] == [2e-4, 3e-4]


def test_a_changed_lr_takes_effect_when_resuming(tmp_path, mnist_root):
    out = tmp_path / "vae"
    args = [f"--data_dir={mnist_root}", f"--out_dir={out}", "--batch_size=64", "--eval_every=0", "--hidden=32"]
    assert run_script("VAE-MNIST.py", *args, "--epochs=1").returncode == 0
    result = run_script("VAE-MNIST.py", *args, "--epochs=2", "--lr=0.0004")
    assert result.returncode == 0, result.stderr
    # said once, naming only what changed (not --epochs, which a resume raises on purpose)
    assert "note: resuming with settings that differ from the checkpoint's: --lr 0.001 -> 0.0004\n" in result.stdout
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 2 and state["optimizers"]["opt"]["param_groups"][0]["lr"] == 0.0004
