"""Conditional DCGAN on MNIST or Fashion-MNIST: ask for a class, get an image of it.

The DCGAN of DCGAN-MNIST.py with the class label fed to both networks (Mirza & Osindero, 2014):
the generator gets z together with a one-hot label, the discriminator gets the image together
with the label as ten constant planes, so it judges "is this a real image of class k". The step is
the GAN step the four GAN scripts share (common/gan.py), given the labels: real images with
their own, fakes of the same labels in D's step and of random labels in G's. A moving average of G
(EMA=0.999) draws the grids, the metrics and generate.py's samples (--model raw: G itself).

    python CDCGAN-MNIST.py                           # 10 epochs on MNIST
    python CDCGAN-MNIST.py --dataset=fashion-mnist
    python generate.py outputs/CDCGAN-MNIST --label 7 --n 16    # afterwards: sixteen 7s

Writes to outputs/CDCGAN-MNIST/ (or OUT_DIR): config.json, samples/epoch_001.png ... (one row per
class, one shared noise vector per column, so each column is one "style" drawn as every class),
losses.csv and loss.png (G and D losses, mean D(x) and D(G(z))), progress.gif and
checkpoints/last.pt; every EVAL_EVERY epochs and at the last, metrics.csv, metrics.png,
class_shares.png and pixel_histogram.png (classifier FID/KID/IS against their real-data floors, class coverage, and
"asked for k, drew k" accuracy).
Rerunning resumes; --epochs=N extends a finished run; Ctrl-C saves a checkpoint first.

Docs: docs/cdcgan.md (usage, outputs, implementation details, measured results).
"""

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from common import config, data, evaluation, gan, run
from common.augment import TRANSFORMS, Augment
from common.domains import Choice, Device, Flag, Folder, Int, Real, Switch, Words
from common.speed import Autocast

# fmt: off
# --- data ---
DATASET: Choice(*data.DATASETS) = "mnist"  # mnist | fashion-mnist | mnist-sample | fake
DATA_DIR: Folder() = "data"  # where the data sets are (and are downloaded to)
DOWNLOAD: Flag() = True  # download the data set when it is missing
# --- model ---
LATENT_DIM: Int(1) = 100  # size of the noise vector z
NGF: Int(1) = 64  # generator width: channels of its last hidden layer (the first has 4x)
NDF: Int(1) = 64  # discriminator width: channels of its first layer (the second has 2x)
D_LABELS: Choice("planes", "classifier") = "planes"  # how D uses the label: planes (ten constant planes beside the image) | classifier (AC-GAN: D names the class)
# --- optimisation ---
EPOCHS: Int(1) = 10  # passes over the training set
SAMPLE_EPOCHS: Int(0) = 50  # epochs on the 4,000-digit sample (offline fallback, --dataset=mnist-sample) unless --epochs is given; 0: EPOCHS
BATCH_SIZE: Int(1) = 128  # images per step (why 128: "Larger batches" in docs/results.md)
LR: Real("(0, inf)") = 4e-4  # Adam learning rate of G (2x the paper's 2e-4: measured better at batch 128)
LR_D: Real("(0, inf)") = 1.6e-3  # Adam learning rate of D: 4x G's (two time-scale update rule, Heusel et al. 2017; see docs/results.md)
BETA1: Real("[0, 1)") = 0.5  # Adam beta1 (0.5 is the DCGAN choice)
REAL_LABEL: Real("(0, 1]") = 1.0  # target for real images (0.9 = one-sided label smoothing)
AUGMENT: Words(*TRANSFORMS) = ""  # D's input, real and fake, augmented (DiffAugment): "" off, or a list of color,translation,cutout
EMA: Real("[0, 1)") = 0.999  # decay of a moving average of G that draws grids, metrics and generate.py's samples (0: G itself)
# --- run ---
SEED: Int(0, 2**32 - 1) = 0  # seeds weights, shuffling and sampling
DETERMINISTIC: Flag() = False  # only repeatable kernels, so a CUDA resume matches number for number (slower; see "Devices")
DEVICE: Device() = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
OUT_DIR: Folder(empty=True) = ""  # empty: outputs/CDCGAN-MNIST (plus -<dataset> for other data sets)
RESUME: Flag() = True  # continue from OUT_DIR/checkpoints/last.pt when it exists
TENSORBOARD: Flag() = False  # also log losses, metrics and grids to OUT_DIR/tensorboard/ (pip install tensorboard)
SYNC_BN: Flag() = False  # under torchrun on GPUs: BatchNorm statistics over all processes' batches
# --- speed ("auto", True or False each; auto chooses per device and processor: docs/speed.md) ---
AMP: Switch() = "auto"  # bf16 autocast of the forward passes and losses (auto: on a CPU with native bf16)
CHANNELS_LAST: Switch() = "auto"  # NHWC weights and inputs for the convolutions (auto: with AMP on a CPU)
CUDNN_BENCHMARK: Switch() = "auto"  # let cuDNN time its convolution algorithms on the first batches (CUDA; auto: off)
FUSED_ADAM: Switch() = "auto"  # Adam's update as one fused kernel (auto: off)
COMPILE: Switch() = "auto"  # torch.compile the networks, a slower first epoch (auto: off)
# --- evaluation ---
EVAL_EVERY: Int(0, auto=True) = "auto"  # epochs between evaluations, and the last: auto fits them in a tenth of the wall time; 0: none
EVAL_SAMPLES: Int(0) = 2000  # generated images scored per evaluation (at least 6; --eval_every=0: none)
# fmt: on

