"""An epoch's running numbers, summed on the device so that a training step never waits for the host.

tally = Tally(device)
tally.add(loss_d=loss_d, d_real=d_real)   # device tensors: a kernel launch, no sync
tally.means()                             # {"loss_d": ..., "d_real": ...}: one host sync
"""

from __future__ import annotations

import math

import torch


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
