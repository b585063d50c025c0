"""Every file a run writes: whole or not at all, and a failed write is one line and exit 4.

    files.write_safely(path, lambda f: image.save(f, format="PNG"), "the epoch's grid")

`write` serialises into memory first (torch.save, PIL, matplotlib, numpy each have their own way of
failing on a full disk: torch's zip writer raises a RuntimeError, not an OSError). Only then do the
bytes go to a temporary file beside `path`, are flushed to the disk, and renamed over `path`: so the
one error a full disk, a quota or a read-only folder can raise is the operating system's, which leaves
the file as it was, never half written, and no temporary file behind. The error says what could not
be written, where and why.
"""

from __future__ import annotations

import io
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, NoReturn

from tqdm import tqdm

from common import exits, restarts


class WriteFailed(Exception):
    """A file could not be written; its temporary file is gone and the file before it is as it was."""


def own_name(path: Path, suffix: str = ".tmp") -> Path:
    """A temporary name beside `path` of this process's own: a dot name (never taken for a grid or a run file),
    its host and pid in it, so two writers of one file on storage that nodes share (a cache in DATA_DIR) never
    write into each other's: DIR/.NAME.HOST-PID.tmp."""
    return path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}{suffix}")


def write_safely(path: str | Path, write: Callable[[IO[bytes]], object], what: str, keep: Path | None = None) -> Path:
    """Write `path` through `write(binary file)`, atomically; `keep`: the name the replaced file moves to.

    Raises WriteFailed (with the one line to show) on any OSError, e.g. ENOSPC.
    """
    path = Path(path)
    tmp = own_name(path)
    memory = io.BytesIO()
    write(memory)  # an error here is the writer's own, not the disk's
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(memory.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        # from here on a crash leaves the old file or the new one whole
        if keep is not None and path.exists():
            os.replace(path, keep)
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteFailed(f"could not write {what} to {path}: {exc.strerror or exc}") from exc
    return path


def write_text(path: str | Path, text: str, what: str) -> Path:
    """write_safely for a text file (UTF-8)."""
    return write_safely(path, lambda f: f.write(text.encode("utf-8")), what)


def fsync_folder(folder: Path) -> None:
    """Make the renames durable too (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def report(error: WriteFailed, then: str) -> None:
    """The one line (below any progress bar): what was not written, where, why, then `then`."""
    tqdm.write(f"error: {error}; {then}", file=sys.stderr)


def fail(error: WriteFailed, then: str) -> NoReturn:
    """Stop with report()'s one line and exit 4."""
    report(error, then)
    restarts.record(exits.WRITE_FAILED)
    raise SystemExit(exits.WRITE_FAILED)
