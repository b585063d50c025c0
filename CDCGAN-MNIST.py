"""Conditional DCGAN on MNIST or Fashion-MNIST: ask for a class, get an image of it.

The DCGAN of DCGAN-MNIST.py with the class label fed to both networks (Mirza & Osindero, 2014):
the generator gets z together with a one-hot label, the discriminator gets the image together
with the label as ten constant planes, so it judges "is this a real image of class k".

    python CDCGAN-MNIST.py                           # 10 epochs on MNIST
    python CDCGAN-MNIST.py --dataset=fashion-mnist
    python generate.py outputs/CDCGAN-MNIST --label 7 --n 16    # afterwards: sixteen 7s

Writes to outputs/CDCGAN-MNIST/ (or OUT_DIR): config.json, samples/epoch_001.png ... (one row per
class, one shared noise vector per column, so each column is one "style" drawn as every class),
losses.csv and loss.png (G and D losses, mean D(x) and D(G(z))), progress.gif and
checkpoints/last.pt; every EVAL_EVERY epochs and at the last, metrics.csv, metrics.png and
pixel_histogram.png (classifier FID/KID/IS against their real-data floors, class coverage, and
"asked for k, drew k" accuracy).
Rerunning resumes; --epochs=N extends a finished run; Ctrl-C saves a checkpoint first.
"""

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from common import config, data, device, distributed, metrics, plots, run
from common.run import Timer
from common.speed import Autocast, Speed

# --- data ---
DATASET = "mnist"  # mnist | fashion-mnist | mnist-sample | fake
DATA_DIR = "data"  # where the data sets are (and are downloaded to)
DOWNLOAD = True  # download the data set when it is missing
# --- model ---
LATENT_DIM = 100  # size of the noise vector z
NGF = 64  # generator width: channels of its last hidden layer (the first has 4x)
NDF = 64  # discriminator width: channels of its first layer (the second has 2x)
# --- optimisation ---
EPOCHS = 10  # passes over the training set
BATCH_SIZE = 128  # images per step (why 128: "Larger batches" in the README)
LR = 4e-4  # Adam learning rate of both networks (2x the paper's 2e-4: measured better at batch 128)
BETA1 = 0.5  # Adam beta1 (0.5 is the DCGAN choice)
REAL_LABEL = 1.0  # target for real images (0.9 = one-sided label smoothing)
# --- run ---
SEED = 0  # seeds weights, shuffling and sampling
DETERMINISTIC = False  # only repeatable kernels, so a CUDA resume matches number for number (slower; see "Devices")
DEVICE = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
OUT_DIR = ""  # empty: outputs/CDCGAN-MNIST (plus -<dataset> for other data sets)
RESUME = True  # continue from OUT_DIR/checkpoints/last.pt when it exists
SYNC_BN = False  # under torchrun on GPUs: BatchNorm statistics over all processes' batches
# --- speed (CUDA only: ignored on CPU and MPS; see "Speed" in the README) ---
AMP = False  # bf16 autocast of the forward passes and losses
CHANNELS_LAST = False  # NHWC weights and inputs for the convolutions
CUDNN_BENCHMARK = False  # let cuDNN time its convolution algorithms on the first batches
FUSED_ADAM = False  # Adam's update as one fused kernel
COMPILE = False  # torch.compile the networks (a slower first epoch)
# --- evaluation ---
EVAL_EVERY = 1  # epochs between metric evaluations (the last epoch is always evaluated); 0 disables
EVAL_SAMPLES = 2000  # generated images scored per evaluation

SHAPE_KEYS = ("DATASET", "LATENT_DIM", "NGF", "NDF")  # resuming with other values refuses


