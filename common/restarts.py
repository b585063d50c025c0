"""Elastic restarts (torchrun --max-restarts=N): an exit that no restart can fix is said once.

    restarts.said_before()     # first thing a script does: a restart after such an exit ends at once, silently
    restarts.record(code)      # on the way out with `code` (config.fail, files.fail, distributed.leave)

torchrun restarts every worker of a job when one exits with any code but 0: it has no way for a worker
to say "do not retry" (pytorch/pytorch#133877, open). A bad setting (exit 2), a full disk (4) or an out
of memory (5) would fail the same way N more times, each printing its error again. So a worker that
ends with one of these leaves a note in the temporary folder, named after its torchrun agent (the
worker's parent: the same process across the job's restarts, another one for the next job). A
restarted worker that finds the note exits at once with the same code, saying nothing more: the job
still goes through its N restarts (torchrun's own log lists them), each ending within seconds. Every
other exit (a killed worker, a lost peer, a NaN) is restarted as torchrun means to, and resumes from
the last checkpoint. Outside torchrun, or with --max-restarts=0, none of this does anything.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from common import exits

NOT_RETRIED = (exits.BAD_INPUT, exits.WRITE_FAILED, exits.OUT_OF_MEMORY)


def _agent_started(pid: int) -> str:
    """When process `pid` started (Linux: its start time in clock ticks), so a reused pid is another agent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def note_path() -> Path | None:
    """This worker's note, under torchrun with restarts allowed; else None."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) < 1:
        return None
    agent = os.getppid()
    key = f"{os.environ['TORCHELASTIC_RUN_ID']}:{agent}:{_agent_started(agent)}"
    return Path(tempfile.gettempdir()) / f"torchrun-not-retried-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


def record(code: int) -> None:
    """Leave the note when `code` is one a restart cannot change (a no-op elsewhere, and for other codes)."""
    path = note_path()
    if code not in NOT_RETRIED or path is None:
        return
    try:
        path.write_text(f"{code}\n")
    except OSError:  # no note (a full temporary folder): the restarts say the error again
        pass


def said_before() -> None:
    """In a restarted worker whose job already ended with such a code: exit with it at once, saying nothing.

    Any worker of the same agent that finds the note is a later one: TORCHELASTIC_RESTART_COUNT cannot
    tell, since torchrun does not count a restart that another node's failure brought (a membership change).
    """
    path = note_path()
    if path is None:
        return
    try:
        code = int(path.read_text())
    except (OSError, ValueError):
        return
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) >= int(os.environ["TORCHELASTIC_MAX_RESTARTS"]):
        path.unlink(missing_ok=True)  # the job's last attempt: nothing is left to tell
    raise SystemExit(code)
