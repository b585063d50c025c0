"""One training run, start to end: everything around a script's loop that is not its algorithm.

    config.setup(globals())
    with run.Run(globals(), SHAPE_KEYS) as r:       # device, torchrun, seeding, speed switches
        ds = r.load(lambda device: data.load(DATASET, DATA_DIR, DOWNLOAD, device))  # then the run folder
        generator = r.models({"generator": Generator(LATENT_DIM)})["generator"]  # on the device, saved by name
        opt_g = r.adam("opt_g", generator, LR, (BETA1, 0.999))
        fixed_noise = r.fixed("fixed_noise", torch.randn(64, LATENT_DIM))
        train_g = r.wrap(generator)                  # DDP under torchrun, compiled if asked
        for epoch in r.epochs({"losses": ("loss_g",)}):   # resumes; after each: checkpoint, losses.csv, loss.png
            for images, labels in r.batches():       # progress bar; Ctrl-C and NaN checks between steps
                r.log(loss_g=g_step(...))            # device tensors, summed on the device
            r.grid(lambda: generator(fixed_noise))   # samples/epoch_NNN.png (rank 0)
            r.evaluate(lambda: sample(generator))    # metrics.csv every EVAL_EVERY epochs (rank 0); best.pt

The module globals stay the one source of the settings (the constants block, after overrides):
the run reads them from the script's namespace. No host sync in the steps: `log` adds device
tensors to device sums, which are read (one sync) at most every LOG_SECONDS in a single process,
every SYNC_STEPS steps under torchrun (one collective that also agrees on Ctrl-C and NaN), and at
the end of each epoch. A sum that is not finite means a step was not: the run stops with exit 3
before anything of that epoch is written.

checkpoints/best.pt is the epoch with the lowest FID so far, written after that epoch's last.pt
(which records it as "best", so a resume keeps it); metrics.csv marks its row with best = 1.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from tqdm import tqdm

from common import (
    augment,
    board,
    checkpoint,
    config,
    data,
    distributed,
    ema,
    files,
    folder_lock,
    metrics,
    page,
    plots,
    progress,
    records,
    run_folders,
    steps,
)
from common.device import keep_rng, seed_all
from common.guard import Guard, collapsed, diverged, resume_command
from common.speed import Speed
from common.tally import Tally, first_bad

LOG_SECONDS = 0.5  # a single process reads its running sums (one host sync) at most this often
SYNC_STEPS = 25  # under torchrun, the processes agree on Ctrl-C and NaN every this many steps
PLOT_SECONDS = 30.0  # loss.png, metrics.png redrawn at most this often (and at the end): ~0.7 s a drawing on 2 cores


class Run:
    """A training run of one script: see the module docstring for the whole surface."""

    def __init__(self, namespace: dict[str, Any], shape_keys: Sequence[str] = (), out_suffix: str = ""):
        self.ns = namespace  # the script's globals: its constants, after the overrides
        self.augment = augment.policy(namespace.get("AUGMENT", ""))  # D's input transformations, or None
        self.script = Path(namespace["__file__"]).name
        self.shape_keys = tuple(shape_keys)  # resuming with other values of these refuses
        self.dist = distributed.setup(namespace["DEVICE"], namespace.get("SYNC_BN", False))
        self.device = self.dist.device
        self.is_main = self.dist.is_main
        seed_all(namespace["SEED"] + self.dist.rank, namespace.get("DETERMINISTIC", False))  # own noise per process
        self.speed = Speed.from_config(self.cfg, self.device, verbose=self.is_main)  # one line: what and why
        self.autocast, self.input = self.speed.autocast, self.speed.input
        asked = namespace["OUT_DIR"] or f"{config.default_out_dir(self.script, namespace.get('DATASET'))}{out_suffix}"
        self.out = Path(asked)
        self.networks: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.fixed_tensors: dict[str, torch.Tensor] = {}
        self.averages = ema.Averages()
        self.history: list[dict] = []
        self.metric_history: list[dict] = []
        self.classes: tuple[str, ...] = ()
        self.evaluator: metrics.Evaluator | None = None
        self.best: dict[str, Any] | None = None  # {"epoch", "fid"} of the lowest FID so far, kept in last.pt
        self.new_best: dict[str, Any] | None = None  # this epoch's metrics row when it beat the best: best.pt is due
        self.guard = Guard()
        self.board: board.Board | None = None  # TensorBoard's writers (rank 0, TENSORBOARD=True)
        if namespace.get("TENSORBOARD"):
            board.check()  # a missing package: one line, before any data or training
        self.epoch = 0
        self._drawn = 0.0  # when loss.png and metrics.png were last drawn
        self.facts: dict[str, Any] = {}  # what config.json records beside the settings
        self.saved: str | None = None  # where the last checkpoint written or resumed from stands, in words
        self.config_written = False  # config.json describes the checkpoint: written with this start's first
        self.grids: list[Path] = []  # the grids written since that checkpoint
        self.failure: files.WriteFailed | None = None  # rank 0's grid or metrics write that failed this epoch

    @property
    def cfg(self) -> dict[str, Any]:
        """The run's settings: the script's constants as they are now."""
        return config.constants(self.ns)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.guard.__exit__(kind, exc, tb)
        try:
            if self.board is not None:
                with self._deferred():  # what TensorBoard still held
                    self.board.close()
            failed = exc if isinstance(exc, files.WriteFailed) else self.failure if kind is None else None
            if kind is None or failed:  # every process agrees, so none waits for one that has stopped
                self._agree_written(failed)
                distributed.barrier()  # every process is done before the process group goes
                distributed.cleanup()
        finally:
            folder_lock.release(self.out)  # the next run may use the folder

    # --- before training: data, models, optimizers ---

    def load(self, load: Callable[[torch.device], Any]) -> Any:
        """Load the data (rank 0 first: it downloads or builds caches), then start the run folder.

        `load(device)` returns a data.Dataset (its train split is trained on; it can be evaluated)
        or a data.Split. This is the last check of the input: from here on the run writes files.
        """
        with distributed.main_first():
            loaded = load(self.device)
        train = loaded.train if isinstance(loaded, data.Dataset) else loaded
        if isinstance(loaded, data.Dataset):
            self.ns["DATASET"], self.classes = loaded.name, loaded.classes  # e.g. the offline mnist-sample
        self.image_shape = tuple(train.images.shape[1:])
        ns = self.ns
        self.data = data.Batches(train, ns["BATCH_SIZE"], ns["SEED"], self.dist.rank, self.dist.world_size)
        budget = self._budget()
        if self.is_main:
            print(budget, flush=True)
        self.facts = checkpoint.open_folder(
            self.out, self.cfg, self.shape_keys, self.script, self.device, self.speed.summary
        )
        if ns.get("EVAL_EVERY") and self.is_main and isinstance(loaded, data.Dataset):
            self.evaluator = metrics.Evaluator.for_dataset(loaded, ns["DATA_DIR"], self.device)
        return loaded

    def _budget(self) -> str:
        """Set EPOCHS to SAMPLE_EPOCHS on the bundled sample (unless --epochs was given); the run's line on it."""
        ns, steps_per_epoch = self.ns, len(self.data)
        sample_epochs = ns.get("SAMPLE_EPOCHS", 0)
        why = ""
        if ns.get("DATASET") == "mnist-sample" and sample_epochs:
            if "EPOCHS" in ns.get(config.OVERRIDDEN, ()):
                why = f" (--epochs; the sample budget SAMPLE_EPOCHS={sample_epochs} is not used)"
            else:
                ns["EPOCHS"] = sample_epochs
                why = " (SAMPLE_EPOCHS, the budget for the 4,000-digit sample; --epochs=N sets another)"
        epochs = ns["EPOCHS"]
        return (
            f"training: {ns.get('DATASET', 'images')}, {len(self.data) * self.data.batch_size:,} images an epoch: "
            f"{epochs} epoch{'s' * (epochs != 1)} x {steps_per_epoch} steps = {epochs * steps_per_epoch:,} steps{why}; "
            "each epoch's line says how long the rest will take"
        )

    def models(self, models: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
        """The models on the run's device (channels_last if asked), saved in checkpoints by their names."""
        for name, module in models.items():
            self.networks[name] = self.speed.prepare(module.to(self.device))
        return {name: self.networks[name] for name in models}

    def adam(self, name: str, model: torch.nn.Module, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
        """Adam over a model's parameters (fused if asked), saved in checkpoints as `name`."""
        self.optimizers[name] = self.speed.adam(model.parameters(), lr, betas)
        return self.optimizers[name]

    def fixed(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor kept for the whole run (e.g. the grid's noise) on the device; a resume restores it in place."""
        self.fixed_tensors[name] = tensor.to(self.device)
        return self.fixed_tensors[name]

    def ema(self, name: str, model: torch.nn.Module, decay: float) -> torch.nn.Module:
        """A moving average of `model`'s weights (common/ema.py), updated after every step and saved in
        checkpoints as `name`; sample from it, train `model`."""
        base = next(key for key, net in self.networks.items() if net is model)
        self.networks[name] = self.averages.add(name, base, model, decay)
        return self.networks[name]

    def wrap(self, model: torch.nn.Module, sync_buffers: bool = True) -> torch.nn.Module:
        """What the steps train through: DDP under torchrun (SyncBatchNorm if asked), compiled if asked.

        Grids, metrics and checkpoints use the plain module, which shares its parameters.
        """
        ddp = distributed.wrap(model, sync_bn=self.ns.get("SYNC_BN", False), sync_buffers=sync_buffers)
        return self.speed.compiled(ddp)

    # --- the loop ---

    def epochs(self, panels: Mapping[str, Sequence[str]]) -> Iterator[int]:
        """The epochs still to train (after a resume, from where the run stopped); each one ends recorded.

        `panels`: loss.png's panels, title -> the logged names drawn in it.
        """
        self.panels = list(panels.items())
        state = checkpoint.resume(self.out / "checkpoints", self.cfg, self.shape_keys) if self.ns["RESUME"] else None
        partial = self._restore(state) if state is not None else None
        if self.is_main and self.ns.get("TENSORBOARD"):  # from the checkpoint's step on: nothing logged twice
            done = self.epoch * len(self.data) + (partial["step"] if partial else 0)
            self.board = board.Board(self.out / "tensorboard", done, self.epoch)
        self.guard.__enter__()  # Ctrl-C / SIGTERM: finish the step, save a checkpoint, exit 130 / 143
        for epoch in range(self.epoch + 1, self.ns["EPOCHS"] + 1):
            self.epoch, self.extra, self.tally = epoch, {}, Tally(self.device)
            self.skip, self.spent, self.new_best = 0, 0.0, None
            if partial is not None:  # stopped inside this epoch: the steps done and their sums
                self.skip, self.spent = partial["step"], partial["seconds"]
                self.tally, partial = Tally(self.device, partial["sums"], partial["counts"]), None
            self.started = time.perf_counter()
            yield epoch
            self._end_epoch()
        self.guard.__exit__(None, None, None)  # from here on Ctrl-C stops at once: nothing is left to save
        self._finish()

    def _restore(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """Put a checkpoint into this run; returns its mid-epoch part, if any."""
        self.averages.fill_missing(state["models"])
        checkpoint.restore(state, self.networks, self.optimizers, self.fixed_tensors)
        self.history = state["history"]
        self.metric_history = [run_folders.upgrade_row(row) for row in state.get("metrics", [])]  # old names renamed
        self.epoch, self.best = state["epoch"], state.get("best")
        self.saved = self._where(state)
        if self.is_main:  # the tables as the checkpoint has them: no row ahead of it (or missing) after a failed write
            self._write_tables()
            self._repair_best(state)
        return state.get("partial")

    def _repair_best(self, state: dict[str, Any]) -> None:
        """Write best.pt again when the checkpoint's best is its own epoch and best.pt is not: its write failed."""
        folder = self.out / "checkpoints"
        if self.best is None or "partial" in state or self.best["epoch"] != state["epoch"]:
            return  # mid-epoch weights are not the best epoch's; an older best is whole (its write came before)
        if checkpoint.best_epoch(folder) != self.best["epoch"]:
            row = next((r for r in self.metric_history if r["epoch"] == self.best["epoch"]), self.best)
            checkpoint.save_best(state, row, folder)

    @staticmethod
    def _where(state: dict[str, Any]) -> str:
        """Where a rerun continues from this checkpoint, in words."""
        if "partial" in state:
            return f"resumes in epoch {state['epoch'] + 1} after step {state['partial']['step']}"
        return f"resumes after epoch {state['epoch']}"

    def _write_tables(self) -> None:
        """losses.csv and metrics.csv from the run's rows (written only after the checkpoint that holds them)."""
        for row in self.metric_history:  # best = 1 on the row of best.pt's epoch, the lowest FID so far
            row["best"] = int(self.best is not None and row["epoch"] == self.best["epoch"])
        plots.write_csv(self.history, self.out / "losses.csv")
        plots.write_csv(self.metric_history, self.out / "metrics.csv")

    def _save(self, state: dict[str, Any]) -> None:
        """Write a checkpoint (rank 0), then config.json with this start's first one."""
        checkpoint.save(state, self.out / "checkpoints")
        self.saved, self.grids = self._where(state), []
        if not self.config_written:
            checkpoint.write_config(self.out, self.cfg, self.facts)
            self.config_written = True

    def _write_failed(self, error: files.WriteFailed) -> None:
        """A file could not be written: drop this epoch's grids (none ahead of the checkpoint), say so in one line."""
        for path in self.grids:
            path.unlink(missing_ok=True)
        then = (
            f"rerunning after freeing space {self.saved}"
            if self.saved
            else "no checkpoint was written: rerunning starts afresh"
        )
        files.report(error, f"the last complete checkpoint and its records are as they were; {then}")

    @contextlib.contextmanager
    def _deferred(self) -> Iterator[None]:
        """Rank 0's writes: a failure is kept for _agree_written, where every process learns of it."""
        try:
            yield
        except files.WriteFailed as exc:
            self.failure = exc

    def _agree_written(self, failure: files.WriteFailed | None) -> None:
        """When rank 0 could not write, every process stops with exit 4, so none waits for it (rank 0 says why)."""
        if distributed.all_reduce([float(failure is not None)], "max")[0]:
            try:
                if failure is not None:
                    self._write_failed(failure)
            finally:  # the line is out before any process exits
                distributed.barrier()
            distributed.leave(files.WRITE_FAILED)

    def batches(
        self, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's batches of the epoch, as (images, labels) on the device, all the same size: the
        uint8 images as stored, or `transform(images)` (e.g. data.to_gan) laid out for the speed switches."""
        size = self.data.batch_size
        bar = progress.bar(len(self.data) * size, self.skip * size, self.epoch, self.ns["EPOCHS"], self.is_main)
        self._read_at = time.perf_counter()
        with bar:
            for step, (images, labels) in enumerate(
                self.data.epoch(self.epoch, self.device, self.skip), start=self.skip + 1
            ):
                self.step = step
                yield (images if transform is None else self.input(transform(images))), labels
                self.averages.update((self.epoch - 1) * len(self.data) + step)
                bar.update(size)
                self._check(step, bar)
        self.seconds = self._elapsed()

    def _elapsed(self) -> float:
        """Seconds of steps in this epoch so far (before a stop too), CUDA synchronised."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self.spent + time.perf_counter() - self.started

    def _check(self, step: int, bar: tqdm) -> None:
        """Between steps: stop on a signal, stop on a NaN, show the running means, at their cadences."""
        if distributed.active():
            if step % SYNC_STEPS:
                return
            means = self._means(check=False)
            signum, bad = self.guard.agree(first_bad(means) is not None)
            if bad:
                self._diverged(means, f"by step {step}")
        else:
            if not self.guard.signum and time.perf_counter() - self._read_at < LOG_SECONDS:
                return
            means, signum = self._means(check=True, where=f"by step {step}"), self.guard.signum
        self._read_at = time.perf_counter()
        if self.board is not None and self.failure is None:  # the sums just read, so no sync of its own
            with self._deferred():  # a failure is kept to the epoch's end, where every process learns of it
                self.board.running(means, (self.epoch - 1) * len(self.data) + step)
        bar.set_postfix({k: f"{v:.3g}" for k, v in means.items()}, refresh=False)
        if signum:
            self._stop(step)

    def log(self, **values: torch.Tensor | float) -> None:
        """Add this step's numbers (device tensors: no sync) to the epoch's sums; losses.csv has their means."""
        self.tally.add(**values)

    def record(self, **values: float) -> None:
        """Epoch-level numbers for this epoch's row of losses.csv (every process records the same keys)."""
        self.extra.update(values)

    def _means(self, check: bool = True, where: str = "") -> dict[str, float]:
        """The epoch's running means, read with one host sync; with `check`, a NaN stops the run."""
        means = self.tally.means()
        if check and first_bad(means):
            self._diverged(means, where)
        return means

    def _diverged(self, means: dict[str, float], where: str) -> None:
        name, value = first_bad(means) or ("a loss on another process", math.nan)
        diverged(self.epoch, where, name, value)

    # --- rank 0's pictures and metrics, in the epoch after its batches ---

    def grid(self, draw: Callable[[], torch.Tensor], folder: str = "samples", **kwargs: Any) -> None:
        """Save folder/epoch_NNN.png of what `draw()` returns, with every model in eval mode (rank 0 only)."""
        if self.is_main:
            with steps.eval_mode(list(self.networks.values())):
                images = draw()
            path = self.out / folder / f"epoch_{self.epoch:03d}.png"
            self.grids.append(path)  # removed again if this epoch's checkpoint cannot be written
            with self._deferred():
                plots.save_grid(images, path, **kwargs)

    @property
    def eval_due(self) -> bool:
        """Whether this epoch is one that evaluates: every EVAL_EVERY epochs (0: none) and the last."""
        every = self.ns.get("EVAL_EVERY", 0)
        return self.epoch == self.ns["EPOCHS"] or bool(every) and self.epoch % every == 0

    def evaluate(
        self, sample: Callable[[], tuple[torch.Tensor, torch.Tensor | None]], extra: Callable[[], dict] | None = None
    ) -> None:
        """Every EVAL_EVERY epochs and at the last: score `sample()` (images in [0, 1], labels asked or None).

        Rank 0 only, in eval mode and on its own random numbers, so evaluating never changes training.
        """
        epoch = self.epoch
        if self.evaluator is None or not self.eval_due or self.failure is not None:
            return
        with keep_rng(self.device, self.ns["SEED"]), steps.eval_mode(list(self.networks.values())):
            fake, asked = sample()
            more = extra() if extra else None
        # metrics.csv is written after the epoch's checkpoint, which holds the row
        history, plot = self.metric_history, self._plot_due()
        with self._deferred():
            row = records.record(self.out, history, epoch, self.evaluator, fake, asked, more, plot=plot, table=False)
        if self.failure is None and math.isfinite(row["fid"]) and (self.best is None or row["fid"] < self.best["fid"]):
            self.best, self.new_best = {"epoch": epoch, "fid": row["fid"]}, row  # best.pt follows this epoch's last.pt

    # --- the end of an epoch, a stop, the end of the run ---

    def _snapshot(self, done: int) -> dict[str, Any]:
        """Everything a resume needs, after `done` complete epochs (see common/checkpoint.py)."""
        run = {"config": self.cfg, "script": self.script, "image_shape": self.image_shape, "classes": self.classes}
        run["best"] = self.best
        kept = {"models": self.networks, "optimizers": self.optimizers, "fixed": self.fixed_tensors}
        return checkpoint.snapshot(run, done, **kept, history=self.history, metrics=self.metric_history)

    def _check_weights(self, where: str) -> None:
        """Exit 3 if a model about to be saved holds a NaN or infinite weight (on any process)."""
        bad = checkpoint.nonfinite(self.networks)
        if distributed.all_reduce([float(bool(bad))], "max")[0]:
            diverged(self.epoch, where, bad or "a weight on another process", math.nan)

    def _end_epoch(self) -> None:
        """Record the epoch: its row (averaged over processes), losses.csv, loss.png and the checkpoint."""
        means = self._means(check=False)
        signum, bad = self.guard.agree(first_bad(means) is not None)
        if bad:
            self._diverged(means, "in its last steps")
        self._check_weights("at its end")
        images = len(self.data) * self.data.batch_size
        row = {"epoch": self.epoch, **means, **self.extra, "time_s": self.seconds, "img_per_s": images / self.seconds}
        row = distributed.reduce_row(row)
        row["wall_s"] = distributed.all_reduce([time.perf_counter() - self.started], "max")[0]
        state = checkpoint.gather(self._snapshot(self.epoch))
        self.history.append(row)
        if self.is_main and self.failure is None:
            with self._deferred():
                state["history"] = self.history
                grids = list(self.grids)  # _save forgets them
                self._save(state)  # first: the tables and figures never get ahead of the checkpoint
                if self.new_best is not None:  # after last.pt, which records it: a failed write is repaired on resume
                    checkpoint.save_best(state, self.new_best, self.out / "checkpoints")
                self._write_tables()
                if self.board is not None:
                    self.board.running(means, self.epoch * len(self.data))
                    scored = next((r for r in self.metric_history if r["epoch"] == self.epoch), None)
                    self.board.epoch(self.epoch, row, scored, grids)
                if self._plot_due():
                    self._draw()
                print(progress.epoch_line(row, self.ns["EPOCHS"], self._left()), flush=True)
                warning = collapsed(row)
                if warning:
                    tqdm.write(warning, file=sys.stderr)
        self._agree_written(self.failure)
        if signum:  # a signal during the epoch's grid or evaluation: its checkpoint is whole
            self.guard.exit(self._stopped(f"after epoch {self.epoch}"))

    def _left(self) -> float:
        """Seconds the epochs still to come will take, at the mean wall time of this run's epochs so far."""
        walls = [row["wall_s"] for row in self.history if "wall_s" in row]
        return (self.ns["EPOCHS"] - self.epoch) * sum(walls) / len(walls) if walls else 0.0

    def _plot_due(self) -> bool:
        """Whether this epoch redraws the figures: the last epoch does, the others at most every PLOT_SECONDS."""
        return self.epoch == self.ns["EPOCHS"] or time.perf_counter() - self._drawn > PLOT_SECONDS

    def _draw(self) -> None:
        """loss.png and the comparison page, now (the metric figures are drawn by the evaluation itself)."""
        plots.plot_curves(self.history, self.out / "loss.png", self.panels)
        page.write_index(self.out.parent)  # outputs/index.html: every run side by side (never raises)
        self._drawn = time.perf_counter()

    def _stop(self, step: int) -> None:
        """A signal asked to stop after `step`: checkpoint the epoch so far, say how to resume, exit 128 + signal."""
        state = self._snapshot(self.epoch - 1)  # the sums were checked finite when the stop was agreed
        sums, counts = self.tally.totals(), dict(self.tally.counts)
        state["partial"] = {"step": step, "sums": sums, "counts": counts, "seconds": self._elapsed()}
        self._check_weights(f"after step {step}")
        state = checkpoint.gather(state)
        if self.is_main and self.failure is None:
            with self._deferred():
                self._save(state)
                self._draw()
                if self.metric_history:  # evaluations since the figures were last drawn
                    records.draw(self.metric_history, self.out, self.classes)
                plots.make_gif(self.out / "samples", self.out / "progress.gif")
        self._agree_written(self.failure)
        self.guard.exit(self._stopped(f"in epoch {self.epoch} after step {step}"))

    def _stopped(self, where: str) -> str:
        """Where the run stopped and the command that resumes it."""
        return f"Stopped {where}; checkpoint in {self.out}/checkpoints. Resume with:\n  {resume_command()}"

    def _finish(self) -> None:
        """After the last epoch (which drew every figure): the progress GIF and one line."""
        if self.is_main:
            plots.make_gif(self.out / "samples", self.out / "progress.gif")
            print(self._best_line(), flush=True)
            print(f"Done: {self.out}/")

    def _best_line(self) -> str:
        """The run's best epoch by FID and the last evaluation's FID, or why there is no best.pt."""
        if self.best is None:
            why = "evaluation is off (EVAL_EVERY=0)" if not self.ns.get("EVAL_EVERY") else "no evaluation scored FID"
            return f"best: none, {why}: no checkpoints/best.pt, generate.py samples last.pt"
        last = next((r["fid"] for r in reversed(self.metric_history) if "fid" in r), math.nan)
        return f"best: epoch {self.best['epoch']}, FID {self.best['fid']:.4g} (last: {last:.4g}) in checkpoints/best.pt"
