"""The GAN: the training step that the four GAN scripts share and its pieces (the DCGAN initialisation,
the losses, a network frozen during the other network's step), and the warning that D has won.

    for images, labels in r.batches(data.to_gan):    # a conditional model passes labels, the others None
        r.log(**steps.d_step(generator, discriminator, opt_d, real, labels, REAL_LABEL, r.autocast))
        r.log(loss_g=steps.g_step(generator, discriminator, opt_g, len(real), n_classes, r.autocast))

The algorithm is the non-saturating GAN of Goodfellow et al. (2014): D learns to tell the real
batch from as many fakes by binary cross-entropy; G learns to make D call its fakes real. A
conditional model (Mirza & Osindero, 2014) gives both networks the label: real images with their
own labels, fakes of the same labels in D's step and of random labels in G's.

Every value a step returns stays a device tensor: reading it (`.item()`) would make the host wait
for the GPU at every step; the run helper sums them on the device and reads them rarely.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common import distributed
from common.augment import Augment
from common.speed import Autocast
from common.training import update

# D has won when, over a whole epoch, it scores fakes below WON_FAKE and reals above WON_REAL on average:
# G then gets almost no gradient. The measured DCGAN-MNIST runs stay near 0.2 and 0.8 (docs/devices.md)
WON_FAKE, WON_REAL = 0.02, 0.98


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN initialisation (Radford et al.), for `model.apply`: convolutions N(0, 0.02); BatchNorm
    scale N(1, 0.02), shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, mean=1.0, std=0.02)
        nn.init.zeros_(module.bias)


def d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """The discriminator's BCE: real images towards `real_label` (0.9 = one-sided smoothing), fakes towards 0.

    Logits and targets are float32 whatever the logits' dtype: under bf16 autocast a target made
    like the logits would be bf16, where 0.9 is 0.8984.
    """
    logits_real, logits_fake = logits_real.float(), logits_fake.float()
    real = torch.full(logits_real.shape, real_label, dtype=torch.float32, device=logits_real.device)
    fake = torch.zeros(logits_fake.shape, dtype=torch.float32, device=logits_fake.device)
    return F.binary_cross_entropy_with_logits(logits_real, real) + F.binary_cross_entropy_with_logits(logits_fake, fake)


def g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's non-saturating loss: make the discriminator call its fakes real (a float32 target of 1)."""
    logits_fake = logits_fake.float()
    return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))


