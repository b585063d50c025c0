"""The latent density of a VAE's training codes: one Gaussian per class where its images lie in z.

At every evaluation and at the last epoch VAE-MNIST.py fits, for each class k, the mean and full
covariance of the posterior means of that class's training images; decoding z ~ N(mean_k, cov_k)
then draws class k (generate.py --label k), and region_acc scores how often it does. Mixed by the
classes' shares of the training images, the Gaussians are the VAE's sampler (SAMPLER="mixture"):
z from where the encoder puts the training images, not from the prior's N(0, I), whose draws land
in the "holes" between them (Ghosh et al., 2020; Chadebec & Allassonniere, 2022). The conditional
VAE gets the same fit of z given the class (its encoder is told the label): it decodes
z ~ N(mean_k, cov_k) with label k, where its prior's z would be N(0, I) for every class. The fit is kept
in the run's checkpoints under the keys class_latent_mean [K, D], class_latent_cov [K, D, D] and
class_latent_count [K] (images per class; all 0: never fitted). This module owns those keys: the
training script saves them through Run.fixed, generate.py reads them with from_checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from common import class_scores, data, evaluation

PREFIX = "class_latent_"  # the checkpoint keys: class_latent_mean, class_latent_cov, class_latent_count
NAMES = ("mean", "cov", "count")


def blank(n_classes: int, latent_dim: int) -> dict[str, torch.Tensor]:
    """The statistics before a fit: count 0 marks them unfitted (mean 0 and cov I are placeholders)."""
    return {
        "mean": torch.zeros(n_classes, latent_dim),
        "cov": torch.eye(latent_dim).repeat(n_classes, 1, 1),
        "count": torch.zeros(n_classes, dtype=torch.long),
    }


def from_checkpoint(state: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """A run's fitted statistics from its checkpoint on `device`; {} when it never fitted them (or predates them)."""
    latents = {name: state.get(f"{PREFIX}{name}") for name in NAMES}
    if any(t is None for t in latents.values()) or not latents["count"].any():
        return {}
    return {name: t.to(device) for name, t in latents.items()}


@torch.no_grad()
def posterior_means(vae: nn.Module, split: data.Split, batch_size: int = 1000) -> torch.Tensor:
    """The mean of q(z|x) for every image of a split, in eval mode: the encoder only, so nothing is sampled and
    training's random numbers stay as they were."""
    was_training = vae.training
    vae.eval()
    images = split.images
    labels = split.labels.to(images.device) if vae.n_classes else None  # a CVAE's encoder is told the class
    means = [
        vae.encoder(data.to_unit(images[i : i + batch_size]), None if labels is None else labels[i : i + batch_size])[0]
        for i in range(0, len(images), batch_size)
    ]
    vae.train(was_training)
    return torch.cat(means).float()


def fit(vae: nn.Module, split: data.Split, latents: dict[str, torch.Tensor], ridge: float = 1e-3) -> None:
    """Fit each class's Gaussian to the posterior means of its images in `split`, in place: mean [K, D], full
    covariance [K, D, D] plus ridge x I (positive definite even for a class of few images or a latent dimension
    the encoder does not use) and the images counted per class [K]."""
    means, labels = posterior_means(vae, split), split.labels.to(latents["mean"].device)
    eye = torch.eye(means.shape[1], device=means.device)
    for k in range(len(latents["count"])):
        of_k = means[labels == k]
        latents["count"][k] = len(of_k)
        latents["mean"][k] = of_k.mean(0) if len(of_k) else 0.0
        spread = torch.cov(of_k.T).reshape_as(eye) if len(of_k) > 1 else torch.zeros_like(eye)
        latents["cov"][k] = spread + ridge * eye


def place(latents: dict[str, torch.Tensor], eps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z = mean_k + L_k eps for each asked class k (L_k L_k^T = cov_k): eps ~ N(0, I) gives z ~ N(mean_k, cov_k)."""
    scale = torch.linalg.cholesky(latents["cov"])
    return latents["mean"][labels] + (scale[labels] @ eps.unsqueeze(-1)).squeeze(-1)


def fitted(latents: dict[str, torch.Tensor]) -> bool:
    """Whether the statistics hold a fit (a run fits them at its first evaluation)."""
    return bool(latents) and bool(latents["count"].any())


def components(latents: dict[str, torch.Tensor], u: torch.Tensor) -> torch.Tensor:
    """The class each of the uniform numbers u [B] in [0, 1) picks, with the classes' shares of the training
    images as probabilities: the mixture of the class Gaussians draws z from the class it picks."""
    shares = latents["count"].float() / latents["count"].sum()
    picked = torch.searchsorted(shares.cumsum(0), u.to(shares.device), right=True)
    return picked.clamp(max=len(shares) - 1)


def eval_choices(n: int, seed: int) -> torch.Tensor:
    """The uniform numbers that pick an evaluation's classes: the same for every evaluation of a seed, in the
    run and in generate.py --score (a generator of their own, apart from the evaluation noise's)."""
    return torch.rand(n, generator=torch.Generator().manual_seed(seed + 1))


def draw(
    vae: nn.Module, eps: torch.Tensor, labels: torch.Tensor | None, latents: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """Images in [0, 1] from noise eps [B, latent_dim]: of the classes `labels` when given, from their latent
    regions in `latents` (the VAE decodes them; a CVAE is told the class too; a CVAE without `latents` draws from
    its prior), else from the prior (used by generate.py)."""
    if labels is not None and (not vae.n_classes or fitted(latents or {})):
        return vae.sample(place(latents, eps, labels), labels if vae.n_classes else None)
    return vae.sample(eps, labels)


def sample(
    vae: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, u: torch.Tensor, latents: dict, sampler: str
) -> torch.Tensor:
    """Images in [0, 1] from noise z, once the class Gaussians are fitted and `sampler` is "mixture": a CVAE's of
    the classes `labels` from their Gaussians, an unconditional VAE's from their mixture (`u` picks each one's
    class); else from the prior N(0, I) (a CVAE given the classes)."""
    fit = latents if sampler == "mixture" and fitted(latents) else {}
    if labels is None and fit:
        labels = components(fit, u)
    return draw(vae, z, labels, fit)


@torch.no_grad()
def region_scores(
    vae: nn.Module, latents: dict[str, torch.Tensor], n: int, seed: int, evaluator: evaluation.Evaluator | None
) -> dict[str, float]:
    """region_acc of the unconditional VAE: how often "asked for k, drew k" for n images, a balanced share per
    class, decoded from the classes' latent regions and labelled by the evaluator's classifier.
    {} for a CVAE (no latents), whose label_acc is scored on the evaluation samples themselves."""
    if not latents or vae.n_classes or evaluator is None:
        return {}
    n_classes = len(latents["count"])
    eps, asked = evaluation.eval_noise(n, vae.latent_dim, n_classes, latents["mean"].device, seed)
    images = torch.cat([draw(vae, eps[i : i + 500], asked[i : i + 500], latents) for i in range(0, n, 500)])
    return {"region_acc": class_scores.label_accuracy(evaluator.predict(images), asked, n_classes)[0]}
