"""What the evaluator's classifier says of a batch of samples, and their pixels: which classes are
drawn and how often (coverage, shares, KL to uniform), whether the asked class was drawn (label
accuracy), and the entropy of each image's intensity histogram. Plain functions of predictions.
"""

from __future__ import annotations

import math

import torch

COVERAGE_SHARE = 0.5  # a class is covered when it gets at least this fraction of its fair share 1/K
CLASS_OK = 0.8  # a conditional model's class is called weak when it draws the asked class less often than this


def pixel_entropy(images: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of each image's 256-bin intensity histogram; images [N, ...] in [0, 1] -> [N]."""
    levels = images.detach().flatten(1).clamp(0, 1).mul(255).round().long()
    counts = torch.zeros(len(levels), 256, device=levels.device).scatter_add_(
        1, levels, torch.ones_like(levels, dtype=torch.float)
    )
    p = counts / counts.sum(1, keepdim=True)
    return -(p * torch.log2(p.clamp_min(1e-12))).sum(1)


def class_shares(pred: torch.Tensor, n_classes: int) -> list[float]:
    """The fraction of samples the classifier puts in each class (a digit dying shows as a share near 0)."""
    return (torch.bincount(pred.cpu(), minlength=n_classes).float() / max(len(pred), 1)).tolist()


def class_coverage(pred: torch.Tensor, n_classes: int, share: float = COVERAGE_SHARE) -> tuple[int, float]:
    """(classes drawn at least `share` x 1/K of the time, KL in nats of the predicted class histogram to uniform)."""
    p = torch.bincount(pred.cpu(), minlength=n_classes).float() / len(pred)
    covered = int((p >= share / n_classes).sum())
    kl = (p * torch.log(p.clamp_min(1e-12) * n_classes)).sum().item()
    return covered, kl


def label_accuracy(pred: torch.Tensor, asked: torch.Tensor, n_classes: int) -> tuple[float, list[float]]:
    """How often "asked for k, drew k": the mean over classes and each class's accuracy (nan if never asked)."""
    pred, asked = pred.cpu(), asked.cpu()
    per_class = [
        (pred[asked == k] == k).float().mean().item() if (asked == k).any() else float("nan") for k in range(n_classes)
    ]
    asked_classes = [a for a in per_class if not math.isnan(a)]
    return sum(asked_classes) / max(len(asked_classes), 1), per_class


def label_verdict(mean: float, per_class: list[float], classes: tuple[str, ...]) -> str:
    """A few words on a conditional model's label accuracy: the weak classes, or that it ignores its labels."""
    if mean < 2 / len(classes):  # chance is 1/K: the samples do not follow the asked class
        return "the model looks to ignore its labels"
    weak = [f"{c} {a:.0%}" for c, a in zip(classes, per_class, strict=True) if a < CLASS_OK]
    return f"under {CLASS_OK:.0%}: {', '.join(weak)}" if weak else f"every class at least {CLASS_OK:.0%}"
