"""The plumbing around a training loop: the run folder, resuming, progress, per-epoch outputs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from common import checkpoint, config, plots
from common.device import describe


def default_out_dir(script_file: str, dataset: str | None = None) -> Path:
    """outputs/<script name>, with the data set appended when it is not the script's own."""
    name = Path(script_file).stem
    if dataset and dataset != "mnist" and dataset.lower() not in name.lower():
        name = f"{name}-{dataset}"
    return Path("outputs") / name


def start(cfg: dict[str, Any], script_file: str, device: torch.device, dataset: str | None = None) -> Path:
    """Prepare OUT_DIR, print the effective config and save it as config.json."""
    out = checkpoint.prepare_out_dir(cfg["OUT_DIR"] or default_out_dir(script_file, cfg.get("DATASET")), cfg["RESUME"])
    if dataset is not None:
        cfg["DATASET"] = dataset  # what was really loaded, e.g. the offline mnist-sample fallback
    print(f"{Path(script_file).name} on {describe(device)}, writing to {out}/")
    print(config.show(cfg), flush=True)
    extra = {"script": Path(script_file).name, "torch": torch.__version__, "device": describe(device)}
    config.save(cfg, out / "config.json", extra)
    return out


def resume(out: Path, cfg: dict[str, Any], shape_keys: Sequence[str], device: torch.device) -> dict | None:
    """The run's last checkpoint when RESUME is on and one exists, after checking it fits."""
    if not cfg["RESUME"]:
        return None
    state = checkpoint.load_latest(out / "checkpoints", map_location=device)
    if state is None:
        return None
    checkpoint.check_compatible(state["config"], cfg, tuple(shape_keys))
    done = state["epoch"]
    if done >= cfg["EPOCHS"]:
        print(f"Run already has {done} epochs (>= --epochs={cfg['EPOCHS']}); raise --epochs to train further.")
    else:
        print(f"Resuming from {out}/checkpoints after epoch {done}.")
    return state


def progress(n_images: int, epoch: int, epochs: int) -> tqdm:
    """A per-epoch progress bar counted in images, so its rate reads as images/s."""
    return tqdm(
        total=n_images,
        desc=f"epoch {epoch}/{epochs}",
        unit="img",
        unit_scale=True,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def end_epoch(
    out: Path,
    history: list[dict],
    row: dict[str, Any],
    panels: Sequence[tuple[str, Sequence[str]]],
    state: dict[str, Any],
    epochs: int,
) -> None:
    """Record an epoch: losses.csv, loss.png, progress.gif, the checkpoint and a summary line."""
    history.append(row)
    plots.write_csv(history, out / "losses.csv")
    plots.plot_curves(history, out / "loss.png", panels)
    plots.make_gif(out / "samples", out / "progress.gif")
    state["history"] = history
    checkpoint.save(state, out / "checkpoints")
    values = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "time_s", "img_per_s"))
    print(f"epoch {row['epoch']}/{epochs}  {values}  {row['time_s']:.1f}s ({row['img_per_s']:.0f} img/s)", flush=True)


class Timer:
    """Wall-clock seconds since creation, synchronising CUDA first so the figure is true."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start = time.perf_counter()

    def seconds(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - self.start
