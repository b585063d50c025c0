"""How often a run does each thing beside its steps: every "how often" rule of a run, in one place.

| what | when |
|---|---|
| read the running sums (one host sync): progress bar, NaN check, TensorBoard's steps | at most every LOG_SECONDS in one process; every SYNC_STEPS steps under torchrun, in the one collective that also agrees on Ctrl-C and NaN; at every epoch's end |
| the epoch line | at every epoch's end |
| the sample grids (samples/, reconstructions/) | the first epoch of a start, the last, and when the extras stay within the budget |
| evaluate: metrics.csv, best.pt, the VAE's class fit | EVAL_EVERY="auto": when the extras stay within the budget, and at the last epoch; an int N: every N epochs (0: never) and at the last |
| the VAE's IWAE bound | at the last epoch |
| the checkpoint, losses.csv, metrics.csv | when the extras stay within the budget, or SAVE_SECONDS after the last one; at the first epoch of a start, the last epoch, an epoch that found a new best FID, and a stop |
| loss.png, the metric figures, outputs/index.html | when the extras stay within the budget; at the last epoch, a stop and the end |

The budget: the extras (evaluating, and writing checkpoints, tables, grids and figures) may take at
most EXTRAS_SHARE of the run's wall time: evaluating 6%, writing checkpoints, tables and figures 2.5%, the
grids 1.5% (one budget for all would let the writes of every epoch starve the costly evaluation, and a
costly figure starve the grids, progress.gif's frames). An extra is due when
- its kind's time so far, plus what it took the last time (an evaluation: with the script's own work that
  comes with it, the VAE's class fit), stays within its share of the wall time so far;
- it last ran at least cost / share seconds ago, so the extras spread evenly over the run instead of
  bunching after a costly one;
- and, for an evaluation before the last epoch, the last evaluation still fits in the share of the run's
  projected wall time (the last epoch always evaluates: its cost is kept aside).
Before an evaluation has been measured it is assumed to take EVAL_GUESS seconds, so a short run (the VAE
on the sample: 20 s of steps) evaluates only its last epoch, and a long one starts its FID curve early.
A run whose steps are fast (a GPU) evaluates and draws less often than one whose steps are slow, and
every run spends about the same share of its time on them. The clock is an argument, so a test can run a
cadence on a stubbed one.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

LOG_SECONDS = 0.5  # a single process reads its running sums (one host sync) at most this often
SYNC_STEPS = 25  # under torchrun, the processes agree on Ctrl-C and NaN every this many steps
EXTRAS_SHARE = 0.10  # evaluation, checkpoints, tables and figures: at most this share of the run's wall time
SHARES = {"evaluation": 0.06, "writing": 0.025, "grids": 0.015}  # split, so no kind of extra starves another
KIND = {"evaluate": "evaluation", "save": "writing", "draw": "writing", "grid": "grids"}  # each extra's kind of time
WITH = {"evaluate": ("evaluating",)}  # what comes with each evaluation: the script's own (the VAE's class fit)
SAVE_SECONDS = 60.0  # a checkpoint at least this often, budget or not: what a kill -9 can lose
EXTRAS = tuple(SHARES)  # the kinds of time that count against the budget
EVAL_GUESS = 2.0  # seconds an evaluation is assumed to take until one is measured (2,000 samples on a CPU: 1-4 s)


class Cadence:
    """When a run of `epochs` epochs reads its sums, evaluates, saves and draws (see the module docstring)."""

    def __init__(
        self,
        epochs: int,
        eval_every: int | str,
        together: bool,
        clock: Callable[[], float] = time.perf_counter,
        since: float = 0.0,
    ):
        self.epochs, self.eval_every, self.together, self.clock = epochs, eval_every, together, clock
        self.started = clock() - since  # the run's start (`since` seconds ago): its wall time is the budget's base
        self.read_at = self.started  # when the sums were last read
        self.saved_at = self.started  # when the last checkpoint was written
        self.spent: dict[str, float] = {}  # seconds by kind: evaluation, writing (and steps, start-up: run.py)
        self.cost: dict[str, float] = {"evaluate": EVAL_GUESS}  # what each extra took the last time it ran
        self.ran_at: dict[str, float] = {}  # when each extra last ended, in seconds since the start
        self.first_epoch = 0  # this start's first epoch (a resume starts later): the projection counts from it
        self.decisions: dict[tuple[str, int], bool] = {}  # (extra, epoch) -> due: one answer per epoch
        self.nested = 0.0  # seconds of the timed blocks inside the one running now (counted by them, not by it)
        self.running: list[str] = []  # the kinds of the timed blocks under way, outermost first
        self.raised: tuple[BaseException, list[str]] | None = None  # the last exception out of one, and `running` then

    def last(self, epoch: int) -> bool:
        """Whether `epoch` is the run's last."""
        return epoch == self.epochs

    def within_budget(self, extra: str) -> bool:
        """Whether running `extra` now keeps its kind of time within its share of the wall time so far, and
        it last ran at least cost / share seconds ago (unmeasured and never run: yes, but for EVAL_GUESS)."""
        share, now, cost = SHARES[KIND[extra]], self.clock() - self.started, self.costs(extra)
        spaced = now - self.ran_at.get(extra, 0.0) >= cost / share
        return spaced and self.spent.get(KIND[extra], 0.0) + cost <= share * now

    def costs(self, extra: str) -> float:
        """What `extra` took the last time it ran, with what comes with it (WITH); 0 if never measured."""
        return sum(self.cost.get(name, 0.0) for name in (extra, *WITH.get(extra, ())))

    def projected(self, epoch: int) -> float:
        """The run's wall time at its end, projected from this start's epochs so far (`epoch` the latest)."""
        self.first_epoch = self.first_epoch or epoch
        now = self.clock() - self.started
        return now + now / (epoch - self.first_epoch + 1) * (self.epochs - epoch)

    def decided(self, extra: str, epoch: int, rule: Callable[[], bool]) -> bool:
        """`rule()`, decided once per epoch: every caller in the epoch gets the same answer (the clock moves on)."""
        if (extra, epoch) not in self.decisions:
            self.decisions[(extra, epoch)] = rule()
        return self.decisions[(extra, epoch)]

    def evaluate(self, epoch: int) -> bool:
        """Whether `epoch` evaluates: the last does; EVAL_EVERY="auto" within the budget, an int every N (0: none)."""
        if self.last(epoch):
            return True
        if self.eval_every == "auto":
            return self.decided("evaluate", epoch, lambda: self._evaluation_fits(epoch))
        return isinstance(self.eval_every, int) and bool(self.eval_every) and epoch % self.eval_every == 0

    def _evaluation_fits(self, epoch: int) -> bool:
        """An evaluation before the last: within budget and spaced, with the last one's cost kept aside."""
        kept_aside = 2 * self.costs("evaluate")  # this one and the last, at what the last one took
        fits = self.spent.get("evaluation", 0.0) + kept_aside <= SHARES["evaluation"] * self.projected(epoch)
        return fits and self.within_budget("evaluate")

    def save(self, epoch: int) -> bool:
        """Whether this epoch's end writes the checkpoint (and the tables after it): see the module docstring."""
        first = self.saved_at == self.started  # this start's first epoch: config.json comes with it
        long_ago = self.clock() - self.saved_at >= SAVE_SECONDS
        return first or self.last(epoch) or long_ago or self.within_budget("save")

    def grid(self, epoch: int) -> bool:
        """Whether this epoch's end draws its grids: this start's first and the last epoch do, the others in budget."""
        first = "grid" not in self.ran_at
        return self.last(epoch) or self.decided("grid", epoch, lambda: first or self.within_budget("grid"))

    def draw(self, epoch: int) -> bool:
        """Whether this epoch's end redraws the figures and the page: the last epoch does, the others in budget."""
        return self.last(epoch) or self.decided("draw", epoch, lambda: self.within_budget("draw"))

    def read(self, step: int, signalled: bool) -> bool:
        """Whether to read the running sums after `step` (a signal in one process: at once)."""
        if self.together:
            return step % SYNC_STEPS == 0
        return signalled or self.clock() - self.read_at >= LOG_SECONDS

    def was_read(self) -> None:
        self.read_at = self.clock()

    def was_saved(self) -> None:
        self.saved_at = self.clock()

    @contextlib.contextmanager
    def timed(self, kind: str, extra: str = "") -> Iterator[None]:
        """Count the block's seconds as `kind` (evaluation, writing, ...) and, with `extra`, as that extra's cost.
        A timed block inside another (the figures inside the epoch's writes) counts its seconds once: as its own."""
        start, outer = self.clock(), self.nested
        self.nested = 0.0  # the seconds of the timed blocks inside this one
        self.running.append(kind)
        try:
            yield
        except BaseException as exc:
            if self.raised is None or self.raised[0] is not exc:  # the innermost block it left
                self.raised = (exc, list(self.running))
            raise
        finally:
            self.running.pop()
            seconds = self.clock() - start
            own = seconds - self.nested
            self.nested = outer + seconds
            self.spent[kind] = self.spent.get(kind, 0.0) + own
            if extra:
                self.cost[extra], self.ran_at[extra] = own, self.clock() - self.started

    def under_way(self, exc: BaseException | None) -> list[str]:
        """The kinds of the timed blocks under way when `exc` was raised, outermost first ([] for none)."""
        return self.raised[1] if self.raised is not None and self.raised[0] is exc else []

    def stepping(self) -> None:
        """An epoch's steps are about to run: the sums' clock starts; at the first, the time since the start was
        the start-up."""
        self.was_read()
        self.spent.setdefault("start-up", self.clock() - self.started)

    def add(self, kind: str, seconds: float) -> None:
        """Count seconds measured elsewhere (the steps, the start-up) as `kind`."""
        self.spent[kind] = self.spent.get(kind, 0.0) + seconds

    def summary(self) -> dict[str, float]:
        """Where the run's time went, in seconds: wall, start-up, steps, evaluation, writing, other."""
        wall = self.clock() - self.started
        parts = {kind: self.spent.get(kind, 0.0) for kind in ("start-up", "steps", *EXTRAS)}
        parts["writing"] += parts.pop("grids")  # the time line says writing: checkpoints, tables, figures and grids
        return {"wall": wall, **parts, "other": max(0.0, wall - sum(parts.values()))}


def process_age() -> float:
    """Seconds since this process started (imports included), from /proc on Linux; 0 where it cannot be read."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:  # both counted from the boot
            ticks = float(stat.read().rsplit(")", 1)[1].split()[19])  # starttime, field 22
            return max(0.0, float(uptime.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0
