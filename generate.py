"""Sample a trained model without retraining: grids, arrays, chosen classes, interpolations.

Works on the run folder of any training script (VAE, GAN, conditional GAN, DCGAN, CDCGAN,
DCGAN-CelebA): it reads RUN_DIR/checkpoints/best.pt (the epoch with the lowest FID; last.pt when
the run has no best.pt) and rebuilds the model from the config saved in it. `--checkpoint last`
takes the last epoch, `--checkpoint PATH` any checkpoint file; every output names the epoch drawn.

    python generate.py outputs/DCGAN-MNIST                       # 64 samples -> RUN_DIR/generated.png
    python generate.py outputs/CDCGAN-MNIST --label 7 --n 16     # sixteen 7s
    python generate.py outputs/CDCGAN-MNIST-fashion-mnist --label "Ankle boot"
    python generate.py outputs/VAE-MNIST --label 8 --n 5         # five 8s from the region of 8s in z
    python generate.py outputs/DCGAN-MNIST --out digits.npz      # uint8 array(s) instead of a picture
    python generate.py outputs/VAE-MNIST --interpolate           # latent interpolation strips
    python generate.py outputs/GAN-MNIST --blur 0.7              # Gaussian post-filter on the images
    python generate.py outputs/DCGAN-MNIST --truncation 1.5      # a GAN's z inside +-1.5: precision for variety
    python generate.py outputs/DCGAN-MNIST --score --n 10000     # the repo's metrics of 10,000 fresh samples
    python generate.py outputs/DCGAN-MNIST --checkpoint last     # the last epoch instead of the best
    python generate.py outputs/DCGAN-MNIST --model raw           # G itself, not its moving average
    python generate.py outputs/CDCGAN-MNIST outputs/VAE-MNIST --label 8 --n 5   # a row of five 8s from each run

`--label` works on conditional models (the class is given to the generator or decoder) and on the
unconditional VAE, which decodes z drawn from a Gaussian fitted to where the class's training images
lie in its latent space (saved in the checkpoint by VAE-MNIST.py).

`--truncation T` (the GANs) redraws every coordinate of z beyond +-T (BigGAN's truncation trick):
typical images at the cost of variety (docs/results.md has DCGAN-MNIST's curve over T). The
coordinate a self-conditioned DCGAN picks its cluster by is left as drawn, so clusters keep their shares.

`--score` prints the metrics of a finished run (MNIST family) with as many samples as asked (the
per-epoch evaluation uses few, for speed) and appends them to RUN_DIR/scores.csv.

A .png is a grid; a .npz holds `images` (uint8, N x H x W for grey, N x H x W x 3 for colour)
and, for conditional models, `labels`.
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from common import checkpoint, class_regions, config, data, device, evaluation, files, memory, plots
from common.config import fail
from common.domains import Int, Real

ROOT = Path(__file__).resolve().parent


class Sampler:
    """A trained generator behind one call: (z, labels) -> images in [0, 1]."""

    def __init__(self, state: dict, dev: torch.device, run_dir: Path | None = None, model: str | None = None):
        script = ROOT / str(state.get("script", ""))
        if not state.get("script") or not script.is_file():
            fail(f"the checkpoint names no known training script ({state.get('script')!r})")
        module = config.load_script(script.name)
        self.classes: tuple[str, ...] = tuple(state.get("classes") or ())
        self.run_sampler = state["config"].get("SAMPLER", "prior")  # runs from before SAMPLER drew from the prior
        models = module.build_models(state["config"], tuple(state["image_shape"]), len(self.classes))
        averaged = [name for name in models if f"{name}_ema" in state["models"]]
        if model == "average" and not averaged:
            fail("--model average: this run kept no moving average of G (EMA=0); leave --model out")
        self.model = "average" if averaged and model != "raw" else "raw"  # what draws: G's moving average, or G
        for name, net in models.items():  # the generator's moving average, when the run kept one, draws
            weights = state["models"][f"{name}_ema" if name in averaged and model != "raw" else name]
            net.load_state_dict(weights)
            net.to(dev).eval()
        self.device, self.module, self.module_models = dev, module, models
        self.vae: torch.nn.Module | None = None
        self.picks_cluster = False
        self.latents: dict[str, torch.Tensor] = {}  # a VAE's class Gaussians, when saved
        self.fit: dict[str, torch.Tensor] = {}  # what decode draws from: the VAE's always, a CVAE's with the mixture
        self.refusal = (  # why --label cannot pick a class here
            "--label needs a conditional model; this one is unconditional (train one with CDCGAN-MNIST.py or "
            "GAN-MNIST.py --conditional=True)"
        )
        if "vae" in models:
            vae = self.vae = models["vae"]
            self.latent_dim, self.n_classes = vae.latent_dim, vae.n_classes
            self.latents = class_regions.from_checkpoint(state, dev)
            self.fit = {} if vae.n_classes else self.latents  # a CVAE's prior until choose() picks the mixture
            needs_fit = (  # what the mixture (and the VAE's --label) need, when the checkpoint has no fit
                f"needs the class statistics that training fits at each evaluation and at its end, and this "
                f"checkpoint (epoch {state['epoch']}) has none (a run from before they were saved, or stopped "
                f"before a fit); this fits them: {refit_command(module, state, run_dir)}"
            )
            self.no_fit = f"--sampler mixture {needs_fit}"
            if not vae.n_classes:
                self.refusal = f"--label on this VAE {needs_fit}"
            self.decode: Callable = lambda z, labels: module.decode(models, z, labels, self.fit)
        else:
            generator = models["generator"]
            self.latent_dim, self.n_classes = generator.latent_dim, getattr(generator, "n_classes", 0)
            self.picks_cluster = bool(getattr(generator, "clusters", 0))  # a self-conditioned DCGAN
            self.decode = lambda z, labels: module.decode(models, z, labels)  # the script's own: images in [0, 1]

    def truncated(self, z: torch.Tensor, threshold: float | None, seed: int) -> torch.Tensor:
        """z with every coordinate beyond +-threshold redrawn from N(0, 1) until inside (None: z as it is); the
        same seed redraws the same. A self-conditioned DCGAN's last coordinate picks its cluster: left as drawn."""
        if threshold is None:
            return z
        if self.vae is not None:
            fail("--truncation is for the GANs' noise; a VAE draws z from its prior or its class Gaussians (--sampler)")
        z, gen = z.clone(), torch.Generator().manual_seed(seed + 7_919)
        body = z[:, :-1] if self.picks_cluster else z  # a view: redrawn in place
        while (beyond := body.abs() > threshold).any():
            body[beyond] = torch.randn(int(beyond.sum()), generator=gen)
        return z

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.decode(z.to(self.device), None if labels is None else labels.to(self.device)).clamp(0, 1).cpu()

    def mixture(self, asked: str | None) -> bool:
        """Whether to draw a VAE's z from its class Gaussians (--sampler, else the run's SAMPLER): an unconditional
        VAE's from their mixture, a CVAE's from the asked class's; exit with one line when there is no fit."""
        if self.vae is None or (asked or self.run_sampler) != "mixture":
            return False
        if not self.latents:
            fail(self.no_fit)
        return True

    def choose(self, asked: str | None) -> None:
        """A CVAE draws z from the asked class's Gaussian when the sampler (--sampler, else the run's) is the mixture."""
        if self.vae is not None and self.n_classes and self.mixture(asked):
            self.fit = self.latents

    def parse_label(self, text: str) -> int:
        """A class index from an index or a class name (case-insensitive); exit if neither, or if the model cannot
        draw a chosen class."""
        if not self.n_classes and not self.latents:
            fail(self.refusal)
        names = [c.lower() for c in self.classes]
        if text.strip().lower() in names:
            label = names.index(text.strip().lower())
        elif text.strip().lstrip("-").isdigit() and 0 <= int(text) < len(self.classes):
            label = int(text)
        else:
            fail(f"--label {text!r} is not a class; use 0-{len(self.classes) - 1} or one of: {', '.join(self.classes)}")
        if self.latents and not self.latents["count"][label]:
            fail(f"--label {text!r}: the run's training data had no image of this class to fit its latent region")
        return label


