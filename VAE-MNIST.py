"""Variational autoencoder (Kingma & Welling, 2014) on MNIST or Fashion-MNIST.

A convolutional encoder maps a 28x28 image to a Gaussian q(z|x); a transposed-convolution
decoder maps z back to Bernoulli pixel logits. Loss = summed BCE reconstruction + BETA x KL.

    python VAE-MNIST.py                              # 20 epochs on MNIST
    python VAE-MNIST.py --dataset=fashion-mnist --latent_dim=2
    python VAE-MNIST.py --help                       # every constant, its default and meaning

Writes to outputs/VAE-MNIST/ (or OUT_DIR): config.json, samples/epoch_001.png ... (decoded from
a fixed latent batch), reconstructions/epoch_001.png (real rows above their reconstructions),
losses.csv and loss.png (train and test negative ELBO per image), progress.gif, latent.png
(test-set latent means coloured by class, PCA when LATENT_DIM > 2), manifold.png (when
LATENT_DIM = 2) and checkpoints/last.pt. Every EVAL_EVERY epochs and at the last: metrics.csv and
metrics.png (classifier FID, KID, IS, class coverage, pixel entropy, test negative ELBO; an IWAE
bound at the last epoch), class_shares.png, pixel_histogram.png. Rerunning resumes; --epochs=N extends a finished run.
"""

import math
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common import config, data, metrics, plots, run, steps
from common.speed import Autocast

# --- data ---
DATASET = "mnist"  # mnist | fashion-mnist | mnist-sample | fake
DATA_DIR = "data"  # where the data sets are (and are downloaded to)
DOWNLOAD = True  # download the data set when it is missing
# --- model ---
LATENT_DIM = 20  # size of z; 2 gives a plottable latent space and a manifold grid
HIDDEN = 256  # width of the fully connected layer between convolutions and z
CHANNELS = 32  # channels of the first convolution (the second has twice as many)
BETA = 1.0  # weight of the KL term (1 = the standard ELBO)
# --- optimisation ---
EPOCHS = 20  # passes over the training set
BATCH_SIZE = 128  # images per step
LR = 1e-3  # Adam learning rate
# --- run ---
SEED = 0  # seeds weights, shuffling and sampling
DETERMINISTIC = False  # only repeatable kernels, so a CUDA resume matches number for number (slower; see "Devices")
DEVICE = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
OUT_DIR = ""  # empty: outputs/VAE-MNIST (plus -<dataset> for other data sets)
RESUME = True  # continue from OUT_DIR/checkpoints/last.pt when it exists
N_SAMPLES = 64  # images in the per-epoch sample grid
# --- speed (CUDA only: ignored on CPU and MPS; see "Speed" in the README) ---
AMP = False  # bf16 autocast of the forward passes and losses
CHANNELS_LAST = False  # NHWC weights and inputs for the convolutions
CUDNN_BENCHMARK = False  # let cuDNN time its convolution algorithms on the first batches
FUSED_ADAM = False  # Adam's update as one fused kernel
COMPILE = False  # torch.compile the networks (a slower first epoch)
# --- evaluation ---
EVAL_EVERY = 1  # epochs between metric evaluations (the last epoch is always evaluated); 0 disables
EVAL_SAMPLES = 2000  # generated images scored per evaluation
IWAE_K = 100  # importance samples per image of the final IWAE bound
IWAE_IMAGES = 1000  # test images of the final IWAE bound (the first ones: a subset, for CPU time)

SHAPE_KEYS = ("DATASET", "LATENT_DIM", "HIDDEN", "CHANNELS")  # resuming with other values refuses


