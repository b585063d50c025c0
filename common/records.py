"""A run's metric records: one row per evaluation in metrics.csv, the figures drawn from the rows
(metrics.png, class_shares.png, pixel_histogram.png), and the line each evaluation prints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from common import plots, scores
from common.metrics import Evaluator, prdc_text


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
        verdict = scores.label_verdict(row["label_acc"], per_class, evaluator.classes)
        parts.append(f"label acc {row['label_acc']:.1%} (real {row['label_acc_real']:.1%}; {verdict})")
    parts += [f"{k} {v:.4g}" for k, v in (extra or {}).items()]
    print(f"metrics epoch {epoch}: " + "  ".join(parts) + f"  ({row['eval_s']:.1f}s)", flush=True)
    return row
