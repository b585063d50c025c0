"""The plumbing around a training loop: the run folder, resuming, progress, per-epoch outputs,
and the guards that stop a run cleanly: Ctrl-C/SIGTERM (checkpoint, exit 130/143) and NaN (exit 3).

Under torchrun (see common/distributed.py) every process calls these functions; only rank 0
prints and writes, and the per-epoch numbers are reduced over all processes first.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, ModuleType, TracebackType
from typing import Any, NoReturn

import torch
from tqdm import tqdm

from common import checkpoint, config, distributed, page, plots
from common.device import describe, rng_state, set_rng_state

DIVERGED = 3  # exit code of a run stopped by a NaN or infinite loss
PER_RANK = ("rng", "partial", "shard")  # checkpoint entries each process keeps its own of
UNTRACKED = ("EPOCHS", "RESUME")  # constants that may change on resume without a note
IMPLEMENTATION = ("fused", "foreach", "capturable")  # optimizer flags of this run, never of the checkpoint


ROOT = Path(__file__).resolve().parents[1]  # where the training scripts live


def load_script(name: str) -> ModuleType:
    """Import a hyphenated top-level training script (e.g. "DCGAN-MNIST.py") as a module; main() is not run."""
    spec = importlib.util.spec_from_file_location(name.replace("-", "_").removesuffix(".py"), ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def default_out_dir(script_file: str, dataset: str | None = None) -> Path:
    """outputs/<script name>, with the data set appended when it is not the script's own."""
    name = Path(script_file).stem
    if dataset and dataset != "mnist" and dataset.lower() not in name.lower():
        name = f"{name}-{dataset}"
    return Path("outputs") / name


def start(
    cfg: dict[str, Any],
    script_file: str,
    device: torch.device,
    dataset: str | None = None,
    shape_keys: Sequence[str] = (),
) -> Path:
    """Prepare OUT_DIR, print the effective config and save it as config.json (rank 0 only).

    Call it after every other check of the input: from here on the run writes files. With
    `shape_keys`, a run to be resumed is checked against the new config first, so a refusal
    (exit 2) leaves the folder as it was.
    """
    out = Path(cfg["OUT_DIR"] or default_out_dir(script_file, cfg.get("DATASET")))
    if dataset is not None:
        cfg["DATASET"] = dataset  # what was really loaded, e.g. the offline mnist-sample fallback
    ok = True
    if distributed.is_main():
        try:
            _start(out, cfg, script_file, device, tuple(shape_keys))
        except SystemExit:  # a one-line error was printed; the other processes must stop too
            if not distributed.active():
                raise
            ok = False
    if not distributed.broadcast_object(ok):
        raise SystemExit(2)
    return out


def _start(out: Path, cfg: dict[str, Any], script_file: str, device: torch.device, shape_keys: tuple) -> None:
    """What start() does on the writing process."""
    if shape_keys and cfg["RESUME"] and (out / "checkpoints").is_dir():
        saved = checkpoint.load_latest(out / "checkpoints")
        if saved is not None:
            _check_resumable(saved, cfg, shape_keys)
    checkpoint.prepare_out_dir(out, cfg["RESUME"])
    where = describe(device) + (f" x {distributed.world_size()} processes" if distributed.active() else "")
    print(f"{Path(script_file).name} on {where}, writing to {out}/")
    print(config.show(cfg), flush=True)
    extra = {"script": Path(script_file).name, "torch": torch.__version__, "device": describe(device)}
    if distributed.active():
        extra["world_size"] = distributed.world_size()
    config.save(cfg, out / "config.json", extra)


def _check_resumable(saved: dict[str, Any], cfg: dict[str, Any], shape_keys: tuple[str, ...]) -> None:
    """Refuse (exit 2) to resume a checkpoint that does not fit this config or process count."""
    checkpoint.check_compatible(saved["config"], cfg, shape_keys)
    if "partial" in saved:  # stopped mid-epoch: the rest of that epoch must be the same batches
        checkpoint.check_compatible(saved["config"], cfg, ("BATCH_SIZE", "SEED"))
        saved_world = saved.get("world_size", 1)
        if saved_world != distributed.world_size():
            config.fail(
                f"cannot resume: the run stopped mid-epoch with {saved_world} process(es), now "
                f"{distributed.world_size()}; resume with the same number of processes"
            )


