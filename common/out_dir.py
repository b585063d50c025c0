"""A run's folder at its start (rank 0 writes; every process calls start()): the lock, the checks, an old
run moved aside, the settings printed (config.json follows with the run's first checkpoint: checkpoint.Saver).

The order is what keeps a refusal harmless: the lock first (a second run into a running run's folder
stops before it reads anything), then the newest checkpoint checked against these settings (a
refusal, exit 2, leaves the folder as it was), then with --resume=False, or when no checkpoint can
be read, the old run moved aside to OUT_DIR-<time> (never deleted), then a probe write (a full disk
is exit 4, as later on). Under torchrun rank 0 does all of it and every process leaves with its exit
code (common/rank0_writes.py).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from common import checkpoint, config, distributed, files, folder_lock, nodes
from common.config import fail
from common.device import describe
from common.rank0_writes import Rank0Writes


def asked(namespace: dict[str, Any], script: str, suffix: str = "") -> Path:
    """The run's folder: OUT_DIR, or outputs/<script>[-<dataset>]<suffix> when it is empty."""
    return Path(namespace["OUT_DIR"] or f"{config.default_out_dir(script, namespace.get('DATASET'))}{suffix}")


def prepare(out_dir: str | Path, resume: bool, unreadable: Sequence[str] = ()) -> Path:
    """Create OUT_DIR; move an existing run aside (never delete it) with resume off, or when its
    checkpoints (the `unreadable` names) all fail to load: a run that cannot be resumed is never trained over."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        fail(f"--out_dir={out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and (not resume or unreadable):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(out.stat().st_mtime))
        aside = out.with_name(f"{out.name}-{stamp}")
        n = 1
        while aside.exists():
            aside = out.with_name(f"{out.name}-{stamp}-{n}")
            n += 1
        try:
            out.rename(aside)
        except OSError as exc:  # e.g. a read-only parent folder: the old run stays where it is
            fail(f"cannot move the previous run in --out_dir={out} aside: {exc.strerror or exc}")
        if unreadable:
            print(
                f"moved the run in {out} aside to {aside}: none of its checkpoints ({', '.join(unreadable)}) "
                "can be read, so it cannot be resumed; starting afresh"
            )
        else:
            print(f"--resume=False: moved the previous run in {out} to {aside}")
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # not a bad setting: a full disk, as later on
            raise files.WriteFailed(f"could not write to --out_dir={out}: {exc.strerror}") from exc
        fail(f"cannot write to --out_dir={out}: {exc.strerror or exc}")
    return out


def start(
    out: Path, cfg: dict[str, Any], shape_keys: tuple[str, ...], script: str, device: torch.device, speed: str = ""
) -> dict[str, Any]:
    """Start a run's folder (see the module docstring). Returns the facts config.json records beside the
    settings (with `speed`, the switches in effect: the config keeps "auto" where it says auto)."""
    facts: dict[str, Any] = {}
    writes, token = Rank0Writes(), ""
    if distributed.is_main():
        with writes.kept():
            folder_lock.take(out)
            saved = checkpoint.load_latest(out / "checkpoints") if cfg["RESUME"] else None
            if saved is not None:  # checked first: a refusal (exit 2) leaves the folder as it was
                checkpoint.check_resumable(saved, cfg, shape_keys, out / "checkpoints")
            damaged = checkpoint.unreadable(out / "checkpoints") if cfg["RESUME"] and saved is None else []
            prepare(out, cfg["RESUME"], damaged)
            where = describe(device) + (f" x {distributed.world_size()} processes" if distributed.active() else "")
            print(f"{script} on {where}, writing to {out}/")
            print(config.show(cfg), flush=True)
            facts = {"script": script, "torch": torch.__version__, "device": describe(device)}
            facts.update({"speed": speed.removeprefix("speed: ")} if speed else {})
            facts["world_size"] = distributed.world_size()
            token = nodes.mark(out)  # several processes: each must find this in its own OUT_DIR
    writes.settle(lambda error: files.report(error, "rerun after freeing space"))
    nodes.check_shared(out, token)  # or every process exits 2 with one line: no hang, whatever each node has
    return facts
