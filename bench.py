"""Training and generation speed of each script through its own code: its speed setting against plain fp32,
and the repo's data path against the standard torchvision DataLoader.

Each model is what its script's main() builds, by the script's own functions (`build`), so the bench cannot
drift from the scripts. The table goes to outputs/bench.md under the run's facts; its columns (COLUMNS;
SWITCH_COLUMNS with --switches) are listed with their meanings there, by --help and in docs/speed.md.

    python bench.py                                # every model: auto against fp32, side by side
    python bench.py --quick                        # the same, few steps (< 2 min on 2 CPU cores)
    python bench.py --models dcgan,vae --steps 30  # chosen models; writes outputs/bench.md
    python bench.py --switches --models dcgan      # each switch alone vs the fp32 baseline
    python bench.py --peak-tflops 2.5              # a FLOP share against a CPU's (or any) peak
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from common import augment, celeba, config, data, device, ema, memory, mnist_files
from common.batches import Batches
from common.config import fail
from common.domains import Real
from common.speed import AUTO, NAMES, Speed, cpu_name, flop_limit, unsupported

Batch = tuple[torch.Tensor, torch.Tensor]  # (images, labels) on the device
Step = Callable[[torch.Tensor, torch.Tensor], None]  # one training step on a batch

MNIST_IMAGES = 60_000  # a full MNIST epoch: the sample's training digits are tiled up to this
EPOCH_IMAGES = {"mnist": MNIST_IMAGES, "celeba": 202_599}  # images in one epoch of the script's data set
SAMPLE_IMAGES = {"mnist": 4_000}  # an epoch of the bundled real-digit sample (--dataset=mnist-sample)
GEN_BATCH = {"mnist": 1024, "celeba": 256}  # images per generator forward pass
QUICK_CELEBA_SIZE = 32  # --quick trains the CelebA DCGAN at 32x32 (64x64 is ~15 img/s on 2 CPU cores)
SWITCHES = tuple(NAMES)  # the speed switches, as common/speed.py names them
MAX_WORKERS = 8  # default DataLoader workers: the CPU count, at most this
# the table's columns, each defined here once as (header, meaning): table() prints the headers, and --help,
# outputs/bench.md and docs/speed.md list the meanings (tests/test_bench.py holds the docs to this list)
COLUMNS = (
    ("model", "vae, gan, cgan (GAN-MNIST.py with CONDITIONAL=True), dcgan, cdcgan or celeba"),
    ("script", "the training script whose own build_models, optimizers, train_step and decode are measured"),
    ("batch", "images per training step: the script's BATCH_SIZE, or --batch-size"),
    ("steps", "timed training steps per path, all rounds together"),
    ("setting", "the speed switches of the row: the script's own constants, auto as common/speed.py resolves it here ('auto = fp32', 'auto: amp+channels_last'), or exactly those --amp, --channels-last, --cudnn-benchmark, --fused-adam, --compile name"),
    ("img/s", "training images per second on the repo path under the setting (D step + G step, or the VAE step)"),
    ("fp32 img/s", "the same in plain fp32 eager, in the same run (a row whose setting is fp32 is measured once)"),
    ("speed-up", "img/s / fp32 img/s"),
    ("s/epoch", f"images per epoch ({EPOCH_IMAGES['mnist']:,} MNIST, {EPOCH_IMAGES['celeba']:,} CelebA) / img/s"),
    ("s/epoch sample", f"the bundled sample's {SAMPLE_IMAGES['mnist']:,} training digits (--dataset=mnist-sample, the scripts' offline fallback) / img/s"),
    ("GFLOP/img", "one training step at the row's batch, counted once per model by torch.utils.flop_counter.FlopCounterMode (matmuls and convolutions, forward and backward; not the optimizer's elementwise work), / batch"),
    ("FLOP share", "img/s x FLOP/img / the FLOP limit: --peak-tflops, else a known GPU's dense peak (bf16 under AMP, else TF32); n/a on the CPU, MPS or an unknown GPU"),
    ("DataLoader img/s", "the same training fed by torchvision's DataLoader at the same batch, under the setting"),
    ("repo / DataLoader", "img/s / DataLoader img/s"),
    ("generation img/s", "images per second of the script's decode (the generator or the VAE's decoder, to [0, 1]) in eval mode under no_grad at a large batch, under the setting"),
    ("notes", "the CelebA image size; 'FLOPs counted on the CPU' where the device could not count them"),
)  # fmt: skip
_MEANING = dict(COLUMNS)
SWITCH_COLUMNS = (  # --switches: a row per model and switch
    ("model", _MEANING["model"]),
    ("switches", "the switches trained under: baseline (plain fp32 eager), each alone, then all together"),
    *((name, _MEANING[name]) for name in ("batch", "steps")),
    ("train img/s", "training images per second on the repo path under the switches"),
    ("speed-up", "train img/s / the baseline's"),
    *((name, _MEANING[name]) for name in ("s/epoch", "GFLOP/img", "FLOP share", "generation img/s")),
    ("speed-up", "generation img/s / the baseline's"),
)
TEXT_COLUMNS = ("model", "script", "setting", "switches", "notes")  # left-aligned; the numbers right-aligned


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
    def epoch_seconds(self) -> float:  # at the repo path's rate
        return self.epoch_images / self.repo

    @property
    def fp32_rate(self) -> float | None:  # plain fp32 eager: measured apart, or the repo rate when the row is fp32
        return self.repo if self.switches == "baseline" else self.fp32

    @property
    def speed_up(self) -> float | None:  # img/s over plain fp32 eager's
        return None if self.fp32_rate is None else self.repo / self.fp32_rate

    @property
    def share(self) -> float | None:  # achieved FLOP/s on the repo path as a fraction of the limit
        return None if self.peak is None else self.repo * self.flops / (self.peak * 1e12)


# --- models, optimisers and one training step: each script's own functions, no second copy here ---


def script_config(spec: Model, module: ModuleType, size: int) -> dict[str, Any]:
    """The script's constants with the bench's overrides (and the CelebA image size)."""
    image_size = {"IMAGE_SIZE": size} if spec.dataset == "celeba" else {}
    return {**config.constants(vars(module)), **spec.overrides, **image_size}


def build(
    module: ModuleType, cfg: dict[str, Any], image_shape: tuple[int, int, int], n_classes: int, dev: torch.device,
    sw: Speed,
) -> tuple[Step, Callable[[int], torch.Tensor]]:  # fmt: skip
    """What the script's main() builds, by the script's own functions (seed 0): returns (one training step, draw n
    images in eval mode)."""
    device.seed_all(0)  # every path starts from the very same weights
    # the switches are applied by the scripts' own helper (common/speed.py), as in a training run
    plain = {name: sw.prepare(m.to(dev)) for name, m in module.build_models(cfg, image_shape, n_classes).items()}
    opts = {name: sw.adam(plain[n].parameters(), lr, betas) for name, (n, lr, betas) in module.optimizers(cfg).items()}
    averages = ema.Averages()  # a script's moving averages (EMA), updated after every step as the run helper does
    for name, (base, decay) in getattr(module, "averages", lambda cfg: {})(cfg).items():
        averages.add(name, base, plain[base], decay)
    nets = {name: sw.compiled(m) for name, m in plain.items()}
    policy = augment.policy(cfg.get("AUGMENT", ""))  # D's input augmentation, as the run helper makes it
    count = itertools.count(1)  # the run's step number, from 1 (K_STEPS counts by it)

    def step(x: torch.Tensor, labels: torch.Tensor) -> None:
        t = next(count)
        module.train_step(cfg, nets, opts, x, labels, t, n_classes, sw.autocast, policy)
        averages.update(t)

    def draw(n: int) -> torch.Tensor:
        for net in nets.values():
            net.eval()
        z = torch.randn(n, cfg["LATENT_DIM"], device=dev)
        labels = torch.randint(0, n_classes, (n,), device=dev) if n_classes else None  # unconditional: ignored
        return module.decode(nets, z, labels)

    return step, draw


def count_flops(
    module: ModuleType, cfg: dict[str, Any], image_shape: tuple[int, int, int], n_classes: int, batch_size: int,
    dev: torch.device,
) -> tuple[float, torch.device]:  # fmt: skip
    """FLOPs of one training step at batch_size by FlopCounterMode, and where counted: on dev, else on the CPU, with
    fresh fp32 eager models (the switches change how fast the FLOPs run, not how many) on a random batch."""
    try:
        step, _ = build(module, cfg, image_shape, n_classes, dev, Speed(device_type=dev.type))
        x = module.normalise(torch.randint(0, 256, (batch_size, *image_shape), dtype=torch.uint8, device=dev))
        labels = torch.randint(0, max(n_classes, 1), (batch_size,), device=dev)
        with FlopCounterMode(display=False) as counter:
            step(x, labels)
        return float(counter.get_total_flops()), dev
    except (RuntimeError, NotImplementedError):
        if dev.type == "cpu":
            raise
        return count_flops(module, cfg, image_shape, n_classes, batch_size, torch.device("cpu"))


def peak_for(dev: torch.device, sw: Speed, given: float | None) -> tuple[float | None, str]:
    """The FLOP limit in TFLOP/s (None: unknown) and how it was chosen, for the header."""
    if given:
        return given, f"{given:g} TFLOP/s (--peak-tflops)"
    peak, words = flop_limit(dev, sw.amp)
    return peak, words if peak else f"{words} (give --peak-tflops)"


# --- the two data paths, and one model trained on them ---


def repo_batches(split: data.Split, size: int, dev: torch.device, normalise: Callable, sw: Speed) -> Iterator[Batch]:
    """The scripts' path: uint8 batches by index from the split, normalised on the device (their own normalise)."""
    batches = Batches(split, size, seed=0)
    for epoch in itertools.count(1):
        for images, labels in batches.epoch(epoch, dev):
            yield sw.input(normalise(images)), labels


