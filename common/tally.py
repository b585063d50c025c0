"""An epoch's running numbers, summed on the device so that a training step never waits for the host, and
the epoch under way (Epoch: its sums, the steps a resume skips, its clock).

tally = Tally(device)
tally.add(loss_d=loss_d, d_real=d_real)   # device tensors: a kernel launch, no sync
tally.means()                             # {"loss_d": ..., "d_real": ...}: one host sync
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from common import distributed
from common.device import synchronize


class Tally:
    """Per-name sums (device tensors) and counts (host ints) of the values logged in one epoch."""

    def __init__(
        self, device: torch.device, sums: dict[str, float] | None = None, counts: dict[str, int] | None = None
    ):
        self.device = device
        self.sums = {k: torch.tensor(v, device=device) for k, v in (sums or {}).items()}  # e.g. from a checkpoint
        self.counts = dict(counts or {})

    def add(self, **values: torch.Tensor | float) -> None:
        """Add one step's values (no host sync for device tensors)."""
        for key, value in values.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            self.sums[key] = self.sums[key] + value if key in self.sums else value.to(self.device)
            self.counts[key] = self.counts.get(key, 0) + 1

    def totals(self) -> dict[str, float]:
        """The sums as host numbers (one sync), exactly as summed: a resumed run goes on from them."""
        keys = list(self.sums)
        values = torch.stack([self.sums[k] for k in keys]).tolist() if keys else []
        return dict(zip(keys, values, strict=True))

    def means(self) -> dict[str, float]:
        """The mean of each name over the steps that logged it (one sync)."""
        return {k: v / self.counts[k] for k, v in self.totals().items()}


def first_bad(values: dict[str, float]) -> tuple[str, float] | None:
    """The first (name, value) that is NaN or infinite, or None: a NaN in any step makes its sum NaN."""
    return next(((k, v) for k, v in values.items() if not math.isfinite(v)), None)


class Epoch:
    """Where the epoch under way stands: its number, its sums, its epoch-level numbers, the steps skipped after
    a resume inside it (`partial`: a stop's step, seconds and sums) and its clock."""

    def __init__(self, number: int, device: torch.device, partial: dict[str, Any] | None = None):
        self.number, self.device, self.extra, self.step, self.seconds = number, device, {}, 0, 0.0
        self.skip, self.spent = (partial["step"], partial["seconds"]) if partial else (0, 0.0)
        self.tally = Tally(device, partial["sums"], partial["counts"]) if partial else Tally(device)
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds of steps in this epoch so far (before a stop too), the device's queue waited for (CUDA, MPS):
        else its last steps would be counted in the extras that come next, and the cadence would be misled."""
        synchronize(self.device)
        return self.spent + time.perf_counter() - self.started

    def row(self, means: dict[str, float], images: int) -> dict[str, float]:
        """The epoch's row of losses.csv: its means and numbers, the same on every process (the mean over them;
        time_s, img_per_s; wall_s the slowest process's)."""
        row = {"epoch": self.number, **means, **self.extra, "time_s": self.seconds}
        row = distributed.reduce_row({**row, "img_per_s": images / self.seconds})
        row["wall_s"] = distributed.flagged(time.perf_counter() - self.started)[0]
        return row

    def partial(self) -> dict[str, Any]:
        """What a stop after the current step keeps of the epoch (its sums were checked finite when agreed)."""
        sums, counts = self.tally.totals(), dict(self.tally.counts)
        return {"step": self.step, "sums": sums, "counts": counts, "seconds": self.elapsed()}
