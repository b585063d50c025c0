"""Deep convolutional GAN (Radford et al., 2016) on MNIST or Fashion-MNIST at the native 28x28.

Transposed convolutions 7 -> 14 -> 28 with BatchNorm and ReLU in the generator, strided
convolutions with LeakyReLU in the discriminator, N(0, 0.02) init, BCE with logits,
Adam(lr 4e-4, beta1 0.5) at batch 128: twice the paper's rate, which measured better on real digits.
No upscaling to 64x64: it costs about 5x the compute and draws no better digits.
The training step is the GAN step the four GAN scripts share (common/gan.py: d_step, g_step):
D by BCE on a real batch and as many fakes, then G by the non-saturating loss through a frozen D.
Self-conditioned (Liu et al., CVPR 2020; CLUSTERS=100): k-means of D's features of the real images,
refitted every 40,000 images, labels them; G gets the cluster beside z and D by projection, as a
conditional GAN gets the label, so G draws digits instead of blends between them. It never reads the
data set's labels; to its user it is unconditional (z picks the cluster). A moving average of G
(EMA=0.999) draws the grids, the metrics and generate.py's samples (--model raw: G itself). D's
gradient at the real images is penalised (R1=1, Mescheder et al. 2018), lazily (on every 16th D step,
16 times as strong: R1_EVERY). On the sample over 3 seeds: FID 17.9, precision 0.93 (docs/results.md).

    python DCGAN-MNIST.py                            # 10 epochs on MNIST
    python DCGAN-MNIST.py --dataset=fashion-mnist
    python DCGAN-MNIST.py --help                     # every constant, its default and meaning

Writes to outputs/DCGAN-MNIST/ (or OUT_DIR): config.json, samples/epoch_001.png ... (a fixed noise
batch, comparable across epochs), losses.csv and loss.png (G and D losses, mean D(x) and
D(G(z))), checkpoints/last.pt and, at the end, progress.gif; every EVAL_EVERY epochs and at the
last, metrics.csv, metrics.png, class_shares.png and pixel_histogram.png (classifier FID/KID/IS
against their real-data floors, class coverage and shares). Rerunning resumes; --epochs=N
extends a finished run; Ctrl-C (or SIGTERM) finishes the step, saves a checkpoint and prints the
command that resumes.
Sample a trained model with: python generate.py outputs/DCGAN-MNIST

    torchrun --nproc_per_node=4 DCGAN-MNIST.py       # 4 GPUs (DDP), each a quarter of every epoch

Docs: docs/dcgan.md (usage, outputs, implementation details, measured results).
"""

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from common import clusters, config, data, evaluation, gan, run
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
CLUSTERS: Int(2, off=0) = 100  # self-conditioning: G and D conditioned on k clusters of D's features of the real images (0: off)
RECLUSTER: Int(1) = 40_000  # images seen between two fits of the clusters (the first: before the first epoch)
# --- optimisation ---
EPOCHS: Int(1) = 10  # passes over the training set
SAMPLE_EPOCHS: Int(0) = 50  # epochs on the 4,000-digit sample (offline fallback, --dataset=mnist-sample) unless --epochs is given; 0: EPOCHS
BATCH_SIZE: Int(1) = 128  # images per step (why 128: "Larger batches" in docs/results.md)
LR: Real("(0, inf)") = 4e-4  # Adam learning rate of G (2x the paper's 2e-4: measured better at batch 128)
LR_D: Real("(0, inf)") = 1.6e-3  # Adam learning rate of D: 4x G's (two time-scale update rule, Heusel et al. 2017; see docs/results.md)
LR_DECAY: Real("[0, 1)") = 0.0  # both rates fall linearly to about 0 over this last share of the run (0: constant)
BETA1: Real("[0, 1)") = 0.5  # Adam beta1 (0.5 is the DCGAN choice)
REAL_LABEL: Real("(0, 1]") = 1.0  # target for real images (0.9 = one-sided label smoothing)
R1: Real("[0, inf)") = 1.0  # weight of R1, the gradient penalty of D at the real images (Mescheder et al. 2018; 0: off)
R1_EVERY: Int(1) = 16  # R1 on every N-th D step only, N times as strong (lazy regularisation, StyleGAN2; 1: every step)
TOP_K: Real("(0, 1]") = 1.0  # G learns from the fakes D rates highest, a share shrinking from 1 to this (top-k training; 1: all)
AUGMENT: Words(*TRANSFORMS) = ""  # D's input, real and fake, augmented (DiffAugment): "" off, or a list of color,translation,cutout
EMA: Real("[0, 1)") = 0.999  # decay of a moving average of G that draws grids, metrics and generate.py's samples (0: G itself)
# --- run ---
SEED: Int(0, 2**32 - 1) = 0  # seeds weights, shuffling and sampling
DETERMINISTIC: Flag() = False  # only repeatable kernels, so a CUDA resume matches number for number (slower; see "Devices")
DEVICE: Device() = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
OUT_DIR: Folder(empty=True) = ""  # empty: outputs/DCGAN-MNIST (plus -<dataset> for other data sets)
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

