"""One run per folder: a run holds its OUT_DIR's lock from its start to its end.

    folder_lock.take(out)      # rank 0, before the folder is read, moved aside or written
    folder_lock.release(out)   # at the run's end (and at the process's exit, whatever came first)

The lock is an flock(2) on a file beside the folder, `outputs/.<name>.lock`, which names the process
that holds it. A second run into the same folder stops at once with one line naming that process
(exit 2), before it reads, moves or writes anything of the first run's. Under torchrun rank 0 takes
it for the whole run. The kernel drops an flock when its process ends, however it ends: after a
kill -9 the next run takes the folder over, and says so (the file still names the dead process,
since only a run that ends by itself removes it). Beside the folder, not in it: --resume=False moves
the folder aside, and the lock must stay where the next run looks for it.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shlex
import sys
import time
from pathlib import Path
from typing import IO

from common.config import fail

_held: dict[Path, IO[bytes]] = {}  # lock file -> its open file: closing it would drop the lock


def path_of(out: Path) -> Path:
    """The lock file of a run folder: a hidden file beside it."""
    return out.parent / f".{out.name}.lock"


def take(out: Path) -> None:
    """Hold `out`'s lock for this process, or stop with one line (exit 2) when another run holds it.

    Where no lock file can be made (a read-only or full disk), the run goes on: preparing the folder
    then reports that disk in its own line.
    """
    path = path_of(out)
    if path in _held:  # this process holds it already (a second run of a script in one process)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        f = _locked(path, out)
    except OSError:
        return
    if f is None:
        return
    previous = f.read().decode(errors="replace").strip()
    if previous and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0:  # torchrun restarted the job
        print(f"note: {out} was held by {previous} in the job's previous attempt; this restart takes it over")
    elif previous:
        print(f"note: {out} was held by {previous}, which ended without releasing it (killed?); this run takes it over")
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    try:  # unbuffered: nothing is left to flush at close
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} ({command}), started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    except OSError:  # a full disk: the lock holds all the same, only the name of its holder is missing
        pass
    _held[path] = f
    atexit.register(release, out)


def _locked(path: Path, out: Path) -> IO[bytes] | None:
    """The lock file, open and locked by this process; stops (exit 2) while another process holds it."""
    while True:
        f = open(path, "a+b", buffering=0)  # noqa: SIM115  (kept open for the whole run)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().decode(errors="replace").strip() or "another process"
            f.close()
            fail(
                f"{out} is in use by another run: {holder}. Wait for it to end, stop it (Ctrl-C keeps its "
                "checkpoint), or give this run another --out_dir"
            )
        except OSError:  # a file system without flock: no lock, as before there was one
            f.close()
            return None
        try:  # still the file at that path? A holder that just ended removes it before it unlocks
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            f.seek(0)
            return f
        f.close()


def release(out: Path) -> None:
    """Remove and unlock `out`'s lock, if this process holds it."""
    path = path_of(out)
    f = _held.pop(path, None)
    if f is None:
        return
    try:
        path.unlink(missing_ok=True)  # before unlocking: a waiting run never locks a file that is gone
    except OSError:
        pass
    f.close()
