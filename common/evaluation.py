"""How good are the samples? Classifier-based FID, KID, Inception Score, precision/recall/density/coverage,
classes covered, pixel statistics.

No Inception network is needed for the MNIST family: a small CNN classifier scores the samples.
MNIST and the real-digit sample use the one shipped in common/mnist_classifier.pt (trained on
full MNIST's training split less the sample's digits, 99.3% on MNIST's test digits); other data sets
get one trained once on their training split (fixed seed, a few epochs). Either is cached in
DATA_DIR/evaluators/<dataset>.pt with its test accuracy on the run's test split. Its penultimate layer is the feature space of FID and KID and its logits give the
Inception Score, all computed by torchmetrics; the same features give precision, recall, density and
coverage (common/prdc.py, k = 5). Every score is written beside its real-versus-real
floor (train split against test split, same number of images), so a number can be read.

    evaluator = metrics.Evaluator.for_dataset(ds, DATA_DIR, device)    # None for dataset "fake"
    records.record(out, metric_history, epoch, evaluator, fake, asked)  # metrics.csv, .png, histogram

The classifier lives in common/classifier.py, the per-sample statistics in common/class_scores.py, the
records (metrics.csv, figures) in common/records.py; the Inception FID (CelebA) in common/inception.py.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from common import classifier as classifier_lib  # the shipped file's path is read at call time (tests move it)
from common import data, files, prdc, shared_lock
from common.class_scores import class_coverage, class_shares, label_accuracy, pixel_entropy
from common.classifier import CHUNK, FEATURES, Classifier, Penultimate, batched, train_classifier
from common.device import keep_rng

if TYPE_CHECKING:  # torchmetrics takes seconds to import: only evaluations load it
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

VERSION = 3  # bump when the classifier or its training changes: cached evaluators are then rebuilt
KID_SUBSET = 1000  # images per KID subset (fewer when fewer are given)
KID_SUBSETS = 20  # KID is averaged over this many random subsets
IS_SPLITS = 10  # the Inception Score is averaged over this many splits
PRDC = ("precision", "recall", "density", "coverage")  # the k-NN scores (common/prdc.py), each with a _floor


def prdc_text(row: dict[str, Any], digits: int = 2) -> str:
    """The four k-NN scores of a metrics row and their floors, for a log line."""
    values = " ".join(f"{key} {row[key]:.{digits}f}" for key in PRDC)
    floors = " ".join(f"{row[f'{key}_floor']:.{digits}f}" for key in PRDC)
    return f"{values} (floors {floors})"


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
        self._reference: dict[int, torch.Tensor] = {}  # features of the first n reference images
        # a fixed order of the training images: the first n are the reference for n generated ones
        self._order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(0))

    @classmethod
    def for_dataset(
        cls, ds: data.Dataset, data_dir: str | Path, device: torch.device | str, epochs: int = 0, shipped: bool = True
    ) -> Evaluator | None:
        """The evaluator of a data set, cached in DATA_DIR/evaluators/<name>.pt; None for "fake". MNIST and the
        sample use the shipped classifier (common/mnist_classifier.pt) unless `shipped` is False; other data
        sets, or MNIST without that file, get one trained on their own training split."""
        if ds.name == "fake" or ds.name not in data.DATASETS:
            print(f"metrics: skipped for dataset {ds.name!r} (no real images to compare with)")
            return None
        path = Path(data_dir) / "evaluators" / f"{ds.name}.pt"
        with shared_lock.preparing(path, f"the evaluator of {ds.name}"):  # one at a time into a DATA_DIR nodes share
            return cls._prepared(ds, path, device, epochs, shipped)

    @classmethod
    def _prepared(
        cls, ds: data.Dataset, path: Path, device: torch.device | str, epochs: int = 0, shipped: bool = True
    ) -> Evaluator:
        """The evaluator at `path` when cached for these data, else built (and cached) now."""
        wants_shipped = shipped and ds.name in classifier_lib.SHIPPED_FOR
        found = classifier_lib.load_shipped() if wants_shipped else None
        if wants_shipped and found is None:
            print(f"metrics: {classifier_lib.SHIPPED} is missing, so the evaluator is trained on {ds.name} itself")
        fingerprint = _fingerprint(ds) + ("-" + found[1] if found else "")
        saved = cls._cached(path, fingerprint)
        if saved is not None:
            with keep_rng():  # building the network draws random initial weights
                classifier = Classifier(len(ds.classes), ds.shape)
            classifier.load_state_dict(saved["state_dict"])
            evaluator = cls(ds, classifier, saved["accuracy"], device)
            evaluator.floors = {int(n): dict(f) for n, f in saved["floors"].items()}
            print(f"metrics: evaluator for {ds.name} from {path} (test accuracy {evaluator.accuracy:.2%})")
        elif found is not None:
            dev = evaluation_device(device)
            acc = classifier_lib.accuracy(found[0].to(dev), ds.test, dev)
            evaluator = cls(ds, found[0], acc, device)
            print(
                f"metrics: the shipped MNIST evaluator ({classifier_lib.SHIPPED.name}, trained on full MNIST "
                f"less the sample's digits): test accuracy {acc:.2%} on this run's {len(ds.test):,} test digits"
            )
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

    @staticmethod
    def _cached(path: Path, fingerprint: str) -> dict[str, Any] | None:
        """The cached evaluator at `path` if it is of this VERSION and for these data and weights, else None."""
        if not path.exists():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # damaged file: build it again
            print(f"metrics: ignoring unreadable {path} ({type(exc).__name__})")
            return None
        if saved.get("version") != VERSION or saved.get("fingerprint") != fingerprint:
            return None  # another classifier version, other weights, or the data set changed (e.g. a subset)
        return saved

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
            files.write_safely(self.path, lambda f: torch.save(state, f), "the evaluator's cache")
        except files.WriteFailed as exc:  # a cache: the run goes on, and trains or reads it again next time
            print(f"metrics: {exc}; the run goes on without the cache")

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted classes [N] of images [N, C, H, W] in [0, 1]."""
        return self.outputs(images)[1].argmax(1)

    @torch.no_grad()
    def outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate features [N, FEATURES], logits [N, K]) of images in [0, 1], from one pass of the classifier."""
        features = batched(Penultimate(self.classifier), images, self.device)
        return features, self.classifier.head(features)

    def reference(self, n: int) -> torch.Tensor:
        """The first n training images of a fixed shuffle: what n generated images are compared with."""
        return data.to_unit(self.train.images[self._order[:n].to(self.train.images.device)])

    def _new_metrics(self, n_real: int, n_fake: int) -> tuple[FrechetInceptionDistance, KernelInceptionDistance]:
        """torchmetrics FID and KID over features computed beforehand; the real features are kept across resets."""
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "will save all extracted features in buffer": a few MB here
            fid = FrechetInceptionDistance(feature=Given(FEATURES), reset_real_features=False, **LOCAL)
            kid = KernelInceptionDistance(
                feature=Given(FEATURES),
                subsets=KID_SUBSETS,
                subset_size=min(KID_SUBSET, n_real, n_fake),
                reset_real_features=False,
                **LOCAL,
            )
        return fid.to(self.device), kid.to(self.device)

    @staticmethod
    def _update(metric: Any, values: torch.Tensor, **kwargs: bool) -> None:
        """Feed features (or logits) to a torchmetrics metric in chunks."""
        for i in range(0, len(values), CHUNK):
            metric.update(values[i : i + CHUNK], **kwargs)

    def _inception_score(self, logits: torch.Tensor) -> float:
        """The Inception Score of images from their classifier logits, computed by torchmetrics."""
        from torchmetrics.image.inception import InceptionScore

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            splits = min(IS_SPLITS, len(logits) // 2)
            metric = InceptionScore(feature=Given(logits.shape[1]), splits=splits, **LOCAL).to(self.device)
        self._update(metric, logits)
        return metric.compute()[0].item()

    def _reference_features(self, n: int) -> torch.Tensor:
        """Features of the first n reference images (computed once per n)."""
        if n not in self._reference:
            self._reference[n] = self.outputs(self.reference(n))[0]
        return self._reference[n]

    def floor(self, n: int) -> dict[str, float]:
        """Real-versus-real scores for n images (training split against test split), cached with the evaluator."""
        if "coverage_floor" not in self.floors.get(n, {}):  # none yet, or cached before precision/recall/...
            with keep_rng(self.device, 0):
                test = data.to_unit(self.test.images[:n])
                test_features, test_logits = self.outputs(test)
                fid, kid = self._new_metrics(n, len(test))
                for metric in (fid, kid):
                    self._update(metric, self._reference_features(n), real=True)
                    self._update(metric, test_features, real=False)
                self.floors[n] = {
                    "fid_floor": fid.compute().item(),
                    "kid_floor": kid.compute()[0].item(),
                    "is_real": self._inception_score(test_logits),
                    "entropy_real": pixel_entropy(test).mean().item(),
                    "n_floor": len(test),
                }
                real_vs_real = prdc.scores(self._reference_features(n), test_features)
                self.floors[n].update({f"{key}_floor": value for key, value in real_vs_real.items()})
            self.save()
        return self.floors[n]

    def scores(self, fake: torch.Tensor, asked: torch.Tensor | None = None) -> dict[str, float]:
        """Every metric of generated images in [0, 1] (and the labels asked for, conditional models), floors beside.

        The classifier sees the images once: its features feed FID and KID, its logits the
        Inception Score and the predicted classes.
        """
        n = min(len(fake), len(self.train))
        fake = fake[:n].detach().float().clamp(0, 1)
        features, logits = self.outputs(fake)
        with keep_rng(self.device, 0):  # KID subsets and IS splits are drawn at random: same draw every time
            if n not in self._metrics:
                self._metrics[n] = self._new_metrics(n, n)
                for metric in self._metrics[n]:
                    self._update(metric, self._reference_features(n), real=True)
            fid, kid = self._metrics[n]
            fid.reset()  # drops the previous fake features only
            kid.reset()
            self._update(fid, features, real=False)
            self._update(kid, features, real=False)
            row = {
                "n": n,
                "fid": fid.compute().item(),
                "kid": kid.compute()[0].item(),
                "is": self._inception_score(logits),
            }
            row.update(prdc.scores(self._reference_features(n), features))  # the same real images as FID's
        floor = self.floor(n)
        pred = logits.argmax(1)
        covered, kl = class_coverage(pred, len(self.classes))
        row.update(
            fid_floor=floor["fid_floor"],
            kid_floor=floor["kid_floor"],
            is_real=floor["is_real"],
            classes_covered=covered,
            kl_uniform=kl,
            entropy=pixel_entropy(fake).mean().item(),
            entropy_real=floor["entropy_real"],
            evaluator_acc=self.accuracy,
        )
        row.update({f"{key}_floor": floor[f"{key}_floor"] for key in PRDC})
        row.update({f"share_{k}": share for k, share in enumerate(class_shares(pred, len(self.classes)))})
        if asked is not None:
            mean, per_class = label_accuracy(pred, asked[:n], len(self.classes))
            row.update(label_acc=mean, label_acc_real=self.accuracy)
            row.update({f"label_acc_{k}": a for k, a in enumerate(per_class)})
        return row


class Given(torch.nn.Module):
    """The `feature` module handed to torchmetrics: the values it is given are already the features."""

    def __init__(self, width: int):
        super().__init__()
        self.num_features = width  # torchmetrics reads this instead of probing with a dummy image

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return values.float()
