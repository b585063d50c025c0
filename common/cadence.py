"""How often a run does each thing beside its steps: every "how often" rule of a run, in one place.

| what | when |
|---|---|
| read the running sums (one host sync): progress bar, NaN check, TensorBoard's steps | at most every LOG_SECONDS in one process; every SYNC_STEPS steps under torchrun, in the one collective that also agrees on Ctrl-C and NaN; at every epoch's end |
| the checkpoint, losses.csv, the epoch line, the grids | at every epoch's end, and at a stop |
| evaluate: metrics.csv, best.pt, the VAE's class fit | every EVAL_EVERY epochs (0: never) and at the last epoch |
| the VAE's IWAE bound | at the last epoch |
| loss.png, metrics.png and outputs/index.html | at most every PLOT_SECONDS, and at the last epoch, a stop and the end |

The clock is an argument, so a test can run a cadence on a stubbed one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

LOG_SECONDS = 0.5  # a single process reads its running sums (one host sync) at most this often
SYNC_STEPS = 25  # under torchrun, the processes agree on Ctrl-C and NaN every this many steps
PLOT_SECONDS = 30.0  # loss.png, metrics.png redrawn at most this often (and at the end): ~0.7 s a drawing on 2 cores


class Cadence:
    """When a run of `epochs` epochs reads its sums, evaluates and draws (see the module docstring)."""

    def __init__(self, epochs: int, eval_every: int, together: bool, clock: Callable[[], float] = time.perf_counter):
        self.epochs, self.eval_every, self.together, self.clock = epochs, eval_every, together, clock
        self.read_at = clock()  # when the sums were last read
        self.drawn_at = -float("inf")  # when the figures were last drawn: the first epoch draws

    def last(self, epoch: int) -> bool:
        """Whether `epoch` is the run's last."""
        return epoch == self.epochs

    def evaluate(self, epoch: int) -> bool:
        """Whether `epoch` evaluates: every EVAL_EVERY epochs (0: none) and the last."""
        return self.last(epoch) or bool(self.eval_every) and epoch % self.eval_every == 0

    def read(self, step: int, signalled: bool) -> bool:
        """Whether to read the running sums after `step` (a signal in one process: at once)."""
        if self.together:
            return step % SYNC_STEPS == 0
        return signalled or self.clock() - self.read_at >= LOG_SECONDS

    def was_read(self) -> None:
        self.read_at = self.clock()

    def draw(self, epoch: int) -> bool:
        """Whether this epoch's end redraws the figures: the last epoch does, the others at most every PLOT_SECONDS."""
        return self.last(epoch) or self.clock() - self.drawn_at > PLOT_SECONDS

    def was_drawn(self) -> None:
        self.drawn_at = self.clock()
