"""Rank 0 writes, every process agrees: how a failed write stops a run, with torchrun or without.

    writes = Rank0Writes()
    with writes.kept():            # rank 0's writes; a failure is kept (a WriteFailed, or a one-line exit)
        checkpoint.save(...)
    writes.settle(report)          # every process: if rank 0 kept one, it reports it, and all exit with its code

The protocol. Only rank 0 writes (the run folder at the start, grids, tables, checkpoints, figures).
If it stopped alone, the other processes would wait for it in their next collective until torchrun
tore them down. So rank 0 keeps a failure until a point that every process reaches: the start of the
run folder, the end of an epoch, a stop, the end of the run. There one collective
(distributed.flagged) tells every process the exit code; rank 0 prints its one line
(`report(error)`, e.g. what is kept and how a rerun continues), all processes pass a barrier, so the
line is out before any of them exits, and every process exits with that code (distributed.leave:
each one by itself, whichever torchrun sees first). A single process settles the same way.

Exit codes: exits.WRITE_FAILED (4) for a file that could not be written; a one-line exit kept at the
start (config.fail's 2 for bad input, a folder in use) keeps its own code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from common import distributed, exits, files


class Rank0Writes:
    """The failure rank 0 kept since the last settle, if any."""

    def __init__(self) -> None:
        self.failure: files.WriteFailed | None = None
        self.code = 0  # the exit code every process will leave with; 0: nothing failed

    @contextlib.contextmanager
    def kept(self) -> Iterator[None]:
        """Rank 0's writes: a WriteFailed is kept (its line comes at settle); under torchrun a one-line exit too."""
        try:
            yield
        except files.WriteFailed as exc:
            self.failure, self.code = exc, exits.WRITE_FAILED
        except SystemExit as exc:  # its one line is out; the other processes must stop too
            if not distributed.active():
                raise
            self.code = int(exc.code or 1)

    def escaped(self, exc: BaseException | None) -> bool:
        """Keep a WriteFailed that left the script's block (rank 0's pictures after the last epoch): it settles
        as the others do. Whether it was one."""
        if isinstance(exc, files.WriteFailed):
            self.failure, self.code = exc, exits.WRITE_FAILED
        return isinstance(exc, files.WriteFailed)

    @property
    def failed(self) -> bool:
        """Whether a failure is kept (rank 0: nothing more of this epoch is written)."""
        return self.code != 0

    def settle(self, report: Callable[[files.WriteFailed], None]) -> None:
        """Every process: when any kept a failure, rank 0 reports it and all exit with its code; else nothing."""
        code = int(distributed.flagged(self.code)[0])
        if not code:
            return
        try:
            if self.failure is not None:
                report(self.failure)
        finally:  # the line is out before any process exits
            distributed.barrier()
        distributed.leave(code)
