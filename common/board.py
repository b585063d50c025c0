"""TensorBoard logs of a run (TENSORBOARD=True): OUT_DIR/tensorboard/steps and OUT_DIR/tensorboard/epochs.

    tensorboard --logdir outputs/DCGAN-MNIST/tensorboard

"steps" has the running means of the logged losses and D outputs by training step, written when the
run reads its sums anyway (run.py's LOG_SECONDS / SYNC_STEPS: no extra host sync); "epochs" has each
epoch's losses.csv row, every metric of metrics.csv and the epoch's grid, by epoch. Two folders, so
each has its own x axis. A resumed run purges what was logged after its checkpoint, so no step is
written twice. Rank 0 writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common.config import fail

INSTALL = "pip install tensorboard"


def check() -> None:
    """Exit with one line (before any training) when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
    except ImportError:
        fail(f"TENSORBOARD=True needs the tensorboard package, which is not installed: {INSTALL}")


class Board:
    """The run's two SummaryWriters; `step` and `epoch`: where the checkpoint resumed from (0: a fresh run)."""

    def __init__(self, folder: Path, step: int = 0, epoch: int = 0):
        from torch.utils.tensorboard import SummaryWriter  # imported only when asked: seconds of start-up

        # events at or after the first step to come are hidden: logged after the checkpoint (or by a start
        # that never wrote one), they are logged again
        self.steps = SummaryWriter(folder / "steps", purge_step=step + 1)
        self.epochs = SummaryWriter(folder / "epochs", purge_step=epoch + 1)
        self.last_step = step  # the running means are logged once a step (an epoch's end may come twice)

    def running(self, means: dict[str, float], step: int) -> None:
        """The epoch's running means so far, at global step `step`."""
        if step <= self.last_step:
            return
        self.last_step = step
        for key, value in means.items():
            self.steps.add_scalar(f"train/{key}", value, step)

    def epoch(self, epoch: int, row: dict[str, Any], metrics: dict[str, Any] | None, grids: list[Path]) -> None:
        """An epoch's losses.csv row, its metrics.csv row (if evaluated) and its grid pictures, by their folder."""
        for group, values in (("epoch", row), ("metrics", metrics or {})):
            for key, value in values.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.epochs.add_scalar(f"{group}/{key}", value, epoch)
        for grid in grids:
            with Image.open(grid) as image:
                self.epochs.add_image(grid.parent.name, np.asarray(image.convert("RGB")), epoch, dataformats="HWC")
        self.steps.flush()
        self.epochs.flush()

    def close(self) -> None:
        self.steps.close()
        self.epochs.close()