def refit_command(module: ModuleType, state: dict, run_dir: Path | None) -> str:
    """The command that resumes a run (a finished one: for one more epoch) with the settings it was trained with."""
    cfg, done = state["config"], state["epoch"]
    kept = [
        f"--{key.lower()}={shlex.quote(str(value))}"
        for key, value in cfg.items()
        if key not in ("EPOCHS", "OUT_DIR", "RESUME") and getattr(module, key, value) != value
    ]
    epochs = cfg["EPOCHS"] if done < cfg["EPOCHS"] else done + 1
    where = shlex.quote(str(run_dir)) if run_dir else "RUN_DIR"
    return " ".join(["python", state["script"], *kept, f"--out_dir={where}", f"--epochs={epochs}"])


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b at fractions t (the path Gaussian latents take)."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    t = t.view(1, -1, 1)
    a, b, omega = a[:, None], b[:, None], omega[:, None]
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian filter with standard deviation `sigma` pixels (kernel +-3 sigma)."""
    if sigma <= 0:
        return images
    from torchvision.transforms.functional import gaussian_blur  # only with --blur (1.5 s to import)

    size = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur(images, kernel_size=[size, size], sigma=[sigma, sigma])


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [0, 1] -> uint8 N x H x W (grey) or N x H x W x 3 (colour)."""
    array = images.mul(255).round().byte().permute(0, 2, 3, 1).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.error = fail  # type: ignore[method-assign]  # the repo's one-line `error: ...`, exit code 2
    parser.add_argument(
        "run_dir", nargs="+", help="a run folder, e.g. outputs/DCGAN-MNIST (several, with --label: a row from each)"
    )
    parser.add_argument("--n", type=int, default=64, help="number of images (or of strips with --interpolate)")
    parser.add_argument("--label", help="class to draw, as an index or a name (conditional models)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed draws the same images")
    parser.add_argument(
        "--sampler",
        choices=("prior", "mixture"),
        help="a VAE's z: prior N(0, I), or mixture (the class Gaussians of its training codes: mixed by class "
        "share, or for a CVAE the asked class's); default: the run's SAMPLER",
    )
    parser.add_argument(
        "--model",
        choices=("average", "raw"),
        help="a GAN that kept a moving average of G (EMA): draw from the average (the default) or G itself",
    )
    parser.add_argument("--out", help="output .png (grid) or .npz (arrays); default RUN_DIR/generated.png")
    parser.add_argument("--interpolate", action="store_true", help="latent interpolation strips (10 steps each)")
    parser.add_argument("--steps", type=int, default=10, help="images per interpolation strip")
    parser.add_argument("--blur", type=float, default=0.0, metavar="SIGMA", help="Gaussian filter on the images")
    parser.add_argument(
        "--truncation", type=float, metavar="T", help="a GAN's noise redrawn where beyond +-T (> 0; default: none)"
    )
    parser.add_argument("--score", action="store_true", help="score --n fresh samples with the repo's metrics")
    parser.add_argument("--data_dir", help="with --score: where the data set is (default: the run's DATA_DIR)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument(
        "--checkpoint",
        help="best (lowest FID) | last | a checkpoint file; default best where the run has one, else last",
    )
    args = parser.parse_args(argv)
    if args.n <= 0 or args.steps < 2:
        fail("--n must be positive and --steps at least 2")
    if args.blur < 0:
        fail("--blur SIGMA must be >= 0")
    config.hold("--blur", args.blur, Real("[0, inf)"))  # nan and inf too
    config.hold("--seed", args.seed, Int(0, 2**63 - 1))  # torch.manual_seed's range
    if args.truncation is not None and not args.truncation > 0:  # nan too
        fail(f"--truncation {args.truncation} must be a number above 0 (e.g. 1.5); leave it out for none")
    if args.out and Path(args.out).suffix.lower() not in (".png", ".npz"):
        fail(f"--out {args.out} must end in .png or .npz")
    if len(args.run_dir) > 1 and (args.label is None or args.score or args.interpolate):
        fail("several run folders take --label (and neither --score nor --interpolate): a row of that class from each")
    return args