def loader_batches(dataset: Dataset, size: int, workers: int, dev: torch.device, sw: Speed) -> Iterator[Batch]:
    """The standard path: a shuffling DataLoader with worker processes and default collate; endless."""
    loader = DataLoader(dataset, batch_size=size, shuffle=True, num_workers=workers, pin_memory=dev.type == "cuda")
    while True:
        for images, labels in loader:
            yield sw.input(images.to(dev, non_blocking=True)), labels.to(dev, non_blocking=True)


def torchvision_dataset(kind: str, root: Path, unit: bool, size: int) -> Dataset:
    """The standard PIL-backed data set with its usual transforms (to [0, 1] when unit, else [-1, 1])."""
    if kind == "mnist":
        scale = [] if unit else [transforms.Normalize((0.5,), (0.5,))]
        return datasets.MNIST(str(root), download=False, transform=transforms.Compose([transforms.ToTensor(), *scale]))
    crop = [transforms.CenterCrop(108), transforms.Resize(size)]
    tail = [transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)]
    return datasets.ImageFolder(str(root / "celeba"), transform=transforms.Compose(crop + tail))


def timed(work: Callable[[], int], warmup: int, reps: int, dev: torch.device) -> tuple[int, float]:
    """(images, seconds) of `reps` calls of work (returning its images) after `warmup` untimed ones (allocator, cuDNN's
    algorithm choice, compilation); the clock is read after a device synchronise."""
    for _ in range(warmup):
        work()
    device.synchronize(dev)
    start = time.perf_counter()
    images = sum(work() for _ in range(reps))
    device.synchronize(dev)
    return images, time.perf_counter() - start


