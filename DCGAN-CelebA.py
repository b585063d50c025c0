"""Deep convolutional GAN (Radford, Metz & Chintala, 2015) on CelebA faces at 64x64.

The generator grows a noise vector into an image with strided transposed convolutions, the
discriminator shrinks an image to one logit with strided convolutions; both use BatchNorm, and
the weights start from N(0, 0.02) as in the paper. Faces are centre-cropped (CROP) and resized
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
"""

import math
import os
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from common import celeba, config, data, device, distributed, metrics, plots, run
from common.run import Timer
from common.speed import Autocast, Speed

# --- data ---
DATASET = "celeba"  # celeba | fake (random images, for smoke runs with no data)
DATA_DIR = "data"  # searched for CelebA: Kaggle, flat img_align_celeba/ or torchvision layout
IMAGE_DIR = ""  # train on this folder of images instead (searched recursively)
DOWNLOAD = True  # try torchvision's CelebA download (Google Drive) when nothing is found
CROP = 108  # side of the centred square cut from each image (0: the whole shorter side)
IMAGE_SIZE = 64  # side of the training images; a power of two >= 16
WORKERS = os.cpu_count() or 1  # processes decoding the images into the cache (done once)
REBUILD_CACHE = False  # decode the images again even when a matching cache exists
# --- model ---
LATENT_DIM = 100  # size of the noise vector z
NGF = 64  # generator width: channels of its last hidden layer (doubling towards z)
NDF = 64  # discriminator width: channels of its first layer (doubling towards the logit)
# --- optimisation ---
EPOCHS = 10  # passes over the training set
BATCH_SIZE = 128  # images per step
LR = 2e-4  # Adam learning rate of both networks
BETA1 = 0.5  # Adam beta1 (0.5, as in the DCGAN paper)
REAL_LABEL = 1.0  # target for real images (0.9 = one-sided label smoothing)
# --- run ---
SEED = 0  # seeds weights, shuffling and sampling
DETERMINISTIC = False  # only repeatable kernels, so a CUDA resume matches number for number (slower; see "Devices")
DEVICE = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
OUT_DIR = ""  # empty: outputs/DCGAN-CelebA (plus -fake for the fake data set)
RESUME = True  # continue from OUT_DIR/checkpoints/last.pt when it exists
SYNC_BN = False  # under torchrun on GPUs: BatchNorm statistics over all processes' batches
# --- speed (CUDA only: ignored on CPU and MPS; see "Speed" in the README) ---
AMP = False  # bf16 autocast of the forward passes and losses
CHANNELS_LAST = False  # NHWC weights and inputs for the convolutions
CUDNN_BENCHMARK = False  # let cuDNN time its convolution algorithms on the first batches
FUSED_ADAM = False  # Adam's update as one fused kernel
COMPILE = False  # torch.compile the networks (a slower first epoch)
# --- evaluation ---
FID_SAMPLES = 10000  # images for the Inception FID at the end of the run (0 disables)
INCEPTION_WEIGHTS = ""  # a local pt_inception-2015-12-05 weights file, for boxes without internet

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

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z.reshape(len(z), self.latent_dim, 1, 1))  # labels: unused (unconditional)


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

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).view(-1)


