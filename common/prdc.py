"""Precision, recall, density and coverage of generated images in a feature space, from k-nearest-neighbour balls.

Precision (Kynkäänniemi et al. 2019): the fraction of fake points inside some real point's k-NN ball
(fidelity); recall: the fraction of real points inside some fake point's ball (diversity). Density
and coverage (Naeem et al. 2020) are sturdier against outliers: density counts how many real balls
hold each fake point, divided by k (about 1 for real data, above 1 when fakes crowd dense regions);
coverage is the fraction of real points whose own ball holds at least one fake point.

    prdc.scores(real_features, fake_features)   # {"precision", "recall", "density", "coverage"}

A ball's radius is the distance from its centre to the k-th nearest other point of the same set.
Distances are computed in chunks of rows on torch.cdist, so 10,000 x 10,000 never sits in memory at once.
"""

from __future__ import annotations

import torch

K = 5  # neighbours that set a ball's radius: the papers' choice
CHUNK = 1024  # rows of a distance matrix computed at once (CHUNK x N floats)


def radii(points: torch.Tensor, k: int = K) -> torch.Tensor:
    """Distance from each point [N, D] to its k-th nearest other point of the set -> [N]."""
    out = [
        torch.cdist(points[i : i + CHUNK], points).kthvalue(k + 1, dim=1).values for i in range(0, len(points), CHUNK)
    ]
    return torch.cat(out)  # k + 1: the nearest is the point itself, at distance 0


@torch.no_grad()
def scores(real: torch.Tensor, fake: torch.Tensor, k: int = K) -> dict[str, float]:
    """Precision, recall, density and coverage of fake features [M, D] against real features [N, D]."""
    real, fake = real.double(), fake.double()  # float64: a distance equal to a radius stays equal
    real_radii, fake_radii = radii(real, k), radii(fake, k)
    in_real_ball = torch.zeros(len(fake), dtype=torch.long, device=fake.device)  # how many real balls hold fake j
    recalled = covered = 0
    for i in range(0, len(real), CHUNK):
        dist = torch.cdist(real[i : i + CHUNK], fake)  # [chunk of real, M]
        inside = dist <= real_radii[i : i + CHUNK, None]  # fake j in the ball of real i
        in_real_ball += inside.sum(0)
        covered += int(inside.any(1).sum())
        recalled += int((dist <= fake_radii[None, :]).any(1).sum())  # real i in some fake ball
    return {
        "precision": (in_real_ball > 0).double().mean().item(),
        "recall": recalled / len(real),
        "density": in_real_ball.double().sum().item() / (k * len(fake)),
        "coverage": covered / len(real),
    }