def train(step: Step, batches: Iterator[Batch]) -> int:
    """One training step on the next batch; its images."""
    x, labels = next(batches)
    step(x, labels)
    return len(x)


@dataclass
class Plan:
    """What to run: settings shared by every model (after dev, tmp and gen_reps, the options of the same names)."""

    dev: torch.device
    tmp: Path  # the data: MNIST as IDX files, CelebA's JPEGs in celeba/faces/
    gen_reps: int  # timed generator passes
    steps: int  # timed steps per path and round
    warmup: int
    rounds: int
    batch_size: int  # 0: each script's BATCH_SIZE
    workers: int
    quick: bool
    gen_batch: int  # 0: GEN_BATCH of the data set
    peak_tflops: float | None = None  # --peak-tflops; None: the built-in table
    flops: dict[tuple[str, int], tuple[float, torch.device]] = field(default_factory=dict)  # counted once per model


def bench_model(name: str, plan: Plan, sw: Speed, setting: str = "", compare: bool = True) -> Result:
    """Train one model under `sw` on the repo path and, with `compare`, in plain fp32 eager on the repo path
    (unless `sw` is fp32 already) and under `sw` on the DataLoader path; measure generation under `sw`."""
    spec = MODELS[name]
    size = QUICK_CELEBA_SIZE if plan.quick else 64
    module = config.load_script(spec.script)
    cfg = script_config(spec, module, size)
    batch_size = plan.batch_size or cfg["BATCH_SIZE"]
    notes = []
    if spec.dataset == "mnist":
        ds = data.load("mnist", plan.tmp, download=False, device=plan.dev)
        split, image_shape, n_classes = ds.train, ds.shape, len(ds.classes)
    else:
        with contextlib.redirect_stdout(sys.stderr):  # the one-off cache build talks; keep the table clean
            split = celeba.load("celeba", plan.tmp, plan.tmp / "celeba", False, 108, size, plan.workers or 1, plan.dev)
        image_shape, n_classes = (3, size, size), 0
        notes.append(f"{size}x{size}" + (" (--quick; the script trains at 64x64)" if size != 64 else ""))
    if batch_size > len(split):
        fail(f"--batch-size={batch_size} is larger than the {len(split)} benchmark images")

    if (name, batch_size) not in plan.flops:  # once per model: --switches reuses it for every variant
        plan.flops[name, batch_size] = count_flops(module, cfg, image_shape, n_classes, batch_size, plan.dev)
    step_flops, counted_on = plan.flops[name, batch_size]
    notes += ["FLOPs counted on the CPU"] if counted_on != plan.dev else []

    # each path trains its own copy of the same initial weights, under its own switches
    plain = Speed(device_type=plan.dev.type)
    speeds = {"repo": sw, **({"fp32": plain} if compare and sw != plain else {}), **({"loader": sw} if compare else {})}
    paths = {path: build(module, cfg, image_shape, n_classes, plan.dev, speed)[0] for path, speed in speeds.items()}
    dataset = torchvision_dataset(spec.dataset, plan.tmp, module.normalise is data.to_unit, size) if compare else None
    totals = {path: (0, 0.0) for path in paths}
    for round_ in range(plan.rounds):
        # rounds alternate which path goes first, so a load that drifts on a shared machine hits all alike;
        # a DataLoader is opened per round and closed after it, so its workers never run beside the repo path
        for path in sorted(paths, reverse=round_ % 2 == 1):
            if path == "loader":
                batches = loader_batches(dataset, batch_size, plan.workers, plan.dev, sw)
            else:
                batches = repo_batches(split, batch_size, plan.dev, module.normalise, speeds[path])
            torch.backends.cudnn.benchmark = speeds[path].cudnn_benchmark
            with contextlib.closing(batches):  # ends a DataLoader's workers before the next measurement
                measured = timed(functools.partial(train, paths[path], batches), plan.warmup, plan.steps, plan.dev)
            totals[path] = (totals[path][0] + measured[0], totals[path][1] + measured[1])
    rate = {path: images / seconds for path, (images, seconds) in totals.items()}
    torch.backends.cudnn.benchmark = sw.cudnn_benchmark
    _, draw = build(module, cfg, image_shape, n_classes, plan.dev, sw)
    gen_batch = plan.gen_batch or GEN_BATCH[spec.dataset]
    with torch.no_grad(), sw.autocast():  # the script's decode in eval mode, one warm-up pass
        images, seconds = timed(lambda: len(draw(gen_batch)), 1, plan.gen_reps, plan.dev)
    torch.backends.cudnn.benchmark = False
    return Result(
        name, spec.script, batch_size, plan.rounds * plan.steps, rate["repo"], rate.get("loader"), images / seconds,
        step_flops / batch_size, EPOCH_IMAGES[spec.dataset], peak_for(plan.dev, sw, plan.peak_tflops)[0],
        "; ".join(notes), sw.label(), setting or setting_of(sw), rate.get("fp32"), SAMPLE_IMAGES.get(spec.dataset),
    )  # fmt: skip


