"""Correct on every device: resume onto another device, checkpoints that do not depend on where
they were written, random states across machines, MPS evaluation, bf16 loss targets, DETERMINISTIC
and the requirement floors. Devices other than the CPU are simulated: "meta" tensors stand in for
a GPU (they live off the host and fail when mixed with host tensors), and monkeypatched CUDA/MPS
random-state functions stand in for machines with a different number of GPUs."""

from __future__ import annotations

import os
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, load_script, run_script

from common import checkpoint, data, device, evaluation, gan

DCGAN = load_script("DCGAN-MNIST.py")
TINY = ["--dataset=mnist-sample", "--ngf=8", "--ndf=8", "--batch_size=500", "--eval_every=0"]
META = torch.device("meta")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch DCGAN-MNIST run on the suite's device: its folder."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = run_script("DCGAN-MNIST.py", *TINY, "--epochs=1", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    return out


def tensors(value):
    """Every tensor nested in a checkpoint."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors(item)


def test_checkpoint_holds_only_host_tensors_whatever_trained_it(trained):
    # no map_location: what the file itself says. A GPU-written file must load on a CPU-only box
    state = torch.load(trained / "checkpoints" / "last.pt", weights_only=False)
    found = list(tensors(state))
    assert len(found) > 10  # weights, Adam moments, fixed noise, random states
    assert {t.device.type for t in found} == {"cpu"}


def test_to_host_copies_nested_tensors_and_keeps_the_rest():
    state = {"a": [torch.ones(2), (torch.zeros(1), 3)], "b": {"c": torch.arange(3)}, "d": "text"}
    moved = checkpoint.to_host(state)
    assert moved["d"] == "text" and moved["a"][1][1] == 3 and isinstance(moved["a"][1], tuple)
    assert torch.equal(moved["b"]["c"], torch.arange(3))


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_resume_onto_another_device_puts_every_piece_where_it_belongs(trained):
    """The checkpoint of a CPU run resumed on a non-CPU device (meta): weights and Adam moments
    go to the device, Adam's step counters and the random states stay on the host."""
    cfg = dict(checkpoint.load_latest(trained / "checkpoints")["config"])  # the rerun's settings: the same
    state = checkpoint.resume(trained / "checkpoints", cfg, DCGAN.SHAPE_KEYS)
    assert state is not None
    with torch.device("meta"):
        models = DCGAN.build_models(state["config"])
    opts = {
        "opt_g": torch.optim.Adam(models["generator"].parameters(), lr=1e-3),
        "opt_d": torch.optim.Adam(models["discriminator"].parameters(), lr=1e-3),
    }
    fixed = {"fixed_noise": torch.zeros(64, 100, device=META)}
    checkpoint.restore(state, models, opts, fixed)  # raised TypeError when the RNG state was mapped there
    for opt in opts.values():
        for param_state in opt.state.values():
            assert param_state["exp_avg"].device == META
            assert param_state["step"].device.type == "cpu"  # plain Adam reads it on the host every step
    assert models["generator"](fixed["fixed_noise"]).shape == (64, 1, 28, 28)  # a host tensor here would raise
    assert torch.get_rng_state().device.type == "cpu"


def test_rng_state_restores_on_a_machine_with_fewer_gpus(monkeypatch):
    restored = []

    def set_one(state: torch.Tensor, index: int = 0) -> None:
        if index >= 1:
            raise RuntimeError(f"invalid device ordinal {index}")  # what CUDA says on a 1-GPU box
        restored.append((index, state))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_one)
    saved = device.rng_state()
    saved["cuda"] = [torch.full((8,), 1, dtype=torch.uint8), torch.full((8,), 2, dtype=torch.uint8)]  # saved on 2 GPUs
    device.set_rng_state(saved)
    assert len(restored) == 1 and restored[0][0] == 0 and restored[0][1][0] == 1


def test_mps_random_state_is_saved_and_restored(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: torch.full((4,), 7, dtype=torch.uint8))
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda state: calls.append(state))
    saved = device.rng_state()
    assert torch.equal(saved["mps"], torch.full((4,), 7, dtype=torch.uint8))
    device.set_rng_state(saved)
    assert len(calls) == 1 and torch.equal(calls[0], saved["mps"])


