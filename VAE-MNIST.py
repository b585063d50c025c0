"""Variational autoencoder (Kingma & Welling, 2014) on MNIST or Fashion-MNIST.

A convolutional encoder maps a 28x28 image to a Gaussian q(z|x); a transposed-convolution
decoder maps z back to Bernoulli pixel logits. Loss = summed BCE reconstruction + BETA x KL.

Where z comes from: at the first epoch, every evaluation and the last epoch the run fits one
Gaussian per class (mean, full covariance) to the posterior means of that class's training images
and saves them in the checkpoint; decoding z ~ N(mean_k, cov_k) draws class k (generate.py --label;
common/class_regions.py), and SAMPLER="mixture" draws the samples from these Gaussians mixed by
class share instead of the prior N(0, I). With CONDITIONAL=True it is a conditional VAE (Sohn et
al., 2015): both networks are given the label, the sample grid has one row per class, and the
mixture draws class k's z from class k's Gaussian of z given the label.

    python VAE-MNIST.py                              # 20 epochs on MNIST
    python VAE-MNIST.py --dataset=fashion-mnist --latent_dim=2
    python VAE-MNIST.py --conditional=True           # a CVAE, in outputs/VAE-MNIST-conditional
    python generate.py outputs/VAE-MNIST --label 8   # afterwards: 8s, from either kind
    python VAE-MNIST.py --help                       # every constant, its default and meaning

Writes to outputs/VAE-MNIST/ (or OUT_DIR): config.json, samples/epoch_001.png ... (decoded from
a fixed latent batch; conditional: one row per class, one shared latent per column),
reconstructions/epoch_001.png (real rows above their reconstructions), losses.csv and loss.png
(train and test negative ELBO per image), progress.gif, latent.png (test-set latent means
coloured by class, PCA when LATENT_DIM > 2), manifold.png (when LATENT_DIM = 2, unconditional) and
checkpoints/last.pt. Every EVAL_EVERY epochs and at the last: metrics.csv and metrics.png
(classifier FID, KID, IS, class coverage, pixel entropy, test negative ELBO; an IWAE bound at the
last epoch; the asked-class accuracy: label_acc for the CVAE, region_acc by latent region for the
VAE), class_shares.png, pixel_histogram.png. Rerunning resumes; --epochs=N extends a finished run.

Docs: docs/vae.md (usage, outputs, implementation details, measured results).
"""

from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common import class_regions, config, data, evaluation, likelihood, plots, run, training
from common.augment import Augment
from common.domains import Choice, Device, Flag, Folder, Int, Real, Switch
from common.speed import Autocast

# fmt: off
# --- data ---
DATASET: Choice(*data.DATASETS) = "mnist"  # mnist | fashion-mnist | mnist-sample | fake
DATA_DIR: Folder() = "data"  # where the data sets are (and are downloaded to)
DOWNLOAD: Flag() = True  # download the data set when it is missing
# --- model ---
LATENT_DIM: Int(1) = 20  # size of z; 2 gives a plottable latent space and a manifold grid
HIDDEN: Int(1) = 256  # width of the fully connected layer between convolutions and z
CHANNELS: Int(1) = 32  # channels of the first convolution (the second has twice as many)
BETA: Real("[0, inf)") = 1.0  # weight of the KL term (1 = the standard ELBO)
CONDITIONAL: Flag() = False  # give both networks the class label (a conditional VAE; its own -conditional folder)
SAMPLER: Choice("mixture", "prior") = "mixture"  # z of the samples: mixture (the class Gaussians of the training codes; CVAE: the asked class's) | prior (N(0, I))
# --- optimisation ---
EPOCHS: Int(1) = 20  # passes over the training set
BATCH_SIZE: Int(1) = 128  # images per step
LR: Real("(0, inf)") = 1e-3  # Adam learning rate
# --- run ---
SEED: Int(0, 2**32 - 1) = 0  # seeds weights, shuffling and sampling
DETERMINISTIC: Flag() = False  # only repeatable kernels, so a CUDA resume matches number for number (slower; see "Devices")
DEVICE: Device() = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
OUT_DIR: Folder(empty=True) = ""  # empty: outputs/VAE-MNIST (plus -<dataset> for other data sets)
RESUME: Flag() = True  # continue from OUT_DIR/checkpoints/last.pt when it exists
TENSORBOARD: Flag() = False  # also log losses, metrics and grids to OUT_DIR/tensorboard/ (pip install tensorboard)
N_SAMPLES: Int(1) = 64  # images in the per-epoch sample grid (conditional: 10 per class instead)
# --- speed ("auto", True or False each; auto chooses per device and processor: docs/speed.md) ---
AMP: Switch() = "auto"  # bf16 autocast of the forward passes and losses (auto: on a CPU with native bf16)
CHANNELS_LAST: Switch() = "auto"  # NHWC weights and inputs for the convolutions (auto: with AMP on a CPU)
CUDNN_BENCHMARK: Switch() = "auto"  # let cuDNN time its convolution algorithms on the first batches (CUDA; auto: off)
FUSED_ADAM: Switch() = "auto"  # Adam's update as one fused kernel (auto: off)
COMPILE: Switch() = "auto"  # torch.compile the networks, a slower first epoch (auto: off)
# --- evaluation ---
EVAL_EVERY: Int(0, auto=True) = "auto"  # epochs between evaluations, and the last: auto fits them in a tenth of the wall time; 0: none
EVAL_SAMPLES: Int(0) = 2000  # generated images scored per evaluation (at least 6; --eval_every=0: none)
IWAE_K: Int(0) = 100  # importance samples per image of the final IWAE bound (0: none)
IWAE_IMAGES: Int(1) = 1000  # test images of the final IWAE bound (the first ones: a subset, for CPU time)
# fmt: on

