"""One training run, start to end: the order of everything around a script's loop that is not its algorithm.

    with run.Run(globals(), SHAPE_KEYS) as r:       # device, torchrun, seeding, speed switches
        ds = r.load(lambda device: data.load(DATASET, DATA_DIR, DOWNLOAD, device))  # then the run folder
        generator = r.models({"generator": Generator(LATENT_DIM)})["generator"]  # on the device, saved by name
        opt_g = r.adam("opt_g", generator, LR, (BETA1, 0.999))
        fixed_noise = r.fixed("fixed_noise", torch.randn(64, LATENT_DIM))
        train_g = r.wrap(generator)                  # DDP under torchrun, compiled if asked
        for epoch in r.epochs({"losses": ("loss_g",)}):   # resumes; each epoch ends recorded
            for images, labels in r.batches():       # progress bar; Ctrl-C and NaN checks between steps
                r.log(loss_g=g_step(...))            # device tensors, summed on the device
            r.grid(lambda: generator(fixed_noise))   # samples/epoch_NNN.png (rank 0)
            r.evaluate(lambda: sample(generator))    # metrics.csv when the cadence says (rank 0)
                                                     # leaving the block ends the run: GIF, page, "Done:"
The order, and the module of each mechanism:
- start: device, torchrun, seed, speed switches; the data; what plainly cannot fit (memory.py); the run
  folder (out_dir.py), the same on every node, or exit 2 (nodes.py); the evaluator.
- a step: `log` adds device tensors to device sums (tally.py); the sums are read when cadence.py says, every
  process agrees on Ctrl-C and NaN there, and a lost peer is one line, exit 6 (guard.py).
- an epoch's end: its row; the checkpoint (checkpoint.contents says what it holds); then best.pt, the
  tables, the figures, TensorBoard and the line (records.py). A stop: a mid-epoch checkpoint, exit 130/143.
- a failed write: rank 0 keeps it to the epoch's end, a stop or the end, where every process exits 4
  (rank0_writes.py); out of memory anywhere: one line, exit 5 (memory.py). That epoch's grids are removed.
- the end, once the script's block is left (after its last pictures): progress.gif, index.html, "Done:".

The settings are `r.cfg`: the constants after the overrides, with DATASET as loaded (e.g. the offline
mnist-sample) and EPOCHS as budgeted (SAMPLE_EPOCHS on the sample); the script's globals stay as set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from tqdm import tqdm

from common import augment, checkpoint, config, data, distributed, folder_lock, memory, nodes, out_dir, plots, progress
from common.cadence import Cadence, process_age
from common.device import keep_rng, seed_all
from common.ema import Averages
from common.evaluation import Evaluator
from common.guard import Guard
from common.rank0_writes import Rank0Writes
from common.records import Records
from common.speed import Speed
from common.tally import Epoch
from common.training import eval_mode


class Run:
    """A training run of one script: see the module docstring for the whole surface."""

    def __init__(self, namespace: dict[str, Any], shape_keys: Sequence[str] = (), out_suffix: str = ""):
        self.ns = namespace  # the script's globals: its constants, after the overrides
        self.settled: dict[str, Any] = {}  # DATASET as loaded, EPOCHS as budgeted: r.cfg has them
        self.augment = augment.policy(namespace.get("AUGMENT", ""))  # D's input transformations, or None
        self.script = Path(namespace["__file__"]).name
        self.shape_keys = tuple(shape_keys)  # resuming with other values of these refuses
        self.dist = distributed.setup(namespace["DEVICE"], namespace.get("SYNC_BN", False))
        self.device, self.is_main = self.dist.device, self.dist.is_main
        seed_all(namespace["SEED"] + self.dist.rank, namespace.get("DETERMINISTIC", False))  # own noise per process
        self.speed = Speed.from_config(self.cfg, self.device, verbose=self.is_main)  # one line: what and why
        self.autocast, self.input = self.speed.autocast, self.speed.input
        self.out = out_dir.asked(namespace, self.script, out_suffix)
        # what a checkpoint keeps, by name: models (with their averages), optimizers, fixed tensors
        self.networks, self.optimizers, self.fixed_tensors = {}, {}, {}
        self.averages = Averages()
        self.classes, self.evaluator = (), None  # the data set's class names; rank 0's Evaluator, when it evaluates
        self.guard, self.writes = Guard(), Rank0Writes()
        eval_every, together = namespace.get("EVAL_EVERY", 0), distributed.active()
        self.cadence = Cadence(namespace["EPOCHS"], eval_every, together, since=process_age())  # imports too
        self.records = Records(self.out, namespace.get("TENSORBOARD", False))
        self.now = Epoch(0, self.device)  # the epoch under way (0: none yet)
        self.saver = checkpoint.Saver(self.out)  # last.pt and config.json; the grids written since
        self.finished = False  # every epoch trained: leaving the block ends the run

    @property
    def cfg(self) -> dict[str, Any]:
        """The run's settings: the script's constants as they are now, DATASET as loaded, EPOCHS as budgeted."""
        return {**config.constants(self.ns), **self.settled}

    @property
    def epoch(self) -> int:
        return self.now.number

    @property
    def step(self) -> int:  # the step under way since the run's start (1, 2, ...; counted on across resumes)
        return (self.now.number - 1) * len(self.data) + self.now.step

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self.guard.__exit__(kind, exc, tb)  # a lost peer under torchrun: one line, exit 6
            if memory.is_out_of_memory(exc):  # one line, exit 5; the grids ahead of the last checkpoint go
                memory.stop_run(exc, self.device, self.ns, self.cadence.under_way(exc), self.now, self.saver)
            if kind is None or self.writes.escaped(exc):  # every process agrees: none waits for another
                if self.is_main and not self.writes.failed:
                    with self.writes.kept():  # after the script's last pictures: the GIF, the page, the lines
                        self.records.close(self.finished, self.ns.get("EVAL_EVERY", 0), self.cadence)
                self.writes.settle(self.saver.failed)
                distributed.barrier()  # every process is done before the process group goes
                distributed.cleanup()
        finally:
            folder_lock.release(self.out)  # the next run may use the folder

    def load(self, load: Callable[[torch.device], Any]) -> Any:
        """Load the data (local rank 0 of each node first: it downloads or builds caches), then start the run
        folder, the same on every node. `load(device)` returns a data.Dataset (trained on its train split; it can be evaluated) or a data.Split."""
        with distributed.node_first():  # each node prepares its DATA_DIR once
            loaded = load(self.device)
        train = loaded.train if isinstance(loaded, data.Dataset) else loaded
        if isinstance(loaded, data.Dataset):
            self.settled["DATASET"], self.classes = loaded.name, loaded.classes  # e.g. the offline mnist-sample
        self.image_shape = tuple(train.images.shape[1:])
        memory.check_fits(self.cfg, self.ns["build_models"], self.image_shape, len(self.classes), self.device)
        self.data = data.Batches(train, self.ns["BATCH_SIZE"], self.ns["SEED"], self.dist.rank, self.dist.world_size)
        self.settled["EPOCHS"] = progress.budget(self.cfg, self.ns.get(config.OVERRIDDEN, ()), self.data, self.is_main)
        self.cadence.epochs, self.records.classes = self.settled["EPOCHS"], self.classes
        self.saver.facts = out_dir.start(
            self.out, self.cfg, self.shape_keys, self.script, self.device, self.speed.summary
        )
        if self.ns.get("EVAL_EVERY") and self.is_main and isinstance(loaded, data.Dataset):
            self.evaluator = Evaluator.for_dataset(loaded, self.ns["DATA_DIR"], self.device)
        return loaded

    def models(self, models: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
        """The models on the run's device (channels_last if asked), saved in checkpoints by their names."""
        self.networks.update({name: self.speed.prepare(m.to(self.device)) for name, m in models.items()})
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
        """A moving average of `model`'s weights, updated after every step, saved as `name`: sample from it."""
        base = next(key for key, net in self.networks.items() if net is model)
        self.networks[name] = self.averages.add(name, base, model, decay)
        return self.networks[name]

    def wrap(self, model: torch.nn.Module, sync_buffers: bool = True) -> torch.nn.Module:
        """What the steps train through: DDP under torchrun (SyncBatchNorm if asked), compiled if asked. Grids,
        metrics and checkpoints use the plain module, which shares its parameters."""
        ddp = distributed.wrap(model, sync_bn=self.ns.get("SYNC_BN", False), sync_buffers=sync_buffers)
        return self.speed.compiled(ddp)

    def epochs(self, panels: Mapping[str, Sequence[str]]) -> Iterator[int]:
        """The epochs still to train (after a resume, from where the run stopped); each one ends recorded.
        `panels`: loss.png's panels, title -> the logged names drawn in it."""
        cfg = self.cfg
        state = nodes.resumed(self.out, cfg, self.shape_keys)  # the same epoch and step on every process
        partial = self._restore(state) if state is not None else None
        done = state["epoch"] if state is not None else 0
        steps = done * len(self.data) + (partial["step"] if partial else 0)
        self.records.open(panels, self.is_main, steps, done)  # TensorBoard from the checkpoint's step on
        self.guard.__enter__()  # Ctrl-C / SIGTERM: finish the step, save a checkpoint, exit 130 / 143
        for epoch in range(done + 1, cfg["EPOCHS"] + 1):
            self.now, partial = Epoch(epoch, self.device, partial), None  # a stop inside it: its steps and sums
            yield epoch
            self._end_epoch()
        self.guard.__exit__(None, None, None)  # from here on Ctrl-C stops at once: nothing is left to save
        self.finished = True

    def _restore(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """Put a checkpoint into this run; returns its mid-epoch part, if any."""
        self.averages.fill_missing(state["models"])
        checkpoint.restore(state, self.networks, self.optimizers, self.fixed_tensors)
        self.saver.saved = checkpoint.where(state)
        self.records.restore(state, self.is_main)  # the tables as the checkpoint has them; best.pt repaired
        return state.get("partial")

    def batches(self, transform: Callable | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's batches of the epoch, as (images, labels) on the device, all the same size: the
        uint8 images as stored, or `transform(images)` (e.g. data.to_gan) laid out for the speed switches."""
        now, size = self.now, self.data.batch_size
        bar = progress.bar(len(self.data) * size, now.skip * size, now.number, self.cfg["EPOCHS"], self.is_main)
        self.cadence.stepping()  # the sums' clock starts
        with bar:
            for step, (images, labels) in enumerate(self.data.epoch(now.number, self.device, now.skip), now.skip + 1):
                now.step = step
                yield (images if transform is None else self.input(transform(images))), labels
                self.averages.update(self.step)
                bar.update(size)
                if self.cadence.read(step, bool(self.guard.signum)):
                    self._read(step, bar)
        now.seconds = now.elapsed()

    def _read(self, step: int, bar: tqdm) -> None:
        """Read the running sums (one sync): the processes agree on a stop and a NaN; the bar and TensorBoard."""
        means = self.now.tally.means()
        signum = self.guard.check(means, self.epoch, f"by step {step}")
        self.cadence.was_read()
        if self.is_main and not self.writes.failed:
            with self.writes.kept():  # a failure is kept to the epoch's end, where every process learns of it
                self.records.running(means, (self.epoch - 1) * len(self.data) + step)
        bar.set_postfix({k: f"{v:.3g}" for k, v in means.items()}, refresh=False)
        if signum:
            self._stop(step)

    def log(self, **values: torch.Tensor | float) -> None:
        """Add this step's numbers (device tensors: no sync) to the epoch's sums; losses.csv has their means."""
        self.now.tally.add(**values)

    def record(self, **values: float) -> None:
        """Epoch-level numbers for this epoch's row of losses.csv (every process records the same keys)."""
        self.now.extra.update(values)

    # --- rank 0's pictures and metrics, in the epoch after its batches ---

    def grid(self, draw: Callable[[], torch.Tensor], folder: str = "samples", **kwargs: Any) -> None:
        """Save folder/epoch_NNN.png of what `draw()` returns when the cadence says (rank 0 only), with every model
        in eval mode and on its own random numbers: whether an epoch draws never changes what the run trains."""
        if not self.is_main or not self.cadence.grid(self.epoch):
            return
        path = self.out / folder / f"epoch_{self.epoch:03d}.png"
        self.saver.grids.append(path)  # removed again if this epoch's checkpoint cannot be written
        with self.cadence.timed("grids", "grid"):
            with keep_rng(self.device), eval_mode(list(self.networks.values())):
                images = draw()
            with self.writes.kept():
                plots.save_grid(images, path, **kwargs)

    def evaluating(self) -> contextlib.AbstractContextManager:
        """A block of the script's own evaluation work outside evaluate() (the VAE's class fit): its seconds count
        as evaluation, in the budget and the time line, and the cadence weighs its cost with each evaluation's."""
        return self.cadence.timed("evaluation", "evaluating")  # its cost counts with each evaluation's

    @property
    def eval_due(self) -> bool:
        """Whether this epoch evaluates (common/cadence.py)."""
        return self.cadence.evaluate(self.epoch)

    @property
    def last_epoch(self) -> bool:
        """Whether this epoch is the run's last."""
        return self.cadence.last(self.epoch)

    def evaluate(self, sample: Callable[[], tuple], *extras: Callable[[], dict]) -> None:
        """When the cadence says, score `sample()` (images in [0, 1], the labels asked or None) into metrics.csv,
        with the columns `extras()` return: rank 0, in eval mode, on its own random numbers (training unchanged)."""
        if self.evaluator is None or not self.eval_due or self.writes.failed:
            return
        with self.cadence.timed("evaluation", "evaluate"):
            with keep_rng(self.device, self.ns["SEED"]), eval_mode(list(self.networks.values())):
                fake, asked = sample()
                more = {key: value for extra in extras for key, value in extra().items()} or None
            plot = self.cadence.draw(self.epoch)
            with self.writes.kept():  # metrics.csv is written after the epoch's checkpoint, which holds the row
                self.records.evaluated(self.epoch, self.evaluator, fake, asked, more, plot)

    def _end_epoch(self) -> None:
        """The epoch's row, its checkpoint, then (rank 0) best.pt, the tables, the figures and the line."""
        means = self.now.tally.means()
        signum = self.guard.check(means, self.epoch, "in its last steps")
        checkpoint.check_finite(self.networks, self.epoch, "at its end")
        row = self.now.row(means, len(self.data) * self.data.batch_size)
        self.records.history.append(row)
        self.cadence.add("steps", self.now.seconds)
        state = self._contents(self.epoch)
        saving = self.cadence.save(self.epoch) or self.records.new_best is not None  # best.pt needs its last.pt
        if self.is_main and not self.writes.failed:
            grids = [path for path in self.saver.grids if path.stem == f"epoch_{self.epoch:03d}"]
            with self.writes.kept(), self.cadence.timed("writing", "save" if saving else ""):
                if saving:  # first: the tables and figures never get ahead of the checkpoint
                    self.saver.save(state, self.cfg)
                    self.cadence.was_saved()
                self.records.epoch_done(state, row, means, grids, self.cadence, len(self.data), saving)
        self.writes.settle(self.saver.failed)
        if signum:  # a signal during the epoch's grid or evaluation: its checkpoint is whole
            self.guard.exit(f"after epoch {self.epoch}", self.out)

    def _stop(self, step: int) -> None:
        """A signal asked to stop after `step`: checkpoint the epoch so far, say how to resume, exit 128 + signal."""
        partial = self.now.partial()
        checkpoint.check_finite(self.networks, self.epoch, f"after step {step}")
        state = self._contents(self.epoch - 1, partial)
        if self.is_main and not self.writes.failed:
            with self.writes.kept():
                self.saver.save(state, self.cfg)
                self.records.stopped()
        self.writes.settle(self.saver.failed)
        self.guard.exit(f"in epoch {self.epoch} after step {step}", self.out)

    def _contents(self, done: int, partial: dict[str, Any] | None = None) -> dict[str, Any]:
        """The checkpoint after `done` complete epochs (every process: it gathers their own parts)."""
        run = {"config": self.cfg, "script": self.script, "image_shape": self.image_shape, "classes": self.classes}
        kept = {"models": self.networks, "optimizers": self.optimizers, "fixed": self.fixed_tensors}
        return checkpoint.contents(run, done, **kept, rows=self.records.rows(), partial=partial)