def open_run(
    run_dir: Path, dev: torch.device, which: str | None = None, asked: str | None = None, model: str | None = None
) -> tuple[dict, Sampler]:
    """A run folder's checkpoint (`which`: best, last or a file; None: best where there is one, else last) and its
    sampler (`asked`: --sampler); state["source"] says which it is, in words. Exit with one line if there is none."""
    if not run_dir.is_dir():
        fail(f"{run_dir} is not a folder; pass a run folder such as outputs/DCGAN-MNIST")
    folder = run_dir / "checkpoints"
    best = folder / checkpoint.BEST
    if which not in (None, "best", "last"):  # a file
        try:
            state = checkpoint.read(which)
        except Exception as exc:
            fail(f"--checkpoint {which} is not a readable checkpoint of this repo ({type(exc).__name__})")
        source = str(which)
    elif which == "best" or (which is None and best.exists()):
        if not best.exists():
            fail(f"no {best}: the run never evaluated (EVAL_EVERY=0 or dataset fake); use --checkpoint last")
        try:
            state = checkpoint.read(best)
        except Exception as exc:
            fail(f"{best} is not readable ({type(exc).__name__}); use --checkpoint last")
        source = f"best.pt (lowest FID {state['scores']['fid']:.4g})"
    else:
        if not any(folder.glob("*.pt")):
            fail(f"no checkpoint in {folder}; train first, e.g. python DCGAN-MNIST.py")
        state = checkpoint.load_latest(folder)
        source = "last.pt"
    if state is None or "models" not in state:
        fail(f"{folder} holds no readable checkpoint of this repo")
    state["source"] = source
    sampler = Sampler(state, dev, run_dir, model)
    sampler.choose(asked)
    return state, sampler


