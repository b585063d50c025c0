"""Differentiable augmentation (common/augment.py) and the sample's training budget (SAMPLE_EPOCHS).

The augmentation goes into D's input only, real and fake alike, in both steps; G's gradient flows
through it; it keeps shapes, dtypes and layout; it is nothing at all when AUGMENT is off; and the
pictures and metrics are drawn from G(z) itself.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_script, run_script
from test_run import GANS, META, gan_on

from common import augment, gan

POLICIES = ("color", "translation", "cutout", "translation,cutout", "color,translation,cutout")


def test_policy_parses_names_and_refuses_unknown_ones_in_one_line(capsys):
    assert augment.policy("") is None and augment.policy(" , ") is None
    assert augment.policy("cutout,translation").names == ("translation", "cutout")  # always in the documented order
    assert augment.policy(" Color ").names == ("color",)
    with pytest.raises(SystemExit) as exc:
        augment.policy("translation,flip")
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        "error: --augment: unknown transformation 'flip'; use a comma list of color, translation, cutout, or ''\n"
    )


@pytest.mark.parametrize("spec", POLICIES)
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_and_layout_are_kept_under_bf16_too(spec, channels):
    aug = augment.policy(spec)
    x = torch.rand(8, channels, 28, 28) * 2 - 1
    assert aug(x).shape == x.shape and aug(x).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = aug(x.bfloat16())
    assert y.shape == x.shape and y.dtype == torch.bfloat16
    nhwc = x.contiguous(memory_format=torch.channels_last)
    assert aug(nhwc).is_contiguous(memory_format=torch.channels_last)


def test_each_transformation_does_what_it_says():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 16, 16) + 1.0  # every pixel in [1, 2): a zeroed pixel is visible
    shifted = augment.translation(x)
    zero_rows = (shifted == 0).all(dim=3).sum(dim=(1, 2))  # rows of the uncovered border, per image
    assert zero_rows.max() == 2 and (zero_rows > 0).any()  # up to 1/8 of 16 = 2 rows
    assert (shifted != 0).sum(dim=(1, 2, 3)).min() >= 14 * 14  # at most 2 rows and 2 columns uncovered
    # a shift moves pixels: for an image shifted by (dy, dx), the covered part is x moved by that much
    img = torch.arange(16.0 * 16).view(1, 1, 16, 16) + 1
    moved = augment.translation(img.repeat(200, 1, 1, 1))
    for out in moved:
        ys, xs = torch.nonzero(out[0], as_tuple=True)
        dy = int((out[0, ys[0], xs[0]] - 1) // 16) - int(ys[0])
        dx = int((out[0, ys[0], xs[0]] - 1) % 16) - int(xs[0])
        assert abs(dy) <= 2 and abs(dx) <= 2
        assert torch.equal(out[0, ys, xs], img[0, 0, ys + dy, xs + dx])
    cut = augment.cutout(x)
    zeroed = (cut == 0).sum(dim=(1, 2, 3))
    assert zeroed.max() == 8 * 8 and zeroed.min() > 0  # a half-side square, clipped at the edge at worst
    assert torch.equal(cut[cut != 0], x[cut != 0])
    colored = augment.color(x)
    assert not torch.equal(colored, x) and torch.isfinite(colored).all()


def test_gradients_reach_g_through_an_augmented_d_and_d_sees_every_batch_augmented():
    module, g, d, opt_g, opt_d, real, _ = gan_on(torch.device("cpu"), "DCGAN-MNIST.py")
    seen = []
    policy = augment.policy("translation,cutout")

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return policy(x)

    gan.d_step(g, d, opt_d, real, augment=spy)
    assert seen == [4, 4]  # the real batch and the fakes
    before = [p.detach().clone() for p in g.parameters()]
    gan.g_step(g, d, opt_g, 4, augment=spy)
    assert seen == [4, 4, 4]  # and the fakes of G's step
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters() if p.dim() > 1)
    assert any(not torch.equal(b, p) for b, p in zip(before, g.parameters(), strict=True))


def test_off_means_d_sees_the_images_as_they_are():
    for script in ("GAN-MNIST.py", "DCGAN-MNIST.py", "CDCGAN-MNIST.py", "DCGAN-CelebA.py"):
        assert load_script(script).AUGMENT == "", script  # off by default (docs/results.md: it did not help)
    module, g, d, opt_g, opt_d, real, labels = gan_on(torch.device("cpu"), "CDCGAN-MNIST.py")
    inputs = []
    d.register_forward_pre_hook(lambda _, args: inputs.append(args))
    gan.d_step(g, d, opt_d, real, labels, augment=None)
    assert torch.equal(inputs[0][0], real) and torch.equal(inputs[0][1], labels)
    inputs.clear()
    gan.d_step(g, d, opt_d, real, labels, augment=augment.policy("cutout"))
    assert not torch.equal(inputs[0][0], real)
    assert torch.equal(inputs[0][1], labels) and torch.equal(inputs[1][1], labels)  # labels are never augmented


@pytest.mark.parametrize("script", sorted(GANS))
def test_augmented_steps_make_no_host_sync(script):
    module, g, d, opt_g, opt_d, real, labels = gan_on(META, script)
    policy = augment.policy("color,translation,cutout")
    with META:
        out = gan.d_step(g, d, opt_d, real, labels, 0.9, augment=policy)
        loss_g = gan.g_step(g, d, opt_g, len(real), 0 if labels is None else g.n_classes, augment=policy)
    assert all(t.device == META for t in (*out.values(), loss_g))


def test_pictures_and_metrics_come_from_g_itself(tmp_path, monkeypatch):
    """A run with AUGMENT on: the policy only ever sees training batches (BATCH_SIZE images), never the
    grid's 64 or the evaluation's chunks of 500; the run saves AUGMENT in its config."""
    module = load_script("DCGAN-MNIST.py")
    sizes = []
    real_policy = augment.policy

    def counting_policy(spec: str):
        chosen = real_policy(spec)

        def spy(x: torch.Tensor) -> torch.Tensor:
            sizes.append(x.shape[0])
            return chosen(x)

        return None if chosen is None else spy

    monkeypatch.setattr(augment, "policy", counting_policy)
    args = ["--dataset=mnist-sample", "--epochs=1", "--batch_size=256", "--ngf=8", "--ndf=8", "--device=cpu"]
    monkeypatch.setattr("sys.argv", ["DCGAN-MNIST.py", *args, "--augment=translation,cutout", f"--out_dir={tmp_path}"])
    module.main()
    steps_run = 4000 // 256
    assert sizes == [256] * 3 * steps_run  # real + fake in D's step, fake in G's: training batches only
    assert (tmp_path / "samples" / "epoch_001.png").is_file() and (tmp_path / "metrics.csv").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["augment"] == "translation,cutout"


def test_the_sample_trains_for_its_own_budget_unless_epochs_is_given(tmp_path):
    """SAMPLE_EPOCHS on the sample, said in one line; --epochs wins. (EVAL_EVERY=0 and tiny nets: fast.)"""
    common = ["--dataset=mnist-sample", "--eval_every=0", "--ngf=4", "--ndf=4", "--batch_size=1000"]
    budget = run_script("DCGAN-MNIST.py", *common, "--sample_epochs=2", f"--out_dir={tmp_path / 'a'}")
    assert budget.returncode == 0, budget.stderr
    assert (
        "training: mnist-sample, 4,000 images an epoch: 2 epochs x 4 steps = 8 steps (SAMPLE_EPOCHS, the budget "
        "for the 4,000-digit sample; --epochs=N sets another)" in budget.stdout
    )
    assert json.loads((tmp_path / "a" / "config.json").read_text())["epochs"] == 2
    assert (tmp_path / "a" / "samples" / "epoch_002.png").is_file()
    assert "epoch 1/2 " in budget.stdout and "to go" in budget.stdout  # how long the rest will take
    chosen = run_script("DCGAN-MNIST.py", *common, "--sample_epochs=2", "--epochs=1", f"--out_dir={tmp_path / 'b'}")
    assert chosen.returncode == 0, chosen.stderr
    assert "1 epoch x 4 steps = 4 steps (--epochs; the sample budget SAMPLE_EPOCHS=2 is not used)" in chosen.stdout
    assert not (tmp_path / "b" / "samples" / "epoch_002.png").exists()
    other = run_script("DCGAN-MNIST.py", "--dataset=fake", "--eval_every=0", "--ngf=4", "--ndf=4", "--sample_epochs=2",
                       "--epochs=1", f"--out_dir={tmp_path / 'c'}")  # fmt: skip
    assert other.returncode == 0 and "1 epoch x 8 steps = 8 steps; each epoch" in other.stdout  # not the sample