SHAPE_KEYS = ("DATASET", "LATENT_DIM", "NGF", "NDF", "D_LABELS")  # resuming with other values refuses


class Generator(nn.Module):
    """z [B, latent_dim] + labels [B] -> images [B, C, 28, 28] in [-1, 1]."""

    def __init__(self, latent_dim: int, n_classes: int = 10, ngf: int = 64, image_channels: int = 1):
        super().__init__()
        self.latent_dim, self.n_classes = latent_dim, n_classes
        self.net = nn.Sequential(
            # z and the one-hot label enter together as a (latent_dim + n_classes) x 1 x 1 map
            nn.ConvTranspose2d(
                latent_dim + n_classes, 4 * ngf, kernel_size=7, stride=1, padding=0, bias=False
            ),  # -> 4ngf x 7 x 7
            nn.BatchNorm2d(4 * ngf),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(4 * ngf, 2 * ngf, kernel_size=4, stride=2, padding=1, bias=False),  # -> 2ngf x 14 x 14
            nn.BatchNorm2d(2 * ngf),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * ngf, image_channels, kernel_size=4, stride=2, padding=1),  # -> C x 28 x 28
            nn.Tanh(),
        )
        self.apply(gan.dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(labels, self.n_classes).to(z.dtype)
        return self.net(torch.cat([z, one_hot], dim=1)[:, :, None, None])


class Discriminator(nn.Module):
    """images [B, C, 28, 28] + labels [B] -> real/fake logits [B] (and class logits [B, K] with a classifier).

    It uses the label one of two ways (D_LABELS): "planes" feeds it as n_classes constant planes
    beside the image, so D judges "is this a real image of class k"; "classifier" is the auxiliary
    classifier GAN (Odena et al., 2017): D judges real or fake without the label, and a second head
    names the class, trained on real images, which G must make it name as asked.
    """

    def __init__(self, n_classes: int = 10, ndf: int = 64, image_channels: int = 1, labels: str = "planes"):
        super().__init__()
        self.n_classes = n_classes
        self.planes = n_classes if labels == "planes" else 0
        self.net = nn.Sequential(
            nn.Conv2d(image_channels + self.planes, ndf, kernel_size=4, stride=2, padding=1),  # -> ndf x 14 x 14
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, 2 * ndf, kernel_size=4, stride=2, padding=1, bias=False),  # -> 2ndf x 7 x 7
            nn.BatchNorm2d(2 * ndf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * ndf, 1, kernel_size=7, stride=1, padding=0),  # -> 1 x 1 x 1
        )
        self.classify = None if self.planes else nn.Conv2d(2 * ndf, n_classes, kernel_size=7)  # -> K x 1 x 1
        self.apply(gan.dcgan_init)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.planes:
            planes = F.one_hot(labels, self.n_classes).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            return self.net(torch.cat([x, planes], dim=1)).view(-1)
        features = self.net[:-1](x)
        return self.net[-1](features).view(-1), self.classify(features).flatten(1)


