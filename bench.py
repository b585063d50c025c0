"""Training and generation speed: each script's speed setting against plain fp32, and the repo's data
path against the standard torchvision DataLoader.

For each model the same networks (same seed, same widths) are trained with the script's own step
functions at the same batch size, in one run:

- repo: the whole split as a uint8 tensor on the device, shuffled batches by index
  (`batches.Batches`), normalised per batch on the device (`data.to_gan` / `data.to_unit`), under
  the script's speed setting: its constants, "auto" by default, which common/speed.py resolves for
  this device and processor (bf16 autocast + channels_last on a CPU with native bf16, else fp32);
- fp32: the repo path again in plain fp32 eager PyTorch (skipped where the setting is fp32 already:
  the row then reads 'auto = fp32', measured once);
- DataLoader: torchvision's `datasets.MNIST` (PIL images from IDX files) or an `ImageFolder` of
  JPEGs (CenterCrop(108), Resize, ToTensor, Normalize), `--workers` processes (default: the CPU
  count, at most 8), default collate, pinned memory on CUDA, under the script's setting.

Each path gets warm-up steps, then the timed steps (the clock is read after a CUDA synchronise at
both ends), in rounds that take turns going first. Defaults: 3 rounds of 20 warm-up + 200 timed
steps on CUDA, of 5 + 10 on the CPU and MPS, one round of 2 + 3 with --quick. MNIST comes from
the bundled real-digit sample written as IDX files (the 4,000 training digits tiled to a
60,000-image epoch); CelebA from synthetic 178x218 JPEGs (no faces ship with the repo), both in a
temporary folder.

One table row per model (outputs/bench.md holds the same table under the run's facts, the speed
line among them: what auto chose on this machine and why):

- setting: the speed switches of the row, e.g. 'auto = fp32' or 'auto: amp+channels_last';
  --amp, --channels-last, --cudnn-benchmark, --fused-adam, --compile measure exactly those instead;
- img/s: training images per second on the repo path under the setting (D step + G step, or the
  VAE step); fp32 img/s: the same in plain fp32 eager; speed-up: their ratio;
- s/epoch: images in the script's epoch (60,000 for MNIST, 202,599 for CelebA) / img/s;
  s/epoch sample: the bundled sample's 4,000 training digits (the scripts' offline data) / img/s;
- GFLOP/img: the FLOPs of one training step, counted once per model by
  `torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions, forward and backward;
  not the optimizer's elementwise work), divided by the batch;
- FLOP share: img/s x FLOP/img over the FLOP limit: --peak-tflops (a CPU's too), else the built-in
  dense figure of a known GPU (bf16 under AMP, else TF32); n/a on the CPU, MPS or an unknown GPU;
- DataLoader img/s and repo / DataLoader: the same training fed by the DataLoader, and the ratio;
- generation img/s: a generator (VAE decoder) forward pass in eval mode under no_grad at a large batch.

--switches trains the repo path only, on any device: once per switch alone, once with all of them,
and once with none (the fp32 baseline), with each one's speed-up over the baseline; a list
(--switches amp,channels_last) picks some, and a switch the device cannot run (cudnn_benchmark off
CUDA) is skipped with a note.

    python bench.py                                # every model: auto against fp32, side by side
    python bench.py --quick                        # the same, few steps (< 2 min on 2 CPU cores)
    python bench.py --models dcgan,vae --steps 30  # chosen models; writes outputs/bench.md
    python bench.py --switches --models dcgan      # each switch alone vs the fp32 baseline
    python bench.py --peak-tflops 2.5              # a FLOP share against a CPU's (or any) peak
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from common import celeba, config, data, device, mnist_files, steps
from common.batches import Batches
from common.config import fail
from common.speed import AUTO, NAMES, Speed, cpu_name, unsupported

MNIST_IMAGES = 60_000  # a full MNIST epoch: the sample's training digits are tiled up to this
EPOCH_IMAGES = {"mnist": MNIST_IMAGES, "celeba": 202_599}  # images in one epoch of the script's data set
SAMPLE_IMAGES = {"mnist": 4_000}  # an epoch of the bundled real-digit sample (--dataset=mnist-sample)
GEN_BATCH = {"mnist": 1024, "celeba": 256}  # images per generator forward pass
QUICK_CELEBA_SIZE = 32  # --quick trains the CelebA DCGAN at 32x32 (64x64 is ~15 img/s on 2 CPU cores)
SWITCHES = tuple(NAMES)  # the speed switches, as common/speed.py names them
MAX_WORKERS = 8  # default DataLoader workers: the CPU count, at most this
# dense (no sparsity) peak TFLOP/s from NVIDIA's data sheets: (name substring, bf16, TF32); first match wins
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.0, 495.0),
    ("H200", 989.0, 495.0),  # also the GH200
    ("A100", 312.0, 156.0),
)


@dataclass(frozen=True)
class Model:
    """One benchmarked model: its script, constants overridden there, and its data."""

    script: str
    overrides: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist"  # mnist | celeba


MODELS = {
    "vae": Model("VAE-MNIST.py"),
    "gan": Model("GAN-MNIST.py", {"CONDITIONAL": False}),
    "cgan": Model("GAN-MNIST.py", {"CONDITIONAL": True}),
    "dcgan": Model("DCGAN-MNIST.py"),
    "cdcgan": Model("CDCGAN-MNIST.py"),
    "celeba": Model("DCGAN-CelebA.py", dataset="celeba"),
}


@dataclass
class Result:
    """The rates measured for one model (img/s; None where not measured)."""

    model: str
    script: str
    batch_size: int
    steps: int
    repo: float
    loader: float | None
    generation: float
    flops: float  # FLOPs of one training step per image (FlopCounterMode)
    epoch_images: int  # images in one epoch of the script's data set
    peak: float | None  # the FLOP limit in TFLOP/s; None: unknown
    note: str = ""
    switches: str = "baseline"  # Speed.label() of the switches the repo path trained under
    setting: str = "fp32"  # the row's setting in words: "auto = fp32", "auto: amp+channels_last", "amp"
    fp32: float | None = None  # plain fp32 eager img/s on the repo path; None: not measured apart
    sample_images: int | None = None  # images in an epoch of the bundled sample; None: no sample

    @property
    def epoch_seconds(self) -> float:
        """Seconds per epoch at the repo path's rate."""
        return self.epoch_images / self.repo

    @property
    def sample_seconds(self) -> float | None:
        """Seconds per epoch of the bundled sample at the repo path's rate (None without a sample)."""
        return None if self.sample_images is None else self.sample_images / self.repo

    @property
    def fp32_rate(self) -> float | None:
        """Plain fp32 eager img/s: measured apart, or the repo rate itself when the row is fp32."""
        return self.repo if self.switches == "baseline" else self.fp32

    @property
    def speed_up(self) -> float | None:
        """The row's img/s over plain fp32 eager (None when fp32 was not measured)."""
        return None if self.fp32_rate is None else self.repo / self.fp32_rate

    @property
    def share(self) -> float | None:
        """Achieved FLOP/s on the repo path as a fraction of the limit (None without one)."""
        return None if self.peak is None else self.repo * self.flops / (self.peak * 1e12)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are the repo's one-line `error: ...` with exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def sync(dev: torch.device) -> None:
    """Wait for queued GPU work, so the clock reads what was really done."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


# --- the data, written to a temporary folder in the formats the standard path reads ---


def write_mnist(root: Path, n_train: int = MNIST_IMAGES) -> Path:
    """Real digits as torchvision's MNIST layout under root: the sample's train digits tiled to n_train."""
    train, test = data.load_sample()
    reps = -(-n_train // len(train))
    images = np.tile(train.images[:, 0].numpy(), (reps, 1, 1))[:n_train]
    labels = np.tile(train.labels.numpy(), reps)[:n_train]
    raw = root / "MNIST" / "raw"
    mnist_files.write_idx(raw, images, labels, "train")
    mnist_files.write_idx(raw, test.images[:, 0].numpy(), test.labels.numpy(), "t10k")
    return root


def write_jpegs(folder: Path, n: int, seed: int = 0) -> Path:
    """n synthetic 178x218 JPEGs (CelebA's aligned size) in folder/faces/: smooth colour fields plus grain."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = folder / "faces"  # ImageFolder wants one sub-folder per class
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        # upsampled coarse colour plus noise: about the file size and decode cost of a real photo
        coarse = Image.fromarray(rng.integers(0, 256, (7, 6, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((178, 218), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.normal(0, 6, smooth.shape).astype(np.int16)
        pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(out / f"{i + 1:06d}.jpg", quality=90)
    return folder


# --- models, optimisers and one training step, as the scripts build them ---


def script_config(spec: Model, module: ModuleType, size: int) -> dict[str, Any]:
    """The script's constants with the bench's overrides (and the CelebA image size)."""
    cfg = {**config.constants(vars(module)), **spec.overrides}
    if spec.dataset == "celeba":
        cfg["IMAGE_SIZE"] = size
    return cfg


def build(
    module: ModuleType,
    cfg: dict[str, Any],
    image_shape: tuple[int, int, int],
    n_classes: int,
    dev: torch.device,
    sw: Speed,
) -> tuple[Callable[[torch.Tensor, torch.Tensor], None], Callable[[int], torch.Tensor]]:
    """Fresh models (seed 0) and optimisers; returns (one training step, draw n images in eval mode)."""
    device.seed_all(0)  # both paths start from the very same weights
    # the switches are applied by the scripts' own helper (common/speed.py), as in a training run
    plain = {name: sw.prepare(m.to(dev)) for name, m in module.build_models(cfg, image_shape, n_classes).items()}
    betas = (cfg["BETA1"], 0.999) if "BETA1" in cfg else (0.9, 0.999)  # VAE-MNIST uses Adam's defaults
    rates = {"discriminator": cfg.get("LR_D", cfg["LR"])}  # D has its own rate where the script sets one
    opts = {name: sw.adam(m.parameters(), rates.get(name, cfg["LR"]), betas) for name, m in plain.items()}
    models = {name: sw.compiled(m) for name, m in plain.items()}
    amp = sw.autocast  # the steps autocast their forward passes themselves (bf16 needs no GradScaler)

    if "vae" in models:
        beta = cfg["BETA"]

        def vae_step(x: torch.Tensor, labels: torch.Tensor) -> None:
            module.train_step(models["vae"], opts["vae"], x, beta, amp)

        vae = models["vae"]

        def decode(n: int) -> torch.Tensor:
            vae.eval()
            return vae.sample(torch.randn(n, vae.latent_dim, device=dev))

        return vae_step, decode

    generator, discriminator = models["generator"], models["discriminator"]
    n_classes = getattr(generator, "n_classes", 0)  # conditional models take the labels
    real_label = cfg["REAL_LABEL"]

    def gan_step(x: torch.Tensor, labels: torch.Tensor) -> None:
        given = labels if n_classes else None
        steps.d_step(generator, discriminator, opts["discriminator"], x, given, real_label, amp)
        # one G step per D step: every script's default (GAN-MNIST's K_STEPS = 1)
        steps.g_step(generator, discriminator, opts["generator"], len(x), n_classes, amp)

    g = models["generator"]  # attribute reads pass through torch.compile's wrapper
    n_draw = getattr(g, "n_classes", 0)  # conditional generators take a class per image

    def draw(n: int) -> torch.Tensor:
        g.eval()
        z = torch.randn(n, g.latent_dim, device=dev)
        return g(z, torch.randint(0, n_draw, (n,), device=dev)) if n_draw else g(z)

    return gan_step, draw


def count_flops(
    module: ModuleType,
    cfg: dict[str, Any],
    image_shape: tuple[int, int, int],
    n_classes: int,
    batch_size: int,
    unit: bool,
    dev: torch.device,
) -> tuple[float, torch.device]:
    """FLOPs of one full training step at batch_size, counted by FlopCounterMode; and the device counted on.

    Counted on dev, or on the CPU where that fails, with fresh eager fp32 models (the switches
    change how fast the FLOPs run, not how many there are) on a random batch of the right shape.
    """
    error: Exception | None = None
    for where in dict.fromkeys([dev, torch.device("cpu")]):
        try:
            step, _ = build(module, cfg, image_shape, n_classes, where, Speed(device_type=where.type))
            x = torch.rand(batch_size, *image_shape, device=where)
            x = x if unit else x * 2 - 1
            labels = torch.randint(0, max(n_classes, 1), (batch_size,), device=where)
            with FlopCounterMode(display=False) as counter:
                step(x, labels)
            return float(counter.get_total_flops()), where
        except (RuntimeError, NotImplementedError) as err:
            error = err
    raise RuntimeError(f"could not count the FLOPs of {module.__name__}'s step") from error


def known_peak(name: str, amp: bool) -> float | None:
    """The built-in dense peak TFLOP/s of a GPU by name: bf16 when amp, else TF32; None if unknown."""
    for key, bf16, tf32 in PEAK_TFLOPS:
        if key in name:
            return bf16 if amp else tf32
    return None


def peak_for(dev: torch.device, sw: Speed, given: float | None) -> tuple[float | None, str]:
    """The FLOP limit in TFLOP/s (None: unknown) and how it was chosen, for the header."""
    if given:
        return given, f"{given:g} TFLOP/s (--peak-tflops)"
    if dev.type != "cuda":
        return None, f"n/a on {dev.type} (give --peak-tflops)"
    name = torch.cuda.get_device_name(dev)
    peak = known_peak(name, sw.amp)
    if peak is None:
        return None, f"n/a: {name} is not in the built-in table (give --peak-tflops)"
    if sw.amp:
        return peak, f"{peak:g} TFLOP/s: {name}, bf16 dense (under AMP)"
    # cuDNN runs fp32 convolutions as TF32 by default; fp32 matmuls stay full FP32 unless
    # torch.set_float32_matmul_precision allows TF32, so the MLP models cannot reach this limit
    return peak, f"{peak:g} TFLOP/s: {name}, TF32 dense (no AMP; fp32 matmuls run below it, in full FP32)"


# --- the two data paths ---


def repo_batches(
    split: data.Split, batch_size: int, dev: torch.device, unit: bool, sw: Speed
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The scripts' path: uint8 batches by index from the split, normalised on the device; endless."""
    batches = Batches(split, batch_size, seed=0)
    normalise = data.to_unit if unit else data.to_gan
    epoch = 1
    while True:
        for images, labels in batches.epoch(epoch, dev):
            x = normalise(images)
            yield sw.input(x), labels
        epoch += 1


def loader_batches(
    dataset: torch.utils.data.Dataset, batch_size: int, workers: int, dev: torch.device, sw: Speed
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The standard path: a shuffling DataLoader with worker processes and default collate; endless."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=dev.type == "cuda"
    )
    while True:
        for images, labels in loader:
            x = images.to(dev, non_blocking=True)
            yield sw.input(x), labels.to(dev, non_blocking=True)


def torchvision_dataset(kind: str, root: Path, unit: bool, size: int) -> torch.utils.data.Dataset:
    """The standard PIL-backed data set with its usual transforms."""
    from torchvision import datasets, transforms

    if kind == "mnist":
        steps: list = [transforms.ToTensor()]
        if not unit:
            steps.append(transforms.Normalize((0.5,), (0.5,)))
        return datasets.MNIST(str(root), train=True, download=False, transform=transforms.Compose(steps))
    crop = [transforms.CenterCrop(108), transforms.Resize(size)]
    tail = [transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)]
    return datasets.ImageFolder(str(root / "celeba"), transform=transforms.Compose(crop + tail))


def timed(
    step: Callable[[torch.Tensor, torch.Tensor], None],
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    warmup: int,
    steps: int,
    dev: torch.device,
) -> tuple[int, float]:
    """(images, seconds) of `steps` training steps after `warmup` untimed ones; the clock is read after a sync."""
    try:
        for _ in range(warmup):
            step(*next(batches))
        sync(dev)
        start, images = time.perf_counter(), 0
        for _ in range(steps):
            x, labels = next(batches)
            step(x, labels)
            images += len(x)
        sync(dev)
        return images, time.perf_counter() - start
    finally:
        batches.close()  # type: ignore[attr-defined]  # ends a DataLoader's workers before the next measurement


@torch.no_grad()
def generation_rate(draw: Callable[[int], torch.Tensor], n: int, reps: int, dev: torch.device, sw: Speed) -> float:
    """Images per second of the generator (the VAE's decoder) forward pass at batch n, in eval mode."""
    with sw.autocast():
        draw(n)  # warm-up: allocator, cuDNN algorithm choice, compilation
        sync(dev)
        start = time.perf_counter()
        for _ in range(reps):
            draw(n)
        sync(dev)
    return n * reps / (time.perf_counter() - start)


# --- one model, both paths ---


@dataclass
class Plan:
    """What to run: settings shared by every model."""

    dev: torch.device
    steps: int  # timed steps per path and round
    warmup: int
    rounds: int
    batch_size: int  # 0: each script's BATCH_SIZE
    workers: int
    quick: bool
    gen_reps: int
    gen_batch: int  # 0: GEN_BATCH of the data set
    tmp: Path
    peak_tflops: float | None = None  # --peak-tflops; None: the built-in table
    flops: dict[tuple[str, int], tuple[float, torch.device]] = field(default_factory=dict)  # counted once per model


def bench_model(
    name: str, plan: Plan, sw: Speed, with_loader: bool = True, setting: str = "", with_fp32: bool = False
) -> Result:
    """Train one model under `sw` on the repo path, and optionally in plain fp32 eager on the repo path
    (unless `sw` is fp32 already) and under `sw` on the DataLoader path; measure generation under `sw`."""
    spec = MODELS[name]
    size = QUICK_CELEBA_SIZE if plan.quick else 64
    module = config.load_script(spec.script)
    cfg = script_config(spec, module, size)
    batch_size = plan.batch_size or cfg["BATCH_SIZE"]
    unit = name == "vae"  # the VAE's Bernoulli decoder wants [0, 1]; the GANs' tanh, [-1, 1]
    note = ""
    if spec.dataset == "mnist":
        ds = data.load("mnist", plan.tmp, download=False, device=plan.dev)
        split, image_shape, n_classes = ds.train, ds.shape, len(ds.classes)
    else:
        with contextlib.redirect_stdout(sys.stderr):  # the one-off cache build talks; keep the table clean
            split = celeba.load(
                "celeba", plan.tmp, plan.tmp / "celeba", False, 108, size, max(plan.workers, 1), plan.dev
            )
        image_shape, n_classes = (3, size, size), 0
        note = f"{size}x{size}" + (" (--quick; the script trains at 64x64)" if size != 64 else "")
    if batch_size > len(split):
        fail(f"--batch-size={batch_size} is larger than the {len(split)} benchmark images")

    key = (name, batch_size)
    if key not in plan.flops:  # once per model: --switches reuses it for every variant
        plan.flops[key] = count_flops(module, cfg, image_shape, n_classes, batch_size, unit, plan.dev)
    step_flops, counted_on = plan.flops[key]
    if counted_on != plan.dev:
        note = "; ".join(filter(None, [note, "FLOPs counted on the CPU"]))
    peak, _ = peak_for(plan.dev, sw, plan.peak_tflops)

    # each path trains its own copy of the same initial weights, under its own switches
    plain = Speed(device_type=plan.dev.type)
    speeds = {"repo": sw, "fp32": plain, "loader": sw}
    paths = {"repo": build(module, cfg, image_shape, n_classes, plan.dev, sw)[0]}
    if with_fp32 and sw != plain:
        paths["fp32"] = build(module, cfg, image_shape, n_classes, plan.dev, plain)[0]
    if with_loader:
        paths["loader"] = build(module, cfg, image_shape, n_classes, plan.dev, sw)[0]
        dataset = torchvision_dataset(spec.dataset, plan.tmp, unit, size)
    totals = {path: [0, 0.0] for path in paths}
    for round_ in range(plan.rounds):
        # rounds alternate which path goes first, so a load that drifts on a shared machine hits all alike;
        # a DataLoader is opened per round and closed after it, so its workers never run beside the repo path
        for path in sorted(paths, reverse=round_ % 2 == 1):
            if path == "loader":
                batches = loader_batches(dataset, batch_size, plan.workers, plan.dev, sw)
            else:
                batches = repo_batches(split, batch_size, plan.dev, unit, speeds[path])
            torch.backends.cudnn.benchmark = speeds[path].cudnn_benchmark
            images, seconds = timed(paths[path], batches, plan.warmup, plan.steps, plan.dev)
            totals[path][0] += images
            totals[path][1] += seconds
    rate = {path: images / seconds for path, (images, seconds) in totals.items()}
    torch.backends.cudnn.benchmark = sw.cudnn_benchmark
    _, draw = build(module, cfg, image_shape, n_classes, plan.dev, sw)
    generation = generation_rate(draw, plan.gen_batch or GEN_BATCH[spec.dataset], plan.gen_reps, plan.dev, sw)
    torch.backends.cudnn.benchmark = False
    return Result(
        model=name,
        script=spec.script,
        batch_size=batch_size,
        steps=plan.rounds * plan.steps,
        repo=rate["repo"],
        loader=rate.get("loader"),
        generation=generation,
        flops=step_flops / batch_size,
        epoch_images=EPOCH_IMAGES[spec.dataset],
        peak=peak,
        note=note,
        switches=sw.label(),
        setting=setting or sw.label().replace("baseline", "fp32"),
        fp32=rate.get("fp32"),
        sample_images=SAMPLE_IMAGES.get(spec.dataset),
    )


# --- output ---


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _share(r: Result) -> str:
    return "n/a" if r.share is None else f"{100 * r.share:.3g}%"


def table(results: list[Result], switches_mode: bool = False) -> str:
    """The results as a markdown table."""
    if switches_mode:
        base = {r.model: r for r in results if r.switches == "baseline"}
        lines = [
            "| model | switches | batch | steps | train img/s | speed-up | s/epoch | GFLOP/img | FLOP share "
            "| generation img/s | speed-up |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in results:
            b = base[r.model]
            lines.append(
                f"| {r.model} | {r.switches} | {r.batch_size} | {r.steps} | {_fmt(r.repo)} | {r.repo / b.repo:.2f}x "
                f"| {r.epoch_seconds:,.2f} | {r.flops / 1e9:.3g} | {_share(r)} | {_fmt(r.generation)} "
                f"| {r.generation / b.generation:.2f}x |"
            )
        return "\n".join(lines)
    lines = [
        "| model | script | batch | steps | setting | img/s | fp32 img/s | speed-up | s/epoch | s/epoch sample "
        "| GFLOP/img | FLOP share | DataLoader img/s | repo / DataLoader | generation img/s | notes |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        sample = "-" if r.sample_seconds is None else f"{r.sample_seconds:,.2f}"
        loader_ratio = _ratio(None if r.loader is None else r.repo / r.loader)
        lines.append(
            f"| {r.model} | {r.script} | {r.batch_size} | {r.steps} | {r.setting} | {_fmt(r.repo)} "
            f"| {_fmt(r.fp32_rate)} | {_ratio(r.speed_up)} | {r.epoch_seconds:,.2f} | {sample} | {r.flops / 1e9:.3g} "
            f"| {_share(r)} | {_fmt(r.loader)} | {loader_ratio} | {_fmt(r.generation)} | {r.note} |"
        )
    return "\n".join(lines)


def _load() -> str:
    """The 1, 5 and 15 minute load averages, where the OS has them."""
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def header(plan: Plan, argv: list[str], load_start: str, sw: Speed, switches_mode: bool) -> list[str]:
    """The facts a reader needs to compare two bench.md files (sw: the switches measured, with their line)."""
    import torchvision

    cpu = cpu_name()
    gen = str(plan.gen_batch) if plan.gen_batch else f"{GEN_BATCH['mnist']} (MNIST) / {GEN_BATCH['celeba']} (CelebA)"
    lines = [
        f"- device: {device.describe(plan.dev)}; host: {os.cpu_count()} logical CPUs ({cpu}), torch threads "
        f"{torch.get_num_threads()}",
        f"- torch {torch.__version__}, torchvision {torchvision.__version__}, Python {platform.python_version()}",
        "- batch size: " + (str(plan.batch_size) if plan.batch_size else "each script's BATCH_SIZE (column batch)"),
        f"- steps: {plan.rounds * plan.steps} timed per path: {plan.rounds} round(s) of {plan.warmup} warm-up + "
        f"{plan.steps} timed steps, the paths taking turns to go first; generation: {plan.gen_reps} "
        f"forward pass(es) at batch {gen} after one warm-up pass, eval, no_grad",
        f"- load average (1, 5, 15 min): {load_start} at start, {_load()} at end",
        f"- s/epoch = images per epoch ({EPOCH_IMAGES['mnist']:,} MNIST, {EPOCH_IMAGES['celeba']:,} CelebA) / img/s "
        f"(train img/s with --switches); s/epoch sample = the bundled sample's {SAMPLE_IMAGES['mnist']:,} training "
        "digits (--dataset=mnist-sample, the scripts' offline fallback) / img/s",
        "- GFLOP/img: one training step (D step + G step, or the VAE step) at the row's batch counted once per model "
        "by torch.utils.flop_counter.FlopCounterMode (matmuls and convolutions, forward and backward; not the "
        "optimizer's elementwise work), / batch",
    ]
    amps = sorted({False, True} if switches_mode else {sw.amp})
    limits = [peak_for(plan.dev, replace(sw, amp=amp), plan.peak_tflops)[1] for amp in amps]
    lines.append("- FLOP share = img/s x FLOP/img / FLOP limit; limit: " + "; ".join(dict.fromkeys(limits)))
    if switches_mode:
        lines.append("- switches: each alone against the baseline, repo data path only")
    else:
        lines += [
            "- repo: uint8 split on the device, `batches.Batches`, `data.to_gan`/`to_unit` per batch",
            f"- DataLoader: torchvision dataset with PIL transforms, num_workers={plan.workers}, shuffle, default "
            f"collate, pin_memory={plan.dev.type == 'cuda'}; repo / DataLoader = the ratio of their img/s",
            f"- data: MNIST = the bundled 4,000 real training digits tiled to {MNIST_IMAGES:,} as IDX files; "
            "CelebA = synthetic 178x218 JPEGs (ImageFolder, CenterCrop(108), Resize, ToTensor, Normalize) against "
            "the repo's uint8 cache of them (cache built once, not timed)",
            "- setting: the speed switches of the img/s column: each script's own constants (auto: chosen per "
            "device by common/speed.py), or exactly the ones --amp, --channels-last, --cudnn-benchmark, --fused-adam, "
            "--compile name; fp32 img/s: the same repo path in plain fp32 eager, speed-up = img/s / fp32 img/s (a "
            "row whose setting is fp32 is measured once); DataLoader and generation run under the row's setting",
            f"- {sw.summary or 'speed: ' + sw.describe()}",
        ]
    lines.append(f"- command: python bench.py {shlex.join(argv)}".rstrip())
    return lines


# --- command line ---


def parse(argv: list[str]) -> argparse.Namespace:
    """The command-line options, validated (bad ones exit with a one-line error)."""
    p = _Parser(prog="python bench.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few steps, CelebA at 32x32: under two minutes on 2 CPU cores")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from: {', '.join(MODELS)}")
    p.add_argument(
        "--out", default="outputs/bench.md", help="markdown file written with the table (default outputs/bench.md)"
    )
    p.add_argument("--batch-size", type=int, default=0, help="images per step for every model (default: each script's)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per path and round (default 200 on CUDA, else 10; --quick 3)",
    )
    p.add_argument("--rounds", type=int, default=None, help="rounds of both paths, summed (default 3; --quick 1)")
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed steps before each (default 20 on CUDA, else 5; --quick 2)"
    )
    p.add_argument("--gen-batch", type=int, default=0, help="images per generator pass (default 1024; CelebA 256)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"DataLoader worker processes (default: the CPU count, at most {MAX_WORKERS}; here {default_workers()})",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the FLOP limit of the FLOP share column (default: a known GPU's dense bf16/TF32 peak, else n/a)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's, i.e. OMP_NUM_THREADS)")
    named = "; any of these five: measure exactly the switches named instead of each script's auto"
    p.add_argument("--amp", action="store_true", help="bf16 autocast" + named)
    p.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last")
    p.add_argument("--cudnn-benchmark", action="store_true", help="CUDA: torch.backends.cudnn.benchmark = True")
    p.add_argument("--fused-adam", action="store_true", help="torch.optim.Adam(..., fused=True)")
    p.add_argument("--compile", action="store_true", help="torch.compile each model")
    p.add_argument(
        "--switches",
        nargs="?",
        const=",".join(SWITCHES),
        default=None,
        help="each switch alone, then all, against the fp32 baseline (repo path only); optionally only some, "
        "e.g. --switches amp,channels_last (those the device cannot run are skipped with a note)",
    )
    args = p.parse_args(argv)
    if args.switches is not None:
        args.switches = [w.strip().replace("-", "_") for w in args.switches.split(",") if w.strip()]
        bad = [w for w in args.switches if w not in SWITCHES]
        if bad or not args.switches:
            fail(f"unknown switch(es) {', '.join(bad) or '(none given)'}; choose from: {', '.join(SWITCHES)}")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        fail(f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from: {', '.join(MODELS)}")
    args.workers = default_workers() if args.workers is None else args.workers
    for name in ("steps", "rounds", "batch_size", "gen_batch", "warmup", "workers", "threads"):
        value, least = getattr(args, name), 1 if name in ("steps", "rounds") else 0
        if value is not None and value < least:  # None: set by fill_defaults once the device is known
            fail(f"--{name.replace('_', '-')} must be {'positive' if least else '>= 0'}, got {value}")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        fail(f"--peak-tflops must be positive, got {args.peak_tflops:g}")
    return args


def default_workers() -> int:
    """DataLoader workers by default: one per logical CPU, at most MAX_WORKERS."""
    return min(MAX_WORKERS, os.cpu_count() or 1)


def fill_defaults(args: argparse.Namespace, dev: torch.device) -> argparse.Namespace:
    """Steps, warm-up and rounds not given: tiny with --quick, GPU-sized on CUDA, a few minutes' worth elsewhere."""
    if args.quick:
        steps, warmup, rounds = 3, 2, 1
    elif dev.type == "cuda":
        steps, warmup, rounds = 200, 20, 3  # a step takes milliseconds: enough steps to time launches and all
    else:
        steps, warmup, rounds = 10, 5, 3
    args.steps = steps if args.steps is None else args.steps
    args.warmup = warmup if args.warmup is None else args.warmup
    args.rounds = rounds if args.rounds is None else args.rounds
    return args


def model_speed(name: str, dev: torch.device, flags: dict[str, bool]) -> tuple[Speed, str]:
    """The switches a model is measured under and the row's setting: the script's own constants (auto), or the flags'."""
    if any(flags.values()):
        sw = Speed.from_config({NAMES[n]: on for n, on in flags.items()}, dev, verbose=False)
        return sw, sw.label().replace("baseline", "fp32")
    module = config.load_script(MODELS[name].script)
    own = {const: value for const, value in config.constants(vars(module)).items() if const in NAMES.values()}
    sw = Speed.from_config(own, dev, verbose=False)
    label = sw.label().replace("baseline", "fp32")
    if own and all(value == AUTO for value in own.values()):
        return sw, f"auto = {label}" if label == "fp32" else f"auto: {label}"
    return sw, label


def switch_variants(dev: torch.device, wanted: list[str]) -> list[Speed]:
    """--switches: the fp32 baseline, each wanted switch alone that dev can run, then those together."""
    base = Speed(device_type=dev.type)
    acting = []
    for name in wanted:
        reason = unsupported(name, dev.type)
        if reason:
            print(f"note: --switches: {name} skipped on {dev.type}: {reason}")
        else:
            acting.append(name)
    variants = [base] + [replace(base, **{name: True}) for name in acting]
    if len(acting) > 1:
        variants.append(replace(base, **dict.fromkeys(acting, True)))  # all together
    return variants


def main(argv: list[str] | None = None) -> list[Result]:
    """Run the benchmark, print the table and write the markdown file; returns the results."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    load_start = _load()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = device.pick(args.device)
    fill_defaults(args, dev)
    flags = {name: getattr(args, name) for name in SWITCHES}  # argparse names them as Speed does
    switches_mode = args.switches is not None
    # the switches measured: exactly those the flags name, else each script's own (auto); said in one line
    overall = {NAMES[n]: on for n, on in flags.items()} if any(flags.values()) else dict.fromkeys(NAMES.values(), AUTO)
    sw = Speed.from_config(overall, dev, verbose=not switches_mode)
    variants = switch_variants(dev, args.switches) if switches_mode else []

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp_name:
        tmp = Path(tmp_name)
        reps = 1 if args.quick else (20 if dev.type == "cuda" else 3)  # a GPU pass takes a millisecond or so
        plan = Plan(
            dev=dev,
            steps=args.steps,
            warmup=args.warmup,
            rounds=args.rounds,
            batch_size=args.batch_size,
            workers=args.workers,
            quick=args.quick,
            gen_reps=reps,
            gen_batch=args.gen_batch,
            tmp=tmp,
            peak_tflops=args.peak_tflops,
        )
        if any(MODELS[m].dataset == "mnist" for m in args.models):
            write_mnist(tmp)
        if "celeba" in args.models:
            per_step = args.batch_size or config.load_script(MODELS["celeba"].script).BATCH_SIZE
            # enough faces that neither path starts a second epoch inside the measurement
            write_jpegs(tmp / "celeba", max(512, (args.warmup + args.steps + 1) * per_step))
        print(f"bench on {device.describe(dev)}, torch {torch.__version__}, load average {load_start}", flush=True)
        results: list[Result] = []
        for name in args.models:
            if switches_mode:
                for variant in variants:
                    results.append(bench_model(name, plan, variant, with_loader=False))
                    r = results[-1]
                    print(
                        f"  {name} {variant.label()}: {r.repo:,.1f} img/s, {r.epoch_seconds:,.2f} s/epoch", flush=True
                    )
            else:
                model_sw, setting = model_speed(name, dev, flags)
                results.append(bench_model(name, plan, model_sw, setting=setting, with_fp32=True))
                r = results[-1]
                print(
                    f"  {name} [{r.setting}]: {r.repo:,.1f} img/s ({r.epoch_seconds:,.2f} s/epoch, {r.flops / 1e9:.3g} "
                    f"GFLOP/img), fp32 {_fmt(r.fp32_rate)} img/s ({_ratio(r.speed_up)}), DataLoader {_fmt(r.loader)} "
                    "img/s",
                    flush=True,
                )

    title = "# Training and generation speed (python bench.py)"
    text = "\n".join([title, "", *header(plan, argv, load_start, sw, switches_mode), "", table(results, switches_mode)])
    print("\n" + table(results, switches_mode))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
