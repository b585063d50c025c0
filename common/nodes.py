"""Several nodes under torchrun: every process must see rank 0's run folder, or the job stops at once.

    token = nodes.mark(out)            # rank 0, once its run folder is ready: a new mark in it
    nodes.check_shared(out, token)     # every process: the same mark, or one line and exit 2 everywhere
    state = nodes.resumed(out, ...)    # every process: last.pt read, and the same epoch and step everywhere

Only rank 0 writes the run folder (checkpoints, tables, pictures); every process reads last.pt when
it resumes. With OUT_DIR on each node's own disk, a node other than rank 0's finds no run there, or an
old one: it would resume another epoch than rank 0, run another number of steps, and the job would hang
at a collective. So at each start rank 0 writes a new mark (`OUT_DIR/.run`: a random id, its host and
pid) and every process reads it back; any process that sees no mark or another one makes every
process exit 2 with the same line, naming the nodes, before any of them reads a checkpoint. Then each
process says which epoch and step it resumes from, and any difference stops the job the same way.
Under c10d rendezvous rank 0 may land on any node, so OUT_DIR must be one folder every node shares.
A single process skips all of this.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import checkpoint, distributed, files
from common.config import fail

MARK = ".run"  # the mark's file in OUT_DIR
SHARE = "put OUT_DIR on storage every node shares (NFS or the like) under the same path, or pass --out_dir=PATH"


def mark(out: Path) -> str:
    """Rank 0: write a new mark into the run folder and return it ("" for a single process)."""
    if distributed.world_size() < 2:
        return ""
    token = f"{uuid.uuid4().hex} {socket.gethostname()} {os.getpid()}"
    files.write_text(out / MARK, token + "\n", "the run's mark for the other nodes")
    return token


def check_shared(out: Path, token: str) -> None:
    """Every process: the mark rank 0 wrote (`token`, on rank 0) is in this process's OUT_DIR too; else all
    exit with one line naming the nodes that see another folder."""
    if distributed.world_size() < 2:
        return
    token = distributed.broadcast_object(token)
    try:
        seen = (out / MARK).read_text().strip()
    except OSError:
        seen = ""
    views = distributed.all_gather_object((seen == token, distributed.where()))
    apart = [name for same, name in views if not same]
    if apart:
        fail(
            f"--out_dir={out} is not the folder rank 0 writes on {views[0][1]}: {', '.join(apart)} "
            f"{'sees' if len(apart) == 1 else 'see'} another folder there (its own disk?); {SHARE}"
        )


def resumed(out: Path, cfg: dict[str, Any], shape_keys: Sequence[str]) -> dict[str, Any] | None:
    """The checkpoint every process resumes from (None: from the start), the same epoch and step on every
    one (else one line and exit 2 everywhere); from here a silent peer is lost after distributed.TIMEOUT."""
    state = checkpoint.resume(out / "checkpoints", cfg, shape_keys) if cfg["RESUME"] else None
    at = (state["epoch"], (state.get("partial") or {}).get("step", 0)) if state is not None else (0, 0)
    views = distributed.all_gather_object((at, distributed.where()))
    (epoch, step), first = views[0]
    apart = [f"{name} from epoch {e} step {s}" for (e, s), name in views if (e, s) != (epoch, step)]
    if apart:
        fail(
            f"the processes would resume {out} from different checkpoints: {first} from epoch {epoch} step "
            f"{step}, {', '.join(apart)}; {SHARE}"
        )
    distributed.started()
    return state