def resume(out: Path, cfg: dict[str, Any], shape_keys: Sequence[str]) -> dict | None:
    """The run's last checkpoint when RESUME is on and one exists, after checking it fits.

    Every process loads it, onto the CPU whatever the device: `restore` moves the weights and
    optimizer states onto the models' device, and the script moves its fixed noise. Entries kept per process ("rng", "partial") come back as this
    process's own, so a script restores them the same way with one process or several.
    """
    if not cfg["RESUME"]:
        return None
    state = checkpoint.load_latest(out / "checkpoints")  # on the CPU: restore() puts each piece where it goes
    if state is None:
        return None
    _check_resumable(state, cfg, tuple(shape_keys))
    _pick_own(state, cfg)
    done = state["epoch"]
    saved = state.get("config", {})
    changed = [
        f"--{key.lower()} {saved[key]!r} -> {value!r}"
        for key, value in cfg.items()
        if key in saved and key not in UNTRACKED and saved[key] != value
    ]
    if changed:  # allowed (say, a higher LR from here on, or a GPU switch), but never silently
        print(f"note: resuming with settings that differ from the checkpoint's: {', '.join(changed)}")
    if "partial" in state:
        print(f"Resuming from {out}/checkpoints in epoch {done + 1}, after step {state['partial']['step']}.")
    elif done >= cfg["EPOCHS"]:
        print(f"Run already has {done} epochs (>= --epochs={cfg['EPOCHS']}); raise --epochs to train further.")
    else:
        print(f"Resuming from {out}/checkpoints after epoch {done}.")
    return state


def _pick_own(state: dict[str, Any], cfg: dict[str, Any]) -> None:
    """Replace the per-process entries of a checkpoint by this process's own."""
    rank = distributed.rank()
    for key in PER_RANK:
        value = state.get(key)
        if value is None:
            continue
        ranks = value["per_rank"] if isinstance(value, dict) and "per_rank" in value else [value]
        if rank < len(ranks):
            state[key] = ranks[rank]
        elif key == "rng":  # more processes than saved: a fresh, distinct random stream
            torch.manual_seed(cfg["SEED"] * 1_000_003 + state["epoch"] * 1009 + rank)
            state[key] = rng_state()
        else:
            del state[key]


def restore(
    state: dict[str, Any],
    models: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    lr: float,
) -> None:
    """Load a checkpoint's models, optimizers and random state into a run being resumed."""
    for name, model in models.items():
        model.load_state_dict(state["models"][name])
    for name, opt in optimizers.items():
        # the saved groups hold the old rate and the old implementation flags: a changed --lr or
        # FUSED_ADAM (a GPU run resumed on a CPU, say) must take effect
        kept = [{key: group[key] for key in IMPLEMENTATION if key in group} for group in opt.param_groups]
        opt.load_state_dict(state["optimizers"][name])
        for group, flags in zip(opt.param_groups, kept):
            group.update(flags, lr=lr)
    set_rng_state(state["rng"])


def resume_epoch(state: dict | None, epoch: int, sums: dict[str, float], timer: Timer) -> int:
    """Steps of `epoch` a stopped run already trained (0 if none); restores its sums and time."""
    partial = (state or {}).get("partial")
    if partial is None or state["epoch"] + 1 != epoch:
        return 0
    sums.update(partial["sums"])
    timer.start -= partial["seconds"]
    return partial["step"]


def shard(batches: Any, epoch: int) -> dict[str, Any]:
    """Which samples this process trained on in an epoch: its rank, their number and a digest."""
    indices = torch.cat(batches.indices(epoch))
    digest = hashlib.sha1(indices.sort().values.numpy().tobytes()).hexdigest()
    return {"rank": distributed.rank(), "samples": len(indices), "sha1": digest}