SHAPE_KEYS = ("DATASET", "LATENT_DIM", "NGF", "NDF", "CLUSTERS")  # resuming with other values refuses


class Generator(nn.Module):
    """z [B, latent_dim] -> images [B, C, 28, 28] in [-1, 1]. Self-conditioned (clusters > 0), the one-hot cluster
    enters beside z: the one given, or the one z's last coordinate picks in proportion to the clusters' shares."""

    def __init__(self, latent_dim: int, ngf: int = 64, image_channels: int = 1, clusters: int = 0):
        super().__init__()
        self.latent_dim, self.clusters = latent_dim, clusters
        if clusters:  # each cluster's share of the real images, what z picks by
            self.register_buffer("shares", torch.full((clusters,), 1 / clusters))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(
                latent_dim + clusters, 4 * ngf, kernel_size=7, stride=1, padding=0, bias=False
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

    def forward(self, z: torch.Tensor, found: torch.Tensor | None = None) -> torch.Tensor:
        if self.clusters:
            found = clusters.pick(z, self.shares) if found is None else found
            z = torch.cat([z, F.one_hot(found, self.clusters).to(z.dtype)], dim=1)
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """images [B, C, 28, 28] (+ clusters [B]) -> real/fake logits [B]. Self-conditioned, the cluster enters by
    projection (Miyato & Koyama, 2018): a learned 2ndf x 7 x 7 map per cluster, dotted with D's last features."""

    def __init__(self, ndf: int = 64, image_channels: int = 1, clusters: int = 0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(image_channels, ndf, kernel_size=4, stride=2, padding=1),  # -> ndf x 14 x 14
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, 2 * ndf, kernel_size=4, stride=2, padding=1, bias=False),  # -> 2ndf x 7 x 7
            nn.BatchNorm2d(2 * ndf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * ndf, 1, kernel_size=7, stride=1, padding=0),  # -> 1 x 1 x 1
        )
        self.apply(gan.dcgan_init)
        self.project = nn.Embedding(clusters, 2 * ndf * 7 * 7) if clusters else None  # after: the same init
        if self.project is not None:
            nn.init.zeros_(self.project.weight)  # starts as the unconditional D

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """D's last hidden features [B, 2ndf, 7, 7], what its clusters are fitted on."""
        return self.net[:-1](x)

    def forward(self, x: torch.Tensor, found: torch.Tensor | None = None) -> torch.Tensor:
        features = self.features(x)
        logits = self.net[-1](features).view(-1)
        if self.project is None:
            return logits
        return logits + (self.project(found).to(features.dtype) * features.flatten(1)).sum(1)


def build_models(
    cfg: dict, image_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10
) -> dict[str, nn.Module]:
    """The models of this script, sized by a config (used by main() and generate.py)."""
    return {
        "generator": Generator(cfg["LATENT_DIM"], cfg["NGF"], image_shape[0], cfg.get("CLUSTERS", 0)),
        "discriminator": Discriminator(cfg["NDF"], image_shape[0], cfg.get("CLUSTERS", 0)),
    }


def sample_for_eval(generator: Generator, n: int, device: torch.device, seed: int) -> tuple[torch.Tensor, None]:
    """n images in [0, 1] from the same evaluation noise every time (no labels: unconditional)."""
    z, _ = evaluation.eval_noise(n, generator.latent_dim, 0, device, seed)
    return torch.cat([generator(z[i : i + 500]) for i in range(0, n, 500)]).add(1).div(2), None


