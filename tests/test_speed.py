"""The GPU speed switches (common/speed.py): off and said so off CUDA; each does its job when on.

No GPU is needed: the switches' mechanics (autocast, channels_last, fused Adam, compile) also run on
a CPU, so a Speed built for "cpu" checks that the scripts' real training steps work under them.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import load_script

from common import checkpoint, distributed, steps
from common.device import rng_state
from common.speed import NAMES, Speed

ALL_CONSTANTS = {const: True for const in NAMES.values()}


@pytest.fixture
def cudnn_benchmark_restored():
    before = torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.benchmark = before


def test_off_cuda_every_switch_is_off_and_the_run_is_told(capsys, cudnn_benchmark_restored):
    speed = Speed.from_config({"AMP": True, "COMPILE": True, "FUSED_ADAM": False}, torch.device("cpu"))
    assert speed.label() == "baseline" and speed.device_type == "cpu"
    assert "AMP, COMPILE act on CUDA only; ignored on cpu" in capsys.readouterr().out
    Speed.from_config({}, torch.device("mps"))  # nothing asked: nothing said
    assert capsys.readouterr().out == ""


def test_on_cuda_the_config_turns_on_exactly_what_it_asks(cudnn_benchmark_restored):
    torch.backends.cudnn.benchmark = False
    # from_config only reads the device's type, so no GPU is needed to check the mapping
    speed = Speed.from_config({"AMP": True, "CUDNN_BENCHMARK": True, "LR": 1.0}, torch.device("cuda"))
    assert (speed.amp, speed.cudnn_benchmark, speed.channels_last, speed.fused_adam, speed.compile) == (
        True,
        True,
        False,
        False,
        False,
    )
    assert speed.label() == "amp+cudnn_benchmark" and torch.backends.cudnn.benchmark
    assert Speed.from_config(ALL_CONSTANTS, torch.device("cuda")).label() == "+".join(NAMES)


def test_each_switch_does_its_job():
    on = Speed(amp=True, channels_last=True, fused_adam=True, compile=True, device_type="cpu")
    conv = on.prepare(torch.nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    x = on.input(torch.randn(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert on.input(torch.randn(2, 5)).shape == (2, 5)  # an MLP's flat batch passes untouched
    with on.autocast():
        assert conv(x).dtype == torch.bfloat16
    assert on.adam(conv.parameters(), 1e-3, (0.5, 0.999)).param_groups[0]["fused"] is True
    gen = load_script("DCGAN-MNIST.py").Generator(latent_dim=7, ngf=4)
    fast = on.compiled(gen)
    assert fast is not gen and fast.latent_dim == 7  # the steps read latent_dim through the wrapper
    with distributed.no_sync(fast):  # looks through the wrapper (a plain module: a no-op)
        pass
    off = Speed(device_type="cpu")
    assert off.compiled(gen) is gen and off.input(x) is x
    with off.autocast():
        assert conv(x).dtype == torch.float32
    assert off.adam(conv.parameters(), 1e-3, (0.5, 0.999)).param_groups[0]["fused"] is None


ON = Speed(amp=True, channels_last=True, fused_adam=True, device_type="cpu")  # every switch a CPU can run fast
OFF = Speed(device_type="cpu")


def small_config(module) -> dict:
    return {**{k: v for k, v in vars(module).items() if k.isupper()}, "NGF": 8, "NDF": 8, "HIDDEN": 32, "CHANNELS": 8}


def gan_step_movement(module, speed: Speed) -> tuple[list[float], int]:
    """How far each weight moved in one D step and one G step from seed-0 weights; and G's weight count."""
    torch.manual_seed(0)
    models = module.build_models(small_config(module), (1, 28, 28), 10)
    generator, discriminator = (speed.prepare(models[k]) for k in ("generator", "discriminator"))
    opt_g, opt_d = (speed.adam(m.parameters(), 2e-4, (0.5, 0.999)) for m in (generator, discriminator))
    before = [p.detach().clone() for p in (*generator.parameters(), *discriminator.parameters())]
    real, labels = speed.input(torch.rand(16, 1, 28, 28) * 2 - 1), torch.arange(16) % 10
    n_classes = getattr(generator, "n_classes", 0)
    given = labels if n_classes else None
    out = steps.d_step(generator, discriminator, opt_d, real, given, 1.0, speed.autocast)
    loss_d, d_real, d_fake = out["loss_d"], out["d_real"], out["d_fake"]
    loss_g = steps.g_step(generator, discriminator, opt_g, 16, n_classes, speed.autocast)
    assert all(map(math.isfinite, (loss_d, loss_g, d_real, d_fake)))
    after = [*generator.parameters(), *discriminator.parameters()]
    assert all(p.dtype == torch.float32 for p in after)  # autocast computes in bf16; the weights stay fp32
    return [(a - b).abs().sum().item() for a, b in zip(after, before, strict=True)], len(list(generator.parameters()))