def progress(n_images: int, epoch: int, epochs: int, initial: int = 0) -> tqdm:
    """A per-epoch progress bar counted in images, so its rate reads as images/s (rank 0 only)."""
    return tqdm(
        total=n_images,
        initial=min(initial, n_images),
        desc=f"epoch {epoch}/{epochs}",
        unit="img",
        unit_scale=True,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
        disable=not distributed.is_main(),
    )


def _gather(state: dict[str, Any]) -> None:
    """Collect every process's own entries (random state, partial sums) into the checkpoint."""
    if distributed.active():
        for key in PER_RANK:
            if key in state:
                state[key] = {"per_rank": distributed.all_gather_object(state[key])}
        state["world_size"] = distributed.world_size()


def _reduce_row(row: dict[str, Any]) -> dict[str, Any]:
    """An epoch's numbers over all processes: means, the slowest time, the summed images/s."""
    if not distributed.active():
        return row
    keys = [k for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))]
    means = distributed.all_reduce([float(row[k]) for k in keys], "mean")
    slowest = distributed.all_reduce([float(row.get("time_s", 0.0))], "max")[0]
    total_rate = distributed.all_reduce([float(row.get("img_per_s", 0.0))], "sum")[0]
    reduced = {**row, **dict(zip(keys, means))}
    if "time_s" in row:
        reduced["time_s"] = slowest
    if "img_per_s" in row:
        reduced["img_per_s"] = total_rate
    return reduced


def end_epoch(
    out: Path,
    history: list[dict],
    row: dict[str, Any],
    panels: Sequence[tuple[str, Sequence[str]]],
    state: dict[str, Any],
    epochs: int,
) -> None:
    """Record an epoch: losses.csv, loss.png, progress.gif, the checkpoint and a summary line.

    Call it on every process: the row is averaged over them and rank 0 writes. Weights that are
    no longer finite stop the run (exit 3) before anything is written over the last good epoch.
    """
    row = _reduce_row(row)
    _check_finite_models(state, row["epoch"], "end")
    _gather(state)
    history.append(row)
    if distributed.is_main():
        plots.write_csv(history, out / "losses.csv")
        plots.plot_curves(history, out / "loss.png", panels)
        plots.make_gif(out / "samples", out / "progress.gif")
        state["history"] = history
        checkpoint.save(state, out / "checkpoints")
        page.write_index(out.parent)  # outputs/index.html: every run side by side (a few ms; never raises)
        values = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "time_s", "img_per_s"))
        print(
            f"epoch {row['epoch']}/{epochs}  {values}  {row['time_s']:.1f}s ({row['img_per_s']:.0f} img/s)", flush=True
        )
    if _guard is not None and _guard.requested():  # a signal during the epoch's end: its checkpoint is whole
        _guard.exit(out, f"after epoch {row['epoch']}")


def diverged(epoch: int, step: int | str, name: str, value: float) -> NoReturn:
    """Stop a run whose loss or weights went NaN/inf: one line, exit code 3, nothing overwritten."""
    if distributed.is_main():  # tqdm.write: on a line of its own, below an open progress bar
        tqdm.write(
            f"error: {name} is {value} at epoch {epoch}, step {step}: training diverged (try a lower --lr); "
            f"nothing of epoch {epoch} was saved, the checkpoint and sample grids before it are kept",
            file=sys.stderr,
        )
    raise SystemExit(DIVERGED)


def check_finite(epoch: int, step: int, **losses: float) -> None:
    """Exit with code 3 if any loss is NaN or infinite (before it reaches a checkpoint)."""
    for name, value in losses.items():
        if not math.isfinite(value):
            diverged(epoch, step, name, value)