# --- output ---


def _fmt(value: float | None, spec: str = ",.1f", unit: str = "", missing: str = "-") -> str:
    return missing if value is None else f"{value:{spec}}{unit}"


def cells(r: Result, base: Result | None = None) -> list[str]:
    """One row's cells in the order of COLUMNS; given the baseline `base` of its model, of SWITCH_COLUMNS."""
    share = _fmt(r.share and 100 * r.share, ".3g", "%", missing="n/a")
    if base is not None:
        return [
            r.model, r.switches, str(r.batch_size), str(r.steps), _fmt(r.repo), _fmt(r.repo / base.repo, ".2f", "x"),
            _fmt(r.epoch_seconds, ",.2f"), _fmt(r.flops / 1e9, ".3g"), share, _fmt(r.generation),
            _fmt(r.generation / base.generation, ".2f", "x"),
        ]  # fmt: skip
    return [
        r.model, r.script, str(r.batch_size), str(r.steps), r.setting, _fmt(r.repo), _fmt(r.fp32_rate),
        _fmt(r.speed_up, ".2f", "x"), _fmt(r.epoch_seconds, ",.2f"),
        _fmt(r.sample_images and r.sample_images / r.repo, ",.2f"), _fmt(r.flops / 1e9, ".3g"), share, _fmt(r.loader),
        _fmt(r.loader and r.repo / r.loader, ".2f", "x"), _fmt(r.generation), r.note,
    ]  # fmt: skip


