"""How good are the samples? Classifier-based FID, KID and Inception Score, mode coverage, pixel statistics.

No Inception network is needed for the MNIST family: a small CNN classifier is trained once per
data set (fixed seed, a few epochs) and cached in DATA_DIR/evaluators/<dataset>.pt with its
test accuracy. Its penultimate layer is the feature space of FID and KID and its logits give the
Inception Score, all computed by torchmetrics. Every score is written beside its real-versus-real
floor (train split against test split, same number of images), so a number can be read.

    evaluator = metrics.Evaluator.for_dataset(ds, DATA_DIR, dev)       # None for dataset "fake"
    metrics.record(out, metric_history, epoch, evaluator, fake, asked)  # metrics.csv, .png, histogram

`inception_fid` gives the usual Inception FID (CelebA) when torch-fidelity and its weights exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common import data, plots

if TYPE_CHECKING:  # torchmetrics takes seconds to import: only evaluations load it
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

VERSION = 1  # bump when the classifier or its training changes: cached evaluators are then retrained
FEATURES = 128  # width of the classifier's penultimate layer, the FID/KID feature space
TRAIN_IMAGES = 32_000  # the classifier sees about this many images (2 to 8 epochs of its training split)
COVERAGE_SHARE = 0.5  # a class is covered when it gets at least this fraction of its fair share 1/K
KID_SUBSET = 1000  # images per KID subset (fewer when fewer are given)
KID_SUBSETS = 20  # KID is averaged over this many random subsets
IS_SPLITS = 10  # the Inception Score is averaged over this many splits
CHUNK = 500  # images per forward pass of the classifier
PANELS = (
    ("FID (classifier features)", ("fid", "fid_floor")),
    ("KID (classifier features)", ("kid", "kid_floor")),
    ("Inception Score (classifier)", ("is", "is_real")),
    ("classes covered / label accuracy", ("coverage", "label_acc", "label_acc_real")),
    ("mean pixel entropy (bits)", ("entropy", "entropy_real")),
    ("negative ELBO / IWAE (nats)", ("test_neg_elbo", "test_iwae")),
)


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


class _Penultimate(nn.Module):
    """The classifier's penultimate features, the `feature` module given to torchmetrics FID and KID."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = FEATURES  # torchmetrics reads this instead of probing with a dummy image

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x.float())


class _Logits(nn.Module):
    """The classifier's logits, the `feature` module given to torchmetrics InceptionScore."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.classifier = classifier

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.float())


@contextlib.contextmanager
def keep_rng(device: torch.device | str = "cpu", seed: int | None = None) -> Iterator[None]:
    """Run a block without touching the global random state (so evaluating never changes training)."""
    device = torch.device(device)
    if device.type in ("cuda", "mps"):  # that device's generator is put back too
        forked = torch.random.fork_rng(devices=[device], device_type=device.type)
    else:
        forked = torch.random.fork_rng(devices=[])
    with forked:
        if seed is not None:
            torch.manual_seed(seed)
        yield


def eval_noise(
    n: int, latent_dim: int, n_classes: int, device: torch.device | str, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fixed evaluation noise [n, latent_dim] (and balanced labels [n] when n_classes > 0), global RNG untouched."""
    gen = torch.Generator().manual_seed(seed + 12_345)
    z = torch.randn(n, latent_dim, generator=gen).to(device)
    labels = torch.arange(n).remainder(n_classes).to(device) if n_classes else None
    return z, labels


