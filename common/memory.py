"""Memory: what a device has free, what a run plainly needs, and running out as one line.

    memory.check_fits(namespace, build_models, image_shape, n_classes, device)  # before training: exit 2
    with memory.reported(device, "generating 64 images", "--n"):                 # a tool's work: exit 5
        ...
    memory.ran_out(exc, device, doing, lower)                                    # a run's (common/run.py)

Out of memory is torch.OutOfMemoryError (CUDA, and MPS on recent torch), the CPU allocator's RuntimeError
("DefaultCPUAllocator: can't allocate memory", also MPS's "MPS backend out of memory") or a MemoryError
(numpy, Python). It is one line naming the device, its memory, what was being done and what to lower,
then exit 5 (exits.OUT_OF_MEMORY). A run writes nothing at that point: its last complete checkpoint
stays, and a rerun with a smaller setting resumes from it.

The estimate before training is deliberately a floor, to catch only what plainly cannot fit: the models'
weights, gradients and Adam's two moments (4 copies at 4 bytes, counted on the meta device, so nothing
is allocated), and an evaluation's images and noise (EVAL_SAMPLES of them, as float32), against the
memory free now (MemAvailable on Linux; torch.cuda.mem_get_info on CUDA).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import torch
from tqdm import tqdm

from common import distributed, exits
from common.config import fail

GIB = 2**30
COPIES = 4  # a trained weight's float32 copies: the weight, its gradient, Adam's two moments
WIDTHS = ("NGF", "NDF", "HIDDEN", "CHANNELS", "LATENT_DIM")  # the constants that size the models


def is_out_of_memory(exc: BaseException | None) -> bool:
    """Whether an exception is the device (or the host) running out of memory."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower() if isinstance(exc, RuntimeError) else ""
    return "can't allocate memory" in text or "out of memory" in text


def free_bytes(device: torch.device) -> int | None:
    """Bytes free on the device now (the host's available memory for the CPU); None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps":
        return None  # MPS shares the host's memory, and torch gives no free count
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            return None


def total_bytes(device: torch.device) -> int | None:
    """The device's whole memory (the host's for the CPU and MPS); None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def size(n_bytes: float) -> str:
    """Bytes in words: 1.5 GiB, 12 MiB."""
    return f"{n_bytes / GIB:.1f} GiB" if n_bytes >= GIB / 10 else f"{n_bytes / 2**20:.0f} MiB"


def where(device: torch.device) -> str:
    """The device and its memory in words: "cuda:0 (80.0 GiB, 1.2 GiB free)"."""
    total, free = total_bytes(device), free_bytes(device)
    said = [size(total)] if total else []
    said += [f"{size(free)} free"] if free is not None else []
    return f"{device} ({', '.join(said)})" if said else str(device)


def widths(namespace: dict[str, Any]) -> str:
    """The script's width options, as flags: "--ngf, --ndf"."""
    return ", ".join(f"--{name.lower()}" for name in WIDTHS if name in namespace)


def parameters(build: Callable[[], dict[str, torch.nn.Module]]) -> int:
    """How many parameters the models `build()` makes have, counted on the meta device: nothing is allocated."""
    with torch.device("meta"):
        models = build()
    return sum(p.numel() for model in models.values() for p in model.parameters())


def check_fits(
    cfg: dict[str, Any], build_models: Callable, image_shape: tuple[int, ...], n_classes: int, device: torch.device
) -> None:
    """Exit with one line (exit 2) when the models (`build_models(cfg, image_shape, n_classes)`, a script's) or an
    evaluation plainly need more memory than the device has free: nothing is on it, allocated or written yet."""
    free = free_bytes(device)
    if free is None:
        return
    models = parameters(lambda: build_models(cfg, image_shape, n_classes)) * COPIES * 4
    per_image = (torch.Size(image_shape).numel() + cfg.get("LATENT_DIM", 0)) * 4
    evaluating = cfg.get("EVAL_SAMPLES", 0) * per_image if cfg.get("EVAL_EVERY", 1) != 0 else 0
    if models > free:
        what = "weights, gradients and Adam's moments"
        fail(f"the models need at least {size(models)} ({what}), more than {where(device)} has free: "
             f"lower the widths ({widths(cfg)})")  # fmt: skip
    if models + evaluating > free:
        fail(f"--eval_samples={cfg['EVAL_SAMPLES']} needs at least {size(evaluating)} for each evaluation's "
             f"images, more than {where(device)} has free beside the models: lower --eval_samples "
             "(or --eval_every=0)")  # fmt: skip


def doing(namespace: dict[str, Any], running: list[str], now: Any) -> tuple[str, str]:
    """What a run was doing (`running`: the cadence's timed blocks under way; `now`: the epoch under way, a
    tally.Epoch) and the settings to lower."""
    epoch, step = now.number, now.step
    models = f"the widths ({widths(namespace)})"
    if running and running[-1] == "evaluation":
        more = ", --iwae_k, --iwae_images" if "IWAE_K" in namespace else ""
        return f"evaluating epoch {epoch}", f"--eval_samples{more} (or --eval_every=0)"
    if running:
        return (
            f"{'drawing' if running[-1] == 'grids' else 'writing'} epoch {epoch}'s records",
            f"--batch_size or {models}",
        )
    if epoch == 0:
        return "putting the models on the device", models
    return f"training epoch {epoch} (step {step})", f"--batch_size or {models}"


def stop_run(
    exc: BaseException, device: torch.device, namespace: dict[str, Any], running: list[str], now: Any, saver: Any
) -> NoReturn:
    """A run out of memory: the grids ahead of its last checkpoint (a checkpoint.Saver's) go, one line, exit 5."""
    saver.drop_grids()
    ran_out(exc, device, doing(namespace, running, now), saver)


def ran_out(exc: BaseException, device: torch.device, doing: tuple[str, str], saver: Any = None) -> NoReturn:
    """One line for an out-of-memory error (what was being done, what to lower, what a checkpoint.Saver kept),
    then exit 5."""
    (doing, lower), kept = doing, saver.kept() if saver is not None else ""
    if distributed.is_main():  # tqdm.write: on a line of its own, below an open progress bar
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        tqdm.write(
            f"error: out of memory on {where(device)} while {doing} ({detail}): lower {lower}"
            + (f"; {kept}" if kept else ""),
            file=sys.stderr,
        )
    distributed.leave(exits.OUT_OF_MEMORY)


@contextlib.contextmanager
def reported(device: torch.device, doing: str, lower: str) -> Iterator[None]:
    """A tool's block (generate.py, bench.py): out of memory inside it is one line and exit 5."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        ran_out(exc, device, (doing, lower))