SHAPE_KEYS = ("DATASET", "LATENT_DIM", "HIDDEN", "CHANNELS", "CONDITIONAL")  # resuming with other values refuses


class Encoder(nn.Module):
    """x [B, C, 28, 28] (+ labels [B] when conditional) -> (mu, logvar), each [B, latent_dim]."""

    def __init__(
        self, latent_dim: int, hidden: int = 256, channels: int = 32, image_channels: int = 1, n_classes: int = 0
    ):
        super().__init__()
        self.n_classes = n_classes
        self.net = nn.Sequential(
            # conditional: the label enters as n_classes constant planes beside the image (as in CDCGAN's D)
            nn.Conv2d(image_channels + n_classes, channels, kernel_size=4, stride=2, padding=1),  # -> c x 14 x 14
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 2 * channels, kernel_size=4, stride=2, padding=1),  # -> 2c x 7 x 7
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(2 * channels * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 2 * latent_dim),
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n_classes:
            planes = F.one_hot(labels, self.n_classes).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, planes], dim=1)
        mu, logvar = self.net(x).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    """z [B, latent_dim] (+ labels [B] when conditional) -> pixel logits [B, C, 28, 28]."""

    def __init__(
        self, latent_dim: int, hidden: int = 256, channels: int = 32, image_channels: int = 1, n_classes: int = 0
    ):
        super().__init__()
        self.n_classes = n_classes
        self.net = nn.Sequential(
            # conditional: z and the one-hot label enter together; a one-hot times the first layer's
            # weights is already a learned per-class embedding, so 10 classes need no nn.Embedding
            nn.Linear(latent_dim + n_classes, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 2 * channels * 7 * 7),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (2 * channels, 7, 7)),
            nn.ConvTranspose2d(2 * channels, channels, kernel_size=4, stride=2, padding=1),  # -> c x 14 x 14
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(channels, image_channels, kernel_size=4, stride=2, padding=1),  # -> C x 28 x 28
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes:
            z = torch.cat([z, F.one_hot(labels, self.n_classes).to(z.dtype)], dim=1)
        return self.net(z)


