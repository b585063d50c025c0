"""TensorBoard logs of a run (TENSORBOARD=True): OUT_DIR/tensorboard/steps and OUT_DIR/tensorboard/epochs.

    tensorboard --logdir outputs/DCGAN-MNIST/tensorboard

"steps" has the running means of the logged losses and D outputs by training step, written when the
run reads its sums anyway (cadence.py's LOG_SECONDS / SYNC_STEPS: no extra host sync); "epochs" has each
epoch's losses.csv row, every metric of metrics.csv and the epoch's grid, by epoch. Two folders, so
each has its own x axis. A resumed run purges what was logged after its checkpoint, so no step is
written twice. Rank 0 writes. A write that fails (a full disk: TensorBoard's writer thread keeps the
OSError and raises it at the next call) is files.WriteFailed, as for every other file of the run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common import files
from common.config import fail

INSTALL = "pip install tensorboard"


def check() -> None:
    """Exit with one line (before any training) when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
    except ImportError:
        fail(f"TENSORBOARD=True needs the tensorboard package, which is not installed: {INSTALL}")


def _quiet_writer_thread(args: threading.ExceptHookArgs) -> None:
    """TensorBoard's writer thread dies on a full disk with a traceback of its own; its error comes back
    at the next flush, where it is one line (failing below), so the thread's traceback is not printed."""
    if type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError):
        return
    _previous_hook(args)


_previous_hook = threading.excepthook


@contextlib.contextmanager
def failing(folder: Path) -> Iterator[None]:
    """An OSError of TensorBoard's writers becomes files.WriteFailed, one line like any failed write."""
    try:
        yield
    except OSError as exc:
        raise files.WriteFailed(f"could not write TensorBoard's logs to {folder}: {exc.strerror or exc}") from exc


class Board:
    """The run's two SummaryWriters; `step` and `epoch`: where the checkpoint resumed from (0: a fresh run)."""

    def __init__(self, folder: Path, step: int = 0, epoch: int = 0):
        from torch.utils.tensorboard import SummaryWriter  # imported only when asked: seconds of start-up

        threading.excepthook = _quiet_writer_thread
        self.folder = folder
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
        with failing(self.folder):
            for key, value in means.items():
                self.steps.add_scalar(f"train/{key}", value, step)

    def epoch(self, epoch: int, row: dict[str, Any], metrics: dict[str, Any] | None, grids: list[Path]) -> None:
        """An epoch's losses.csv row, its metrics.csv row (if evaluated) and its grid pictures, by their folder."""
        with failing(self.folder):
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
        """Flush and close both writers (WriteFailed if what they still held cannot be written)."""
        with failing(self.folder):
            try:
                self.steps.close()
            finally:
                self.epochs.close()