def side_by_side(args: argparse.Namespace, dev: torch.device) -> Path:
    """--n images of the --label class from each of several runs, one labelled row per run, in one grid."""
    opened = {
        run_dir: open_run(run_dir, dev, args.checkpoint, args.sampler, args.model)
        for run_dir in map(Path, args.run_dir)
    }
    if len({tuple(state["image_shape"]) for state, _ in opened.values()}) > 1:
        fail("the runs draw images of different shapes; pick runs of one data set")
    rows, names = [], []
    for run_dir, (state, sampler) in opened.items():
        label = sampler.parse_label(args.label)
        z = torch.randn(args.n, sampler.latent_dim, generator=torch.Generator().manual_seed(args.seed))
        z = sampler.truncated(z, args.truncation, args.seed)
        drawn = [sampler(zb, lb) for zb, lb in _chunks(z, torch.full((args.n,), label))]
        rows.append(blur(torch.cat(drawn), args.blur))
        names.append(f"{run_dir.name} ({state['epoch']} ep.)")
    out = Path(args.out) if args.out else Path(args.run_dir[0]).parent / f"label-{args.label}.png"
    if out.suffix.lower() == ".npz":
        arrays = {"images": to_uint8(torch.cat(rows)), "runs": np.array(names)}
        files.write_safely(out, lambda f: np.savez_compressed(f, **arrays), "the images")
    else:
        plots.save_grid(torch.cat(rows), out, nrow=args.n, value_range=(0, 1), row_labels=names)
    print(f"wrote {out}: {args.n} images of class {args.label!r} from each of {len(rows)} runs")
    return out


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        with memory.reported(device.pick(args.device), f"generating {args.n} images", "--n (or --steps)"):
            return generate(args)
    except files.WriteFailed as exc:  # e.g. a full disk: one line, exit 4, no half-written file left
        files.fail(exc, "any file it would replace is as it was; rerun after freeing space")


def generate(args: argparse.Namespace) -> Path:
    """Draw what the arguments ask for and write it; returns the file written."""
    dev = device.pick(args.device)
    if len(args.run_dir) > 1:
        return side_by_side(args, dev)
    run_dir = Path(args.run_dir[0])
    state, sampler = open_run(run_dir, dev, args.checkpoint, args.sampler, args.model)
    label = sampler.parse_label(args.label) if args.label is not None else None
    if args.score:
        return score(run_dir, state, sampler, args, dev)

    gen = torch.Generator().manual_seed(args.seed)
    n = args.n
    labels = None
    if label is not None:  # the asked-for class (given to a conditional model, or the VAE's latent region of it)
        labels = torch.full((n,), label)
    elif sampler.n_classes:  # a conditional model without --label: the classes in turn
        labels = torch.arange(n) % sampler.n_classes
    elif sampler.mixture(args.sampler):  # the unconditional VAE's mixture: each image from the class it picks
        labels = class_regions.components(sampler.latents, torch.rand(n, generator=gen)).cpu()
    if args.interpolate:
        ends = sampler.truncated(torch.randn(2 * n, sampler.latent_dim, generator=gen), args.truncation, args.seed)
        ends = ends.view(2, n, sampler.latent_dim)
        z = slerp(ends[0], ends[1], torch.linspace(0, 1, args.steps)).reshape(-1, sampler.latent_dim)
        labels = None if labels is None else labels.repeat_interleave(args.steps)
        nrow = args.steps
    else:
        z = sampler.truncated(torch.randn(n, sampler.latent_dim, generator=gen), args.truncation, args.seed)
        nrow = sampler.n_classes if (sampler.n_classes and label is None) else min(n, 8)
    images = torch.cat([sampler(zb, None if labels is None else lb) for zb, lb in _chunks(z, labels)])
    images = blur(images, args.blur)

    default_name = "interpolation.png" if args.interpolate else "generated.png"
    out = Path(args.out) if args.out else run_dir / default_name
    if out.suffix.lower() == ".npz":
        arrays = {"images": to_uint8(images)}
        if labels is not None and (label is not None or sampler.n_classes):  # asked for, not the mixture's picks
            arrays["labels"] = labels.numpy().astype(np.int64)
        files.write_safely(out, lambda f: np.savez_compressed(f, **arrays), "the images")
    else:
        plots.save_grid(images, out, nrow=nrow, value_range=(0, 1))
    what = "unconditional" if not sampler.n_classes else "all classes"
    if label is None and sampler.mixture(args.sampler):
        what = (
            "all classes, from their class Gaussians"
            if sampler.n_classes
            else what + ", from the mixture of its class Gaussians"
        )
    if label is not None:
        region = ", from its class Gaussian" if sampler.n_classes else ", from its latent region"
        what = f"class {sampler.classes[label]!r}" + (region if sampler.fit else "")
    print(
        f"wrote {out}: {len(images)} images ({what}) from {run_dir} after epoch {state['epoch']}, {state['source']}"
        + drawn_by(sampler, args)
    )
    return out