class VAE(nn.Module):
    """Encoder + decoder with the reparameterisation trick; with n_classes > 0 both are given the label (a CVAE)."""

    def __init__(
        self, latent_dim: int, hidden: int = 256, channels: int = 32, image_channels: int = 1, n_classes: int = 0
    ):
        super().__init__()
        self.latent_dim, self.n_classes = latent_dim, n_classes
        self.encoder = Encoder(latent_dim, hidden, channels, image_channels, n_classes)
        self.decoder = Decoder(latent_dim, hidden, channels, image_channels, n_classes)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x, labels)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z, labels), mu, logvar

    @torch.no_grad()
    def sample(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decode latents (of the given classes, conditional) to images in [0, 1]."""
        return torch.sigmoid(self.decoder(z, labels))


def build_models(
    cfg: dict, image_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10
) -> dict[str, nn.Module]:
    """The models of this script, sized by a config (used by main() and generate.py)."""
    n_classes = n_classes if cfg.get("CONDITIONAL") else 0  # runs from before CONDITIONAL are unconditional
    return {"vae": VAE(cfg["LATENT_DIM"], cfg["HIDDEN"], cfg["CHANNELS"], image_shape[0], n_classes)}


def _labels(vae: VAE, labels: torch.Tensor) -> torch.Tensor | None:
    """The labels a model is given: all of them for a conditional VAE, none otherwise."""
    return labels if vae.n_classes else None


def vae_loss(
    logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> torch.Tensor:
    """Negative ELBO summed over the batch: BCE reconstruction + beta x KL(q(z|x) || N(0, I))."""
    logits, mu, logvar = logits.float(), mu.float(), logvar.float()  # a sum of 10^5 terms needs fp32 under AMP
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return reconstruction + beta * kl


normalise = data.to_unit  # the training input: uint8 images -> [0, 1], the range of the Bernoulli decoder


def optimizers(cfg: dict) -> dict[str, tuple[str, float, tuple[float, float]]]:
    """Each Adam optimizer by its checkpoint name: (the model it trains, its rate, its betas: Adam's defaults)."""
    return {"opt": ("vae", cfg["LR"], (0.9, 0.999))}


def train_step(
    cfg: dict, nets: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer], x: torch.Tensor,
    labels: torch.Tensor, step: int = 1, n_classes: int = 10, autocast: Autocast = nullcontext,
    augment: Augment | None = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """One Adam step on a batch in [0, 1] (and its labels, conditional; step, n_classes and augment go unused);
    returns train_neg_elbo, the batch's loss per image, a device tensor."""
    with autocast():  # forward and loss only: backward and the optimizer step run outside autocast
        logits, mu, logvar = nets["vae"](x, labels if cfg.get("CONDITIONAL") else None)
        loss = vae_loss(logits, x, mu, logvar, cfg["BETA"])
    training.update(opts["opt"], loss)
    return {"train_neg_elbo": loss.detach() / len(x)}


@torch.no_grad()
def evaluate(
    vae: VAE, split: data.Split, beta: float, batch_size: int = 1000, autocast: Autocast = nullcontext
) -> tuple[float, torch.Tensor]:
    """Mean negative ELBO per image on a split, and the latent means of all its images (in eval mode; the
    forward passes under the run's autocast, as in training)."""
    was_training = vae.training
    vae.eval()
    total, means = torch.zeros((), device=split.images.device), []
    for start in range(0, len(split), batch_size):
        x = data.to_unit(split.images[start : start + batch_size])
        with autocast():
            logits, mu, logvar = vae(x, _labels(vae, split.labels[start : start + batch_size]))
        total += vae_loss(logits.float(), x, mu.float(), logvar.float(), beta)
        means.append(mu.float())
    vae.train(was_training)
    return total.item() / len(split), torch.cat(means)


iwae_bound = likelihood.iwae_bound  # the IWAE bound of -log p(x) (Burda et al., 2016): common/likelihood.py


def bounds(
    vae: VAE, test: data.Split, known: float | None, iwae_k: int, iwae_images: int, autocast: Autocast = nullcontext
) -> dict[str, float]:
    """The test set's negative ELBO (at beta 1: the bound itself; `known` if already computed) and, with
    iwae_k > 0, the tighter IWAE bound."""
    found = {"test_neg_elbo": evaluate(vae, test, 1.0, autocast=autocast)[0] if known is None else known}
    if iwae_k:
        found["test_iwae"] = iwae_bound(vae, test, iwae_k, iwae_images, autocast=autocast)
    return found


def sample_for_eval(vae: VAE, n: int, device: torch.device, seed: int, latents: dict) -> tuple[torch.Tensor, Any]:
    """n images in [0, 1] from the same evaluation noise every time, and for a CVAE the classes asked for
    (balanced); the VAE draws from its sampler (its classes by region: region_scores)."""
    z, labels = evaluation.eval_noise(n, vae.latent_dim, vae.n_classes, device, seed)
    u, asked = class_regions.eval_choices(n, seed), [None] * n if labels is None else labels.split(500)
    chunks = zip(z.split(500), asked, u.split(500), strict=False)  # 500 images at a time
    return torch.cat([class_regions.sample(vae, *chunk, latents, SAMPLER) for chunk in chunks]), labels


def grid_latents(
    n: int, latent_dim: int, n_classes: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The sample grid's latents: n of them (unconditional), or for a CVAE one row per class whose 10 columns
    share one latent each (a column is one style drawn as every class), with the rows' labels."""
    if not n_classes:
        return torch.randn(n, latent_dim), None
    labels = torch.arange(n_classes, device=device).repeat_interleave(10)
    return torch.randn(10, latent_dim).repeat(n_classes, 1), labels


def reconstructions(vae: VAE, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows of 8 real images in [0, 1], each above its reconstruction (x: [32, C, H, W], labels: [32])."""
    recon = torch.sigmoid(vae(x, _labels(vae, labels))[0])
    return torch.stack([x.view(4, 8, *x.shape[1:]), recon.view(4, 8, *x.shape[1:])], dim=1).flatten(0, 2)


def draw_latent_space(vae: VAE, test: data.Split, classes: tuple[str, ...], out: Path) -> None:
    """latent.png (the test set's latent means coloured by class) and, for a 2-D unconditional z, manifold.png."""
    _, means = evaluate(vae, test, 1.0)
    # a CVAE's z is given the class, so it keeps what the label does not say (the style): classes overlap
    title = "test-set latent means (given the label)" if vae.n_classes else "test-set latent means"
    plots.latent_scatter(means, test.labels, out / "latent.png", classes, title)
    if vae.latent_dim == 2 and not vae.n_classes:
        plots.manifold(vae.sample, out / "manifold.png", means.device)


def decode(models: dict[str, nn.Module], z: torch.Tensor, labels: Any = None, latents: Any = None) -> torch.Tensor:
    """Images in [0, 1] from latents z [B, LATENT_DIM]: of the classes `labels` where the model can aim (a CVAE is
    told them; the VAE decodes their regions, from `latents`), else from the prior (used by bench and generate.py)."""
    vae = models["vae"]
    return class_regions.draw(vae, z, labels if vae.n_classes or latents else None, latents)


def main() -> None:
    config.setup(globals())  # every constant in its domain, or one line and exit 2
    suffix = "-conditional" if CONDITIONAL else ""  # the CVAE's run folder is its own
    with run.Run(globals(), SHAPE_KEYS, suffix) as r:  # device, torchrun, seed, resume, Ctrl-C, NaN stop, checkpoints
        ds = r.load(lambda device: data.load(DATASET, DATA_DIR, DOWNLOAD, device))
        models = r.models(build_models(r.cfg, ds.shape, len(ds.classes)))  # on the device, saved by name
        opts = {name: r.adam(name, models[model], lr, betas) for name, (model, lr, betas) in optimizers(r.cfg).items()}
        vae = models["vae"]
        grid_z, grid_labels = grid_latents(N_SAMPLES, LATENT_DIM, vae.n_classes, r.device)
        choices = torch.rand(len(grid_z), generator=torch.Generator().manual_seed(SEED + 2))  # not training's stream
        fixed_z, fixed_u = r.fixed("fixed_noise", grid_z), r.fixed("fixed_choice", choices)
        grid_args = {"nrow": 10, "row_labels": ds.classes} if CONDITIONAL else {"nrow": 8}
        # the class Gaussians of the training codes (the sampler's, generate.py --label's), saved in checkpoints
        blank = class_regions.blank(len(ds.classes), LATENT_DIM)
        latents = {name: r.fixed(f"{class_regions.PREFIX}{name}", tensor) for name, tensor in blank.items()}
        recon_x, recon_y = data.to_unit(ds.test.images[:32]), ds.test.labels[:32]  # the same test images every epoch
        nets = {"vae": r.wrap(vae)}  # DDP under torchrun, else the model itself
        grid = partial(class_regions.sample, vae, fixed_z, grid_labels, fixed_u, latents, SAMPLER)  # the fit so far
        for _ in r.epochs({"negative ELBO per image (nats)": ("train_neg_elbo", "test_neg_elbo")}):
            for images, labels in r.batches(normalise):
                r.log(**train_step(r.cfg, nets, opts, images, labels, r.step, len(ds.classes), r.autocast))
            test_loss = evaluate(vae, ds.test, BETA, autocast=r.autocast)[0]
            r.record(test_neg_elbo=test_loss)
            if r.is_main and (r.eval_due or not class_regions.fitted(latents)):  # the grid and evaluation draw from it
                with r.evaluating():  # one encoder pass: at the first epoch, each evaluation and the last
                    class_regions.fit(vae, ds.train, latents)
            r.grid(grid, value_range=(0, 1), **grid_args)
            r.grid(lambda: reconstructions(vae, recon_x, recon_y), folder="reconstructions", nrow=8, value_range=(0, 1))
            iwae_k = IWAE_K if r.last_epoch else 0  # the IWAE bound is costly: at the last epoch only
            bounds_now = partial(
                bounds, vae, ds.test, test_loss if BETA == 1 else None, iwae_k, IWAE_IMAGES, r.autocast
            )
            by_region = partial(class_regions.region_scores, vae, latents, EVAL_SAMPLES, SEED, r.evaluator)
            r.evaluate(lambda: sample_for_eval(vae, EVAL_SAMPLES, r.device, SEED, latents), bounds_now, by_region)
        if r.is_main:
            draw_latent_space(vae, ds.test, ds.classes, r.out)


if __name__ == "__main__":
    main()
