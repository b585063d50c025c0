"""Checkpoints: what one holds (assembled in contents() only), atomic writes, the previous one kept, safe resume.

A checkpoint is one dict: "format", "config" (the constants), "script", "image_shape", "classes",
"epoch" (complete epochs), "models" and "optimizers" (state dicts by name), the fixed tensors by
name (e.g. "fixed_noise"), "rng", "history" (losses.csv rows), "metrics" (metrics.csv rows), and
after a Ctrl-C "partial" (the step within the next epoch and its running sums), and "best" (the
epoch and FID of the lowest FID so far, or None). Under torchrun "rng" and "partial" hold every
process's own ({"per_rank": [...]}) and "world_size" is set.

best.pt, beside last.pt, is the checkpoint of the epoch with the lowest FID so far: the same dict
less what only a resume needs (optimizers, random states, partial sums), plus "scores" (that
epoch's metrics.csv row). generate.py samples it by default.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch

from common import config, distributed, files
from common.config import fail
from common.device import rng_state, set_rng_state
from common.guard import diverged

LAST = "last.pt"
PREVIOUS = "previous.pt"
BEST = "best.pt"
RESUME_ONLY = ("optimizers", "rng", "partial", "world_size")  # what best.pt leaves out: no run resumes from it
FORMAT = 2  # 1 (no "format" key): written before the run helper; such a run resumes only from an epoch's end
PER_RANK = ("rng", "partial")  # entries each process keeps its own of
UNTRACKED = ("EPOCHS", "RESUME")  # constants that may change on resume without a note
IMPLEMENTATION = ("fused", "foreach", "capturable")  # optimizer flags of this run, never of the checkpoint
_SKIPPED: set[Path] = set()  # unreadable checkpoints already reported by this process


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
    state = to_host(state)
    # the one before is renamed previous.pt only once the new one is whole: load_latest() takes either
    what = f"the checkpoint of epoch {state.get('epoch', '?')}"
    return files.write_safely(folder / LAST, lambda f: torch.save(state, f), what, keep=folder / PREVIOUS)


class Saver:
    """Rank 0's checkpoints of one run: last.pt, then config.json with this start's first one; the grids
    written since the last checkpoint (removed when the next one cannot be written) and the line that says so."""

    def __init__(self, out: Path):
        self.out = out
        self.facts: dict[str, Any] = {}  # what config.json records beside the settings
        self.saved: str | None = None  # where the last checkpoint written or resumed from stands, in words
        self.config_written = False  # config.json describes the checkpoint: written with this start's first
        self.grids: list[Path] = []  # the grids written since that checkpoint

    def save(self, state: dict[str, Any], cfg: dict[str, Any]) -> None:
        """Write last.pt, then config.json with this start's first one; the grids so far are now behind it."""
        save(state, self.out / "checkpoints")
        self.saved, self.grids = where(state), []
        if not self.config_written:  # so a start that fails leaves the old config.json
            config.save(cfg, self.out / "config.json", self.facts)
            self.config_written = True

    def drop_grids(self) -> None:
        """Remove the grids written since the last checkpoint: the records never get ahead of it."""
        for path in self.grids:
            path.unlink(missing_ok=True)
        self.grids = []

    def kept(self) -> str:
        """What a rerun continues from, in words."""
        return f"the last complete checkpoint is kept: a rerun {self.saved}" if self.saved else "a rerun starts afresh"

    def failed(self, error: files.WriteFailed) -> None:
        """A file could not be written: drop the grids ahead of the checkpoint, say so in one line."""
        self.drop_grids()
        kept = "the last complete checkpoint and its records are as they were"
        then = f"rerunning after freeing space {self.saved}" if self.saved else "rerunning starts afresh"
        files.report(error, f"{kept}; {then}" if self.saved else f"{kept}; no checkpoint was written: {then}")


