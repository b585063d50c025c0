"""common/evaluation.py: the classifier evaluator, FID/KID/IS ordering, coverage, label accuracy, Inception FID."""

import csv
import math

import pytest
import torch
import torchvision.transforms.functional as TF
from conftest import OFFLINE_ENV
from PIL import Image

from common import class_scores, classifier, data, evaluation, inception, plots, prdc, records

EVALUATOR_EPOCHS = 3  # a classifier trained on the sample alone: 93.8% on its 1,000 test digits (measured)
MIN_ACCURACY = 0.90  # ... so at least this
STRONG = 0.98  # the shipped evaluator (full MNIST less the sample): 99.2% on the sample's test digits (measured)


@pytest.fixture(scope="session")
def sample() -> data.Dataset:
    """The bundled real-digit sample: 4,000 train and 1,000 test digits."""
    return data.load("mnist-sample", "unused", False)


@pytest.fixture(scope="session")
def evaluator(sample, tmp_path_factory) -> evaluation.Evaluator:
    """The sample's evaluator (the shipped MNIST classifier), cached in a temporary DATA_DIR."""
    data_dir = tmp_path_factory.mktemp("data")
    return evaluation.Evaluator.for_dataset(sample, data_dir, "cpu")


def test_the_shipped_evaluator_is_strong_and_never_saw_the_sample(evaluator, sample):
    assert evaluator.accuracy >= STRONG  # measured on the sample's test digits, held out of its training
    shipped, digest = classifier.load_shipped()
    assert evaluator.fingerprint.endswith(digest)  # other weights would mean another cache entry
    # the builder's filter: full MNIST less the sample; here a stand-in split of 8 sample digits and 8 others
    others = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mixed = data.Split(torch.cat([sample.test.images[:8], others]), torch.arange(16) % 10)
    kept = classifier.without_sample(mixed)
    assert torch.equal(kept.images, others) and torch.equal(kept.labels, mixed.labels[8:])


def test_without_the_shipped_weights_the_evaluator_is_trained_on_the_data(sample, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(classifier, "SHIPPED", tmp_path / "absent.pt")
    trained = evaluation.Evaluator.for_dataset(sample, tmp_path, "cpu", epochs=EVALUATOR_EPOCHS)
    out = capsys.readouterr().out
    assert "absent.pt is missing" in out and "trained the evaluator for mnist-sample on 4,000 images" in out
    assert MIN_ACCURACY <= trained.accuracy < STRONG  # a classifier of the 4,000 digits alone is weaker


def test_evaluator_is_cached(evaluator, sample, capsys):
    assert evaluator.path.exists()
    again = evaluation.Evaluator.for_dataset(sample, evaluator.path.parents[1], "cpu")
    assert "from" in capsys.readouterr().out  # loaded, not retrained
    assert again.accuracy == evaluator.accuracy
    assert torch.equal(
        again.predict(data.to_unit(sample.test.images[:50])), evaluator.predict(data.to_unit(sample.test.images[:50]))
    )


def test_cached_evaluator_is_not_reused_for_other_data(evaluator, sample, tmp_path):
    subset = data.Dataset(
        sample.name, sample.classes, data.Split(sample.train.images[:64], sample.train.labels[:64]), sample.test
    )
    data_dir = tmp_path / "data"
    (data_dir / "evaluators").mkdir(parents=True)
    (data_dir / "evaluators" / "mnist-sample.pt").write_bytes(evaluator.path.read_bytes())
    other = evaluation.Evaluator.for_dataset(subset, data_dir, "cpu", epochs=1)
    assert other.fingerprint != evaluator.fingerprint


def test_fid_and_kid_order_real_below_blurred_below_noise(evaluator, sample):
    real = data.to_unit(sample.test.images)
    blurred = TF.gaussian_blur(real, kernel_size=5, sigma=1.5)
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(0))
    scores = [evaluator.scores(images) for images in (real, blurred, noise)]
    fids, kids = [s["fid"] for s in scores], [s["kid"] for s in scores]
    assert fids[0] < fids[1] < fids[2] and kids[0] < kids[1] < kids[2]
    assert fids[0] == pytest.approx(scores[0]["fid_floor"], rel=1e-3)  # the test split is the floor's "fake" side
    assert scores[0]["is"] > 5 > scores[2]["is"]
    assert scores[1]["entropy"] > scores[0]["entropy"] == pytest.approx(scores[0]["entropy_real"], rel=1e-4)


