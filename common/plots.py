"""Pictures: image grids (optionally with row labels), loss curves, progress GIFs, latent plots."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageDraw, ImageFont

from common import files

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_LABEL_WIDTH = 84  # pixels of margin for row labels such as "Ankle boot"


METRIC_PANELS = (  # metrics.png: a panel per metric, with its real-data floor
    ("FID (classifier features)", ("fid", "fid_floor")),
    ("KID (classifier features)", ("kid", "kid_floor")),
    ("Inception Score (classifier)", ("is", "is_real")),
    ("precision / recall (k-NN, k=5)", ("precision", "precision_floor", "recall", "recall_floor")),
    ("density / coverage (k-NN, k=5)", ("density", "density_floor", "coverage", "coverage_floor")),
    ("classes covered / label accuracy", ("classes_covered", "label_acc", "label_acc_real", "region_acc")),
    ("mean pixel entropy (bits)", ("entropy", "entropy_real")),
    ("negative ELBO / IWAE (nats)", ("test_neg_elbo", "test_iwae")),
)


def pyplot():
    """matplotlib.pyplot, headless (Agg), imported at the first figure: 0.3-0.5 s the first step need not wait for."""
    import matplotlib

    matplotlib.use("Agg")  # never needs a display
    import matplotlib.pyplot

    return matplotlib.pyplot


def tile(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Images [B, C, H, W] laid out `nrow` per row with `padding` pixels between them, as [3, H', W'] (grey
    images made RGB): what torchvision's make_grid draws, without importing torchvision (1.5 s of start-up)."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if len(images) == 1:
        return images[0].clone()  # one image: no frame (as make_grid)
    count, channels, height, width = images.shape
    columns = min(nrow, count)
    rows = -(-count // columns)
    cell_h, cell_w = height + padding, width + padding
    grid = images.new_full((channels, rows * cell_h + padding, columns * cell_w + padding), pad_value)
    for k in range(count):
        y, x = divmod(k, columns)
        grid[:, y * cell_h + padding : (y + 1) * cell_h, x * cell_w + padding : (x + 1) * cell_w] = images[k]
    return grid


def grid_image(
    images: torch.Tensor,
    nrow: int,
    value_range: tuple[float, float] = (-1, 1),
    row_labels: Sequence[str] | None = None,
    scale: int = 1,
) -> Image.Image:
    """A PIL image of a batch laid out `nrow` per row, with optional labels left of each row."""
    images = images.detach().float().cpu().clamp(*value_range)
    images = (images - value_range[0]) / (value_range[1] - value_range[0])
    grid = tile(images, nrow)
    array = grid.mul(255).round().byte().permute(1, 2, 0).numpy()
    picture = Image.fromarray(array if array.shape[2] == 3 else array[:, :, 0])
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    if not row_labels:
        return picture
    cell = (images.shape[2] + 2) * scale
    font = ImageFont.load_default()
    widest = max(ImageDraw.Draw(picture).textlength(str(label), font=font) for label in row_labels)
    margin = max(_LABEL_WIDTH, int(widest) + 12)  # long labels (run names) widen the margin
    canvas = Image.new(picture.mode, (picture.width + margin, picture.height), "white")
    canvas.paste(picture, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(row_labels):
        draw.text((4, i * cell + cell // 2 - 5), str(label), fill=0, font=font)
    return canvas


def save_grid(
    images: torch.Tensor,
    path: str | Path,
    nrow: int = 8,
    value_range: tuple[float, float] = (-1, 1),
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Save a batch of images as one PNG grid (small images are scaled up 2x to be seen)."""
    scale = 2 if images.shape[-1] <= 32 else 1
    picture = grid_image(images, nrow, value_range, row_labels, scale)
    return files.write_safely(path, lambda f: picture.save(f, format="PNG"), "an image grid")


def write_csv(rows: list[dict], path: str | Path) -> None:
    """Write a list of dicts (one per epoch) as a CSV file with a header row (whole or not at all)."""
    if not rows:
        return
    fields = list(rows[0])
    for row in rows[1:]:
        fields += [k for k in row if k not in fields]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    files.write_text(path, text.getvalue(), "a table of rows")


def save_figure(fig: Figure, path: str | Path) -> None:
    """Save a matplotlib figure as a PNG (whole or not at all) and close it."""
    try:
        files.write_safely(path, lambda f: fig.savefig(f, format="png", dpi=100), "a figure")
    finally:
        pyplot().close(fig)