def build_models(
    cfg: dict, image_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10
) -> dict[str, nn.Module]:
    """The models of this script, sized by a config (used by main() and generate.py)."""
    return {
        "generator": Generator(cfg["LATENT_DIM"], n_classes, cfg["NGF"], image_shape[0]),
        "discriminator": Discriminator(n_classes, cfg["NDF"], image_shape[0], cfg.get("D_LABELS", "planes")),
    }


def sample_for_eval(generator: Generator, n: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images in [0, 1] from the same evaluation noise every time, and the classes asked for (balanced)."""
    z, labels = evaluation.eval_noise(n, generator.latent_dim, generator.n_classes, device, seed)
    fake = torch.cat([generator(z[i : i + 500], labels[i : i + 500]) for i in range(0, n, 500)])
    return fake.add(1).div(2), labels


normalise = data.to_gan  # the training input: uint8 images -> [-1, 1], the range of G's tanh


optimizers = gan.optimizers  # G at LR, D at LR_D, Adam(BETA1, 0.999): by checkpoint name, in order


averages = gan.averages  # G's moving average at EMA (none at 0), saved as generator_ema


def train_step(
    cfg: dict, nets: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer], real: torch.Tensor,
    labels: torch.Tensor, step: int = 1, n_classes: int = 10, autocast: Autocast = nullcontext,
    augment: Augment | None = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """One D step on a batch in [-1, 1] with its labels and one G step on random classes of the n_classes (step goes
    unused); the device tensors that r.log sums."""
    g, d = nets["generator"], nets["discriminator"]
    out = gan.d_step(g, d, opts["opt_d"], real, labels, cfg["REAL_LABEL"], autocast, augment)
    out["loss_g"] = gan.g_step(g, d, opts["opt_g"], len(real), n_classes, autocast, augment)
    return out


def decode(models: dict[str, nn.Module], z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Images in [0, 1] from noise z [B, LATENT_DIM] of the classes `labels` [B] (required: conditional)."""
    return models["generator"](z, labels).add(1).div(2)


def main() -> None:
    config.setup(globals())  # every constant in its domain, or one line and exit 2
    with run.Run(globals(), SHAPE_KEYS) as r:  # device, torchrun, seed, resume, Ctrl-C, NaN stop, checkpoints
        ds = r.load(lambda device: data.load(DATASET, DATA_DIR, DOWNLOAD, device))
        models = r.models(build_models(r.cfg, ds.shape, len(ds.classes)))  # on the device, saved by name
        generator, discriminator = models["generator"], models["discriminator"]
        opts = {name: r.adam(name, models[model], lr, betas) for name, (model, lr, betas) in optimizers(r.cfg).items()}
        # the grid: one row per class, one noise vector per column shared by every row
        fixed_noise = r.fixed("fixed_noise", torch.randn(10, LATENT_DIM).repeat(len(ds.classes), 1))
        fixed_labels = torch.arange(len(ds.classes), device=r.device).repeat_interleave(10)
        # D keeps its own BatchNorm statistics per process under torchrun: see DCGAN-MNIST.py
        nets = {"generator": r.wrap(generator), "discriminator": r.wrap(discriminator, sync_buffers=False)}
        averaged = {base: r.ema(name, models[base], decay) for name, (base, decay) in averages(r.cfg).items()}
        sampler = averaged.get("generator", generator)  # what draws the pictures: G's moving average, when kept
        for _ in r.epochs({"losses": ("loss_d", "loss_g"), "mean discriminator output": ("d_real", "d_fake")}):
            for real, labels in r.batches(normalise):  # D sees each image with its label
                r.log(**train_step(r.cfg, nets, opts, real, labels, r.step, len(ds.classes), r.autocast, r.augment))
            r.grid(lambda: sampler(fixed_noise, fixed_labels), nrow=10, row_labels=ds.classes)
            r.evaluate(lambda: sample_for_eval(sampler, EVAL_SAMPLES, r.device, SEED))


if __name__ == "__main__":
    main()