def test_coverage_flags_a_single_class_generator(evaluator, sample):
    ones = data.to_unit(sample.test.images[sample.test.labels == 1]).repeat(5, 1, 1, 1)
    collapsed = evaluator.scores(ones)
    assert collapsed["classes_covered"] == 1 and collapsed["kl_uniform"] > 0.8 * math.log(10)
    healthy = evaluator.scores(data.to_unit(sample.test.images))
    assert healthy["classes_covered"] == 10 and healthy["kl_uniform"] < 0.01
    # per-class shares: the real digits (100 of each) all between 5% and 15%, the collapsed sample all in "1"
    assert all(0.05 <= healthy[f"share_{k}"] <= 0.15 for k in range(10))
    assert sum(healthy[f"share_{k}"] for k in range(10)) == pytest.approx(1.0)
    assert collapsed["share_1"] > 0.9 and max(collapsed[f"share_{k}"] for k in range(10) if k != 1) < 0.05


def test_class_shares_chart_stacks_every_class_by_epoch(evaluator, sample, tmp_path):
    history = [{"epoch": e, **evaluator.scores(data.to_unit(sample.test.images[: 200 * e]))} for e in (1, 2, 3)]
    plots.plot_class_shares(history, tmp_path / "class_shares.png", evaluator.classes)
    with Image.open(tmp_path / "class_shares.png") as im:
        assert im.size[0] > 500 and len(set(im.convert("RGB").getdata())) > 10  # ten coloured bands, not blank
    plots.plot_class_shares([{"epoch": 1}], tmp_path / "none.png", evaluator.classes)  # no shares: no chart
    assert not (tmp_path / "none.png").exists()


def test_label_accuracy_of_real_images_is_the_classifier_accuracy(evaluator, sample):
    real = evaluator.scores(data.to_unit(sample.test.images), sample.test.labels)
    assert real["label_acc"] == pytest.approx(evaluator.accuracy, abs=0.01)  # the sample's test split is balanced
    assert all(0.7 <= real[f"label_acc_{k}"] <= 1 for k in range(10))
    wrong = evaluator.scores(data.to_unit(sample.test.images), (sample.test.labels + 1) % 10)
    assert wrong["label_acc"] < 0.1


def test_a_conditional_model_that_ignores_its_labels_is_flagged(evaluator, sample, tmp_path, capsys):
    # real digits drawn whatever was asked: every class covered, in balance, yet the label is ignored
    images = data.to_unit(sample.test.images)
    asked = sample.test.labels[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))]
    row = records.record(tmp_path, [], 1, evaluator, images, asked, plot=False)
    assert row["classes_covered"] == 10 and row["label_acc"] < 0.2
    assert "the model looks to ignore its labels" in capsys.readouterr().out
    # a model that follows the label except for one class: that class is named, the others not
    followed = sample.test.labels.clone()
    followed[followed == 5] = 3
    records.record(tmp_path, [], 1, evaluator, images, followed, plot=False)
    line = capsys.readouterr().out
    assert "under 80%: 3 " in line and "ignore" not in line and ", " not in line.split("under 80%: ")[1].split(")")[0]


def test_floors_are_cached_with_the_evaluator(evaluator, sample):
    evaluator.floor(300)
    saved = torch.load(evaluator.path, weights_only=True)
    assert 300 in saved["floors"] and saved["floors"][300]["fid_floor"] > 0


