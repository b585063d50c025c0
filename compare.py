"""Compare runs: one page of every run's grids by epoch, curves and scores, a figure and a table.

    python compare.py                 # every run in outputs/
    python compare.py OUTPUTS_DIR     # every run in OUTPUTS_DIR (a folder of runs)
    python compare.py RUN_DIR ...     # the chosen runs (folders that hold config.json)

Writes index.html, comparison.png and comparison.md into OUTPUTS_DIR or, for chosen runs, into
the folder that holds them all (their common parent: outputs/ for runs of outputs/). Every training
run rewrites OUTPUTS_DIR/index.html for all runs at its end.

A run is a folder holding config.json (written when a run starts). Its losses.csv, metrics.csv,
samples/epoch_NNN.png and checkpoints/last.pt are read when present; a missing file leaves blanks
and, on the page, a note. index.html (see common/page.py) opens from disk with no server: one
column per run, a shared epoch slider (or the arrow keys, or index.html#epoch=N) over the
fixed-noise grids, the settings that differ, the final scores beside their real-data floors, the
per-class shares, the loss and metric curves, the progress GIF and links to each run's files.
comparison.md has one row per run (data set, epochs, training time, images/s, parameters per
network, FID, KID, IS, class coverage, label accuracy, negative ELBO, IWAE, with the
real-versus-real floors) and a short note per run on its stability. With no runs the page says so
and nothing else is written; a folder that does not exist, or a RUN_DIR without config.json, is an
error (exit 2).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from common import checkpoint, config, files, page, plots  # noqa: E402
from common.run_folders import best_of, find_runs, read_csv  # noqa: E402

WINDOW = 5  # stability is judged on the last this-many epochs
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # state-dict entries that are not parameters
COLUMNS = (
    ("run", "run"),
    ("model", "model"),
    ("dataset", "dataset"),
    ("epochs", "epochs"),
    ("train time", "time"),
    ("wall time", "wall"),
    ("steps share", "steps_share"),
    ("img/s", "img_per_s"),
    ("parameters", "params"),
    ("FID", "fid"),
    ("FID floor", "fid_floor"),
    ("best (checkpoints/best.pt)", "best"),
    ("KID", "kid"),
    ("KID floor", "kid_floor"),
    ("IS", "is"),
    ("IS real", "is_real"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("density", "density"),
    ("coverage (k-NN)", "coverage"),
    ("classes covered", "classes_covered"),
    ("label acc", "label_acc"),
    ("label acc real", "label_acc_real"),
    ("region acc", "region_acc"),
    ("test neg. ELBO", "test_neg_elbo"),
    ("test IWAE", "test_iwae"),
)


def param_counts(run: Path) -> tuple[dict[str, int], list[str]]:
    """Parameters per network from checkpoints/last.pt (buffers such as BatchNorm statistics excluded), and classes."""
    path = run / "checkpoints" / checkpoint.LAST
    if not path.is_file():
        return {}, []
    try:
        state = checkpoint.read(path)
    except Exception as exc:  # damaged or foreign file: the row is still listed
        print(f"compare: cannot read {path} ({type(exc).__name__}); parameter counts left blank")
        return {}, []
    counts = {
        name: sum(t.numel() for key, t in sd.items() if not key.endswith(BUFFERS))
        for name, sd in state.get("models", {}).items()
    }
    return counts, list(state.get("classes", []))


def last_samples(run: Path) -> Path | None:
    """The newest samples/epoch_NNN.png of a run (the fixed-noise grid), or None."""
    grids = sorted((run / "samples").glob("epoch_*.png"))
    return grids[-1] if grids else None


def summarize(run: Path) -> dict[str, Any]:
    """Everything the table and the notes need about one run; absent facts are simply missing."""
    try:
        cfg = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):  # damaged: the row is still listed, with blanks (the page says why)
        cfg = {}
    cfg = cfg if isinstance(cfg, dict) else {}
    losses, scores = read_csv(run / "losses.csv"), read_csv(run / "metrics.csv")
    model = Path(str(cfg.get("script", run.name))).stem + ("-conditional" if cfg.get("conditional") else "")
    info: dict[str, Any] = {"run": run.name, "model": model, "dataset": cfg.get("dataset", ""), "losses": losses}
    info["metrics"] = scores
    if losses:
        info["epochs"] = int(losses[-1]["epoch"])
        seconds = [r["time_s"] for r in losses if "time_s" in r]
        if seconds:
            info["time"] = sum(seconds)
            images = sum(r["time_s"] * r["img_per_s"] for r in losses if "img_per_s" in r and "time_s" in r)
            info["img_per_s"] = images / info["time"] if info["time"] else None
        for key in ("test_neg_elbo",):
            if key in losses[-1]:
                info[key] = losses[-1][key]
    if scores:
        info.update({k: v for k, v in scores[-1].items() if k != "epoch"})
        info["metrics_epoch"] = int(scores[-1]["epoch"])
        info["best"] = best_of(scores)
    try:  # where the run's time went (written at its end): the wall time and the steps' share of it
        times = json.loads((run / "time.json").read_text())
        info["wall"], info["steps_share"] = times["wall"], times["steps"] / times["wall"]
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):  # a run from before, or still running
        pass
    counts, classes = param_counts(run)
    info["param_counts"], info["classes"] = counts, classes
    info["params"] = ", ".join(f"{name} {_count(n)}" for name, n in counts.items())
    if "classes_covered" in info:
        info["classes_covered"] = f"{int(info['classes_covered'])}/{len(classes) or 10}"
    info["samples"] = last_samples(run)
    return info


def _count(n: int) -> str:
    """A parameter count in k or M."""
    return f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n / 1e3:.1f}k"


def _cell(key: str, value: Any) -> str:
    """One table cell: blank for missing, durations in s/min, rates as %, numbers to 3-4 figures."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if key in ("time", "wall"):
        return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"
    if key in ("label_acc", "label_acc_real", "region_acc", "steps_share"):
        return f"{value:.1%}"
    if key == "img_per_s":
        return f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _trend(rows: list[dict[str, Any]], key: str) -> tuple[float, float, float] | None:
    """(first, last, standard deviation) of a column over the last WINDOW rows that have it."""
    values = [r[key] for r in rows if key in r][-WINDOW:]
    if len(values) < 2:
        return None
    return values[0], values[-1], statistics.pstdev(values)


