"""The evaluator's classifier: a small CNN trained once per data set, whose penultimate layer is the
feature space of the classifier FID and KID and whose logits give the Inception Score.

No Inception network is needed for the MNIST family; see common/evaluation.py for how it is used.
"""

from __future__ import annotations

import hashlib
import io
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common import data
from common.batches import Batches
from common.config import fail
from common.device import keep_rng

FEATURES = 128  # width of the classifier's penultimate layer, the FID/KID feature space
TRAIN_IMAGES = 32_000  # the classifier sees about this many images (2 to 8 epochs of its training split)
CHUNK = 500  # images per forward pass of the classifier
WIDTH = 16  # channels of the first convolution


class Classifier(nn.Module):
    """A small CNN: images [B, C, H, W] in [0, 1] -> class logits [B, K]; `features` is the penultimate layer."""

    def __init__(self, n_classes: int = 10, image_shape: tuple[int, int, int] = (1, 28, 28), width: int = WIDTH):
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
    cosine: bool = False,
) -> tuple[Classifier, float]:
    """Train the evaluator's classifier (0 epochs: enough for ~TRAIN_IMAGES images, 2 to 8); returns it and its
    test accuracy. `cosine` anneals the learning rate to 0 over the epochs (the shipped MNIST evaluator)."""
    device = torch.device(device)
    epochs = epochs or min(8, max(2, math.ceil(TRAIN_IMAGES / len(train))))
    with keep_rng(device, seed):
        classifier = Classifier(n_classes, tuple(train.images.shape[1:])).to(device)
        opt = torch.optim.Adam(classifier.parameters(), lr=2e-3)
        batches = Batches(train.to(device), min(batch_size, len(train)), seed)
        steps = epochs * len(batches)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
        bar = tqdm(total=epochs * len(train), desc="training the evaluator", unit="img", unit_scale=True, leave=False)
        for epoch in range(1, epochs + 1):
            for images, labels in batches.epoch(epoch):
                loss = F.cross_entropy(classifier(data.to_unit(images)), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if schedule is not None:
                    schedule.step()
                bar.update(len(images))
        bar.close()
    classifier.eval().requires_grad_(False)
    return classifier, accuracy(classifier, test, device)


# ----------------------------------------------------------------------------------------------------
# The shipped MNIST evaluator: trained once on full MNIST's training split without the sample's digits

SHIPPED = Path(__file__).with_name("mnist_classifier.pt")  # fp16 weights, ~0.4 MB
SHIPPED_FOR = ("mnist", "mnist-sample")  # the data sets it scores (the sample holds MNIST training digits)


def load_shipped(path: Path | None = None) -> tuple[Classifier, str] | None:
    """The shipped MNIST classifier (default SHIPPED) and a short hash of its weights file; None when absent."""
    path = SHIPPED if path is None else path
    if not path.exists():
        return None
    raw = path.read_bytes()
    saved = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    with keep_rng():  # building the network draws random initial weights
        classifier = Classifier(10, (1, 28, 28), saved["width"])
    classifier.load_state_dict({k: v.float() for k, v in saved["state_dict"].items()})
    return classifier.eval().requires_grad_(False), hashlib.sha1(raw).hexdigest()[:16]


def without_sample(train: data.Split) -> data.Split:
    """Full MNIST's training split less the digits of the bundled sample (matched by their pixels)."""
    sample_train, sample_test = data.load_sample()
    held_out = {bytes(im) for split in (sample_train, sample_test) for im in split.images.flatten(1).numpy()}
    keep = torch.tensor([bytes(im) not in held_out for im in train.images.flatten(1).numpy()])
    removed = len(train) - int(keep.sum())
    if removed != len(held_out):
        print(f"note: {removed:,} training digits matched the sample's {len(held_out):,}")
    return data.Split(train.images[keep], train.labels[keep])


def build_mnist(data_dir: str | Path, epochs: int = 10, path: Path = SHIPPED, device: str = "cpu") -> None:
    """Train the shipped evaluator on full MNIST (DATA_DIR/MNIST/raw) less the sample; write fp16 weights."""
    ds = data.load("mnist", data_dir, download=False)
    if ds.name != "mnist":
        fail(f"full MNIST is not in {data_dir}/MNIST/raw")
    train = without_sample(ds.train)
    start = time.perf_counter()
    classifier, acc = train_classifier(train, ds.test, 10, device, epochs, cosine=True)
    sample_acc = accuracy(classifier, data.load_sample()[1], torch.device(device))
    state = {
        "width": WIDTH,
        "state_dict": {k: v.half() for k, v in classifier.state_dict().items()},
        "trained_on": f"MNIST train less the sample's digits: {len(train):,} images, {epochs} epochs",
        "mnist_test_accuracy": acc,
    }
    torch.save(state, path)
    print(
        f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB) in {time.perf_counter() - start:.0f}s: "
        f"{len(train):,} training digits, test accuracy {acc:.2%} on MNIST's 10,000, "
        f"{sample_acc:.2%} on the sample's 1,000 test digits"
    )


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "build-mnist":
        build_mnist(sys.argv[2], *(int(a) for a in sys.argv[3:]))
    else:
        fail("usage: python -m common.classifier build-mnist DATA_DIR [EPOCHS]")