class Encoder(nn.Module):
    """x [B, C, 28, 28] -> (mu, logvar), each [B, latent_dim]."""

    def __init__(self, latent_dim: int, hidden: int = 256, channels: int = 32, image_channels: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(image_channels, channels, kernel_size=4, stride=2, padding=1),  # -> c x 14 x 14
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 2 * channels, kernel_size=4, stride=2, padding=1),  # -> 2c x 7 x 7
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(2 * channels * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 2 * latent_dim),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(x).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    """z [B, latent_dim] -> pixel logits [B, C, 28, 28]."""

    def __init__(self, latent_dim: int, hidden: int = 256, channels: int = 32, image_channels: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 2 * channels * 7 * 7),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (2 * channels, 7, 7)),
            nn.ConvTranspose2d(2 * channels, channels, kernel_size=4, stride=2, padding=1),  # -> c x 14 x 14
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(channels, image_channels, kernel_size=4, stride=2, padding=1),  # -> C x 28 x 28
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VAE(nn.Module):
    """Encoder + decoder with the reparameterisation trick."""

    def __init__(self, latent_dim: int, hidden: int = 256, channels: int = 32, image_channels: int = 1):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = Encoder(latent_dim, hidden, channels, image_channels)
        self.decoder = Decoder(latent_dim, hidden, channels, image_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar

    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latents to images in [0, 1]."""
        return torch.sigmoid(self.decoder(z))


def build_models(
    cfg: dict, image_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10
) -> dict[str, nn.Module]:
    """The models of this script, sized by a config (used by main() and generate.py)."""
    return {"vae": VAE(cfg["LATENT_DIM"], cfg["HIDDEN"], cfg["CHANNELS"], image_shape[0])}


def vae_loss(
    logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> torch.Tensor:
    """Negative ELBO summed over the batch: BCE reconstruction + beta x KL(q(z|x) || N(0, I))."""
    logits, mu, logvar = logits.float(), mu.float(), logvar.float()  # a sum of 10^5 terms needs fp32 under AMP
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return reconstruction + beta * kl


def train_step(
    vae: VAE, opt: torch.optim.Optimizer, x: torch.Tensor, beta: float, autocast: Autocast = nullcontext
) -> torch.Tensor:
    """One Adam step on a batch in [0, 1]; returns the batch's summed loss, a device tensor."""
    with autocast():  # forward and loss only: backward and the optimizer step run outside autocast
        logits, mu, logvar = vae(x)
        loss = vae_loss(logits, x, mu, logvar, beta)
    steps.update(opt, loss)
    return loss.detach()


@torch.no_grad()
def evaluate(vae: VAE, split: data.Split, beta: float, batch_size: int = 1000) -> tuple[float, torch.Tensor]:
    """Mean negative ELBO per image on a split, and the latent means of all its images (in eval mode)."""
    was_training = vae.training
    vae.eval()
    total, means = torch.zeros((), device=split.images.device), []
    for start in range(0, len(split), batch_size):
        x = data.to_unit(split.images[start : start + batch_size])
        logits, mu, logvar = vae(x)
        total += vae_loss(logits, x, mu, logvar, beta)
        means.append(mu)
    vae.train(was_training)
    return total.item() / len(split), torch.cat(means)


@torch.no_grad()
def iwae_bound(vae: VAE, images: torch.Tensor, k: int, batch_size: int = 50) -> float:
    """Importance-weighted estimate of -log p(x) per image (Burda et al., 2016) with k samples, in nats."""
    total = torch.zeros((), device=images.device)
    for start in range(0, len(images), batch_size):
        x = data.to_unit(images[start : start + batch_size])
        mu, logvar = vae.encoder(x)
        std = torch.exp(0.5 * logvar)
        z = mu + std * torch.randn(k, *mu.shape, device=x.device)  # [k, B, latent_dim]
        logits = vae.decoder(z.flatten(0, 1)).view(k, *x.shape)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(2).sum(2)
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(2)
        log_qz = torch.distributions.Normal(mu, std).log_prob(z).sum(2)
        total -= (torch.logsumexp(log_px_z + log_pz - log_qz, dim=0) - math.log(k)).sum()
    return total.item() / len(images)


def bounds(vae: VAE, test: data.Split, known: float | None, iwae_k: int, iwae_images: int) -> dict[str, float]:
    """The test set's negative ELBO (at beta 1: the bound itself; `known` if already computed) and, with
    iwae_k > 0, the tighter IWAE bound."""
    found = {"test_neg_elbo": evaluate(vae, test, 1.0)[0] if known is None else known}
    if iwae_k:
        found["test_iwae"] = iwae_bound(vae, test.images[:iwae_images], iwae_k)
    return found


def sample_for_eval(vae: VAE, n: int, device: torch.device, seed: int) -> tuple[torch.Tensor, None]:
    """n images in [0, 1] decoded from the same evaluation latents every time (no labels)."""
    z, _ = metrics.eval_noise(n, vae.latent_dim, 0, device, seed)
    return torch.cat([vae.sample(z[i : i + 500]) for i in range(0, n, 500)]), None


def reconstructions(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """Rows of 8 real images in [0, 1], each above its reconstruction (x: [32, C, H, W])."""
    recon = torch.sigmoid(vae(x)[0])
    return torch.stack([x.view(4, 8, *x.shape[1:]), recon.view(4, 8, *x.shape[1:])], dim=1).flatten(0, 2)


def draw_latent_space(vae: VAE, test: data.Split, classes: tuple[str, ...], out: Path) -> None:
    """latent.png (the test set's latent means coloured by class) and, for a 2-D z, manifold.png."""
    _, means = evaluate(vae, test, 1.0)
    plots.latent_scatter(means, test.labels, out / "latent.png", classes, "test-set latent means")
    if vae.latent_dim == 2:
        levels = torch.linspace(0.03, 0.97, 20, device=means.device)
        q = torch.distributions.Normal(0.0, 1.0).icdf(levels)  # evenly spaced in probability mass
        grid_z = torch.stack(torch.meshgrid(q.flip(0), q, indexing="ij"), dim=-1).view(-1, 2)[:, [1, 0]]
        plots.save_grid(vae.sample(grid_z), out / "manifold.png", nrow=20, value_range=(0, 1))


def main() -> None:
    config.setup(globals(), choices={"DATASET": data.DATASETS})
    with run.Run(globals(), SHAPE_KEYS) as r:  # device, torchrun, seed, resume, Ctrl-C, NaN stop, checkpoints
        ds = r.load(lambda device: data.load(DATASET, DATA_DIR, DOWNLOAD, device))
        vae = r.models(build_models(r.cfg, ds.shape))["vae"]  # on the device, saved in checkpoints by name
        opt = r.adam("opt", vae, LR, (0.9, 0.999))
        fixed_z = r.fixed("fixed_noise", torch.randn(N_SAMPLES, LATENT_DIM))
        recon_x = data.to_unit(ds.test.images[:32])  # the same test images every epoch
        train_vae = r.wrap(vae)  # DDP under torchrun, else the model itself
        for epoch in r.epochs({"negative ELBO per image (nats)": ("train_neg_elbo", "test_neg_elbo")}):
            for images, _ in r.batches():
                x = r.input(data.to_unit(images))
                r.log(train_neg_elbo=train_step(train_vae, opt, x, BETA, r.autocast) / len(x))
            test_loss = evaluate(vae, ds.test, BETA)[0]
            r.record(test_neg_elbo=test_loss)
            r.grid(lambda: vae.sample(fixed_z), nrow=8, value_range=(0, 1))
            r.grid(lambda: reconstructions(vae, recon_x), folder="reconstructions", nrow=8, value_range=(0, 1))
            iwae_k = IWAE_K if epoch == EPOCHS else 0  # the IWAE bound is costly: at the last epoch only
            bounds_now = partial(bounds, vae, ds.test, test_loss if BETA == 1 else None, iwae_k, IWAE_IMAGES)
            r.evaluate(lambda: sample_for_eval(vae, EVAL_SAMPLES, r.device, SEED), bounds_now)
        if r.is_main:
            draw_latent_space(vae, ds.test, ds.classes, r.out)


if __name__ == "__main__":
    main()