def init_weights(module: nn.Module) -> None:
    """DCGAN init: convolutions N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


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
        self.apply(init_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(labels, self.n_classes).to(z.dtype)
        return self.net(torch.cat([z, one_hot], dim=1)[:, :, None, None])


class Discriminator(nn.Module):
    """images [B, C, 28, 28] + labels [B] -> real/fake logits [B]."""

    def __init__(self, n_classes: int = 10, ndf: int = 64, image_channels: int = 1):
        super().__init__()
        self.n_classes = n_classes
        self.net = nn.Sequential(
            # the label enters as n_classes constant planes beside the image
            nn.Conv2d(image_channels + n_classes, ndf, kernel_size=4, stride=2, padding=1),  # -> ndf x 14 x 14
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, 2 * ndf, kernel_size=4, stride=2, padding=1, bias=False),  # -> 2ndf x 7 x 7
            nn.BatchNorm2d(2 * ndf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * ndf, 1, kernel_size=7, stride=1, padding=0),  # -> 1 x 1 x 1
        )
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        planes = F.one_hot(labels, self.n_classes).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.net(torch.cat([x, planes], dim=1)).view(-1)


def build_models(
    cfg: dict, image_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10
) -> dict[str, nn.Module]:
    """The models of this script, sized by a config (used by main() and generate.py)."""
    return {
        "generator": Generator(cfg["LATENT_DIM"], n_classes, cfg["NGF"], image_shape[0]),
        "discriminator": Discriminator(n_classes, cfg["NDF"], image_shape[0]),
    }


def d_step(
    generator: Generator,
    discriminator: Discriminator,
    opt_d: torch.optim.Optimizer,
    real: torch.Tensor,
    labels: torch.Tensor,
    real_label: float,
    autocast: Autocast = nullcontext,
) -> tuple[float, float, float]:
    """One discriminator step on a real batch and fakes of the same classes; returns loss, D(x), D(G(z))."""
    with autocast():  # forward and loss only: backward and the optimizer step run outside autocast
        z = torch.randn(len(real), generator.latent_dim, device=real.device)
        with torch.no_grad():
            fake = generator(z, labels)
        logits_real, logits_fake = discriminator(real, labels), discriminator(fake, labels)
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
    """One generator step (non-saturating loss) on fresh noise and uniformly drawn classes."""
    z = torch.randn(batch_size, generator.latent_dim, device=device_)
    labels = torch.randint(0, generator.n_classes, (batch_size,), device=device_)
    # D's gradients from this backward are never used (d_step zeroes them before its own), so under
    # torchrun they stay local instead of being averaged across processes for nothing
    with distributed.no_sync(discriminator):
        with autocast():
            logits = discriminator(generator(z, labels), labels)
            loss_g = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits, dtype=torch.float32))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
    opt_g.step()
    return loss_g.item()


@torch.no_grad()
def sample_for_eval(
    generator: Generator, n: int, device_: torch.device, seed: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n images in [0, 1] from the same evaluation noise every time, and the classes asked for."""
    z, labels = metrics.eval_noise(n, generator.latent_dim, generator.n_classes, device_, seed)
    generator.eval()
    fake = torch.cat([generator(z[i : i + 500], labels[i : i + 500]) for i in range(0, n, 500)])
    generator.train()
    return fake.add(1).div(2), labels


