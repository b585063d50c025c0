"""Generative adversarial network (Goodfellow et al., 2014) with fully connected networks.

With CONDITIONAL=True it is a conditional GAN (Mirza & Osindero, 2014): the class label is fed to
both networks, and the sample grid has one row per class. G gets the one-hot label beside z; D
gets it through a projection (Miyato & Koyama, 2018) and names the class with a second head (an
auxiliary classifier, Odena et al. 2017; D_LABELS): on the sample it draws the asked digit 96% of
the time, where the paper's one-hot input to D gave 40% and the projection alone 92% (see the
docs/results.md). The training step is the GAN step the four GAN scripts share (common/gan.py: d_step,
then g_step every K_STEPS discriminator steps). D's gradient at the real images is penalised (R1=1,
Mescheder et al. 2018) and a moving average of G draws (EMA=0.999): on the sample FID 49 over 3 seeds.

    python GAN-MNIST.py                              # 30 epochs on MNIST
    python GAN-MNIST.py --conditional=True           # class-conditional, to outputs/GAN-MNIST-conditional
    python GAN-MNIST.py --help                       # every constant, its default and meaning

Writes to outputs/GAN-MNIST/ (or OUT_DIR): config.json, samples/epoch_001.png ... (a fixed noise
batch, comparable across epochs), losses.csv and loss.png (G and D losses, mean D(x) and
D(G(z))), progress.gif and checkpoints/last.pt. Every EVAL_EVERY epochs and at the last: metrics.csv
and metrics.png (classifier FID, KID, IS, class coverage, pixel entropy; label accuracy when
conditional), class_shares.png and pixel_histogram.png. Rerunning resumes; --epochs=N extends a finished run.

Docs: docs/gan.md (usage, outputs, implementation details, measured results).
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
HIDDEN: Int(1) = 256  # width of the narrowest hidden layer (the others are 2x and 4x)
CONDITIONAL: Flag() = False  # feed class labels to both networks (a conditional GAN)
D_LABELS: Choice("projection", "concat", "classifier", "projection+classifier") = "projection+classifier"  # conditional: how D uses the label: projection (Miyato & Koyama) | concat (one-hot input) | classifier (AC-GAN) | projection+classifier
MINIBATCH_STD: Flag() = True  # D also sees its batch's spread (Karras et al. 2018): against mode collapse
CLUSTERS: Int(2, off=0) = 0  # self-conditioning (unconditional): G and D conditioned on k clusters of D's features of the real images (0: off)
RECLUSTER: Int(1) = 40_000  # images seen between two fits of the clusters (the first: before the first epoch)
# --- optimisation ---
EPOCHS: Int(1) = 30  # passes over the training set
SAMPLE_EPOCHS: Int(0) = 100  # epochs on the 4,000-digit sample (offline fallback, --dataset=mnist-sample) unless --epochs is given; 0: EPOCHS
BATCH_SIZE: Int(1) = 64  # images per step
LR: Real("(0, inf)") = 2e-4  # Adam learning rate of G
LR_D: Real("(0, inf)") = 8e-4  # Adam learning rate of D: 4x G's (two time-scale update rule, Heusel et al. 2017; see docs/results.md)
BETA1: Real("[0, 1)") = 0.5  # Adam beta1 (0.5 is the usual GAN choice)
K_STEPS: Int(1) = 1  # discriminator steps per generator step
REAL_LABEL: Real("(0, 1]") = 1.0  # target for real images (0.9 = one-sided label smoothing)
R1: Real("[0, inf)") = 1.0  # weight of R1, the gradient penalty of D at the real images (Mescheder et al. 2018; 0: off)
R1_EVERY: Int(1) = 1  # R1 on every N-th D step only, N times as strong (lazy regularisation, StyleGAN2; 1: every step)
AUGMENT: Words(*TRANSFORMS) = ""  # D's input, real and fake, augmented (DiffAugment): "" off, or a list of color,translation,cutout
EMA: Real("[0, 1)") = 0.999  # decay of a moving average of G that draws grids, metrics and generate.py's samples (0: G itself)
# --- run ---
SEED: Int(0, 2**32 - 1) = 0  # seeds weights, shuffling and sampling
DETERMINISTIC: Flag() = False  # only repeatable kernels, so a CUDA resume matches number for number (slower; see "Devices")
DEVICE: Device() = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
OUT_DIR: Folder(empty=True) = ""  # empty: outputs/GAN-MNIST (plus -<dataset>, -conditional)
RESUME: Flag() = True  # continue from OUT_DIR/checkpoints/last.pt when it exists
TENSORBOARD: Flag() = False  # also log losses, metrics and grids to OUT_DIR/tensorboard/ (pip install tensorboard)
SYNC_BN: Flag() = False  # under torchrun on GPUs: BatchNorm statistics over all processes' batches
# --- speed ("auto", True or False each; auto chooses per device and processor: docs/speed.md) ---
AMP: Switch() = False  # bf16 autocast of the forward passes and losses (off: 1.07x on a bf16 CPU for these small MLPs)
FUSED_ADAM: Switch() = "auto"  # Adam's update as one fused kernel (auto: off)
COMPILE: Switch() = "auto"  # torch.compile the networks, a slower first epoch (auto: off)
# --- evaluation ---
EVAL_EVERY: Int(0, auto=True) = "auto"  # epochs between evaluations, and the last: auto fits them in a tenth of the wall time; 0: none
EVAL_SAMPLES: Int(0) = 2000  # generated images scored per evaluation (at least 6; --eval_every=0: none)
# fmt: on

SHAPE_KEYS = (
    "DATASET",
    "LATENT_DIM",
    "HIDDEN",
    "CONDITIONAL",
    "D_LABELS",
    "MINIBATCH_STD",
    "CLUSTERS",
)  # resuming: others refuse


class Generator(nn.Module):
    """z [B, latent_dim] (+ labels [B]) -> images [B, C, H, W] in [-1, 1]. Self-conditioned (clusters > 0), the
    one-hot cluster enters beside z: the one given as `labels`, or the one z's last coordinate picks."""

    def __init__(
        self,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        hidden: int = 256,
        n_classes: int = 0,
        clusters: int = 0,
    ):
        super().__init__()
        self.latent_dim, self.image_shape, self.n_classes, self.clusters = latent_dim, image_shape, n_classes, clusters
        if clusters:  # each cluster's share of the real images, what z picks by
            self.register_buffer("shares", torch.full((clusters,), 1 / clusters))

        def block(n_in: int, n_out: int) -> list[nn.Module]:
            return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out, momentum=0.1), nn.LeakyReLU(0.2, inplace=True)]

        self.net = nn.Sequential(
            *block(latent_dim + n_classes + clusters, hidden),
            *block(hidden, 2 * hidden),
            *block(2 * hidden, 4 * hidden),
            nn.Linear(4 * hidden, image_shape[0] * image_shape[1] * image_shape[2]),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes:
            z = torch.cat([z, F.one_hot(labels, self.n_classes).to(z.dtype)], dim=1)
        elif self.clusters:
            found = clusters.pick(z, self.shares) if labels is None else labels
            z = torch.cat([z, F.one_hot(found, self.clusters).to(z.dtype)], dim=1)
        return self.net(z).view(-1, *self.image_shape)


class Discriminator(nn.Module):
    """images [B, C, H, W] (+ labels [B]) -> real/fake logits [B] (and class logits [B, K] with a classifier).

    Conditional, it uses the label (D_LABELS) by "concat", appending the one-hot label to the pixels
    (Mirza & Osindero, 2014); "projection", adding the inner product of a learned class embedding
    with the last hidden features to the logit (Miyato & Koyama, 2018); "classifier", a second head
    on the last hidden features that names the class (the auxiliary classifier GAN, Odena et al.
    2017), returned beside the logits; or "projection+classifier", both. Self-conditioned (clusters > 0, no
    classes), the cluster enters by projection.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        hidden: int = 256,
        n_classes: int = 0,
        labels: str = "concat",
        minibatch_std: bool = False,
        clusters: int = 0,
    ):
        super().__init__()
        self.n_classes, self.minibatch_std = n_classes, minibatch_std
        self.concat = n_classes if labels == "concat" else 0
        n_pixels = image_shape[0] * image_shape[1] * image_shape[2]
        self.net = nn.Sequential(
            nn.Linear(n_pixels + self.concat, 2 * hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(2 * hidden, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden + minibatch_std, 1),
        )
        self.embed = nn.Embedding(n_classes, hidden) if n_classes and "projection" in labels else None
        if clusters and not n_classes:  # self-conditioned: the projection of the cluster, starting at none
            self.embed = nn.Embedding(clusters, hidden)
            nn.init.zeros_(self.embed.weight)
        self.classify = nn.Linear(hidden, n_classes) if n_classes and "classifier" in labels else None

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x, labels)
        logits = self.net[-1](with_spread(features) if self.minibatch_std else features).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(labels) * features).sum(1)
        return logits if self.classify is None else (logits, self.classify(features))

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's last hidden features [B, hidden] (what a self-conditioned run's clusters are fitted on)."""
        x = x.flatten(1)
        if self.concat:
            x = torch.cat([x, F.one_hot(labels, self.n_classes).to(x.dtype)], dim=1)
        return self.net[:-1](x)


def with_spread(features: torch.Tensor) -> torch.Tensor:
    """features [B, F] -> [B, F + 1]: the batch's mean standard deviation over its features, appended to
    each row (minibatch standard deviation, Karras et al. 2018). A batch of one collapsed mode has
    none, so D can tell G's batches from the data's by it; G must spread out to pass."""
    spread = features.float().var(0, unbiased=False).add(1e-8).sqrt().mean().to(features.dtype)
    return torch.cat([features, spread.expand(len(features), 1)], dim=1)


def build_models(
    cfg: dict, image_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10
) -> dict[str, nn.Module]:
    """The models of this script, sized by a config (used by main() and generate.py)."""
    n_classes, k = (n_classes if cfg["CONDITIONAL"] else 0), cfg.get("CLUSTERS", 0)
    d_labels, spread = cfg.get("D_LABELS", "concat"), cfg.get("MINIBATCH_STD", False)
    return {
        "generator": Generator(cfg["LATENT_DIM"], image_shape, cfg["HIDDEN"], n_classes, k),
        "discriminator": Discriminator(image_shape, cfg["HIDDEN"], n_classes, d_labels, spread, k),
    }


def clustered(discriminator: Discriminator, images: torch.Tensor) -> torch.Tensor:
    """What a self-conditioned run's clusters are fitted on: D's last hidden features of uint8 images."""
    return discriminator.features(normalise(images)).float()


def sample_for_eval(
    generator: Generator, n: int, device: torch.device, seed: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n images in [0, 1] from the same evaluation noise every time, and the labels asked for (conditional)."""
    z, labels = evaluation.eval_noise(n, generator.latent_dim, generator.n_classes, device, seed)
    chunks = [(z[i : i + 500], None if labels is None else labels[i : i + 500]) for i in range(0, n, 500)]
    return torch.cat([generator(*chunk) for chunk in chunks]).add(1).div(2), labels


normalise = data.to_gan  # the training input: uint8 images -> [-1, 1], the range of G's tanh


optimizers = gan.optimizers  # G at LR, D at LR_D, Adam(BETA1, 0.999): by checkpoint name, in order


averages = gan.averages  # G's moving average at EMA (none at 0), saved as generator_ema


def train_step(
    cfg: dict, nets: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer], real: torch.Tensor,
    labels: torch.Tensor, step: int = 1, n_classes: int = 10, autocast: Autocast = nullcontext,
    augment: Augment | None = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """One D step on a batch in [-1, 1], and a G step when `step` (from 1, counted from the run's start, as lazy
    R1's) is a multiple of K_STEPS; the device tensors that r.log sums. Conditional, D is given the batch's labels
    and G random ones of the n_classes; self-conditioned, `labels` are the real images' clusters, given to D, and G
    draws as many of each."""
    conditional, found = cfg["CONDITIONAL"], labels if cfg.get("CLUSTERS") else None  # what labels reach
    g, d = nets["generator"], nets["discriminator"]
    given = labels if conditional else found
    r1 = gan.r1_weight(cfg["R1"], cfg["R1_EVERY"], step)
    out = gan.d_step(g, d, opts["opt_d"], real, given, cfg["REAL_LABEL"], autocast, augment, r1)
    if step % cfg["K_STEPS"] == 0:  # K_STEPS discriminator steps per generator step
        k = n_classes if conditional else 0
        out["loss_g"] = gan.g_step(g, d, opts["opt_g"], len(real), k, autocast, augment, labels=found)
    return out


def decode(models: dict[str, nn.Module], z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Images in [0, 1] from noise z [B, LATENT_DIM] (conditional: of the classes `labels` [B]; else ignored)."""
    return models["generator"](z, labels).add(1).div(2)


def main() -> None:
    config.setup(globals())  # every constant in its domain, or one line and exit 2
    if CONDITIONAL and CLUSTERS:
        config.fail("--clusters is for the unconditional GAN (it finds its own labels); leave it 0 with --conditional")
    with run.Run(globals(), SHAPE_KEYS, out_suffix="-conditional" if CONDITIONAL else "") as r:
        ds = r.load(lambda device: data.load(DATASET, DATA_DIR, DOWNLOAD, device))
        models = r.models(build_models(r.cfg, ds.shape, len(ds.classes)))  # on the device, saved by name
        generator, discriminator = models["generator"], models["discriminator"]
        opts = {name: r.adam(name, models[model], lr, betas) for name, (model, lr, betas) in optimizers(r.cfg).items()}
        n_classes = len(ds.classes)  # conditional: a row per class, one noise vector per column shared by the rows
        noise = torch.randn(10, LATENT_DIM).repeat(n_classes, 1) if CONDITIONAL else torch.randn(64, LATENT_DIM)
        fixed_noise = r.fixed("fixed_noise", noise)
        fixed_labels = torch.arange(n_classes, device=r.device).repeat_interleave(10) if CONDITIONAL else None
        found = clusters.attach(r, CLUSTERS, ds.train.images)  # self-conditioned: labels D finds itself
        # D keeps its own BatchNorm statistics per process under torchrun: see DCGAN-MNIST.py
        nets = {"generator": r.wrap(generator), "discriminator": r.wrap(discriminator, sync_buffers=False)}
        averaged = {base: r.ema(name, models[base], decay) for name, (base, decay) in averages(r.cfg).items()}
        sampler = averaged.get("generator", generator)  # what draws the pictures: G's moving average, when kept
        for _ in r.epochs({"losses": ("loss_d", "loss_g"), "mean discriminator output": ("d_real", "d_fake")}):
            clusters.refit_when_due(r, found, discriminator, clustered, generator, RECLUSTER)
            for real, labels in r.batches(normalise):
                r.log(**train_step(r.cfg, nets, opts, real, labels, r.step, n_classes, r.autocast, r.augment))
            row_labels = ds.classes if CONDITIONAL else None
            r.grid(lambda: sampler(fixed_noise, fixed_labels), nrow=10 if CONDITIONAL else 8, row_labels=row_labels)
            r.evaluate(lambda: sample_for_eval(sampler, EVAL_SAMPLES, r.device, SEED))


if __name__ == "__main__":
    main()
