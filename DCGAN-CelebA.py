"""Deep convolutional GAN (Radford, Metz & Chintala, 2015) on CelebA faces at 64x64.

The generator grows a noise vector into an image with strided transposed convolutions, the
discriminator shrinks an image to one logit with strided convolutions; both use BatchNorm, and
the weights start from N(0, 0.02) as in the paper; they train by the GAN step the four GAN scripts
share (common/gan.py: d_step, g_step). Faces are centre-cropped (CROP) and resized
to IMAGE_SIZE once, into a uint8 cache beside the data (see common/celeba.py), then drawn in
shuffled batches from memory.

    python DCGAN-CelebA.py                           # 10 epochs on CelebA found in data/
    python DCGAN-CelebA.py --image_dir=~/photos      # any folder of images instead
    python DCGAN-CelebA.py --dataset=fake --epochs=1 # random images: a smoke run with no data
    python DCGAN-CelebA.py --help                    # every constant, its default and meaning

Writes to outputs/DCGAN-CelebA/ (or OUT_DIR): config.json, samples/epoch_001.png ... (an 8x8
grid from a fixed noise batch, comparable across epochs), losses.csv and loss.png (G and D
losses, mean D(x) and D(G(z))), progress.gif, checkpoints/last.pt and, at the end,
interpolation.png (each row a spherical path between two noise vectors) and, when Inception
weights are available, the Inception FID in metrics.csv. Rerunning resumes;
Ctrl-C (or SIGTERM) finishes the step, saves a checkpoint and prints the command that resumes.

    torchrun --nproc_per_node=4 DCGAN-CelebA.py      # 4 GPUs (DDP), each a quarter of every epoch

Docs: docs/dcgan-celeba.md (usage, outputs, implementation details, measured results).
"""

import math
import os
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common import celeba, config, data, gan, inception, plots, run, training
from common.augment import TRANSFORMS, Augment
from common.domains import Choice, Device, File, Flag, Folder, Int, Real, Switch, Words
from common.speed import Autocast

# fmt: off
# --- data ---
DATASET: Choice(*celeba.DATASETS) = "celeba"  # celeba | fake (random images, for smoke runs with no data)
DATA_DIR: Folder() = "data"  # searched for CelebA: Kaggle, flat img_align_celeba/ or torchvision layout
IMAGE_DIR: Folder(exists=True, empty=True) = ""  # train on this folder of images instead (searched recursively)
DOWNLOAD: Flag() = True  # try torchvision's CelebA download (Google Drive) when nothing is found
CROP: Int(1, off=0) = 108  # side of the centred square cut from each image (0: the whole shorter side)
IMAGE_SIZE: Int(16, power_of_two=True) = 64  # side of the training images; a power of two >= 16
WORKERS: Int(1) = os.cpu_count() or 1  # processes decoding the images into the cache (done once)
REBUILD_CACHE: Flag() = False  # decode the images again even when a matching cache exists
# --- model ---
LATENT_DIM: Int(1) = 100  # size of the noise vector z
NGF: Int(1) = 64  # generator width: channels of its last hidden layer (doubling towards z)
NDF: Int(1) = 64  # discriminator width: channels of its first layer (doubling towards the logit)
# --- optimisation ---
EPOCHS: Int(1) = 10  # passes over the training set
BATCH_SIZE: Int(1) = 128  # images per step
LR: Real("(0, inf)") = 2e-4  # Adam learning rate of G
LR_D: Real("(0, inf)") = 2e-4  # Adam learning rate of D (G's rate, as in the DCGAN paper; not measured on faces here)
BETA1: Real("[0, 1)") = 0.5  # Adam beta1 (0.5, as in the DCGAN paper)
REAL_LABEL: Real("(0, 1]") = 1.0  # target for real images (0.9 = one-sided label smoothing)
AUGMENT: Words(*TRANSFORMS) = ""  # D's input, real and fake, augmented (DiffAugment): "" off, or a list of color,translation,cutout
# --- run ---
SEED: Int(0, 2**32 - 1) = 0  # seeds weights, shuffling and sampling
DETERMINISTIC: Flag() = False  # only repeatable kernels, so a CUDA resume matches number for number (slower; see "Devices")
DEVICE: Device() = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
OUT_DIR: Folder(empty=True) = ""  # empty: outputs/DCGAN-CelebA (plus -fake for the fake data set)
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
EVAL_SAMPLES: Int(2, off=0) = 10000  # images for the Inception FID at the end of the run (0 disables; --fid_samples: old name)
INCEPTION_WEIGHTS: File() = ""  # a local pt_inception-2015-12-05 weights file, for boxes without internet
# fmt: on