def test_record_writes_csv_plot_and_histogram(evaluator, sample, tmp_path):
    history = []
    fake = data.to_unit(sample.train.images[:400])
    for epoch in (1, 2, 2):  # recording an epoch twice replaces its row
        records.record(tmp_path, history, epoch, evaluator, fake, extra={"test_neg_elbo": 100.0 - epoch})
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and {
        "fid",
        "fid_floor",
        "kid",
        "kid_floor",
        "is",
        "is_real",
    } <= set(rows[0])
    assert float(rows[1]["test_neg_elbo"]) == 98.0
    for name in ("metrics.png", "pixel_histogram.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_evaluation_leaves_the_global_random_state_alone(evaluator):
    before = torch.get_rng_state()
    z, labels = evaluation.eval_noise(200, 8, 10, "cpu", seed=3)
    evaluator.scores(torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0)), labels[:200])
    assert torch.equal(before, torch.get_rng_state())
    assert torch.equal(z, evaluation.eval_noise(200, 8, 10, "cpu", seed=3)[0]) and torch.equal(
        labels[:12].bincount(), torch.tensor([2, 2] + [1] * 8)
    )


def test_small_helpers():
    flat = torch.zeros(2, 1, 4, 4)
    flat[1, 0, :2] = 1.0  # half black, half white: one bit
    assert class_scores.pixel_entropy(flat).tolist() == pytest.approx([0.0, 1.0])
    assert class_scores.class_coverage(torch.tensor([0, 0, 1, 2]), 4) == (
        3,
        pytest.approx(math.log(4) - 1.5 * math.log(2)),
    )
    mean, per_class = class_scores.label_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 3)
    assert mean == pytest.approx(0.75) and per_class[:2] == [0.5, 1.0] and math.isnan(per_class[2])


def test_fake_dataset_skips_metrics_with_a_notice(tmp_path, capsys):
    fake = data.load("fake", tmp_path, False)
    assert evaluation.Evaluator.for_dataset(fake, tmp_path, "cpu") is None
    assert capsys.readouterr().out.count("\n") == 1


def test_inception_fid_skips_without_weights(tmp_path, monkeypatch):
    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    value, message = inception.inception_fid(images, images)  # no torch-fidelity, or no way to fetch its weights
    assert value is None and message.startswith("Inception FID skipped") and "\n" not in message
    value, message = inception.inception_fid(images, images, str(tmp_path / "missing.pth"))
    assert value is None and "missing.pth" in message

    def draw() -> torch.Tensor:
        raise AssertionError("images drawn for an FID that cannot be computed")

    value, _ = inception.inception_fid(images, draw, str(tmp_path / "missing.pth"))  # the draw is never called
    assert value is None


class TinyFeatures(torch.nn.Module):
    """Stands in for Inception: uint8 RGB images -> 4 pooled features."""

    num_features = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        x = x.float() / 255
        return torch.cat([x.mean((2, 3)), x.std((2, 3)).mean(1, keepdim=True)], dim=1)


def test_inception_fid_when_weights_are_available(monkeypatch):
    monkeypatch.setattr(inception, "_inception", lambda weights_path: TinyFeatures())
    gen = torch.Generator().manual_seed(0)
    dark = torch.randint(0, 100, (64, 1, 16, 16), dtype=torch.uint8, generator=gen)
    dark2 = torch.randint(0, 100, (64, 1, 16, 16), dtype=torch.uint8, generator=gen)
    bright = torch.randint(150, 256, (64, 1, 16, 16), dtype=torch.uint8, generator=gen)
    near, message = inception.inception_fid(dark, dark2)
    far, _ = inception.inception_fid(dark, bright)
    assert 0 <= near < far and message.startswith("Inception FID")
    assert inception.inception_fid(dark, lambda: bright)[0] == pytest.approx(far)  # images drawn on demand


