"""A run's records, all that it shows of itself (rank 0 writes them): losses.csv and loss.png, metrics.csv
(one row per evaluation: record()) and the figures drawn from it (metrics.png, class_shares.png,
pixel_histogram.png), the line each evaluation and each epoch prints, best.pt, TensorBoard, and at the end
progress.gif, outputs/index.html and the best line (Records).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from common import board as board_lib
from common import checkpoint, class_scores, files, page, plots, progress, run_folders
from common.cadence import Cadence
from common.evaluation import Evaluator, prdc_text
from common.gan import collapsed


def draw(history: list[dict], out: Path, classes: tuple[str, ...]) -> None:
    """metrics.png (each score by epoch beside its floor) and class_shares.png from a run's metric history."""
    plots.plot_metrics(history, out / "metrics.png")
    plots.plot_class_shares(history, out / "class_shares.png", classes)


def record(
    out: Path,
    history: list[dict],
    epoch: int,
    evaluator: Evaluator,
    fake: torch.Tensor,
    asked: torch.Tensor | None = None,
    extra: dict[str, float] | None = None,
    plot: bool = True,
    table: bool = True,
) -> dict[str, Any]:
    """Score one epoch's samples, append the row to `history`, write metrics.csv with `table` (a run writes
    it after its checkpoint instead) and, with `plot`, metrics.png, class_shares.png and pixel_histogram.png."""
    start = time.perf_counter()
    row: dict[str, Any] = {"epoch": epoch, **evaluator.scores(fake, asked), **(extra or {})}
    row["eval_s"] = time.perf_counter() - start
    history[:] = [r for r in history if r["epoch"] != epoch] + [row]
    if table:
        plots.write_csv(history, out / "metrics.csv")
    if plot:
        draw(history, out, evaluator.classes)
        real = evaluator.reference(row["n"])
        plots.pixel_histogram(real, fake[: row["n"]], out / "pixel_histogram.png", f"pixel intensities, epoch {epoch}")
    shares = [row[f"share_{k}"] for k in range(len(evaluator.classes))]
    parts = [
        f"fid {row['fid']:.3g} (floor {row['fid_floor']:.3g})",
        f"kid {row['kid']:.3g} (floor {row['kid_floor']:.2g})",
        f"is {row['is']:.3g} (real {row['is_real']:.3g})",
        prdc_text(row),
        f"classes {row['classes_covered']}/{len(evaluator.classes)}",
        f"class shares {min(shares):.0%}-{max(shares):.0%}",
    ]
    if "label_acc" in row:
        per_class = [row[f"label_acc_{k}"] for k in range(len(evaluator.classes))]
        verdict = class_scores.label_verdict(row["label_acc"], per_class, evaluator.classes)
        parts.append(f"label acc {row['label_acc']:.1%} (real {row['label_acc_real']:.1%}; {verdict})")
    parts += [f"{k} {v:.4g}" for k, v in (extra or {}).items()]
    print(f"metrics epoch {epoch}: " + "  ".join(parts) + f"  ({row['eval_s']:.1f}s)", flush=True)
    return row