def save_best(state: dict[str, Any], scores: dict[str, Any], folder: str | Path) -> Path:
    """Write folder/best.pt atomically: `state` (an epoch's checkpoint) less its resume-only entries, plus `scores`."""
    best = {key: value for key, value in to_host(state).items() if key not in RESUME_ONLY}
    best["scores"] = dict(scores)
    what = f"the best checkpoint (epoch {state.get('epoch', '?')})"
    return files.write_safely(Path(folder) / BEST, lambda f: torch.save(best, f), what)


def best_epoch(folder: str | Path) -> int | None:
    """The epoch folder/best.pt holds, or None when it is missing or unreadable."""
    try:
        return read(Path(folder) / BEST)["epoch"] if (Path(folder) / BEST).exists() else None
    except Exception:  # damaged: as good as missing, it is written again
        return None


def read(path: str | Path) -> dict[str, Any]:
    """Load one checkpoint file onto the CPU (raises on a missing or damaged file).

    Always the CPU: the random states must stay host tensors, and weights and optimizer states
    reach their device through load_state_dict (which leaves Adam's step counters on the host).
    """
    with warnings.catch_warnings():  # a damaged file: the caller says so in one line of its own
        warnings.simplefilter("ignore")
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
            if path not in _SKIPPED:  # the folder is read at the start and again at the resume: say it once
                _SKIPPED.add(path)
                print(f"warning: skipping unreadable checkpoint {path} ({type(exc).__name__})", flush=True)
    return None


def unreadable(folder: str | Path) -> list[str]:
    """The checkpoint files in a folder when there are some and none of them loads, else []."""
    folder = Path(folder)
    names = [name for name in (LAST, PREVIOUS) if (folder / name).exists()]
    return names if names and load_latest(folder) is None else []


def check_compatible(saved: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Refuse to resume when a model-shaping constant differs from the saved run."""
    changed = [k for k in keys if k in saved and saved[k] != current.get(k)]
    if changed:
        diffs = ", ".join(f"--{k.lower()} (saved {saved[k]!r}, now {current.get(k)!r})" for k in changed)
        fail(f"cannot resume: {diffs} changed. Use the saved values, or --resume=False to start afresh")


def check_resumable(saved: dict[str, Any], cfg: dict[str, Any], shape_keys: tuple[str, ...], where: Path) -> None:
    """Refuse (exit 2) to resume a checkpoint that does not fit this config, version or process count."""
    check_compatible(saved["config"], cfg, shape_keys)
    if "partial" not in saved:
        return
    if saved.get("format", 1) < FORMAT:
        fail(
            f"cannot resume: {where} was written mid-epoch by an older version of this repo; "
            "finish it with that version, or start afresh with --resume=False (the old run is moved aside)"
        )
    check_compatible(saved["config"], cfg, ("BATCH_SIZE", "SEED"))  # the rest of the epoch: the same batches
    saved_world = saved.get("world_size", 1)
    if saved_world != distributed.world_size():
        fail(
            f"cannot resume: the run stopped mid-epoch with {saved_world} process(es), now "
            f"{distributed.world_size()}; resume with the same number of processes"
        )


def resume(folder: Path, cfg: dict[str, Any], shape_keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The newest checkpoint in `folder`, checked to fit and with this process's own entries, or None.

    Loaded on the CPU whatever the device; `restore` puts each piece where it belongs. A changed
    setting (say a higher LR from here on, or a GPU switch) is allowed, but never silently.
    """
    state = load_latest(folder)
    if state is None:
        return None
    state["config"] = config.upgrade(state["config"], cfg)  # e.g. FID_SAMPLES, now EVAL_SAMPLES
    check_resumable(state, cfg, shape_keys, folder / LAST)
    _pick_own(state, cfg)
    saved = state["config"]
    changed = [
        f"--{key.lower()} {saved[key]!r} -> {value!r}"
        for key, value in cfg.items()
        if key in saved and key not in UNTRACKED and saved[key] != value
    ]
    if changed:
        print(f"note: resuming with settings that differ from the checkpoint's: {', '.join(changed)}")
    done = state["epoch"]
    if "partial" in state:
        print(f"Resuming from {folder} in epoch {done + 1}, after step {state['partial']['step']}.")
    elif done >= cfg["EPOCHS"]:
        print(f"Run already has {done} epochs (>= --epochs={cfg['EPOCHS']}); raise --epochs to train further.")
    else:
        print(f"Resuming from {folder} after epoch {done}.")
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
    fixed: dict[str, torch.Tensor],
) -> None:
    """Load a checkpoint (on the CPU) into a run being resumed, each piece where it belongs.

    Weights and optimizer states reach the models' device through load_state_dict (Adam's step
    counters stay on the host unless the optimizer is fused or capturable); fixed tensors are
    copied into the run's own, on its device; the random states go to the host generators.
    """
    for name, model in models.items():
        try:
            model.load_state_dict(state["models"][name])
        except RuntimeError:  # other layers: a run from before a model constant existed, say
            fail(
                f"cannot resume: the saved {name} does not fit the model these settings build. A run from an "
                "older version may need a constant it was trained with (its config.json lists them, e.g. "
                "--d_labels=concat for a conditional GAN-MNIST run from before D_LABELS, --minibatch_std=False for a "
                "GAN-MNIST run from before MINIBATCH_STD), or --resume=False"
            )
    for name, opt in optimizers.items():
        # the saved groups hold the old rate and the old implementation flags: each optimizer keeps the
        # rate it was built with now (a changed --lr or --lr_d) and this run's FUSED_ADAM (a GPU run
        # resumed on a CPU, say)
        kept = [{key: group[key] for key in (*IMPLEMENTATION, "lr") if key in group} for group in opt.param_groups]
        opt.load_state_dict(state["optimizers"][name])
        for group, flags in zip(opt.param_groups, kept, strict=True):
            group.update(flags)
    for name, tensor in fixed.items():
        if name in state:
            tensor.copy_(state[name])
        else:  # kept by a newer version of the script (e.g. the VAE's class statistics): it keeps its start value
            print(f"note: the checkpoint has no {name}; it starts afresh")
    set_rng_state(state["rng"])