def table(results: list[Result], switches_mode: bool = False) -> str:
    """The results as a markdown table with the headers of COLUMNS (SWITCH_COLUMNS with --switches)."""
    columns = SWITCH_COLUMNS if switches_mode else COLUMNS
    base = {r.model: r for r in results if r.switches == "baseline"}
    rows = [[name for name, _ in columns], *(cells(r, base[r.model] if switches_mode else None) for r in results)]
    assert all(len(row) == len(columns) for row in rows), "a cell for every column"
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    rule = "|" + "|".join("---" if name in TEXT_COLUMNS else "---:" for name, _ in columns) + "|"
    return "\n".join([lines[0], rule, *lines[1:]])


def column_list(columns: tuple[tuple[str, str], ...] = COLUMNS) -> list[str]:
    """The columns as a markdown list, `- header: meaning` (bench.md, --help, and docs/speed.md's copy)."""
    return [f"- {name}: {meaning}" for name, meaning in columns]


def _load() -> str:
    """The 1, 5 and 15 minute load averages, where the OS has them."""
    with contextlib.suppress(OSError):
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return "n/a"


def header(plan: Plan, argv: list[str], load_start: str, sw: Speed, switches_mode: bool) -> list[str]:
    """The facts a reader needs to compare two bench.md files (sw: the switches measured, with their line)."""
    gen = str(plan.gen_batch) if plan.gen_batch else f"{GEN_BATCH['mnist']} (MNIST) / {GEN_BATCH['celeba']} (CelebA)"
    amps = sorted({False, True} if switches_mode else {sw.amp})
    limits = [peak_for(plan.dev, replace(sw, amp=amp), plan.peak_tflops)[1] for amp in amps]
    lines = [
        f"- device: {device.describe(plan.dev)}; host: {os.cpu_count()} logical CPUs ({cpu_name()}), torch threads "
        f"{torch.get_num_threads()}",
        f"- torch {torch.__version__}, torchvision {torchvision.__version__}, Python {sys.version.split()[0]}",
        "- batch size: " + (str(plan.batch_size) if plan.batch_size else "each script's BATCH_SIZE (column batch)"),
        f"- steps: {plan.rounds * plan.steps} timed per path: {plan.rounds} round(s) of {plan.warmup} warm-up + "
        f"{plan.steps} timed steps, the paths taking turns to go first; generation: {plan.gen_reps} "
        f"forward pass(es) at batch {gen} after one warm-up pass, eval, no_grad",
        f"- load average (1, 5, 15 min): {load_start} at start, {_load()} at end",
        "- FLOP limit: " + "; ".join(dict.fromkeys(limits)),
    ]
    if switches_mode:
        lines.append("- switches: each alone against the baseline, repo data path only")
    else:
        lines += [
            "- repo: uint8 split on the device, `batches.Batches`, the script's `normalise` per batch",
            f"- DataLoader: torchvision dataset with PIL transforms, num_workers={plan.workers}, shuffle, default "
            f"collate, pin_memory={plan.dev.type == 'cuda'}",
            f"- data: MNIST = the bundled 4,000 real training digits tiled to {MNIST_IMAGES:,} as IDX files; "
            "CelebA = synthetic 178x218 JPEGs (ImageFolder, CenterCrop(108), Resize, ToTensor, Normalize) against "
            "the repo's uint8 cache of them (cache built once, not timed)",
            f"- {sw.summary or 'speed: ' + sw.describe()}",
        ]
    lines.append(f"- command: python bench.py {shlex.join(argv)}".rstrip())
    return [*lines, "", "Columns:", "", *column_list(SWITCH_COLUMNS if switches_mode else COLUMNS)]


