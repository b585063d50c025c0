"""The speed switches (common/speed.py): what "auto" picks per device and processor, explicit values obeyed
where the device can run them, the run's one line; each switch does its job when on.

No GPU or Mac is needed: from_config reads only the device's type (CUDA and MPS stand-ins), the
processor's bf16 is monkeypatched both ways, and the switches' mechanics (autocast, channels_last,
fused Adam, compile) run on a CPU, so a Speed built for "cpu" checks the scripts' real training steps.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from conftest import load_script, run_script

from common import checkpoint, config, distributed, gan
from common import speed as speed_module
from common.device import rng_state
from common.speed import NAMES, Speed

ALL_CONSTANTS = {const: True for const in NAMES.values()}


@pytest.fixture
def cudnn_benchmark_restored():
    before = torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.benchmark = before


ALL_AUTO = {const: "auto" for const in NAMES.values()}
CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")  # from_config reads only the type


def switches(speed: Speed) -> dict[str, bool]:
    return {name: getattr(speed, name) for name in NAMES}


@pytest.fixture
def native(monkeypatch):
    """Pretend the processor computes bf16 natively (AMX), or not: native("") for an AVX-512 CPU without it."""

    def pretend(flag: str = "amx_bf16") -> None:
        monkeypatch.setattr(speed_module, "native_bf16", lambda: flag)

    return pretend


def test_auto_on_a_cpu_with_native_bf16_is_bf16_autocast_and_channels_last(native, capsys, cudnn_benchmark_restored):
    native("amx_bf16")
    speed = Speed.from_config({**ALL_AUTO, "LR": 1.0}, CPU)
    assert switches(speed) == {**dict.fromkeys(NAMES, False), "amp": True, "channels_last": True}
    assert speed.device_type == "cpu" and speed.label() == "amp+channels_last"
    line = "speed: auto -> bf16 autocast + channels_last on cpu (native bf16: amx_bf16)"
    assert capsys.readouterr().out == line + "\n" and speed.summary == line  # one line, also kept for config.json
    with speed.autocast():
        assert torch.nn.Linear(3, 3)(torch.randn(2, 3)).dtype == torch.bfloat16
    # an MLP script has no CHANNELS_LAST: auto turns on what it has, and the line names no layout
    mlp = Speed.from_config({"AMP": "auto", "FUSED_ADAM": "auto", "COMPILE": "auto"}, CPU)
    assert mlp.label() == "amp" and mlp.summary.startswith("speed: auto -> bf16 autocast on cpu (")


def test_auto_on_a_cpu_without_native_bf16_is_plain_fp32(native, capsys, cudnn_benchmark_restored):
    native("")  # this dev box: AVX-512 without AVX512_BF16 or AMX, where bf16 autocast ran DCGAN at 0.55x fp32
    speed = Speed.from_config(ALL_AUTO, CPU)
    assert speed == Speed(device_type="cpu") and speed.label() == "baseline"
    (line,) = capsys.readouterr().out.splitlines()
    assert line == (
        f"speed: auto -> fp32, NCHW on cpu ({speed_module.cpu_name()}, no native bf16: bf16 autocast would be "
        "emulated and slower)"
    )
    with speed.autocast():
        assert torch.nn.Linear(3, 3)(torch.randn(2, 3)).dtype == torch.float32


def test_explicit_switches_are_honoured_on_the_cpu(native, capsys, cudnn_benchmark_restored):
    native("")
    asked = {**ALL_AUTO, "AMP": True, "CHANNELS_LAST": True, "FUSED_ADAM": True, "COMPILE": True}
    speed = Speed.from_config(asked, CPU)
    assert switches(speed) == {**dict.fromkeys(NAMES, True), "cudnn_benchmark": False}
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("speed: auto -> bf16 autocast + channels_last + fused Adam + torch.compile on cpu (")
    assert "AMP asked: " in line and "has no native bf16, so bf16 autocast is emulated and slower" in line
    # cudnn.benchmark is CUDA's alone: asked on a CPU, it is a note in the same line
    speed = Speed.from_config({"AMP": True, "CUDNN_BENCHMARK": True, "FUSED_ADAM": False}, CPU)
    assert speed.label() == "amp" and not torch.backends.cudnn.benchmark
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("speed: bf16 autocast on cpu (CUDNN_BENCHMARK ignored: acts on CUDA only; AMP asked: ")
    native("avx512_bf16")  # asked where it is native: nothing to warn about
    assert Speed.from_config({"AMP": True}, CPU).summary == "speed: bf16 autocast on cpu"
    assert Speed.from_config({"AMP": False, "CHANNELS_LAST": False}, CPU).summary == "speed: fp32, NCHW on cpu"


def test_on_mps_auto_is_off_and_explicit_true_turns_them_on(native, capsys, cudnn_benchmark_restored):
    native("amx_bf16")  # the host CPU's bf16 has no say on MPS
    speed = Speed.from_config(ALL_AUTO, MPS)
    assert speed == Speed(device_type="mps")
    assert capsys.readouterr().out == (
        "speed: auto -> fp32, NCHW on mps (not measured on mps yet; --amp=true and --channels_last=true turn them on)\n"
    )
    speed = Speed.from_config({**ALL_AUTO, "AMP": True, "CHANNELS_LAST": True}, MPS)
    assert switches(speed) == {**dict.fromkeys(NAMES, False), "amp": True, "channels_last": True}
    assert speed.device_type == "mps"  # autocast("mps", bfloat16): bf16 needs no GradScaler, fp16 would
    assert "CUDNN_BENCHMARK ignored" in Speed.from_config({"CUDNN_BENCHMARK": True}, MPS).summary


def test_on_cuda_auto_is_the_scripts_cuda_defaults_and_explicit_is_obeyed(native, cudnn_benchmark_restored):
    native("amx_bf16")  # the host CPU's bf16 has no say on CUDA either
    # before "auto" every script had all five at False; auto on CUDA keeps that until a GPU measures them
    assert speed_module.CUDA_AUTO == dict.fromkeys(NAMES, False)
    speed = Speed.from_config(ALL_AUTO, CUDA, verbose=False)
    assert speed == Speed(device_type="cuda")
    assert speed.summary == "speed: auto -> fp32, NCHW on cuda (off as before: no GPU measurement of the switches yet)"
    torch.backends.cudnn.benchmark = False
    speed = Speed.from_config({"AMP": True, "CUDNN_BENCHMARK": True, "LR": 1.0}, CUDA)
    assert switches(speed) == {**dict.fromkeys(NAMES, False), "amp": True, "cudnn_benchmark": True}
    assert speed.label() == "amp+cudnn_benchmark" and torch.backends.cudnn.benchmark
    assert Speed.from_config(ALL_CONSTANTS, CUDA).label() == "+".join(NAMES)
    deterministic = Speed.from_config({"CUDNN_BENCHMARK": True, "DETERMINISTIC": True}, CUDA)
    assert not deterministic.cudnn_benchmark and "off under DETERMINISTIC" in deterministic.summary


def test_one_line_or_none(capsys, cudnn_benchmark_restored):
    Speed.from_config({"LR": 1.0}, CPU)  # no speed constants: nothing to say
    Speed.from_config(ALL_AUTO, CPU, verbose=False)  # the other processes under torchrun
    assert capsys.readouterr().out == ""
    for cfg in (ALL_AUTO, ALL_CONSTANTS, {"AMP": True, "CUDNN_BENCHMARK": True}):
        for dev in (CPU, CUDA, MPS):
            Speed.from_config(cfg, dev)
            assert capsys.readouterr().out.count("\n") == 1
    with pytest.raises(ValueError, match="AMP must be 'auto', True or False, got 'maybe'"):
        Speed.from_config({"AMP": "maybe"}, CPU)


def test_native_bf16_reads_the_processor_flags(monkeypatch):
    monkeypatch.setattr(speed_module, "cpu_flags", lambda: {"avx2", "avx512f", "avx512bw", "avx512_vnni"})
    assert speed_module.native_bf16() == ""  # AVX-512 alone emulates bf16 (oneDNN's own check says True here)
    monkeypatch.setattr(speed_module, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert speed_module.native_bf16() == "avx512_bf16"
    monkeypatch.setattr(speed_module, "cpu_flags", lambda: {"avx512_bf16", "amx_tile", "amx_bf16"})
    assert speed_module.native_bf16() == "amx_bf16"
    monkeypatch.undo()
    flags = speed_module.cpu_flags()  # the real processor: whatever it is, the answer is one of three
    assert speed_module.native_bf16() in ("", "amx_bf16", "avx512_bf16") and isinstance(flags, set)
    if hasattr(torch.cpu, "get_capabilities"):  # torch's cpuinfo and ours agree
        caps = torch.cpu.get_capabilities()
        assert bool(speed_module.native_bf16()) == bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def test_every_script_defaults_to_auto_and_the_override_type_checks(capsys):
    assert set(config.AUTO_OR_BOOL) == set(NAMES.values())
    for script in ("VAE-MNIST.py", "GAN-MNIST.py", "DCGAN-MNIST.py", "CDCGAN-MNIST.py", "DCGAN-CelebA.py"):
        own = {k: v for k, v in config.constants(vars(load_script(script))).items() if k in NAMES.values()}
        if script == "GAN-MNIST.py":  # bf16 gained 1.07x for its MLPs (docs/speed.md): not worth a risk
            assert own.pop("AMP") is False
        assert own and set(own.values()) == {"auto"}, script
    ns = {"AMP": "auto", "COMPILE": "auto", "FUSED_ADAM": False, "DEVICE": "auto"}
    cfg = config.parse(ns, ["--amp=True", "--compile=off", "--fused_adam=auto", "--device=cpu"])
    assert cfg == {"AMP": True, "COMPILE": False, "FUSED_ADAM": "auto", "DEVICE": "cpu"}
    assert config.parse(ns, ["--amp=AUTO"])["AMP"] == "auto"
    with pytest.raises(SystemExit) as exc:
        config.parse(ns, ["--amp=maybe"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "error: --amp expects auto, true or false, got 'maybe'\n"


def test_a_bad_switch_value_stops_the_script_with_one_line():
    result = run_script("DCGAN-MNIST.py", "--amp=maybe", "--epochs=1")
    assert result.returncode == 2 and result.stderr == "error: --amp expects auto, true or false, got 'maybe'\n"


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
    n_classes, k = getattr(generator, "n_classes", 0), getattr(generator, "clusters", 0)  # k: self-conditioned
    given = labels if n_classes else labels % k if k else None
    out = gan.d_step(generator, discriminator, opt_d, real, given, 1.0, speed.autocast)
    loss_d, d_real, d_fake = out["loss_d"], out["d_real"], out["d_fake"]
    loss_g = gan.g_step(generator, discriminator, opt_g, 16, n_classes, speed.autocast, labels=given if k else None)
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
    step = partial(module.train_step, {"BETA": 1.0}, {"vae": vae}, {"opt": opt}, speed.input(x), torch.zeros(16).long())
    return [step(autocast=speed.autocast)["train_neg_elbo"] for _ in range(steps)]


def test_vae_step_trains_under_bf16_channels_last_and_fused_adam():
    module = load_script("VAE-MNIST.py")
    fast, plain = vae_losses(module, ON), vae_losses(module, OFF)
    assert all(loss.dtype == torch.float32 for loss in fast)  # the ELBO per image stays fp32 under bf16 autocast
    # and it is summed in fp32: bf16 outputs give exactly the loss of their fp32 copies (summed in bf16,
    # the KL term alone moves the total by about 4e-6)
    torch.manual_seed(0)
    logits, mu, logvar = (torch.randn(64, n).bfloat16() for n in (784, 20, 20))
    x = torch.rand(64, 784).round()
    with ON.autocast():
        under_amp = module.vae_loss(logits, x, mu, logvar, 1.0)
    exact = module.vae_loss(logits.float(), x, mu.float(), logvar.float(), 1.0)
    assert under_amp.dtype == torch.float32 and under_amp.item() == exact.item()
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
        loss_d = gan.d_step(fast_g, fast_d, opt_d, torch.rand(16, 1, 28, 28) * 2 - 1)["loss_d"]
        loss_g = gan.g_step(fast_g, fast_d, opt_g, 16)
    assert not any(k.startswith("_orig_mod") for k in generator.state_dict())  # checkpoints stay plain
    assert torch.isfinite(torch.tensor([loss_d, loss_g])).all()