def contents(
    run: dict[str, Any],
    done: int,
    models: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    fixed: dict[str, torch.Tensor],
    rows: dict[str, Any],
    partial: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint after `done` complete epochs, assembled here only (see the module docstring for its keys):
    the run's identity (config, script, image_shape, classes), every model and optimizer by name, the fixed
    tensors, the random states, the records' rows and best epoch, and after a stop the `partial` epoch.

    Every process calls it: under torchrun each one's random state and partial sums are gathered into it.
    """
    state = {
        "format": FORMAT,
        **run,
        "best": rows["best"],
        "epoch": done,
        "models": {name: model.state_dict() for name, model in models.items()},
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        **fixed,
        "rng": rng_state(),
        "history": rows["history"],
        "metrics": rows["metrics"],
    }
    if partial is not None:
        state["partial"] = partial
    if distributed.active():
        for key in PER_RANK:
            if key in state:
                state[key] = {"per_rank": distributed.all_gather_object(to_host(state[key]))}
        state["world_size"] = distributed.world_size()
    return state


def where(state: dict[str, Any]) -> str:
    """Where a rerun continues from this checkpoint, in words."""
    if "partial" in state:
        return f"resumes in epoch {state['epoch'] + 1} after step {state['partial']['step']}"
    return f"resumes after epoch {state['epoch']}"


def check_finite(models: dict[str, torch.nn.Module], epoch: int, where: str) -> None:
    """Exit 3 if a model about to be saved holds a NaN or infinite weight (on any process)."""
    bad = nonfinite(models)
    if distributed.flagged(bool(bad))[0]:
        diverged(epoch, where, bad or "a weight on another process", math.nan)


def nonfinite(models: dict[str, torch.nn.Module]) -> str:
    """The name of a weight that is NaN or infinite ("" if none): checked before a checkpoint is written (one sync)."""
    named = [
        (f"{m}.{k}", t) for m, model in models.items() for k, t in model.state_dict().items() if t.is_floating_point()
    ]
    if not named:
        return ""
    finite = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
    return next((name for (name, _), ok in zip(named, finite, strict=True) if not ok), "")