def _fingerprint(ds: data.Dataset) -> str:
    """A short hash of a data set's images and labels, so a cached evaluator is never reused for other data."""
    digest = hashlib.sha1()
    for split in (ds.train, ds.test):
        digest.update(split.images.cpu().numpy().tobytes())
        digest.update(split.labels.cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def _batched(fn: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Apply a module to float images in chunks on `device`; the results are concatenated."""
    return torch.cat([fn(images[i : i + CHUNK].to(device).float()) for i in range(0, len(images), CHUNK)])


def accuracy(classifier: Classifier, split: data.Split, device: torch.device) -> float:
    """Fraction of a split's images the classifier labels correctly."""
    classifier.eval()
    pred = _batched(classifier, data.to_unit(split.images), device).argmax(1).cpu()
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
        batches = data.Batches(train.to(device), min(batch_size, len(train)), seed)
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


def pixel_entropy(images: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of each image's 256-bin intensity histogram; images [N, ...] in [0, 1] -> [N]."""
    levels = images.detach().flatten(1).clamp(0, 1).mul(255).round().long()
    counts = torch.zeros(len(levels), 256, device=levels.device).scatter_add_(
        1, levels, torch.ones_like(levels, dtype=torch.float)
    )
    p = counts / counts.sum(1, keepdim=True)
    return -(p * torch.log2(p.clamp_min(1e-12))).sum(1)


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


def _not_distributed() -> bool:
    """torchmetrics' test for a process group to gather over: never, whatever torchrun set up."""
    return False


# Only rank 0 evaluates. Left to itself, torchmetrics' compute() gathers its states over the
# default process group whenever one exists, and would wait forever for ranks that never evaluate.
LOCAL = {"sync_on_compute": False, "distributed_available_fn": _not_distributed}


def evaluation_device(device: torch.device | str) -> torch.device:
    """Where the evaluator runs: the training device, except the CPU for MPS (no float64 there,
    which torchmetrics' FID and KID keep their sums in)."""
    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


class Evaluator:
    """A trained classifier for one data set, its reference images, and the real-versus-real floors."""

    def __init__(self, ds: data.Dataset, classifier: Classifier, accuracy: float, device: torch.device | str):
        self.name, self.classes = ds.name, ds.classes
        self.device = evaluation_device(device)
        self.classifier = classifier.to(self.device).eval()
        self.accuracy = accuracy
        self.train, self.test = ds.train, ds.test  # uint8, converted to [0, 1] only where used
        self.floors: dict[int, dict[str, float]] = {}
        self.path: Path | None = None
        self.fingerprint = ""
        self._metrics: dict[int, tuple[FrechetInceptionDistance, KernelInceptionDistance]] = {}
        # a fixed order of the training images: the first n are the reference for n generated ones
        self._order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(0))

    @classmethod
    def for_dataset(
        cls, ds: data.Dataset, data_dir: str | Path, device: torch.device | str, epochs: int = 0
    ) -> Evaluator | None:
        """The evaluator of a data set, trained once and cached in DATA_DIR/evaluators/<name>.pt; None for "fake"."""
        if ds.name == "fake" or ds.name not in data.DATASETS:
            print(f"metrics: skipped for dataset {ds.name!r} (no real images to compare with)")
            return None
        path = Path(data_dir) / "evaluators" / f"{ds.name}.pt"
        fingerprint = _fingerprint(ds)
        saved = None
        if path.exists():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # damaged file: train again
                print(f"metrics: ignoring unreadable {path} ({type(exc).__name__})")
            if saved and (saved.get("version") != VERSION or saved.get("fingerprint") != fingerprint):
                saved = None  # another classifier version, or the data set changed (e.g. a subset)
        if saved is not None:
            with keep_rng():  # building the network draws random initial weights
                classifier = Classifier(len(ds.classes), ds.shape)
            classifier.load_state_dict(saved["state_dict"])
            evaluator = cls(ds, classifier, saved["accuracy"], device)
            evaluator.floors = {int(n): dict(f) for n, f in saved["floors"].items()}
            print(f"metrics: evaluator for {ds.name} from {path} (test accuracy {evaluator.accuracy:.2%})")
        else:
            start = time.perf_counter()
            classifier, acc = train_classifier(ds.train, ds.test, len(ds.classes), device, epochs)
            evaluator = cls(ds, classifier, acc, device)
            low = "; low, so read the scores with care" if acc < 0.9 else ""
            print(
                f"metrics: trained the evaluator for {ds.name} on {len(ds.train):,} images in "
                f"{time.perf_counter() - start:.0f}s: test accuracy {acc:.2%} on {len(ds.test):,} images{low}"
            )
        evaluator.path, evaluator.fingerprint = path, fingerprint
        if saved is None:
            evaluator.save()
        return evaluator

    def save(self) -> None:
        """Cache the classifier, its accuracy and the floors computed so far (skipped if DATA_DIR is read-only)."""
        if self.path is None:
            return
        state = {
            "version": VERSION,
            "dataset": self.name,
            "fingerprint": self.fingerprint,
            "accuracy": self.accuracy,
            "state_dict": {k: v.cpu() for k, v in self.classifier.state_dict().items()},
            "floors": self.floors,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            torch.save(state, tmp)
            tmp.replace(self.path)
        except OSError as exc:
            print(f"metrics: could not cache the evaluator in {self.path} ({exc.strerror or exc})")

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted classes [N] of images [N, C, H, W] in [0, 1]."""
        return _batched(self.classifier, images, self.device).argmax(1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features [N, FEATURES] of images in [0, 1]."""
        return _batched(_Penultimate(self.classifier), images, self.device)

    def reference(self, n: int) -> torch.Tensor:
        """The first n training images of a fixed shuffle: what n generated images are compared with."""
        return data.to_unit(self.train.images[self._order[:n].to(self.train.images.device)])

    def _new_metrics(self, n_real: int, n_fake: int) -> tuple[FrechetInceptionDistance, KernelInceptionDistance]:
        """torchmetrics FID and KID on the classifier's features; the real features are kept across resets."""
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "will save all extracted features in buffer": a few MB here
            fid = FrechetInceptionDistance(feature=_Penultimate(self.classifier), reset_real_features=False, **LOCAL)
            kid = KernelInceptionDistance(
                feature=_Penultimate(self.classifier),
                subsets=KID_SUBSETS,
                subset_size=min(KID_SUBSET, n_real, n_fake),
                reset_real_features=False,
                **LOCAL,
            )
        return fid.to(self.device), kid.to(self.device)

    def _update(self, metric: Any, images: torch.Tensor, **kwargs: bool) -> None:
        """Feed images to a torchmetrics metric in chunks."""
        for i in range(0, len(images), CHUNK):
            metric.update(images[i : i + CHUNK].to(self.device).float(), **kwargs)

    def _inception_score(self, images: torch.Tensor) -> float:
        """The Inception Score of images, computed by torchmetrics on the classifier's logits."""
        from torchmetrics.image.inception import InceptionScore

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            splits = min(IS_SPLITS, len(images) // 2)
            metric = InceptionScore(feature=_Logits(self.classifier), splits=splits, **LOCAL).to(self.device)
        self._update(metric, images)
        return metric.compute()[0].item()

    def floor(self, n: int) -> dict[str, float]:
        """Real-versus-real scores for n images (training split against test split), cached with the evaluator."""
        if n not in self.floors:
            with keep_rng(self.device, 0):
                test = data.to_unit(self.test.images[:n])
                fid, kid = self._new_metrics(n, len(test))
                self._update(fid, self.reference(n), real=True)
                self._update(fid, test, real=False)
                self._update(kid, self.reference(n), real=True)
                self._update(kid, test, real=False)
                self.floors[n] = {
                    "fid_floor": fid.compute().item(),
                    "kid_floor": kid.compute()[0].item(),
                    "is_real": self._inception_score(test),
                    "entropy_real": pixel_entropy(test).mean().item(),
                    "n_floor": len(test),
                }
            self.save()
        return self.floors[n]

    def scores(self, fake: torch.Tensor, asked: torch.Tensor | None = None) -> dict[str, float]:
        """Every metric of generated images in [0, 1] (and the labels asked for, conditional models), floors beside."""
        n = min(len(fake), len(self.train))
        fake = fake[:n].detach().float().clamp(0, 1)
        with keep_rng(self.device, 0):  # KID subsets and IS splits are drawn at random: same draw every time
            if n not in self._metrics:
                self._metrics[n] = self._new_metrics(n, n)
                self._update(self._metrics[n][0], self.reference(n), real=True)
                self._update(self._metrics[n][1], self.reference(n), real=True)
            fid, kid = self._metrics[n]
            fid.reset()  # drops the previous fake features only
            kid.reset()
            self._update(fid, fake, real=False)
            self._update(kid, fake, real=False)
            row = {
                "n": n,
                "fid": fid.compute().item(),
                "kid": kid.compute()[0].item(),
                "is": self._inception_score(fake),
            }
        floor = self.floor(n)
        pred = self.predict(fake)
        covered, kl = class_coverage(pred, len(self.classes))
        row.update(
            fid_floor=floor["fid_floor"],
            kid_floor=floor["kid_floor"],
            is_real=floor["is_real"],
            coverage=covered,
            kl_uniform=kl,
            entropy=pixel_entropy(fake).mean().item(),
            entropy_real=floor["entropy_real"],
            evaluator_acc=self.accuracy,
        )
        if asked is not None:
            mean, per_class = label_accuracy(pred, asked[:n], len(self.classes))
            row.update(label_acc=mean, label_acc_real=self.accuracy)
            row.update({f"label_acc_{k}": a for k, a in enumerate(per_class)})
        return row


def pixel_histogram(real: torch.Tensor, fake: torch.Tensor, path: str | Path, title: str = "") -> None:
    """Plot the 256-bin pixel-intensity histograms of real and generated images in [0, 1] (log scale)."""
    import matplotlib.pyplot as plt  # common.plots has already chosen the headless backend

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for images, label in ((real, "real"), (fake, "generated")):
        values = images.detach().float().clamp(0, 1).flatten().cpu()
        density = torch.histc(values, bins=256, min=0, max=1) / len(values)
        ax.step(torch.linspace(0, 1, 256).numpy(), density.numpy(), where="mid", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("pixel intensity")
    ax.set_ylabel("fraction of pixels")
    ax.set_title(title or "pixel intensities: real vs generated")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_metrics(history: list[dict], path: str | Path) -> None:
    """Plot the metric history, one panel per metric with its floor; epochs lacking a value are left out."""
    import matplotlib.pyplot as plt

    panels = [(title, [k for k in keys if any(k in r for r in history)]) for title, keys in PANELS]
    panels = [(title, keys) for title, keys in panels if keys]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for key in keys:
            points = [(r["epoch"], r[key]) for r in history if key in r and r[key] == r[key]]
            ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def record(
    out: Path,
    history: list[dict],
    epoch: int,
    evaluator: Evaluator,
    fake: torch.Tensor,
    asked: torch.Tensor | None = None,
    extra: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Score one epoch's samples, append the row to `history`, write metrics.csv, metrics.png, pixel_histogram.png."""
    start = time.perf_counter()
    row: dict[str, Any] = {"epoch": epoch, **evaluator.scores(fake, asked), **(extra or {})}
    row["eval_s"] = time.perf_counter() - start
    history[:] = [r for r in history if r["epoch"] != epoch] + [row]
    plots.write_csv(history, out / "metrics.csv")
    plot_metrics(history, out / "metrics.png")
    pixel_histogram(
        evaluator.reference(row["n"]),
        fake[: row["n"]],
        out / "pixel_histogram.png",
        f"pixel intensities, epoch {epoch}",
    )
    parts = [
        f"fid {row['fid']:.3g} (floor {row['fid_floor']:.3g})",
        f"kid {row['kid']:.3g} (floor {row['kid_floor']:.2g})",
        f"is {row['is']:.3g} (real {row['is_real']:.3g})",
        f"coverage {row['coverage']}/{len(evaluator.classes)}",
    ]
    if "label_acc" in row:
        parts.append(f"label acc {row['label_acc']:.1%} (real {row['label_acc_real']:.1%})")
    parts += [f"{k} {v:.4g}" for k, v in (extra or {}).items()]
    print(f"metrics epoch {epoch}: " + "  ".join(parts) + f"  ({row['eval_s']:.1f}s)", flush=True)
    return row


def _inception(weights_path: str) -> nn.Module:
    """torch-fidelity's Inception-v3 (2048-d pool features) as wrapped by torchmetrics; raises if unavailable."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    net = NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights_path or None
    )
    net.num_features = 2048
    return net


def inception_fid(
    real_uint8: torch.Tensor,
    fake_uint8: torch.Tensor | Callable[[], torch.Tensor],
    weights_path: str = "",
    device: torch.device | str = "cpu",
) -> tuple[float | None, str]:
    """The usual Inception FID of uint8 images [N, C, H, W], or (None, why it was skipped) when no weights can be had.

    `fake_uint8` may be a function that draws the images: it is called only once the network is
    loaded, so a run without the weights does not spend minutes generating images for nothing.
    """
    if weights_path and not Path(weights_path).is_file():
        return None, f"Inception FID skipped: the weights file {weights_path} does not exist"
    try:
        feature = _inception(weights_path)
    except ModuleNotFoundError:
        return None, "Inception FID skipped: torch-fidelity is not installed (pip install torch-fidelity)"
    except Exception as exc:  # offline download, bad file: the run goes on without this number
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return (
            None,
            f"Inception FID skipped: no Inception weights ({reason[:120]}); set INCEPTION_WEIGHTS to a local file",
        )
    from torchmetrics.image.fid import FrechetInceptionDistance

    if callable(fake_uint8):
        fake_uint8 = fake_uint8()
    device = evaluation_device(device)
    fid = FrechetInceptionDistance(feature=feature, normalize=False, **LOCAL).to(device)
    for images, real in ((real_uint8, True), (fake_uint8, False)):
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)  # Inception wants RGB
        for i in range(0, len(images), 100):
            fid.update(images[i : i + 100].to(device), real=real)
    value = fid.compute().item()
    return value, f"Inception FID {value:.2f} ({len(real_uint8)} real, {len(fake_uint8)} generated images)"
