"""Run folders and checkpoints: atomic writes, the previous checkpoint kept, safe resume."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from common.config import fail

LAST = "last.pt"
PREVIOUS = "previous.pt"


def prepare_out_dir(out_dir: str | Path, resume: bool) -> Path:
    """Create OUT_DIR; with resume off, move an existing run aside (never delete it)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        fail(f"--out_dir={out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not resume:
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
        print(f"--resume=False: moved the previous run in {out} to {aside}")
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        fail(f"cannot write to --out_dir={out}: {exc.strerror or exc}")
    return out


def to_host(value: Any) -> Any:
    """`value` with every tensor in it (nested in dicts, lists, tuples) copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: to_host(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):  # not a NamedTuple
        return type(value)(to_host(item) for item in value)
    return value


def save(state: dict[str, Any], folder: str | Path) -> Path:
    """Write `state` to folder/last.pt atomically, keeping the one before as previous.pt.

    Every tensor is written from the CPU, so the file is the same whichever device wrote it and
    loads on any machine: a run trained on a GPU resumes on a Mac or a CPU and the other way round.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    last, tmp = folder / LAST, folder / f".{LAST}.tmp"
    state = to_host(state)
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    # from here on a crash leaves last.pt or previous.pt whole, and load_latest() takes either
    if last.exists():
        os.replace(last, folder / PREVIOUS)
    os.replace(tmp, last)
    _fsync_folder(folder)
    return last


def _fsync_folder(folder: Path) -> None:
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


def read(path: str | Path) -> dict[str, Any]:
    """Load one checkpoint file onto the CPU (raises on a missing or damaged file).

    Always the CPU: the random states must stay host tensors, and weights and optimizer states
    reach their device through load_state_dict (which leaves Adam's step counters on the host).
    """
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "config" not in state:
        raise ValueError("not a checkpoint written by this repo")
    return state


def load_latest(folder: str | Path) -> dict[str, Any] | None:
    """The newest readable checkpoint in a folder (last.pt, else previous.pt), or None."""
    folder = Path(folder)
    for name in (LAST, PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            return read(path)
        except Exception as exc:  # truncated or foreign file: try the older one
            warnings.warn(f"skipping unreadable checkpoint {path}: {exc}", stacklevel=2)
            print(f"warning: skipping unreadable checkpoint {path} ({type(exc).__name__})")
    return None


def check_compatible(saved: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Refuse to resume when a model-shaping constant differs from the saved run."""
    changed = [k for k in keys if k in saved and saved[k] != current.get(k)]
    if changed:
        diffs = ", ".join(f"--{k.lower()} (saved {saved[k]!r}, now {current.get(k)!r})" for k in changed)
        fail(f"cannot resume: {diffs} changed. Use the saved values, or --resume=False to start afresh")