# --- command line ---


def parse(argv: list[str]) -> argparse.Namespace:
    """The command-line options, validated (bad ones exit with a one-line error); DataLoader workers by default: one
    per logical CPU, at most MAX_WORKERS."""
    epilog = "columns of the table:\n" + "\n".join(column_list()) + "\nwith --switches:\n"
    epilog += "\n".join(column_list(tuple(c for c in SWITCH_COLUMNS if c not in COLUMNS)))
    formatter = argparse.RawTextHelpFormatter
    p = argparse.ArgumentParser(prog="python bench.py", description=__doc__, epilog=epilog, formatter_class=formatter)
    p.error = fail  # type: ignore[method-assign]  # the repo's one-line `error: ...`, exit code 2
    p.add_argument("--quick", action="store_true", help="few steps, CelebA at 32x32: under two minutes on 2 CPU cores")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from: {', '.join(MODELS)}")
    p.add_argument("--out", default="outputs/bench.md", help="markdown file written with the table (%(default)s)")
    p.add_argument("--batch-size", type=int, default=0, help="images per step for every model (default: each script's)")
    p.add_argument("--steps", type=int, help="timed steps per path and round (default 200 on CUDA, else 10; --quick 3)")
    p.add_argument("--rounds", type=int, default=None, help="rounds of both paths, summed (default 3; --quick 1)")
    p.add_argument("--warmup", type=int, help="untimed steps before each (default 20 on CUDA, else 5; --quick 2)")
    p.add_argument("--gen-batch", type=int, default=0, help="images per generator pass (default 1024; CelebA 256)")
    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    here = f"DataLoader worker processes (default: the CPU count, at most {MAX_WORKERS}; here {workers})"
    p.add_argument("--workers", type=int, default=workers, help=here)
    limit = "the FLOP limit of the FLOP share column (default: a known GPU's dense bf16/TF32 peak, else n/a)"
    p.add_argument("--peak-tflops", type=float, default=None, help=limit)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's, i.e. OMP_NUM_THREADS)")
    named = "; any of these five: measure exactly the switches named instead of each script's auto"
    p.add_argument("--amp", action="store_true", help="bf16 autocast" + named)
    p.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last")
    p.add_argument("--cudnn-benchmark", action="store_true", help="CUDA: torch.backends.cudnn.benchmark = True")
    p.add_argument("--fused-adam", action="store_true", help="torch.optim.Adam(..., fused=True)")
    p.add_argument("--compile", action="store_true", help="torch.compile each model")
    each = "each switch alone, then all, against the fp32 baseline (repo path only); optionally only some, e.g. "
    each += "--switches amp,channels_last (those the device cannot run are skipped with a note)"
    p.add_argument("--switches", nargs="?", const=",".join(SWITCHES), default=None, help=each)
    args = p.parse_args(argv)
    if args.switches is not None:
        args.switches = names(args.switches.replace("-", "_"), SWITCHES, "switch(es)")
    args.models = names(args.models, MODELS, "model(s)")
    for name in ("steps", "rounds", "peak_tflops", "batch_size", "gen_batch", "warmup", "workers", "threads"):
        value, positive = getattr(args, name), name in ("steps", "rounds", "peak_tflops")
        if value is not None and (not value > 0 if positive else value < 0):  # None: fill_defaults sets it
            fail(f"--{name.replace('_', '-')} must be {'positive' if positive else '>= 0'}, got {value:g}")
    if args.peak_tflops is not None:
        config.hold("--peak-tflops", args.peak_tflops, Real("(0, inf)"))  # nan and inf too
    return args


