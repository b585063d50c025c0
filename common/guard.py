"""Stopping a run cleanly: SIGINT/SIGTERM only ask the loop to stop (exit 130/143 after a checkpoint), a NaN
is one line and exit 3, and under torchrun a lost peer (a process that died or went silent) one line and exit 6.

with Guard() as guard:        # Ctrl-C and SIGTERM set guard.signum instead of killing the step
    ...
    if guard.signum: ...      # the run writes a checkpoint, then guard.exit(...)
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import sys
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, NoReturn

from tqdm import tqdm

from common import distributed, exits
from common.tally import first_bad


class Guard:
    """Inside `with Guard() as guard:` SIGINT and SIGTERM set `guard.signum`; the loop stops at its next check.

    A second Ctrl-C in a single-process run quits at once, losing only the unfinished step.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Guard:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._handle:  # not one set since (distributed.leave's)
                signal.signal(signum, handler)
        self._previous.clear()
        if distributed.is_lost_peer(exc):  # under torchrun: a peer died or went silent; one line, exit 6
            distributed.lost_peer(exc)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum and signum == signal.SIGINT and not distributed.active():
            raise KeyboardInterrupt  # the impatient second Ctrl-C
        if not self.signum:  # torchrun may forward a signal the process already got: say it once
            name = signal.Signals(signum).name
            # os.write: print() may not re-enter a stream the interrupted code was writing to
            os.write(2, f"\n{name}: stopping after this step and saving a checkpoint ...\n".encode())
        self.signum = self.signum or signum

    def agree(self, bad: float = 0.0) -> tuple[int, bool]:
        """(the signal that asked to stop, whether any process saw a NaN), the same on every process."""
        if not distributed.active():
            return self.signum, bool(bad)
        signum, any_bad = distributed.flagged(self.signum, bad)
        self.signum = self.signum or int(signum)
        return int(signum), bool(any_bad)

    def check(self, means: dict[str, float], epoch: int, where: str) -> int:
        """The signal that asked to stop (0: none), the same on every process; a NaN among the running means
        of any process stops the run (exit 3)."""
        signum, bad = self.agree(first_bad(means) is not None)
        if bad:
            name, value = first_bad(means) or ("a loss on another process", math.nan)
            diverged(epoch, where, name, value)
        return signum

    def exit(self, where: str, out: Path) -> NoReturn:
        """Print where the run stopped and the command that resumes it, then exit with 128 + the signal."""
        # below the progress bar, which is still open after a stop inside an epoch
        tqdm.write(f"Stopped {where}; checkpoint in {out}/checkpoints. Resume with:\n  {resume_command()}")
        distributed.barrier()  # rank 0 has finished writing before any process exits
        distributed.leave(exits.SIGNALLED + (self.signum or signal.SIGINT))


def diverged(epoch: int, where: str, name: str, value: float) -> NoReturn:
    """Stop a run whose loss or weights went NaN/inf: one line, exit code 3, nothing overwritten."""
    if distributed.is_main():  # tqdm.write: on a line of its own, below an open progress bar
        tqdm.write(
            f"error: {name} is {value} at epoch {epoch}, {where}: training diverged (try a lower --lr); "
            f"nothing of epoch {epoch} was saved, the checkpoint and sample grids before it are kept",
            file=sys.stderr,
        )
    distributed.leave(exits.DIVERGED)


def resume_command() -> str:
    """The command line that continues this run (as started, minus any --resume=False)."""
    args = [a for a in sys.argv[1:] if not a.lower().replace("-", "_").startswith("__resume=")]
    if distributed.active():
        nproc = os.environ.get("LOCAL_WORLD_SIZE", str(distributed.world_size()))
        return shlex.join(["torchrun", f"--nproc_per_node={nproc}", sys.argv[0], *args])
    return shlex.join(["python", sys.argv[0], *args])
