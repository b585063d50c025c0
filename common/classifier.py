"""The evaluator's classifier: a small CNN trained once per data set, whose penultimate layer is the
feature space of the classifier FID and KID and whose logits give the Inception Score.

No Inception network is needed for the MNIST family; see common/metrics.py for how it is used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common import data
from common.batches import Batches
from common.device import keep_rng

FEATURES = 128  # width of the classifier's penultimate layer, the FID/KID feature space
TRAIN_IMAGES = 32_000  # the classifier sees about this many images (2 to 8 epochs of its training split)
CHUNK = 500  # images per forward pass of the classifier


class Classifier(nn.Module):
    """A small CNN: images [B, C, H, W] in [0, 1] -> class logits [B, K]; `features` is the penultimate layer."""

    def __init__(self, n_classes: int = 10, image_shape: tuple[int, int, int] = (1, 28, 28), width: int = 16):
        super().__init__()
        c, h, w = image_shape
        self.num_features = FEATURES
        self.features = nn.Sequential(
            nn.Conv2d(c, width, kernel_size=3, padding=1),  # -> width x H x W
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # -> width x H/2 x W/2
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # -> 2width x H/4 x W/4
            nn.Flatten(),
            nn.Linear(2 * width * (h // 4) * (w // 4), FEATURES),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURES, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Penultimate(nn.Module):
    """The classifier's penultimate features, the `feature` module given to torchmetrics FID and KID."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = FEATURES  # torchmetrics reads this instead of probing with a dummy image

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x.float())


@torch.no_grad()
def batched(fn: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Apply a module to float images in chunks on `device`; the results are concatenated."""
    return torch.cat([fn(images[i : i + CHUNK].to(device).float()) for i in range(0, len(images), CHUNK)])


def accuracy(classifier: Classifier, split: data.Split, device: torch.device) -> float:
    """Fraction of a split's images the classifier labels correctly."""
    classifier.eval()
    pred = batched(classifier, data.to_unit(split.images), device).argmax(1).cpu()
    return (pred == split.labels.cpu()).float().mean().item()


def train_classifier(
    train: data.Split,
    test: data.Split,
    n_classes: int,
    device: torch.device | str = "cpu",
    epochs: int = 0,
    seed: int = 0,
    batch_size: int = 128,
) -> tuple[Classifier, float]:
    """Train the evaluator's classifier (0 epochs: enough for ~TRAIN_IMAGES images, 2 to 8); returns it and its test accuracy."""
    device = torch.device(device)
    epochs = epochs or min(8, max(2, math.ceil(TRAIN_IMAGES / len(train))))
    with keep_rng(device, seed):
        classifier = Classifier(n_classes, tuple(train.images.shape[1:])).to(device)
        opt = torch.optim.Adam(classifier.parameters(), lr=2e-3)
        batches = Batches(train.to(device), min(batch_size, len(train)), seed)
        bar = tqdm(total=epochs * len(train), desc="training the evaluator", unit="img", unit_scale=True, leave=False)
        for epoch in range(1, epochs + 1):
            for images, labels in batches.epoch(epoch):
                loss = F.cross_entropy(classifier(data.to_unit(images)), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update(len(images))
        bar.close()
    classifier.eval().requires_grad_(False)
    return classifier, accuracy(classifier, test, device)