def names(text: str, known: Collection[str], what: str) -> list[str]:
    """The comma-separated names in text, each one of `known` (else a one-line error)."""
    given = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in given if w not in known]
    if unknown or not given:
        fail(f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from: {', '.join(known)}")
    return given


def fill_defaults(args: argparse.Namespace, dev: torch.device) -> argparse.Namespace:
    """Steps, warm-up and rounds not given: tiny with --quick, on CUDA enough to time milliseconds-long steps and their
    launches, elsewhere a few minutes' worth."""
    defaults = (3, 2, 1) if args.quick else (200, 20, 3) if dev.type == "cuda" else (10, 5, 3)
    for name, value in zip(("steps", "warmup", "rounds"), defaults, strict=True):
        setattr(args, name, value if getattr(args, name) is None else getattr(args, name))
    return args


def model_speed(name: str, dev: torch.device, flags: dict[str, bool]) -> tuple[Speed, str]:
    """The switches a model runs under and the row's setting: the script's own constants (auto), or the flags'."""
    module = config.load_script(MODELS[name].script)
    own = {const: value for const, value in config.constants(vars(module)).items() if const in NAMES.values()}
    wanted = {NAMES[n]: on for n, on in flags.items()} if any(flags.values()) else own
    sw = Speed.from_config(wanted, dev, verbose=False)
    auto = bool(wanted) and all(value == AUTO for value in wanted.values())
    return sw, ("auto = " if auto and sw.label() == "baseline" else "auto: " if auto else "") + setting_of(sw)


def setting_of(sw: Speed) -> str:
    """The switches in the table's words: 'fp32' for none, else e.g. 'amp+channels_last'."""
    return sw.label().replace("baseline", "fp32")


def switch_variants(dev: torch.device, wanted: list[str]) -> list[Speed]:
    """--switches: the fp32 baseline, each wanted switch alone that dev can run, then those together."""
    base, acting = Speed(device_type=dev.type), []
    for name in wanted:
        if reason := unsupported(name, dev.type):
            print(f"note: --switches: {name} skipped on {dev.type}: {reason}")
        else:
            acting.append(name)
    together = [replace(base, **dict.fromkeys(acting, True))] if len(acting) > 1 else []
    return [base, *(replace(base, **{name: True}) for name in acting), *together]


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

    lower = "--batch-size or --gen-batch"  # out of memory while measuring: one line, exit 5
    with memory.reported(dev, "benchmarking", lower), tempfile.TemporaryDirectory(prefix="bench-") as tmp_name:
        reps = 1 if args.quick else (20 if dev.type == "cuda" else 3)  # a GPU pass takes a millisecond or so
        plan = Plan(dev, tmp := Path(tmp_name), reps, **{f.name: getattr(args, f.name) for f in fields(Plan)[3:-1]})
        if any(MODELS[m].dataset == "mnist" for m in args.models):
            mnist_files.write_sample(tmp, MNIST_IMAGES)
        if "celeba" in args.models:
            per_step = args.batch_size or config.load_script(MODELS["celeba"].script).BATCH_SIZE
            # enough faces that neither path starts a second epoch inside the measurement (ImageFolder: a class folder)
            celeba.write_fake(tmp / "celeba" / "faces", max(512, (args.warmup + args.steps + 1) * per_step))
        print(f"bench on {device.describe(dev)}, torch {torch.__version__}, load average {load_start}", flush=True)
        results: list[Result] = []
        for name in args.models:
            for model_sw, setting in [(v, "") for v in variants] if switches_mode else [model_speed(name, dev, flags)]:
                results.append(r := bench_model(name, plan, model_sw, setting, compare=not switches_mode))
                speed = f"{r.repo:,.1f} img/s ({r.epoch_seconds:,.2f} s/epoch, {r.flops / 1e9:.3g} GFLOP/img)"
                ratio = _fmt(r.speed_up, ".2f", "x")
                rates = f"fp32 {_fmt(r.fp32_rate)} img/s ({ratio}), DataLoader {_fmt(r.loader)} img/s"
                alone = f"{r.switches}: {r.repo:,.1f} img/s, {r.epoch_seconds:,.2f} s/epoch"
                print(f"  {name} " + (alone if switches_mode else f"[{r.setting}]: {speed}, {rates}"), flush=True)

    text = ["# Training and generation speed (python bench.py)", "", *header(plan, argv, load_start, sw, switches_mode)]
    text += ["", table(results, switches_mode)]
    print("\n" + text[-1])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text) + "\n")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