def split(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A discriminator's output as (real/fake logits, class logits or None): a D with a class head
    (an auxiliary classifier, Odena et al. 2017) returns both."""
    return out if isinstance(out, tuple) else (out, None)


def class_loss(class_logits: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor | float:
    """The auxiliary classifier's cross-entropy against the labels (0 for a D without a class head)."""
    if class_logits is None or labels is None:
        return 0.0
    return F.cross_entropy(class_logits.float(), labels)


def mean_prob(logits: torch.Tensor) -> torch.Tensor:
    """The mean sigmoid of a batch of logits (D(x) or D(G(z))), a detached device scalar."""
    return torch.sigmoid(logits.detach().float()).mean()


def d_step(
    generator: nn.Module,
    discriminator: nn.Module,
    opt_d: torch.optim.Optimizer,
    real: torch.Tensor,
    labels: torch.Tensor | None = None,
    real_label: float = 1.0,
    autocast: Autocast = nullcontext,
    augment: Augment | None = None,
    r1: float = 0.0,
) -> dict[str, torch.Tensor]:
    """One discriminator step on a real batch and as many fakes (of the same labels when `labels` is given).
    A D with a class head also learns to name the real images' classes. `augment` (common/augment.py)
    transforms both batches before D sees them; the labels are never augmented.

    `r1` above 0 adds R1 (Mescheder et al., 2018): r1 / 2 times the mean squared gradient of D's logit at the
    real images (the augmented ones, when augmented).

    Returns device tensors: loss_d, and d_real, d_fake, the mean D(x) and D(G(z)).
    """
    given = () if labels is None else (labels,)
    z = torch.randn(len(real), generator.latent_dim, device=real.device)
    with autocast():  # forward and loss only: backward and the optimizer step run outside autocast
        with torch.no_grad():  # G's weights get no gradient in D's step
            fake = generator(z, *given)
        if augment is not None:
            real, fake = augment(real), augment(fake)
        if r1:  # D's gradient at these images; a copy, not a leaf: bench.py's FlopCounterMode follows it then
            real = real.detach().requires_grad_(True).clone()
        logits_real, classes_real = split(discriminator(real, *given))
        logits_fake, _ = split(discriminator(fake, *given))
        # a class head learns from real images only: trained on fakes it would learn to pass G's mistakes
        loss_d = d_loss(logits_real, logits_fake, real_label) + class_loss(classes_real, labels)
        if r1:
            (slope,) = torch.autograd.grad(logits_real.float().sum(), real, create_graph=True)
            loss_d = loss_d + r1 / 2 * slope.float().square().flatten(1).sum(1).mean()
    update(opt_d, loss_d)
    return {"loss_d": loss_d.detach(), "d_real": mean_prob(logits_real), "d_fake": mean_prob(logits_fake)}


def g_step(
    generator: nn.Module,
    discriminator: nn.Module,
    opt_g: torch.optim.Optimizer,
    batch_size: int,
    n_classes: int = 0,
    autocast: Autocast = nullcontext,
    augment: Augment | None = None,
    labels: torch.Tensor | None = None,
    keep: float = 1.0,
) -> torch.Tensor:
    """One generator step with the non-saturating loss on fresh noise (and random labels when n_classes, or
    `labels` when given: a self-conditioned GAN's clusters, as often as the real images have them); its loss.
    Against a D with a class head G also learns to make it name the asked class. `augment` transforms the
    fakes on their way into D (G's gradient flows back through it), as in D's step. `keep` below 1: G learns
    only from that share of its fakes, those D rates most real (top-k training, Sinha et al. 2020)."""
    device = next(generator.parameters()).device
    z = torch.randn(batch_size, generator.latent_dim, device=device)
    if labels is None and n_classes:
        labels = torch.randint(0, n_classes, (batch_size,), device=device)
    given = () if labels is None else (labels,)
    with frozen(discriminator):  # gradients flow through D to G, but none are kept for D's weights
        with autocast():
            fake = generator(z, *given)
            logits_fake, classes_fake = split(discriminator(fake if augment is None else augment(fake), *given))
            loss_g = g_loss(top(logits_fake, keep)) + class_loss(classes_fake, given[0] if given else None)
        update(opt_g, loss_g)
    return loss_g.detach()


def top(logits: torch.Tensor, keep: float) -> torch.Tensor:
    """The share `keep` of the logits [B] that are highest (at least one): the fakes D rates most real."""
    return logits if keep >= 1 else logits.topk(max(1, round(keep * len(logits)))).values


def top_k_share(floor: float, step: int, every: int = 10) -> float:
    """Top-k's share of the batch at a step (from 1): 1, shrinking by 1% every `every` steps down to `floor`.
    The paper shrinks it by 1% an epoch of CIFAR; its few thousand steps here are compressed: a floor of
    0.5 is reached after 690 steps (epoch 23 of the sample's 60, the middle of full MNIST's second)."""
    return max(floor, 0.99 ** ((step - 1) // every))


def r1_weight(r1: float, every: int, step: int) -> float:
    """R1's weight at a D step (from 1), applied lazily (StyleGAN2's lazy regularisation, Karras et al. 2020):
    on every `every`-th step only, `every` times as strong, so its mean pull is R1's and its second backward
    through D costs 1/`every` of a step's. `every` 1: R1 at every step."""
    return r1 * every if r1 and (step - 1) % every == 0 else 0.0


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Inside, the model's weights take no gradient: a backward through it computes only what flows
    to its input (G's step computes no D weight gradients it would throw away), and under DDP
    nothing is all-reduced for it (no_sync), since no gradient arrives to reduce."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with distributed.no_sync(model):
            yield
    finally:
        for p in params:
            p.requires_grad_(True)


def collapsed(row: dict[str, Any]) -> str:
    """A one-line warning when an epoch's mean D outputs say the discriminator has won, else ""."""
    fake, real = row.get("d_fake"), row.get("d_real")
    if fake is None or real is None or not (fake < WON_FAKE and real > WON_REAL):
        return ""
    return (
        f"warning: epoch {row['epoch']}: the discriminator has won (mean D(G(z)) {fake:.3g} < {WON_FAKE}, "
        f"D(x) {real:.3g} > {WON_REAL}); the generator learns little from here (try a lower --lr_d or --augment)"
    )


def optimizers(cfg: dict[str, Any]) -> dict[str, tuple[str, float, tuple[float, float]]]:
    """The GAN scripts' Adam optimizers by checkpoint name, in creation order: (the model it trains, its rate,
    its betas): G at LR, D at its own LR_D, both with BETA1."""
    betas = (cfg["BETA1"], 0.999)
    return {"opt_g": ("generator", cfg["LR"], betas), "opt_d": ("discriminator", cfg["LR_D"], betas)}


def lr_factor(decay: float, step: int, total: int) -> float:
    """The learning rates' factor at a step (from 1) of a run of `total` steps: 1, then over the run's last
    `decay` share falling linearly, to 1 / (decay * total) at its last step (0: 1 throughout)."""
    steps = decay * total
    return min(1.0, (total - step + 1) / steps) if steps >= 1 else 1.0


def anneal(opts: dict[str, torch.optim.Optimizer], cfg: dict[str, Any], step: int, total: int) -> None:
    """Sets each optimizer's rate to its constant's (LR, LR_D) times lr_factor at LR_DECAY: a function of the
    step alone, so a resume (or a changed --lr) continues the same schedule."""
    factor = lr_factor(cfg["LR_DECAY"], step, total)
    for name, (_, lr, _) in optimizers(cfg).items():
        for group in opts[name].param_groups:
            group["lr"] = lr * factor


def averages(cfg: dict[str, Any]) -> dict[str, tuple[str, float]]:
    """The moving average of G's weights a script keeps, by checkpoint name: (the model averaged, its decay);
    none at EMA=0."""
    return {"generator_ema": ("generator", cfg["EMA"])} if cfg["EMA"] else {}