@pytest.mark.parametrize("script", ["DCGAN-MNIST.py", "CDCGAN-MNIST.py", "GAN-MNIST.py"])
def test_gan_steps_train_under_bf16_channels_last_and_fused_adam(script):
    module = load_script(script)
    fast, n_g = gan_step_movement(module, ON)
    plain, _ = gan_step_movement(module, OFF)
    # Adam's first step moves every weight with a gradient by about the learning rate: under the
    # switches the networks must move as far as in plain fp32, not a fraction of it
    assert sum(fast[:n_g]) == pytest.approx(sum(plain[:n_g]), rel=0.2)
    assert sum(fast[n_g:]) == pytest.approx(sum(plain[n_g:]), rel=0.2)


def vae_losses(module, speed: Speed, steps: int = 11) -> list[float]:
    torch.manual_seed(0)
    vae = speed.prepare(module.build_models(small_config(module), (1, 28, 28))["vae"])
    opt = speed.adam(vae.parameters(), 1e-3, (0.9, 0.999))
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 8:20, 10:18] = 1  # one learnable shape
    return [module.train_step(vae, opt, speed.input(x), 1.0, speed.autocast) for _ in range(steps)]


def test_vae_step_trains_under_bf16_channels_last_and_fused_adam():
    module = load_script("VAE-MNIST.py")
    fast, plain = vae_losses(module, ON), vae_losses(module, OFF)
    progress = plain[0] - plain[-1]
    assert progress > 0
    assert fast[-1] < fast[0] - 0.8 * progress  # as much learnt under the switches as in plain fp32


def test_a_resumed_run_keeps_its_own_adam_implementation():
    """A checkpoint from a FUSED_ADAM run resumed without it (a GPU run on a laptop) runs plain Adam."""
    model = torch.nn.Linear(3, 3)
    fused = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    model(torch.randn(4, 3)).sum().backward()
    fused.step()
    plain = torch.optim.Adam(model.parameters(), lr=5e-4)
    state = {"models": {"m": model.state_dict()}, "optimizers": {"opt": fused.state_dict()}, "rng": rng_state()}
    checkpoint.restore(state, {"m": model}, {"opt": plain}, {})
    group = plain.param_groups[0]
    assert group["fused"] is None and group["lr"] == 5e-4
    assert plain.state[model.weight]["step"] == 1  # the moments did come from the checkpoint


@pytest.mark.slow
def test_compiled_dcgan_trains():
    """torch.compile through the script's own steps (about a minute on a CPU: inductor builds C++)."""
    module = load_script("DCGAN-MNIST.py")
    speed = Speed(compile=True, device_type="cpu")
    cfg = {**{k: v for k, v in vars(module).items() if k.isupper()}, "NGF": 8, "NDF": 8}
    models = module.build_models(cfg)
    generator, discriminator = models["generator"], models["discriminator"]
    opt_g, opt_d = (speed.adam(m.parameters(), 2e-4, (0.5, 0.999)) for m in (generator, discriminator))
    fast_g, fast_d = speed.compiled(generator), speed.compiled(discriminator)
    for _ in range(2):
        loss_d = steps.d_step(fast_g, fast_d, opt_d, torch.rand(16, 1, 28, 28) * 2 - 1)["loss_d"]
        loss_g = steps.g_step(fast_g, fast_d, opt_g, 16)
    assert not any(k.startswith("_orig_mod") for k in generator.state_dict())  # checkpoints stay plain
    assert torch.isfinite(torch.tensor([loss_d, loss_g])).all()