def _check_finite_models(state: dict[str, Any], epoch: int, step: int | str) -> None:
    """Exit with code 3 if a model about to be saved holds a NaN or infinite weight (on any process)."""
    bad = [
        f"{model_name}.{name}"
        for model_name, weights in state.get("models", {}).items()
        for name, tensor in weights.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if distributed.all_reduce([float(bool(bad))], "max")[0]:
        diverged(epoch, step, bad[0] if bad else "a weight on another process", float("nan"))


def resume_command() -> str:
    """The command line that continues this run (as started, minus any --resume=False)."""
    args = [a for a in sys.argv[1:] if not a.lower().replace("-", "_").startswith("__resume=")]
    script = sys.argv[0]
    if distributed.active():
        nproc = os.environ.get("LOCAL_WORLD_SIZE", str(distributed.world_size()))
        return shlex.join(["torchrun", f"--nproc_per_node={nproc}", script, *args])
    return shlex.join(["python", script, *args])


_guard: Guard | None = None


class Guard:
    """Inside `with run.Guard() as guard:` (or after `guard = run.guard()`), SIGINT and SIGTERM only
    ask the training loop to stop.

    The loop calls `guard.check(epoch, step, loss=...)` after each step: a NaN or infinite loss
    exits with code 3; a signal makes it return True, and `guard.stop(...)` then writes a
    checkpoint holding the step and the epoch's running sums, prints the command that resumes
    and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM). Resuming skips the
    steps already trained in that epoch: its batches depend only on the seed and the epoch, so
    the resumed run trains on exactly what an uninterrupted one would. A second Ctrl-C in a
    single-process run quits at once, losing only the unfinished step.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Guard:
        global _guard
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        _guard = self
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        global _guard
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        _guard = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum and signum == signal.SIGINT and not distributed.active():
            raise KeyboardInterrupt  # the impatient second Ctrl-C
        if not self.signum:  # torchrun may forward a signal the process already got: say it once
            name = signal.Signals(signum).name
            # os.write: print() may not re-enter a stream the interrupted code was writing to
            os.write(2, f"\n{name}: stopping after this step and saving a checkpoint ...\n".encode())
        self.signum = self.signum or signum

    def requested(self) -> int:
        """The signal that asked to stop (0: none), agreed by all processes."""
        return int(distributed.all_reduce([float(self.signum)], "max")[0]) if distributed.active() else self.signum

    def check(self, epoch: int, step: int, **losses: float) -> bool:
        """After a step: exit 3 on a non-finite loss; True if a signal asked to stop."""
        if distributed.active():  # one collective carries both, so all processes stop at the same step
            bad = 0.0 if all(math.isfinite(v) for v in losses.values()) else 1.0
            signum, any_bad = distributed.all_reduce([float(self.signum), bad], "max")
            if any_bad:
                mine = {k: v for k, v in losses.items() if not math.isfinite(v)}
                name, value = next(iter(mine.items()), ("the loss of another process", float("nan")))
                diverged(epoch, step, name, value)
            self.signum = self.signum or int(signum)
            return bool(signum)
        check_finite(epoch, step, **losses)
        return bool(self.signum)

    def stop(
        self, out: Path, state: dict[str, Any], history: list[dict], step: int, sums: dict[str, float], seconds: float
    ) -> NoReturn:
        """Checkpoint a run stopped after `step` of epoch state["epoch"] + 1, then exit 128 + signal."""
        state["partial"] = {"step": step, "sums": dict(sums), "seconds": seconds}
        state["history"] = history
        _check_finite_models(state, state["epoch"] + 1, step)
        _gather(state)
        if distributed.is_main():
            checkpoint.save(state, out / "checkpoints")
        self.exit(out, f"in epoch {state['epoch'] + 1} after step {step}")

    def exit(self, out: Path, where: str) -> NoReturn:
        """Print where the run stopped and how to resume it, then exit with 128 + the signal."""
        signum = self.signum or signal.SIGINT
        print(f"Stopped {where}; checkpoint in {out}/checkpoints. Resume with:\n  {resume_command()}", flush=True)
        distributed.barrier()  # rank 0 has finished writing before any process exits
        raise SystemExit(128 + signum)


def guard() -> Guard:
    """Install the SIGINT/SIGTERM guard for the rest of the run (see Guard) and return it."""
    return Guard().__enter__()


class Timer:
    """Wall-clock seconds since creation, synchronising CUDA first so the figure is true."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start = time.perf_counter()

    def seconds(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - self.start
