"""One process at a time prepares a data set or a cache, also on storage that several nodes share.

    with shared_lock.preparing(data_dir / "MNIST", "MNIST"):   # waits while another process prepares it
        if not ready(): prepare()                                # look again inside: it may be ready now

Under torchrun, local rank 0 of each node prepares the data while the node's other processes wait
(distributed.node_first). Nodes whose DATA_DIR is one shared folder (NFS) would still prepare it at
the same time, and torchvision's download is not safe twice at once into one folder
(pytorch/vision#8707). This lock keeps them apart: an flock(2) on a hidden file beside what is
prepared (`.MNIST.lock`), held while preparing; what is prepared reaches its real name by an atomic
rename, so a reader never sees half of it. The kernel drops the lock when its process ends, however
it ends. Where no lock file can be made (a read-only DATA_DIR, whose data are all there or never
will be) or the file system has no flock, preparing goes on without one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def path_of(target: Path) -> Path:
    """The lock file of what is prepared at `target`: a hidden file beside it."""
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def preparing(target: str | Path, what: str) -> Iterator[None]:
    """Hold `target`'s lock for the block, waiting (and saying so, once) while another process holds it."""
    path = path_of(Path(target))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f: IO[bytes] | None = open(path, "a+b", buffering=0)  # noqa: SIM115  (open for the whole block)
    except OSError:
        f = None
    if f is not None and not _lock(f, path, what):
        f.close()
        f = None
    try:
        yield
    finally:
        if f is not None:
            f.close()  # drops the lock; the file stays (removing it would race a process about to lock it)


def _lock(f: IO[bytes], path: Path, what: str) -> bool:
    """Lock `f`, waiting for its holder; False where the file system has no flock."""
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().decode(errors="replace").strip() or "another process"
        print(f"waiting for {holder} to finish preparing {what} ({path}) ...", flush=True)
        start = time.perf_counter()
        fcntl.flock(f, fcntl.LOCK_EX)
        print(f"... done after {time.perf_counter() - start:.0f}s", flush=True)
    except OSError:
        return False
    with contextlib.suppress(OSError):  # the holder's name, for a process that waits (a full disk: no name)
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()}".encode())
    return True