def stability(info: dict[str, Any]) -> str:
    """A few generated sentences on how steady the run looks, from what its CSV files show."""
    losses, scores = info["losses"], info["metrics"]
    if len(losses) < 3:
        return f"Too few epochs ({len(losses)}) to judge stability."
    notes = []
    window = min(WINDOW, len(losses))
    for key in ("loss_d", "loss_g", "train_neg_elbo"):
        trend = _trend(losses, key)
        if trend:
            mean = statistics.fmean(r[key] for r in losses[-window:])
            swing = trend[2] / abs(mean) if mean else 0.0
            if swing > 0.15:
                notes.append(
                    f"{key} swings over the last {window} epochs (std {trend[2]:.3g}, {swing:.0%} of its mean)."
                )
    d_real, d_fake = _trend(losses, "d_real"), _trend(losses, "d_fake")
    if d_real and d_real[1] > 0.8 and d_real[1] > d_real[0] + 0.02:
        notes.append(f"D(x) drifts towards 1 ({d_real[0]:.2f} -> {d_real[1]:.2f}): the discriminator is winning.")
    if d_fake and d_fake[1] < 0.2 and d_fake[1] < d_fake[0] - 0.02:
        notes.append(
            f"D(G(z)) falls towards 0 ({d_fake[0]:.2f} -> {d_fake[1]:.2f}): the generator's gradient may fade."
        )
    test = _trend(losses, "test_neg_elbo")
    train = _trend(losses, "train_neg_elbo")
    if test and train and test[1] > test[0] and train[1] < train[0]:
        notes.append(f"Test negative ELBO rises ({test[0]:.1f} -> {test[1]:.1f}) while train falls: overfitting.")
    coverage = [(int(r["epoch"]), int(r["classes_covered"])) for r in scores if "classes_covered" in r]
    if coverage:
        best_epoch, best = max(coverage, key=lambda c: (c[1], -c[0]))
        if coverage[-1][1] < best:
            notes.append(
                f"Class coverage dropped from {best} (epoch {best_epoch}) to {coverage[-1][1]}: a sign of mode collapse."
            )
    fids = [(int(r["epoch"]), r["fid"]) for r in scores if "fid" in r]
    if len(fids) >= 2:
        best_epoch, best = min(fids, key=lambda f: f[1])
        if fids[-1][1] > 1.2 * best and best_epoch != fids[-1][0]:
            notes.append(f"FID is worse now ({fids[-1][1]:.3g}) than at epoch {best_epoch} ({best:.3g}).")
    if notes:
        return " ".join(notes)
    return f"No sign of instability over the last {window} epochs (steady losses, no drift or coverage drop)."