def _prdc_by_the_definitions(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float]:
    """Precision, recall, density, coverage written out point by point, as the papers define them."""

    def radius(points: torch.Tensor, i: int) -> float:
        others = [float((points[i] - points[j]).norm()) for j in range(len(points)) if j != i]
        return sorted(others)[k - 1]

    r_real = [radius(real, i) for i in range(len(real))]
    r_fake = [radius(fake, j) for j in range(len(fake))]
    inside = [[float((fake[j] - real[i]).norm()) <= r_real[i] for i in range(len(real))] for j in range(len(fake))]
    near = [[float((real[i] - fake[j]).norm()) <= r_fake[j] for j in range(len(fake))] for i in range(len(real))]
    return {
        "precision": sum(any(row) for row in inside) / len(fake),
        "recall": sum(any(row) for row in near) / len(real),
        "density": sum(sum(row) for row in inside) / (k * len(fake)),
        "coverage": sum(any(inside[j][i] for j in range(len(fake))) for i in range(len(real))) / len(real),
    }


def test_prdc_matches_its_definitions():
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(40, 3, generator=gen), 0.7 * torch.randn(30, 3, generator=gen) + 0.5
    got, want = prdc.scores(real, fake, k=3), _prdc_by_the_definitions(real, fake, 3)
    assert got == pytest.approx(want)
    assert prdc.scores(real, real + 100.0) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def _held_out(evaluator: evaluation.Evaluator, sample: data.Dataset, n: int, label: int | None = None) -> torch.Tensor:
    """Real training digits that are not among the first `n` reference images (of one class, if asked)."""
    rest = evaluator._order[n:]
    if label is not None:
        rest = rest[sample.train.labels[rest] == label]
    return data.to_unit(sample.train.images[rest])


def test_prdc_real_digits_sit_at_the_floors(evaluator, sample):
    row = evaluator.scores(_held_out(evaluator, sample, 1000)[:1000])  # 1,000 real digits the reference lacks
    for key in evaluation.PRDC:  # density is the noisiest at 1,000 (measured: 0.96 against a floor of 1.04)
        assert row[key] == pytest.approx(row[f"{key}_floor"], abs=0.15 if key == "density" else 0.06), key
    assert row["precision_floor"] > 0.9 and row["coverage_floor"] > 0.9 and 0.8 < row["density_floor"] < 1.2


def test_prdc_a_one_class_generator_has_fidelity_but_no_diversity(evaluator, sample):
    n = 400  # real 1s, none of them among the 400 reference digits
    test_ones = data.to_unit(sample.test.images[sample.test.labels == 1])
    row = evaluator.scores(torch.cat([test_ones, _held_out(evaluator, sample, n, label=1)])[:n])
    assert row["n"] == n
    assert row["recall"] < 0.3 * row["recall_floor"] and row["coverage"] < 0.3 * row["coverage_floor"]
    assert row["precision"] == pytest.approx(row["precision_floor"], abs=0.08)


def test_prdc_blurred_digits_and_noise_lose_recall_and_coverage_not_precision(evaluator, sample):
    """In the classifier's feature space precision and density do not flag blur or noise (docs/evaluation.md):
    blurred digits crowd into the dense middle of their class, and noise lands near the origin (feature norm
    12 against 34 for digits), inside the wide k-NN balls of a few atypical real digits."""
    real = data.to_unit(sample.test.images)
    blurred = evaluator.scores(TF.gaussian_blur(real, kernel_size=9, sigma=2.0))  # measured: 1.0, 0.0, 1.5, 0.06
    noise = evaluator.scores(torch.rand(real.shape, generator=torch.Generator().manual_seed(0)))  # 1.0, 0.0, 1.1, 0.02
    for row in (blurred, noise):
        assert row["recall"] < 0.1 * row["recall_floor"] and row["coverage"] < 0.2 * row["coverage_floor"]
        assert row["precision"] >= row["precision_floor"] - 0.05 and row["density"] > 0.8 * row["density_floor"]
