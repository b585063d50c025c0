"""Labels the model finds itself: k-means over the discriminator's features of the real images, for a
self-conditioned GAN (Liu et al., CVPR 2020, "Diverse Image Generation via Self-Conditioned GANs").

    found = clusters.attach(r, CLUSTERS, ds.train.images)         # the batches carry clusters, not labels
    for epoch in r.epochs(...):
        clusters.refit_when_due(r, found, features, generator, RECLUSTER)   # k-means of D's features
        for real, found_labels in r.batches(...): ...             # D and G conditioned on the clusters
    generator(z)                                                   # z picks a cluster: clusters.pick(z, shares)

G and D are conditioned on the cluster as a conditional GAN is on the label, so G maps one Gaussian
per cluster instead of one Gaussian onto ten separate digits (the blends between them are what an
unconditional G draws off the digits). The data set's labels are never read. Each refit's clusters
are renumbered to match the previous ones as far as they overlap, so G's condition keeps its meaning.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from common.batches import Split
from common.config import fail

ITERATIONS = 25  # Lloyd's iterations per fit (k-means on a few thousand points settles in far fewer)


def kmeans(points: torch.Tensor, k: int, seed: int, iterations: int = ITERATIONS) -> torch.Tensor:
    """Cluster indices [N] of points [N, F]: k-means++ seeding from `seed`, then Lloyd's iterations."""
    gen = torch.Generator().manual_seed(seed)
    points = points.float()
    first = int(torch.randint(len(points), (1,), generator=gen))
    centres = points[first : first + 1]
    nearest = torch.cdist(points, centres).squeeze(1).square()
    for _ in range(1, k):  # each next centre drawn in proportion to the squared distance to the nearest one
        pick = int(torch.multinomial(nearest.cpu() + 1e-12, 1, generator=gen))
        centres = torch.cat([centres, points[pick : pick + 1]])
        nearest = torch.minimum(nearest, torch.cdist(points, points[pick : pick + 1]).squeeze(1).square())
    for _ in range(iterations):
        assigned = torch.cdist(points, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assigned, points)
        counts = torch.bincount(assigned, minlength=k).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)  # an emptied cluster keeps its centre
    return torch.cdist(points, centres).argmin(1)


def matched(new: torch.Tensor, old: torch.Tensor, k: int) -> torch.Tensor:
    """`new` renumbered so that each of its clusters takes the old number it shares the most images with
    (greedy on the overlap counts, largest first)."""
    overlap = torch.zeros(k, k, dtype=torch.long, device=new.device)
    overlap.index_put_((new, old), torch.ones_like(new), accumulate=True)
    mapping = torch.full((k,), -1, dtype=torch.long, device=new.device)
    taken = torch.zeros(k, dtype=torch.bool, device=new.device)
    for flat in overlap.flatten().argsort(descending=True).tolist():
        i, j = divmod(flat, k)
        if mapping[i] < 0 and not taken[j]:
            mapping[i], taken[j] = j, True
    return mapping[new]


def pick(z: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
    """A cluster for each noise vector [B, D], in proportion to the clusters' shares [k], picked by z's last
    coordinate (through the normal CDF): the same z always draws the same cluster."""
    u = torch.special.ndtr(z[:, -1].float()).contiguous()
    return torch.searchsorted(torch.cumsum(shares.float(), 0), u).clamp(max=len(shares) - 1)


def due(epoch: int, images_per_epoch: int, every: int) -> bool:
    """Whether the clusters are fitted again before `epoch`: before the first, then once `every` more images
    have been seen (counted in images, so the sample and full MNIST refit alike)."""
    return epoch == 1 or (epoch - 1) * images_per_epoch // every > (epoch - 2) * images_per_epoch // every


class Clusters:
    """The cluster of every training image, kept for the whole run (a checkpoint holds it)."""

    def __init__(self, k: int, n_images: int, device: torch.device | str):
        self.k = k
        self.labels = torch.zeros(n_images, dtype=torch.long, device=device)

    @torch.no_grad()
    def refit(
        self, features: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, seed: int, batch: int = 500
    ) -> torch.Tensor:
        """Cluster the images (uint8, the training split) by `features(batch)`, renumbered to match the last fit;
        returns each cluster's share of the images [k]."""
        found = torch.cat([features(images[i : i + batch]).flatten(1).float() for i in range(0, len(images), batch)])
        new = kmeans(found, self.k, seed).to(self.labels.device)
        self.labels.copy_(matched(new, self.labels, self.k))
        return torch.bincount(self.labels, minlength=self.k).float() / len(self.labels)


def attach(r: Any, k: int, images: torch.Tensor) -> Clusters | None:
    """A run's clusters of its training images (a run.Run's), kept in its checkpoints: the batches carry them
    instead of the data set's labels, which are never read. None when k is 0 (no self-conditioning)."""
    if not k:
        return None
    if k > len(images):
        fail(f"--clusters={k} is more clusters than the {len(images)} training images; use at most {len(images)}")
    found = Clusters(k, len(images), images.device)
    r.fixed("clusters", found.labels)  # a resume restores them in place
    r.data.split = Split(images, found.labels)
    return found


def refit_when_due(
    r: Any, found: Clusters | None, discriminator: nn.Module, features: Callable, generator: nn.Module, every: int
) -> None:
    """Fit the clusters again when due, at a fresh epoch's start (a resume inside an epoch keeps its fit): from
    `features(d, images)` of a copy of D in train mode, with batch statistics as in training. G's `shares`
    buffer gets the new shares, which its z picks clusters by."""
    per_epoch = len(r.data) * r.data.batch_size * r.dist.world_size
    if found is None or r.now.skip or not due(r.epoch, per_epoch, every):
        return
    trunk = copy.deepcopy(discriminator).train()
    shares = found.refit(lambda x: features(trunk, x), r.data.split.images, r.cfg["SEED"] * 1000 + r.epoch)
    generator.shares.copy_(shares)