SHAPE_KEYS = ("DATASET", "IMAGE_SIZE", "LATENT_DIM", "NGF", "NDF")  # resuming with other values refuses


class Generator(nn.Module):
    """z [B, latent_dim] -> images [B, 3, S, S] in [-1, 1]; shapes below are for S=64, NGF=64."""

    def __init__(self, latent_dim: int, image_size: int = 64, ngf: int = 64, channels: int = 3):
        super().__init__()
        self.latent_dim, self.n_classes = latent_dim, 0  # n_classes: unconditional, for generic samplers
        n_up = int(math.log2(image_size)) - 2  # stride-2 layers after the 4x4 start: 4 for 64x64
        width = ngf * 2 ** (n_up - 1)  # channels halve as the side doubles, ending at NGF
        layers: list[nn.Module] = [  # z enters as a [B, latent_dim, 1, 1] image
            nn.ConvTranspose2d(latent_dim, width, kernel_size=4, stride=1, padding=0, bias=False),  # [B, 512, 4, 4]
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        for _ in range(n_up - 1):  # [B, 256, 8, 8] -> [B, 128, 16, 16] -> [B, 64, 32, 32]
            layers += [
                nn.ConvTranspose2d(width, width // 2, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        layers += [
            nn.ConvTranspose2d(width, channels, kernel_size=4, stride=2, padding=1, bias=False),  # [B, 3, 64, 64]
            nn.Tanh(),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(len(z), self.latent_dim, 1, 1))


class Discriminator(nn.Module):
    """images [B, 3, S, S] -> real/fake logits [B]; shapes below are for S=64, NDF=64."""

    def __init__(self, image_size: int = 64, ndf: int = 64, channels: int = 3):
        super().__init__()
        n_down = int(math.log2(image_size)) - 2  # stride-2 layers down to 4x4: 4 for 64x64
        layers: list[nn.Module] = [  # no BatchNorm on the input layer, as in the paper
            nn.Conv2d(channels, ndf, kernel_size=4, stride=2, padding=1, bias=False),  # [B, 64, 32, 32]
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = ndf
        for _ in range(n_down - 1):  # [B, 128, 16, 16] -> [B, 256, 8, 8] -> [B, 512, 4, 4]
            layers += [
                nn.Conv2d(width, width * 2, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width *= 2
        layers.append(nn.Conv2d(width, 1, kernel_size=4, stride=1, padding=0, bias=False))  # [B, 1, 1, 1]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)


def build_models(
    cfg: dict, image_shape: tuple[int, int, int] = (3, 64, 64), n_classes: int = 0
) -> dict[str, nn.Module]:
    """The models of this script, sized by a config (used by main() and generate.py); unconditional."""
    channels, size = image_shape[0], image_shape[-1]
    generator = Generator(cfg["LATENT_DIM"], size, cfg["NGF"], channels)
    discriminator = Discriminator(size, cfg["NDF"], channels)
    generator.apply(gan.dcgan_init)
    discriminator.apply(gan.dcgan_init)
    return {"generator": generator, "discriminator": discriminator}


def slerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """Spherical interpolation [B, steps, D] between rows of z0 and z1 [B, D].

    Gaussian noise lives near a sphere; a straight line between two points cuts through its
    low-norm inside, which the generator never saw, so the path follows the great circle.
    """
    t = torch.linspace(0, 1, steps, device=z0.device).view(1, steps, 1)
    cos = F.cosine_similarity(z0, z1, dim=1).clamp(-1 + 1e-6, 1 - 1e-6).view(-1, 1, 1)
    omega = torch.acos(cos)
    return (torch.sin((1 - t) * omega) * z0[:, None] + torch.sin(t * omega) * z1[:, None]) / torch.sin(omega)


def final_pictures(
    generator: Generator, real: data.Split, out: Path, seed: int, eval_samples: int, weights: str, epoch: int
) -> None:
    """interpolation.png (8 spherical walks between two faces, 10 steps each) and, when the Inception
    weights load (from `weights`, a local file, or the internet), the Inception FID in metrics.csv."""
    gen = torch.Generator().manual_seed(seed + 1)  # its own seed, so reruns draw the same walks
    device = next(generator.parameters()).device
    z0, z1 = torch.randn(2, 8, generator.latent_dim, generator=gen).to(device)
    with training.eval_mode([generator]):
        plots.save_grid(
            generator(slerp(z0, z1, 10).reshape(-1, generator.latent_dim)), out / "interpolation.png", nrow=10
        )
    if not eval_samples:
        return
    n = min(eval_samples, len(real))  # comparable with published CelebA 64x64 figures
    z = torch.randn(n, generator.latent_dim, generator=gen).to(device)

    def draw() -> torch.Tensor:  # called only when the Inception weights could be loaded
        with training.eval_mode([generator]):
            fake = torch.cat([generator(z[i : i + 500]) for i in range(0, n, 500)])
        return fake.add(1).mul(127.5).round().clamp(0, 255).byte()

    value, message = inception.inception_fid(real.images[:n], draw, weights, device)
    print(message)
    if value is not None:
        plots.write_csv([{"epoch": epoch, "n": n, "inception_fid": value}], out / "metrics.csv")


normalise = data.to_gan  # the training input: uint8 images -> [-1, 1], the range of G's tanh


optimizers = gan.optimizers  # G at LR, D at LR_D, Adam(BETA1, 0.999): by checkpoint name, in order


def train_step(
    cfg: dict, nets: dict[str, nn.Module], opts: dict[str, torch.optim.Optimizer], real: torch.Tensor,
    labels: torch.Tensor, step: int = 1, n_classes: int = 0, autocast: Autocast = nullcontext,
    augment: Augment | None = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """One D step and one G step on a batch of faces in [-1, 1] (unconditional: labels, step and n_classes go
    unused); the device tensors that r.log sums."""
    g, d = nets["generator"], nets["discriminator"]
    out = gan.d_step(g, d, opts["opt_d"], real, real_label=cfg["REAL_LABEL"], autocast=autocast, augment=augment)
    out["loss_g"] = gan.g_step(g, d, opts["opt_g"], len(real), autocast=autocast, augment=augment)
    return out


def decode(models: dict[str, nn.Module], z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Images in [0, 1] from noise z [B, LATENT_DIM] (labels are ignored: unconditional)."""
    return models["generator"](z).add(1).div(2)


def main() -> None:
    config.setup(globals())  # every constant in its domain, or one line and exit 2
    with run.Run(globals(), SHAPE_KEYS) as r:  # device, torchrun, seed, resume, Ctrl-C, NaN stop, checkpoints
        # rank 0 builds the image cache once; the others then read it. On the GPU when it fits there
        args = (DATASET, DATA_DIR, IMAGE_DIR, DOWNLOAD, CROP, IMAGE_SIZE, WORKERS)
        faces = r.load(lambda device: celeba.load(*args, device, REBUILD_CACHE))
        models = r.models(build_models(r.cfg, (3, IMAGE_SIZE, IMAGE_SIZE)))  # on the device, saved by name
        generator, discriminator = models["generator"], models["discriminator"]
        opts = {name: r.adam(name, models[model], lr, betas) for name, (model, lr, betas) in optimizers(r.cfg).items()}
        fixed_noise = r.fixed("fixed_noise", torch.randn(64, LATENT_DIM))
        # D keeps its own BatchNorm statistics per process under torchrun: see DCGAN-MNIST.py
        nets = {"generator": r.wrap(generator), "discriminator": r.wrap(discriminator, sync_buffers=False)}
        for _ in r.epochs({"losses": ("loss_d", "loss_g"), "mean discriminator output": ("d_real", "d_fake")}):
            for real, labels in r.batches(normalise):  # faces in [-1, 1]; no labels (zeros)
                r.log(**train_step(r.cfg, nets, opts, real, labels, r.step, 0, r.autocast, r.augment))
            r.grid(lambda: generator(fixed_noise), nrow=8)
        if r.is_main:
            final_pictures(generator, faces, r.out, SEED, EVAL_SAMPLES, INCEPTION_WEIGHTS, EPOCHS)


if __name__ == "__main__":
    main()
