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


def epoch_line(row: dict[str, Any], epochs: int, left: float = 0.0) -> str:
    """`epoch 3/10  loss_d 1.2  ...  4.1s of steps (970 img/s), 5.0s in all, about 35s to go`: an epoch's
    means and times, and `left` (seconds the remaining epochs will take) when some remain."""
    values = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in QUIET)
    to_go = f", about {duration(left)} to go" if row["epoch"] < epochs else ""
    return (
        f"epoch {row['epoch']}/{epochs}  {values}  {row['time_s']:.1f}s of steps "
        f"({row['img_per_s']:.0f} img/s), {row['wall_s']:.1f}s in all{to_go}"
    )


def duration(seconds: float) -> str:
    """A time to wait, as people say it: '45s', '4.5 min', '2.1 h'."""
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
