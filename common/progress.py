"""What a run shows while it trains: its budget line, the epoch's progress bar and the line each epoch ends with."""

from __future__ import annotations

from collections.abc import Sized
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


def budget(cfg: dict[str, Any], overridden: tuple[str, ...], batches: Sized, say: bool = True) -> int:
    """The epochs to train, and (`say`) the run's line on them: SAMPLE_EPOCHS on the bundled sample (unless
    --epochs was given: `overridden`, the constants the command line set), else EPOCHS."""
    steps, batch_size = len(batches), batches.batch_size  # type: ignore[attr-defined]
    sample_epochs, epochs, why = cfg.get("SAMPLE_EPOCHS", 0), cfg["EPOCHS"], ""
    if cfg.get("DATASET") == "mnist-sample" and sample_epochs:
        if "EPOCHS" in overridden:
            why = f" (--epochs; the sample budget SAMPLE_EPOCHS={sample_epochs} is not used)"
        else:
            epochs = sample_epochs
            why = " (SAMPLE_EPOCHS, the budget for the 4,000-digit sample; --epochs=N sets another)"
    if say:
        print(
            f"training: {cfg.get('DATASET', 'images')}, {steps * batch_size:,} images an epoch: "
            f"{epochs} epoch{'s' * (epochs != 1)} x {steps} steps = {epochs * steps:,} steps{why}; "
            "each epoch's line says how long the rest will take",
            flush=True,
        )
    return epochs


def time_line(times: dict[str, float]) -> str:
    """`time: 412s in all: steps 330s (80%), evaluation 30s (7%), ...`: where a run's wall time went."""
    wall = times["wall"] or 1.0
    parts = ", ".join(f"{kind} {duration(s)} ({s / wall:.0%})" for kind, s in times.items() if kind != "wall")
    return f"time: {duration(times['wall'])} in all: {parts}"