def write_markdown(runs: list[dict[str, Any]], path: Path) -> None:
    """comparison.md: the table, then a stability note per run."""
    lines = [
        "# Comparison of runs",
        "",
        f"Generated by `python compare.py {path.parent}` from {len(runs)} run(s); final samples in `comparison.png`.",
        "Scores are from each run's last metrics.csv row (classifier-feature FID/KID/IS; floors: real train vs",
        "real test images, same count). Blank: the run has no such file or column.",
        "",
        "| " + " | ".join(title for title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for info in runs:
        lines.append("| " + " | ".join(_cell(key, info.get(key)) for _, key in COLUMNS) + " |")
    lines += ["", "## Stability", ""]
    for info in runs:
        lines.append(f"- **{info['run']}** ({info['model']}, {info['dataset']}): {stability(info)}")
    files.write_text(path, "\n".join(lines) + "\n", "the comparison table")


def write_figure(runs: list[dict[str, Any]], path: Path, per_row: int = 4) -> None:
    """comparison.png: each run's final fixed-noise grid, labelled with model, data set and epochs."""
    n_rows = -(-len(runs) // per_row)
    n_cols = min(per_row, len(runs))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4 * n_cols, 4.4 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, info in zip(axes.flat, runs, strict=False):  # the last row may have empty cells
        if info["samples"] is not None:
            with Image.open(info["samples"]) as im:
                ax.imshow(im.convert("RGB"))
        else:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center")
        epochs = f"{info['epochs']} epochs" if "epochs" in info else "epochs unknown"
        ax.set_title(f"{info['run']}\n{info['model']}, {info['dataset']}, {epochs}", fontsize=9)
    fig.tight_layout()
    plots.save_figure(fig, path)


def choose(argv: list[str]) -> tuple[Path, list[Path] | None]:
    """The folder to write into, and the runs named on the command line (None: every run in that folder)."""
    if len(argv) <= 1 and not (argv and (Path(argv[0]) / "config.json").is_file()):
        root = Path(argv[0] if argv else "outputs")
        if not root.is_dir():
            config.fail(f"{root} is not a folder of runs (train a model first, e.g. python VAE-MNIST.py)")
        return root, None
    runs = [Path(a) for a in argv]
    for run in runs:
        if not (run / "config.json").is_file():
            config.fail(f"{run} is not a run: it has no config.json")
    return Path(os.path.commonpath([run.resolve().parent for run in runs])), runs


def main(argv: list[str]) -> int:
    """Write index.html, comparison.png and comparison.md for the runs asked for."""
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    if any(a.startswith("-") for a in argv):
        config.fail("usage: python compare.py [OUTPUTS_DIR | RUN_DIR ...]")
    root, chosen = choose(argv)
    index = page.write_index(root, chosen)
    if index is not None:
        print(f"compare: page -> {index}")
    runs = [summarize(run) for run in (find_runs(root) if chosen is None else chosen)]
    if not runs:
        print(f"compare: no runs in {root}/ (a run is a folder with config.json); no table or figure written")
        return 0
    try:
        write_markdown(runs, root / "comparison.md")
        write_figure(runs, root / "comparison.png")
    except files.WriteFailed as exc:  # e.g. a full disk: one line, exit 4, no half-written file left
        files.fail(exc, "any file it would replace is as it was; rerun after freeing space")
    print(f"compare: {len(runs)} run(s) -> {root / 'comparison.md'}, {root / 'comparison.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