normalise = data.to_gan  # the training input: uint8 images -> [-1, 1], the range of G's tanh


optimizers = gan.optimizers  # G at LR, D at LR_D, Adam(BETA1, 0.999): by checkpoint name, in order


averages = gan.averages  # G's moving average at EMA (none at 0), saved as generator_ema


def train_step(
    cfg: dict, nets: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer], real: torch.Tensor,
    labels: torch.Tensor, step: int = 1, n_classes: int = 0, autocast: Autocast = nullcontext,
    augment: Augment | None = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """One D step and one G step on a batch in [-1, 1]; the device tensors that r.log sums. `labels` are the real
    images' clusters when self-conditioned (G draws as many of each), else unused; `step` counts from the run's
    start (top-k's and lazy R1's schedules); n_classes goes unused."""
    g, d = nets["generator"], nets["discriminator"]
    found = labels if cfg.get("CLUSTERS") else None
    r1 = gan.r1_weight(cfg["R1"], cfg["R1_EVERY"], step)
    out = gan.d_step(g, d, opts["opt_d"], real, found, cfg["REAL_LABEL"], autocast, augment, r1)
    keep = gan.top_k_share(cfg["TOP_K"], step)
    out["loss_g"] = gan.g_step(
        g, d, opts["opt_g"], len(real), autocast=autocast, augment=augment, labels=found, keep=keep
    )
    return out


def decode(models: dict[str, nn.Module], z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Images in [0, 1] from noise z [B, LATENT_DIM] (labels are ignored: unconditional)."""
    return models["generator"](z).add(1).div(2)


def clustered(discriminator: Discriminator, images: torch.Tensor) -> torch.Tensor:
    """What the clusters of a self-conditioned run are fitted on: D's last features of uint8 images, pooled
    to 2ndf x 3 x 3 (full MNIST's 60,000 images in 0.3 GB)."""
    return F.adaptive_avg_pool2d(discriminator.features(normalise(images)).float(), 3).flatten(1)


def main() -> None:
    config.setup(globals())  # every constant in its domain, or one line and exit 2
    with run.Run(globals(), SHAPE_KEYS) as r:  # device, torchrun, seed, resume, Ctrl-C, NaN stop, checkpoints
        ds = r.load(lambda device: data.load(DATASET, DATA_DIR, DOWNLOAD, device))
        models = r.models(build_models(r.cfg, ds.shape))  # on the device, saved in checkpoints by name
        generator, discriminator = models["generator"], models["discriminator"]
        opts = {name: r.adam(name, models[model], lr, betas) for name, (model, lr, betas) in optimizers(r.cfg).items()}
        fixed_noise = r.fixed("fixed_noise", torch.randn(64, LATENT_DIM))
        found = clusters.attach(r, CLUSTERS, ds.train.images)  # self-conditioned: labels D finds itself
        # the steps train through DDP under torchrun. D runs twice (real, fake) before one backward:
        # DDP's default of copying rank 0's BatchNorm buffers before every forward would overwrite,
        # between the two, statistics the first saved for backward. D never runs in eval mode, so
        # each process keeps its own running statistics (and three broadcasts a step are saved)
        nets = {"generator": r.wrap(generator), "discriminator": r.wrap(discriminator, sync_buffers=False)}
        averaged = {base: r.ema(name, models[base], decay) for name, (base, decay) in averages(r.cfg).items()}
        sampler = averaged.get("generator", generator)  # what draws the pictures: G's moving average, when kept
        for _ in r.epochs({"losses": ("loss_d", "loss_g"), "mean discriminator output": ("d_real", "d_fake")}):
            clusters.refit_when_due(r, found, discriminator, clustered, generator, RECLUSTER)
            for real, labels in r.batches(normalise):  # images in [-1, 1]; labels: the clusters, or unused
                gan.anneal(opts, r.cfg, r.step, r.cfg["EPOCHS"] * len(r.data))  # LR_DECAY's schedule
                r.log(**train_step(r.cfg, nets, opts, real, labels, r.step, len(ds.classes), r.autocast, r.augment))
            r.grid(lambda: sampler(fixed_noise), nrow=8)
            r.evaluate(lambda: sample_for_eval(sampler, EVAL_SAMPLES, r.device, SEED))


if __name__ == "__main__":
    main()
