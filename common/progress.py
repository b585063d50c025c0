"""What a run shows while it trains: the epoch's progress bar and the one line each epoch ends with."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

QUIET = ("epoch", "time_s", "img_per_s", "wall_s")  # columns of an epoch's row the line words itself


def bar(images: int, done: int, epoch: int, epochs: int, enabled: bool) -> tqdm:
    """The progress bar of one epoch of `images` images, `done` of them already (a resume mid-epoch)."""
    return tqdm(
        total=images,
        initial=done,
        desc=f"epoch {epoch}/{epochs}",
        unit="img",
        unit_scale=True,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
        disable=not enabled,
    )


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """`epoch 3/10  loss_d 1.2  ...  4.1s of steps (970 img/s), 5.0s in all`: an epoch's means and times."""
    values = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in QUIET)
    return (
        f"epoch {row['epoch']}/{epochs}  {values}  {row['time_s']:.1f}s of steps "
        f"({row['img_per_s']:.0f} img/s), {row['wall_s']:.1f}s in all"
    )