class Records:
    """What a run shows of itself (rank 0 writes): losses.csv, metrics.csv, loss.png and the metric figures,
    best.pt, TensorBoard, the epoch line, and at the end progress.gif, outputs/index.html and the best line.

    Every one of them is written after the checkpoint that holds its rows (a resume rewrites the tables
    from it), and best.pt after that epoch's last.pt, which records it as "best" (a failed best.pt is
    written again on resume).
    """

    def __init__(self, out: Path, tensorboard: bool = False):
        self.out, self.tensorboard = out, tensorboard
        self.classes: tuple[str, ...] = ()
        self.history: list[dict] = []  # losses.csv rows
        self.scores: list[dict] = []  # metrics.csv rows
        self.best: dict[str, Any] | None = None  # {"epoch", "fid"} of the lowest FID so far, kept in last.pt
        self.new_best: dict[str, Any] | None = None  # this epoch's metrics row when it beat the best: best.pt is due
        self.board: board_lib.Board | None = None  # TensorBoard's writers (rank 0, TENSORBOARD=True)
        self.panels: list[tuple[str, Sequence[str]]] = []  # loss.png's panels
        if tensorboard:
            board_lib.check()  # a missing package: one line, before any data or training

    def rows(self) -> dict[str, Any]:
        """What a checkpoint keeps of the records: the rows of both tables and the best epoch."""
        return {"history": self.history, "metrics": self.scores, "best": self.best}

    def open(self, panels: Mapping[str, Sequence[str]], is_main: bool, step: int, epoch: int) -> None:
        """Before the first epoch: loss.png's panels; TensorBoard from the checkpoint's step on (nothing twice)."""
        self.panels = list(panels.items())
        if is_main and self.tensorboard:
            self.board = board_lib.Board(self.out / "tensorboard", step, epoch)

    def restore(self, state: dict[str, Any], is_main: bool) -> None:
        """The rows of a checkpoint being resumed; rank 0 writes the tables as it has them (no row ahead of it,
        or missing, after a failed write) and best.pt again when that write failed."""
        self.history = state["history"]
        self.scores = [run_folders.upgrade_row(row) for row in state.get("metrics", [])]  # old names renamed
        self.best = state.get("best")
        if is_main:
            self.write_tables()
            self._repair_best(state)

    def _repair_best(self, state: dict[str, Any]) -> None:
        """Write best.pt again when the checkpoint's best is its own epoch and best.pt is not: its write failed."""
        folder = self.out / "checkpoints"
        if self.best is None or "partial" in state or self.best["epoch"] != state["epoch"]:
            return  # mid-epoch weights are not the best epoch's; an older best is whole (its write came before)
        if checkpoint.best_epoch(folder) != self.best["epoch"]:
            row = next((r for r in self.scores if r["epoch"] == self.best["epoch"]), self.best)
            checkpoint.save_best(state, row, folder)

    def write_tables(self) -> None:
        """losses.csv and metrics.csv from the rows (written only after the checkpoint that holds them)."""
        for row in self.scores:  # best = 1 on the row of best.pt's epoch, the lowest FID so far
            row["best"] = int(self.best is not None and row["epoch"] == self.best["epoch"])
        plots.write_csv(self.history, self.out / "losses.csv")
        plots.write_csv(self.scores, self.out / "metrics.csv")

    def running(self, means: dict[str, float], step: int) -> None:
        """The running means just read, to TensorBoard (no sync of its own)."""
        if self.board is not None:
            self.board.running(means, step)

    def evaluated(
        self,
        epoch: int,
        evaluator: Evaluator,
        fake: torch.Tensor,
        asked: torch.Tensor | None,
        extra: dict[str, float] | None,
        plot: bool,
    ) -> None:
        """Score an epoch's samples into its metrics row (the figures with `plot`); a lower FID makes best.pt due."""
        self.new_best = None
        row = record(self.out, self.scores, epoch, evaluator, fake, asked, extra, plot=plot, table=False)
        if math.isfinite(row["fid"]) and (self.best is None or row["fid"] < self.best["fid"]):
            self.best, self.new_best = {"epoch": epoch, "fid": row["fid"]}, row  # best.pt follows this epoch's last.pt

    def epoch_done(
        self,
        state: dict[str, Any],
        row: dict[str, Any],
        means: dict[str, float],
        grids: list[Path],
        cadence: Cadence,
        steps: int,
        saved: bool,
    ) -> None:
        """The epoch's end: when its checkpoint was `saved`, best.pt, the tables and (when due) the figures after
        it; TensorBoard (a resume purges what came after its checkpoint) and the line."""
        epoch, new, self.new_best = row["epoch"], self.new_best, None
        if saved:
            if new is not None:  # after last.pt, which records it: a failed write is repaired on resume
                checkpoint.save_best(state, new, self.out / "checkpoints")
            self.write_tables()
        if self.board is not None:
            self.board.running(means, epoch * steps)
            scored = next((r for r in self.scores if r["epoch"] == epoch), None)
            self.board.epoch(epoch, row, scored, grids)
        if saved and cadence.draw(epoch):
            with cadence.timed("writing", "draw"):
                self.draw_page()
        print(progress.epoch_line(row, cadence.epochs, self._left(cadence.epochs)), flush=True)
        warning = collapsed(row)
        if warning:
            tqdm.write(warning, file=sys.stderr)

    def _left(self, epochs: int) -> float:
        """Seconds the epochs still to come will take, at the mean wall time of this run's epochs so far."""
        walls = [row["wall_s"] for row in self.history if "wall_s" in row]
        return (epochs - len(self.history)) * sum(walls) / len(walls) if walls else 0.0

    def draw_page(self) -> None:
        """loss.png and the comparison page, now (the metric figures are drawn by the evaluation itself)."""
        plots.plot_curves(self.history, self.out / "loss.png", self.panels)
        page.write_index(self.out.parent)  # outputs/index.html: every run side by side (never raises)

    def stopped(self) -> None:
        """After a stop's checkpoint: every figure as it stands now, and the progress GIF."""
        self.draw_page()
        if self.scores:  # evaluations since the figures were last drawn
            draw(self.scores, self.out, self.classes)
        plots.make_gif(self.out / "samples", self.out / "progress.gif")

    def close(self, finished: bool, eval_every: int | str, cadence: Cadence) -> None:
        """The run's end (after the script's last pictures): TensorBoard closed; when every epoch was trained,
        progress.gif, outputs/index.html with the final pictures, where the time went (printed, and time.json
        for compare.py), the best line and "Done:" as the last line."""
        if self.board is not None:
            self.board.close()
        if not finished:
            return
        with cadence.timed("writing"):
            plots.make_gif(self.out / "samples", self.out / "progress.gif")
            page.write_index(self.out.parent)
        times = cadence.summary()
        files.write_text(
            self.out / "time.json", json.dumps({k: round(v, 2) for k, v in times.items()}) + "\n", "time.json"
        )
        print(progress.time_line(times), flush=True)
        print(self.best_line(eval_every), flush=True)
        print(f"Done: {self.out}/", flush=True)

    def best_line(self, eval_every: int) -> str:
        """The run's best epoch by FID and the last evaluation's FID, or why there is no best.pt."""
        if self.best is None:
            why = "evaluation is off (EVAL_EVERY=0)" if not eval_every else "no evaluation scored FID"
            return f"best: none, {why}: no checkpoints/best.pt, generate.py samples last.pt"
        last = next((r["fid"] for r in reversed(self.scores) if "fid" in r), math.nan)
        return f"best: epoch {self.best['epoch']}, FID {self.best['fid']:.4g} (last: {last:.4g}) in checkpoints/best.pt"
