"""Generative adversarial network (Goodfellow et al., 2014) with fully connected networks.

With CONDITIONAL=True it is a conditional GAN (Mirza & Osindero, 2014): the class label is fed to
both networks, and the sample grid has one row per class.

    python GAN-MNIST.py                              # 30 epochs on MNIST
    python GAN-MNIST.py --conditional=True           # class-conditional, to outputs/GAN-MNIST-conditional
    python GAN-MNIST.py --help                       # every constant, its default and meaning

Writes to outputs/GAN-MNIST/ (or OUT_DIR): config.json, samples/epoch_001.png ... (a fixed noise
batch, comparable across epochs), losses.csv and loss.png (G and D losses, mean D(x) and
D(G(z))), progress.gif and checkpoints/last.pt. Every EVAL_EVERY epochs and at the last: metrics.csv
and metrics.png (classifier FID, KID, IS, class coverage, pixel entropy; label accuracy when
conditional) and pixel_histogram.png. Rerunning resumes; --epochs=N extends a finished run.
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
HIDDEN = 256  # width of the narrowest hidden layer (the others are 2x and 4x)
CONDITIONAL = False  # feed class labels to both networks (a conditional GAN)
# --- optimisation ---
EPOCHS = 30  # passes over the training set
BATCH_SIZE = 64  # images per step
LR = 2e-4  # Adam learning rate of both networks
BETA1 = 0.5  # Adam beta1 (0.5 is the usual GAN choice)
K_STEPS = 1  # discriminator steps per generator step
REAL_LABEL = 1.0  # target for real images (0.9 = one-sided label smoothing)
# --- run ---
SEED = 0  # seeds weights, shuffling and sampling
DETERMINISTIC = False  # only repeatable kernels, so a CUDA resume matches number for number (slower; see "Devices")
DEVICE = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
OUT_DIR = ""  # empty: outputs/GAN-MNIST (plus -<dataset>, -conditional)
RESUME = True  # continue from OUT_DIR/checkpoints/last.pt when it exists
SYNC_BN = False  # under torchrun on GPUs: BatchNorm statistics over all processes' batches
# --- speed (CUDA only: ignored on CPU and MPS; see "Speed" in the README) ---
AMP = False  # bf16 autocast of the forward passes and losses
FUSED_ADAM = False  # Adam's update as one fused kernel
COMPILE = False  # torch.compile the networks (a slower first epoch)
# --- evaluation ---
EVAL_EVERY = 1  # epochs between metric evaluations (the last epoch is always evaluated); 0 disables
EVAL_SAMPLES = 2000  # generated images scored per evaluation

SHAPE_KEYS = ("DATASET", "LATENT_DIM", "HIDDEN", "CONDITIONAL")  # resuming with other values refuses


class Generator(nn.Module):
    """z [B, latent_dim] (+ labels [B]) -> images [B, C, H, W] in [-1, 1]."""

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], hidden: int = 256, n_classes: int = 0):
        super().__init__()
        self.latent_dim, self.image_shape, self.n_classes = latent_dim, image_shape, n_classes

        def block(n_in: int, n_out: int) -> list[nn.Module]:
            return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out, momentum=0.1), nn.LeakyReLU(0.2, inplace=True)]

        self.net = nn.Sequential(
            *block(latent_dim + n_classes, hidden),
            *block(hidden, 2 * hidden),
            *block(2 * hidden, 4 * hidden),
            nn.Linear(4 * hidden, image_shape[0] * image_shape[1] * image_shape[2]),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes:
            z = torch.cat([z, F.one_hot(labels, self.n_classes).to(z.dtype)], dim=1)
        return self.net(z).view(-1, *self.image_shape)


class Discriminator(nn.Module):
    """images [B, C, H, W] (+ labels [B]) -> real/fake logits [B]."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: int = 256, n_classes: int = 0):
        super().__init__()
        self.n_classes = n_classes
        n_pixels = image_shape[0] * image_shape[1] * image_shape[2]
        self.net = nn.Sequential(
            nn.Linear(n_pixels + n_classes, 2 * hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(2 * hidden, hidden),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = x.flatten(1)
        if self.n_classes:
            x = torch.cat([x, F.one_hot(labels, self.n_classes).to(x.dtype)], dim=1)
        return self.net(x).squeeze(1)


def build_models(
    cfg: dict, image_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10
) -> dict[str, nn.Module]:
    """The models of this script, sized by a config (used by main() and generate.py)."""
    n_classes = n_classes if cfg["CONDITIONAL"] else 0
    return {
        "generator": Generator(cfg["LATENT_DIM"], image_shape, cfg["HIDDEN"], n_classes),
        "discriminator": Discriminator(image_shape, cfg["HIDDEN"], n_classes),
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
    """One discriminator step on a real batch and as many fakes; returns loss, D(x), D(G(z))."""
    with autocast():  # forward and loss only: backward and the optimizer step run outside autocast
        z = torch.randn(len(real), generator.latent_dim, device=real.device)
        with torch.no_grad():
            fake = generator(z, labels)
        logits_real = discriminator(real, labels)
        logits_fake = discriminator(fake, labels)
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
    """One generator step (non-saturating loss) on fresh noise and random labels."""
    z = torch.randn(batch_size, generator.latent_dim, device=device_)
    labels = torch.randint(0, max(generator.n_classes, 1), (batch_size,), device=device_)
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
    """n images in [0, 1] from the same evaluation noise every time, and the labels asked for (conditional)."""
    z, labels = metrics.eval_noise(n, generator.latent_dim, generator.n_classes, device_, seed)
    generator.eval()
    fake = torch.cat(
        [generator(z[i : i + 500], None if labels is None else labels[i : i + 500]) for i in range(0, n, 500)]
    )
    generator.train()
    return fake.add(1).div(2), labels


def main() -> None:
    cfg = config.setup(globals(), choices={"DATASET": data.DATASETS})
    config.check_positive(cfg, "K_STEPS")
    if not OUT_DIR and CONDITIONAL:
        cfg["OUT_DIR"] = f"{run.default_out_dir(__file__, DATASET)}-conditional"
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
    if CONDITIONAL:  # one row per class, one shared noise vector per column
        n_classes = len(ds.classes)
        fixed_noise = torch.randn(10, LATENT_DIM, device=dev).repeat(n_classes, 1)
        fixed_labels = torch.arange(n_classes, device=dev).repeat_interleave(10)
    else:
        fixed_noise = torch.randn(64, LATENT_DIM, device=dev)
        fixed_labels = None
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
    # checkpoints use the plain modules. See DCGAN-MNIST.py for why D's buffers are not synced.
    ddp_g = speed.compiled(distributed.wrap(generator, sync_bn=SYNC_BN))
    ddp_d = speed.compiled(distributed.wrap(discriminator, sync_bn=SYNC_BN, sync_buffers=False))

    def snapshot(done: int) -> dict:
        """Everything a resume needs, after `done` complete epochs."""
        return {
            "config": cfg,
            "script": "GAN-MNIST.py",
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
        sums = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0, "n_g": 0}
        skip = run.resume_epoch(state, epoch, sums, timer)  # steps of this epoch done before a stop
        with run.progress(batches.shard_size, epoch, EPOCHS, initial=skip * BATCH_SIZE) as bar:
            for step, (images, labels) in enumerate(batches.epoch(epoch), start=1):
                if step <= skip:
                    continue
                real = data.to_gan(images)
                loss_d, d_real, d_fake = d_step(ddp_g, ddp_d, opt_d, real, labels, REAL_LABEL, speed.autocast)
                for key, value in zip(("loss_d", "d_real", "d_fake"), (loss_d, d_real, d_fake)):
                    sums[key] += value
                losses = {"loss_d": loss_d}
                if step % K_STEPS == 0:
                    losses["loss_g"] = g_step(ddp_g, ddp_d, opt_g, len(images), dev, speed.autocast)
                    sums["loss_g"] += losses["loss_g"]
                    sums["n_g"] += 1
                bar.update(len(images))
                bar.set_postfix(loss_d=f"{loss_d:.3f}", d_x=f"{d_real:.2f}", d_gz=f"{d_fake:.2f}", refresh=False)
                if guard.check(epoch, step, **losses):  # a NaN/inf loss exits here (code 3)
                    guard.stop(out, snapshot(epoch - 1), history, step, sums, timer.seconds())
        seconds = timer.seconds()

        if dist.is_main:
            generator.eval()
            with torch.no_grad():
                grid = generator(fixed_noise, fixed_labels)
            generator.train()
            row_labels = ds.classes if CONDITIONAL else None
            nrow = 10 if CONDITIONAL else 8
            plots.save_grid(grid, out / "samples" / f"epoch_{epoch:03d}.png", nrow=nrow, row_labels=row_labels)
            if evaluator and (epoch % EVAL_EVERY == 0 or epoch == EPOCHS):
                fake, asked = sample_for_eval(generator, EVAL_SAMPLES, dev, SEED)
                metrics.record(out, metric_history, epoch, evaluator, fake, asked)

        row = {
            "epoch": epoch,
            "loss_d": sums["loss_d"] / len(batches),
            "loss_g": sums["loss_g"] / max(sums["n_g"], 1),
            "d_real": sums["d_real"] / len(batches),
            "d_fake": sums["d_fake"] / len(batches),
            "time_s": seconds,
            "img_per_s": batches.shard_size / seconds,
        }
        panels = [("losses", ("loss_d", "loss_g")), ("mean discriminator output", ("d_real", "d_fake"))]
        # every process calls this: it averages the row over them, and rank 0 writes
        run.end_epoch(out, history, row, panels, {**snapshot(epoch), "shard": run.shard(batches, epoch)}, EPOCHS)
    print(f"Done: {out}/")


if __name__ == "__main__":
    main()