def score(run_dir: Path, state: dict, sampler: Sampler, args: argparse.Namespace, dev: torch.device) -> Path:
    """The repo's metrics of --n fresh samples of a run (balanced classes when conditional), printed and
    appended to RUN_DIR/scores.csv."""
    cfg = state["config"]
    name, data_dir = cfg.get("DATASET", ""), args.data_dir or cfg.get("DATA_DIR", "data")
    if name not in data.DATASETS or name == "fake":
        fail(f"--score needs a run on MNIST, Fashion-MNIST or the sample; this one trained on {name!r}")
    ds = data.load(name, data_dir, download=False, device=dev)
    if ds.name != name:
        fail(f"--score: {name} is not in {data_dir} (the run's data set); pass --data_dir")
    evaluator = evaluation.Evaluator.for_dataset(ds, data_dir, dev)
    z, labels = evaluation.eval_noise(args.n, sampler.latent_dim, sampler.n_classes, "cpu", args.seed)
    z = sampler.truncated(z, args.truncation, args.seed)
    drawn = labels  # the classes asked for (conditional), or those the VAE's mixture picks (as in its evaluation)
    if not sampler.n_classes and sampler.mixture(args.sampler):
        drawn = class_regions.components(sampler.latents, class_regions.eval_choices(args.n, args.seed)).cpu()
    fake = torch.cat([sampler(zb, lb) for zb, lb in _chunks(z, drawn)])
    row = {"epoch": state["epoch"], "checkpoint": state["source"], "seed": args.seed}
    row.update(model=sampler.model, truncation=args.truncation or "", **evaluator.scores(fake, labels))
    if sampler.latents:  # an unconditional VAE: also its classes drawn from their latent regions
        row.update(class_regions.region_scores(sampler.vae, sampler.latents, args.n, args.seed, evaluator))
    elif sampler.vae is not None and not sampler.n_classes:
        print("note: no class statistics in this checkpoint, so no region_acc; resume or extend the run to fit them")
    if row["n"] < args.n:
        print(f"note: scored {row['n']} samples, as many as the {len(ds.train)} training images compared with")
    path = run_dir / "scores.csv"
    earlier = []
    if path.exists():
        with open(path, newline="") as f:
            earlier = list(csv.DictReader(f))
    plots.write_csv([*earlier, row], path)
    shares = [row[f"share_{k}"] for k in range(len(ds.classes))]
    accuracy = "".join(
        f"  {name} acc {row[f'{name}_acc']:.1%} (evaluator {row['evaluator_acc']:.1%})"
        for name in ("label", "region")
        if f"{name}_acc" in row
    )
    print(
        f"{run_dir} after epoch {state['epoch']} ({state['source']}{drawn_by(sampler, args)}), {row['n']} samples: FID {row['fid']:.3g} (floor {row['fid_floor']:.3g})"
        f"  KID {row['kid']:.3g}  IS {row['is']:.3g} (real {row['is_real']:.3g})"
        + f"  {evaluation.prdc_text(row, digits=3)}"
        + f"  classes covered {row['classes_covered']}/{len(ds.classes)}  class shares {min(shares):.1%}-{max(shares):.1%}{accuracy}; appended to {path}"
    )
    return path


def drawn_by(sampler: Sampler, args: argparse.Namespace) -> str:
    """What drew, for the last line: ", G's moving average" or ", G itself" where the run kept an average, and
    the truncation."""
    said = (
        {"average": ", G's moving average", "raw": ", G itself"}[sampler.model]
        if args.model or sampler.model == "average"
        else ""
    )
    return said + (f", z truncated at {args.truncation:g}" if args.truncation else "")


def _chunks(z: torch.Tensor, labels: torch.Tensor | None, size: int = 1000):
    """Batches of (z, labels) so large --n does not need all memory at once."""
    for start in range(0, len(z), size):
        yield z[start : start + size], None if labels is None else labels[start : start + size]


if __name__ == "__main__":
    main()