def main() -> None:
    cfg = config.setup(globals(), choices={"DATASET": data.DATASETS})
    dist = distributed.setup(DEVICE, SYNC_BN)  # one process: just the device; under torchrun also the rank
    dev = dist.device
    device.seed_all(SEED + dist.rank, DETERMINISTIC)  # each process its own noise; DDP copies rank 0's initial weights
    with distributed.main_first():  # rank 0 downloads when needed; the others then read the files
        ds = data.load(DATASET, DATA_DIR, DOWNLOAD, dev)
    batches = data.Batches(ds.train, BATCH_SIZE, SEED, dist.rank, dist.world_size)  # this process's shard
    out = run.start(cfg, __file__, dev, ds.name, SHAPE_KEYS)  # the last check: files are written from here on
    evaluator = metrics.Evaluator.for_dataset(ds, DATA_DIR, dev) if EVAL_EVERY and dist.is_main else None

    models = build_models(cfg, ds.shape, len(ds.classes))
    speed = Speed.from_config(cfg, dev)  # the CUDA speed switches (all off elsewhere)
    generator, discriminator = (speed.prepare(models[k].to(dev)) for k in ("generator", "discriminator"))
    opt_g = speed.adam(generator.parameters(), LR, (BETA1, 0.999))
    opt_d = speed.adam(discriminator.parameters(), LR, (BETA1, 0.999))
    n_classes = len(ds.classes)  # one row per class, one shared noise vector per column
    fixed_noise = torch.randn(10, LATENT_DIM, device=dev).repeat(n_classes, 1)
    fixed_labels = torch.arange(n_classes, device=dev).repeat_interleave(10)
    history: list[dict] = []
    metric_history: list[dict] = []
    first_epoch = 1

    state = run.resume(out, cfg, SHAPE_KEYS)
    if state is not None:
        run.restore(
            state, {"generator": generator, "discriminator": discriminator}, {"opt_g": opt_g, "opt_d": opt_d}, LR
        )
        fixed_noise, history, first_epoch = state["fixed_noise"].to(dev), state["history"], state["epoch"] + 1
        metric_history = state.get("metrics", [])
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
            "script": "CDCGAN-MNIST.py",
            "image_shape": ds.shape,
            "classes": ds.classes,
            "epoch": done,
            "models": {"generator": generator.state_dict(), "discriminator": discriminator.state_dict()},
            "optimizers": {"opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict()},
            "fixed_noise": fixed_noise,
            "rng": device.rng_state(),
            "metrics": metric_history,
        }

    guard = run.guard()  # Ctrl-C / SIGTERM: finish the step, save a checkpoint, exit 130 / 143
    for epoch in range(first_epoch, EPOCHS + 1):
        timer = Timer(dev)
        sums = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}
        skip = run.resume_epoch(state, epoch, sums, timer)  # steps of this epoch done before a stop
        with run.progress(batches.shard_size, epoch, EPOCHS, initial=skip * BATCH_SIZE) as bar:
            for step, (images, labels) in enumerate(batches.epoch(epoch), start=1):
                if step <= skip:
                    continue
                real = speed.input(data.to_gan(images))
                loss_d, d_real, d_fake = d_step(ddp_g, ddp_d, opt_d, real, labels, REAL_LABEL, speed.autocast)
                loss_g = g_step(ddp_g, ddp_d, opt_g, len(images), dev, speed.autocast)
                for key, value in zip(sums, (loss_d, loss_g, d_real, d_fake)):
                    sums[key] += value
                bar.update(len(images))
                bar.set_postfix(loss_d=f"{loss_d:.3f}", loss_g=f"{loss_g:.3f}", d_x=f"{d_real:.2f}", refresh=False)
                if guard.check(epoch, step, loss_d=loss_d, loss_g=loss_g):  # a NaN/inf loss exits here (code 3)
                    guard.stop(out, snapshot(epoch - 1), history, step, sums, timer.seconds())
        seconds = timer.seconds()

        if dist.is_main:
            generator.eval()
            with torch.no_grad():
                grid = generator(fixed_noise, fixed_labels)
            plots.save_grid(grid, out / "samples" / f"epoch_{epoch:03d}.png", nrow=10, row_labels=ds.classes)
            generator.train()
            if evaluator and (epoch % EVAL_EVERY == 0 or epoch == EPOCHS):
                fake, asked = sample_for_eval(generator, EVAL_SAMPLES, dev, SEED)
                metrics.record(out, metric_history, epoch, evaluator, fake, asked)

        row = {"epoch": epoch, **{k: v / len(batches) for k, v in sums.items()}}
        row.update(time_s=seconds, img_per_s=batches.shard_size / seconds)
        panels = [("losses", ("loss_d", "loss_g")), ("mean discriminator output", ("d_real", "d_fake"))]
        # every process calls this: it averages the row over them, and rank 0 writes
        run.end_epoch(out, history, row, panels, {**snapshot(epoch), "shard": run.shard(batches, epoch)}, EPOCHS)
    print(f"Done: {out}/")


if __name__ == "__main__":
    main()