def init_weights(module: nn.Module) -> None:
    """The DCGAN initialisation: convolutions N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, mean=1.0, std=0.02)
        nn.init.zeros_(module.bias)


def build_models(
    cfg: dict, image_shape: tuple[int, int, int] = (3, 64, 64), n_classes: int = 0
) -> dict[str, nn.Module]:
    """The models of this script, sized by a config (used by main() and generate.py); unconditional."""
    channels, size = image_shape[0], image_shape[-1]
    generator = Generator(cfg["LATENT_DIM"], size, cfg["NGF"], channels)
    discriminator = Discriminator(size, cfg["NDF"], channels)
    generator.apply(init_weights)
    discriminator.apply(init_weights)
    return {"generator": generator, "discriminator": discriminator}


def d_step(
    generator: Generator,
    discriminator: Discriminator,
    opt_d: torch.optim.Optimizer,
    real: torch.Tensor,
    real_label: float,
    autocast: Autocast = nullcontext,
) -> tuple[float, float, float]:
    """One discriminator step on a real batch and as many fakes; returns loss, D(x), D(G(z))."""
    with autocast():  # forward and loss only: backward and the optimizer step run outside autocast
        z = torch.randn(len(real), generator.latent_dim, device=real.device)
        with torch.no_grad():
            fake = generator(z)
        logits_real = discriminator(real)
        logits_fake = discriminator(fake)
        loss_d = F.binary_cross_entropy_with_logits(
            logits_real, torch.full_like(logits_real, real_label, dtype=torch.float32)
        ) + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake, dtype=torch.float32))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return loss_d.item(), torch.sigmoid(logits_real).mean().item(), torch.sigmoid(logits_fake).mean().item()


def g_step(
    generator: Generator,
    discriminator: Discriminator,
    opt_g: torch.optim.Optimizer,
    batch_size: int,
    device_: torch.device,
    autocast: Autocast = nullcontext,
) -> float:
    """One generator step (non-saturating loss: make D call fresh fakes real)."""
    z = torch.randn(batch_size, generator.latent_dim, device=device_)
    # D's gradients from this backward are never used (d_step zeroes them before its own), so under
    # torchrun they stay local instead of being averaged across processes for nothing
    with distributed.no_sync(discriminator):
        with autocast():
            logits = discriminator(generator(z))
            loss_g = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits, dtype=torch.float32))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
    opt_g.step()
    return loss_g.item()


def slerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """Spherical interpolation [B, steps, D] between rows of z0 and z1 [B, D].

    Gaussian noise lives near a sphere; a straight line between two points cuts through its
    low-norm inside, which the generator never saw, so the path follows the great circle.
    """
    t = torch.linspace(0, 1, steps, device=z0.device).view(1, steps, 1)
    cos = F.cosine_similarity(z0, z1, dim=1).clamp(-1 + 1e-6, 1 - 1e-6).view(-1, 1, 1)
    omega = torch.acos(cos)
    return (torch.sin((1 - t) * omega) * z0[:, None] + torch.sin(t * omega) * z1[:, None]) / torch.sin(omega)


def main() -> None:
    cfg = config.setup(globals(), choices={"DATASET": celeba.DATASETS})
    config.check_positive(cfg, "WORKERS", "LATENT_DIM", "NGF", "NDF")
    if IMAGE_SIZE < 16 or IMAGE_SIZE & (IMAGE_SIZE - 1):
        config.fail(f"--image_size={IMAGE_SIZE} must be a power of two >= 16 (e.g. 32, 64, 128)")
    dist = distributed.setup(DEVICE, SYNC_BN)  # one process: just the device; under torchrun also the rank
    dev = dist.device
    device.seed_all(SEED + dist.rank, DETERMINISTIC)  # each process its own noise; DDP copies rank 0's initial weights
    with distributed.main_first():  # rank 0 builds the image cache once; the others then read it
        images = celeba.load(DATASET, DATA_DIR, IMAGE_DIR, DOWNLOAD, CROP, IMAGE_SIZE, WORKERS, dev, REBUILD_CACHE)
    batches = data.Batches(images, BATCH_SIZE, SEED, dist.rank, dist.world_size)  # this process's shard
    out = run.start(cfg, __file__, dev, shape_keys=SHAPE_KEYS)  # the last check: files are written from here on
    image_shape = (3, IMAGE_SIZE, IMAGE_SIZE)

    models = build_models(cfg, image_shape)
    speed = Speed.from_config(cfg, dev)  # the CUDA speed switches (all off elsewhere)
    generator, discriminator = (speed.prepare(models[k].to(dev)) for k in ("generator", "discriminator"))
    opt_g = speed.adam(generator.parameters(), LR, (BETA1, 0.999))
    opt_d = speed.adam(discriminator.parameters(), LR, (BETA1, 0.999))
    fixed_noise = torch.randn(64, LATENT_DIM, device=dev)
    history: list[dict] = []
    first_epoch = 1

    state = run.resume(out, cfg, SHAPE_KEYS)
    if state is not None:
        run.restore(
            state, {"generator": generator, "discriminator": discriminator}, {"opt_g": opt_g, "opt_d": opt_d}, LR
        )
        fixed_noise, history, first_epoch = state["fixed_noise"].to(dev), state["history"], state["epoch"] + 1
    # training goes through these (DDP under torchrun, else the models themselves); grids and
    # checkpoints use the plain modules. The discriminator runs twice (real, fake) before one
    # backward; DDP's default of copying rank 0's BatchNorm buffers before every forward would
    # overwrite, between the two, running statistics the first saved for backward (older PyTorch
    # fails with "modified by an inplace operation"). D never runs in eval mode, so its running
    # statistics are unused: each process keeps its own, and three broadcasts a step are saved
    ddp_g = speed.compiled(distributed.wrap(generator, sync_bn=SYNC_BN))
    ddp_d = speed.compiled(distributed.wrap(discriminator, sync_bn=SYNC_BN, sync_buffers=False))

    def snapshot(done: int) -> dict:
        """Everything a resume needs, after `done` complete epochs."""
        return {
            "config": cfg,
            "script": "DCGAN-CelebA.py",
            "image_shape": image_shape,
            "classes": (),
            "epoch": done,
            "models": {"generator": generator.state_dict(), "discriminator": discriminator.state_dict()},
            "optimizers": {"opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict()},
            "fixed_noise": fixed_noise,
            "rng": device.rng_state(),
        }

    guard = run.guard()  # Ctrl-C / SIGTERM: finish the step, save a checkpoint, exit 130 / 143
    for epoch in range(first_epoch, EPOCHS + 1):
        timer = Timer(dev)
        sums = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}
        skip = run.resume_epoch(state, epoch, sums, timer)  # steps of this epoch done before a stop
        with run.progress(batches.shard_size, epoch, EPOCHS, initial=skip * BATCH_SIZE) as bar:
            # batches come from the device, or from host memory when the images did not fit there
            for step, (real, _) in enumerate(batches.epoch(epoch, dev), start=1):
                if step <= skip:
                    continue
                real = speed.input(data.to_gan(real))
                loss_d, d_real, d_fake = d_step(ddp_g, ddp_d, opt_d, real, REAL_LABEL, speed.autocast)
                loss_g = g_step(ddp_g, ddp_d, opt_g, len(real), dev, speed.autocast)
                for key, value in zip(sums, (loss_d, loss_g, d_real, d_fake)):
                    sums[key] += value
                bar.update(len(real))
                bar.set_postfix(loss_d=f"{loss_d:.3f}", d_x=f"{d_real:.2f}", d_gz=f"{d_fake:.2f}", refresh=False)
                if guard.check(epoch, step, loss_d=loss_d, loss_g=loss_g):  # a NaN/inf loss exits here (code 3)
                    guard.stop(out, snapshot(epoch - 1), history, step, sums, timer.seconds())
        seconds = timer.seconds()

        if dist.is_main:
            generator.eval()
            with torch.no_grad():
                grid = generator(fixed_noise)
            generator.train()
            plots.save_grid(grid, out / "samples" / f"epoch_{epoch:03d}.png", nrow=8)

        row = {"epoch": epoch, **{k: v / len(batches) for k, v in sums.items()}}
        row.update(time_s=seconds, img_per_s=batches.shard_size / seconds)
        panels = [("losses", ("loss_d", "loss_g")), ("mean discriminator output", ("d_real", "d_fake"))]
        # every process calls this: it averages the row over them, and rank 0 writes
        run.end_epoch(out, history, row, panels, {**snapshot(epoch), "shard": run.shard(batches, epoch)}, EPOCHS)

    if dist.is_main:
        # 8 rows, each a walk between two random faces in 10 steps; its own seed, so reruns match
        gen = torch.Generator().manual_seed(SEED + 1)
        z0, z1 = torch.randn(2, 8, LATENT_DIM, generator=gen).to(dev)
        generator.eval()
        with torch.no_grad():
            walk = generator(slerp(z0, z1, 10).reshape(-1, LATENT_DIM))
        plots.save_grid(walk, out / "interpolation.png", nrow=10)
        if FID_SAMPLES:  # Inception FID, comparable with published CelebA 64x64 figures
            n = min(FID_SAMPLES, len(images))
            z = torch.randn(n, LATENT_DIM, generator=gen).to(dev)

            @torch.no_grad()
            def draw() -> torch.Tensor:  # called only when the Inception weights could be loaded
                fake = torch.cat([generator(z[i : i + 500]) for i in range(0, n, 500)])
                return fake.add(1).mul(127.5).round().clamp(0, 255).byte()

            value, message = metrics.inception_fid(images.images[:n], draw, INCEPTION_WEIGHTS, dev)
            print(message)
            if value is not None:
                plots.write_csv([{"epoch": EPOCHS, "n": n, "inception_fid": value}], out / "metrics.csv")
    print(f"Done: {out}/")


if __name__ == "__main__":
    main()