def plot_curves(
    rows: list[dict],
    path: str | Path,
    panels: Sequence[tuple[str, Sequence[str]]],
    x: str = "epoch",
) -> None:
    """Plot columns of `rows` against `x`, one subplot per (title, column names) panel."""
    if not rows:
        return
    fig, axes = pyplot().subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    xs = [r[x] for r in rows]
    for ax, (title, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            if key in rows[0]:
                ax.plot(xs, [r[key] for r in rows], marker="o" if len(rows) < 30 else None, label=key)
        ax.set_title(title)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def make_gif(frames_dir: str | Path, path: str | Path, duration_ms: int = 400) -> None:
    """Animate the PNG frames of a folder, in name order, into a looping GIF."""
    frames = [Image.open(p).convert("RGB") for p in sorted(Path(frames_dir).glob("*.png"))]
    if frames:
        # hold the last frame longer so the final result can be seen
        durations = [duration_ms] * (len(frames) - 1) + [duration_ms * 4]
        files.write_safely(
            path,
            lambda f: frames[0].save(
                f, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0
            ),
            "the progress GIF",
        )


def latent_scatter(
    z: torch.Tensor,
    labels: torch.Tensor,
    path: str | Path,
    class_names: Sequence[str],
    title: str = "latent means",
) -> None:
    """Scatter 2-D latents coloured by class; higher dimensions are projected by PCA first, and a 1-D latent
    is drawn against the class (a row of codes each)."""
    z = z.detach().float().cpu()
    labels = labels.cpu()
    axis_names = ("z[0]", "z[1]")
    if z.shape[1] == 1:
        z, axis_names = torch.cat([z, labels[:, None].float()], dim=1), ("z[0]", "class")
    if z.shape[1] > 2:
        z = z - z.mean(0)
        _, s, v = torch.linalg.svd(z, full_matrices=False)
        share = (s[:2] ** 2 / (s**2).sum()).tolist()
        z = z @ v[:2].T
        axis_names = (f"PC1 ({share[0]:.0%} var)", f"PC2 ({share[1]:.0%} var)")
        title += " (PCA)"
    fig, ax = pyplot().subplots(figsize=(7, 6))
    cmap = pyplot().get_cmap("tab10")
    for k, name in enumerate(class_names):
        m = labels == k
        ax.scatter(z[m, 0], z[m, 1], s=4, alpha=0.6, color=cmap(k % 10), label=name)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title)
    ax.legend(markerscale=4, fontsize=8, loc="best")
    fig.tight_layout()
    save_figure(fig, path)


def pixel_histogram(real: torch.Tensor, fake: torch.Tensor, path: str | Path, title: str = "") -> None:
    """Plot the 256-bin pixel-intensity histograms of real and generated images in [0, 1] (log scale)."""
    fig, ax = pyplot().subplots(figsize=(6.5, 3.8))
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
    save_figure(fig, path)


def plot_metrics(history: list[dict], path: str | Path) -> None:
    """Plot the metric history, one panel per metric with its floor; epochs lacking a value are left out."""
    panels = [(title, [k for k in keys if any(k in r for r in history)]) for title, keys in METRIC_PANELS]
    panels = [(title, keys) for title, keys in panels if keys]
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            points = [(r["epoch"], r[key]) for r in history if key in r and r[key] == r[key]]
            ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_class_shares(history: list[dict], path: str | Path, classes: Sequence[str]) -> None:
    """A stacked area chart of each class's share of the generated samples by epoch (share_<k> columns)."""
    rows = [r for r in history if "share_0" in r]
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    shares = [[r.get(f"share_{k}", 0.0) for r in rows] for k in range(len(classes))]
    fig, ax = pyplot().subplots(figsize=(7.5, 3.8))
    colours = pyplot().get_cmap("tab10")(range(len(classes)))
    ax.stackplot(epochs, shares, labels=list(classes), colors=colours, alpha=0.9)
    ax.set_xlim(min(epochs), max(epochs) if len(epochs) > 1 else min(epochs) + 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("share of generated samples")
    ax.set_title("classes drawn, by the evaluator (a band thinning to nothing: a class dying)", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    save_figure(fig, path)


def manifold(
    decode: Callable[[torch.Tensor], torch.Tensor], path: str | Path, device: torch.device, n: int = 20
) -> None:
    """An n x n grid of what `decode` makes of a 2-D latent z over the N(0, I) prior, evenly spaced in probability
    mass (Kingma & Welling's manifold figure): the first coordinate left to right, the second bottom to top."""
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.03, 0.97, n, device=device))
    grid_z = torch.stack(torch.meshgrid(q.flip(0), q, indexing="ij"), dim=-1).view(-1, 2)[:, [1, 0]]
    save_grid(decode(grid_z), path, nrow=n, value_range=(0, 1))