def test_on_mps_the_evaluator_keeps_its_float64_states_on_the_cpu():
    assert evaluation.evaluation_device("mps") == torch.device("cpu")
    assert evaluation.evaluation_device("cpu") == torch.device("cpu")
    train, test = data.load_sample()
    ds = data.Dataset("mnist-sample", data.DIGITS, train, test)
    evaluator = evaluation.Evaluator(ds, evaluation.Classifier(), 0.5, "mps")  # raised on .to("mps") off a Mac
    assert evaluator.device.type == "cpu"
    fid, kid = evaluator._new_metrics(50, 50)
    assert fid.real_features_sum.dtype == torch.float64 and fid.real_features_sum.device.type == "cpu"


def test_metrics_never_gather_over_a_process_group():
    """torchrun: only rank 0 evaluates, so compute() must not wait for the other ranks."""
    train, test = data.load_sample()
    evaluator = evaluation.Evaluator(
        data.Dataset("mnist-sample", data.DIGITS, train, test), evaluation.Classifier(), 0.5, "cpu"
    )
    for metric in evaluator._new_metrics(50, 50):
        assert metric.sync_on_compute is False and metric.distributed_available_fn() is False


@pytest.mark.parametrize("script", ["DCGAN-MNIST.py", "CDCGAN-MNIST.py", "GAN-MNIST.py"])
def test_bf16_loss_targets_stay_exact_fp32(script, monkeypatch):
    """Under bf16 autocast a target made like the logits would be bf16: 0.9 would train towards 0.8984."""
    module = load_script(script)
    cfg = {k: getattr(module, k) for k in dir(module) if k.isupper()}
    cfg.update(LATENT_DIM=8, NGF=4, NDF=4, HIDDEN=16, CONDITIONAL=True)
    models = module.build_models(cfg)
    g, d = models["generator"], models["discriminator"]
    seen = []
    original = F.binary_cross_entropy_with_logits

    def spy(logits, target, *args, **kwargs):
        seen.append(target)
        return original(logits, target, *args, **kwargs)

    monkeypatch.setattr(F, "binary_cross_entropy_with_logits", spy)
    k = getattr(g, "clusters", 0)  # self-conditioned: the clusters stand where the labels would
    labels = torch.tensor([0, 1, 2, 3]) if getattr(g, "n_classes", 0) or k else None
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    real = torch.rand(4, 1, 28, 28) * 2 - 1
    gan.d_step(g, d, torch.optim.Adam(d.parameters()), real, labels, 0.9, autocast)
    gan.g_step(
        g, d, torch.optim.Adam(g.parameters()), 4, getattr(g, "n_classes", 0), autocast, labels=labels if k else None
    )
    assert len(seen) == 3  # real, fake (D) and G's target
    assert all(t.dtype == torch.float32 for t in seen)
    assert torch.all(seen[0] == torch.tensor(0.9, dtype=torch.float32))  # exactly, not bf16's 0.8984
    assert torch.all(seen[1] == 0) and torch.all(seen[2] == 1)


def test_deterministic_switch_picks_repeatable_kernels(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    try:
        device.seed_all(0)
        assert not torch.are_deterministic_algorithms_enabled()
        device.seed_all(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic = before[1]


# APIs whose first release is above an older floor: (package, version that has it, where it is used)
NEEDS = [
    ("torch", (2, 3), "init_process_group(device_id=...)", "common/distributed.py", "device_id=dev"),
    ("torch", (2, 1), "fork_rng(device_type=...)", "common/device.py", "device_type=device.type"),
    (
        "torchmetrics",
        (1, 0),
        "Metric(sync_on_compute=..., distributed_available_fn=...)",
        "common/evaluation.py",
        "sync_on_compute",
    ),
    ("torchvision", (0, 18), "torchvision for torch 2.3", "common/data.py", "from torchvision import datasets"),
]


def floors() -> dict[str, tuple[int, ...]]:
    """The lower bounds in requirements.txt, e.g. {"torch": (2, 3)}."""
    found = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9_-]+)\s*>=\s*([0-9.]+)\s*", line)
        if match:
            found[match[1].lower()] = tuple(int(p) for p in match[2].split("."))
    return found


@pytest.mark.parametrize(("package", "version", "api", "path", "marker"), NEEDS)
def test_requirement_floors_have_every_api_used(package, version, api, path, marker):
    assert marker in (ROOT / path).read_text(), f"{path} no longer uses {api}: drop it from NEEDS"
    assert floors()[package] >= version, f"{api} needs {package}>={'.'.join(map(str, version))}"
