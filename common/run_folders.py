"""Reading run folders: which folders under outputs/ are runs, and what each one holds.

A run is a folder holding config.json. load_run() gathers what the comparison page shows of one
(common/page.py renders it): its settings, the rows of losses.csv and metrics.csv, its sample grids
by epoch and links to its files, relative to the page; each missing or unreadable file adds a note
instead of an error. compare.py reads the same CSV files with read_csv().

metrics.csv files from before precision/recall/density/coverage named the classes drawn at half
their fair share `coverage`; upgrade_row() renames that column `classes_covered` as they are read.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

PICTURES = (("loss curves", "loss.png"), ("metrics by epoch", "metrics.png"), ("progress", "progress.gif"))
FILES = ("config.json", "losses.csv", "metrics.csv", "checkpoints/last.pt")
GRID = re.compile(r"epoch_(\d+)\.png")


def upgrade_row(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row as this version names it: an old `coverage` (classes covered) becomes `classes_covered`."""
    if "coverage" in row and "classes_covered" not in row:  # both columns exist only in new rows
        row["classes_covered"] = row.pop("coverage")
    return row


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV file with numbers parsed (empty cells dropped); [] when the file is missing."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if value in ("", None) or key is None:
                    continue
                try:
                    row[key] = float(value)
                except ValueError:
                    row[key] = value
            rows.append(upgrade_row(row))
    return rows


def best_of(scores: list[dict[str, Any]]) -> str:
    """ "epoch N, FID x (last: y)" of metrics.csv rows: the row marked best (best.pt's), else the lowest FID; "" if none."""
    scored = [r for r in scores if isinstance(r.get("fid"), float) and r["fid"] == r["fid"] and "epoch" in r]
    if not scored:
        return ""
    marked = [r for r in scored if r.get("best") == 1]  # runs from before best.pt have no column: their lowest FID
    best = marked[-1] if marked else min(scored, key=lambda r: r["fid"])
    return f"epoch {int(best['epoch'])}, FID {best['fid']:.4g} (last: {scored[-1]['fid']:.4g})"


def find_runs(root: Path) -> list[Path]:
    """The sub-folders of root that are runs (they hold config.json), in name order; [] if root is no folder."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())


def url(target: Path, page_dir: Path) -> str:
    """A link from the page to target: relative, percent-encoded, with forward slashes."""
    return quote(Path(os.path.relpath(target, page_dir)).as_posix())


def _rows(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """read_csv, but a damaged file is a note instead of an error."""
    try:
        return read_csv(path)
    except Exception as exc:
        notes.append(f"{path.name} unreadable ({type(exc).__name__})")
        return []


def load_run(run: Path, page_dir: Path) -> dict[str, Any]:
    """What the page shows of one run; each missing or unreadable file adds a note instead of failing."""
    notes: list[str] = []
    try:
        cfg = json.loads((run / "config.json").read_text())
        if not isinstance(cfg, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        cfg = {}
        notes.append(f"config.json unreadable ({type(exc).__name__})")
    losses, scores = _rows(run / "losses.csv", notes), _rows(run / "metrics.csv", notes)
    found = sorted((int(m[1]), p) for p in (run / "samples").glob("epoch_*.png") if (m := GRID.fullmatch(p.name)))
    grids = [(epoch, url(p, page_dir)) for epoch, p in found]
    done = int(losses[-1].get("epoch", len(losses))) if losses else 0
    planned = cfg.get("epochs")
    if not losses:
        notes.append("no epoch finished yet (losses.csv missing or empty)")
    elif isinstance(planned, int) and done < planned:
        notes.append(f"{done} of {planned} epochs done: still running, or stopped")
    if not grids:
        notes.append("no sample grids (samples/epoch_NNN.png)")
    else:
        gaps = sorted(set(range(1, grids[-1][0] + 1)) - {e for e, _ in grids})
        if gaps:
            notes.append(f"no grid for epoch {', '.join(map(str, gaps[:10]))}" + (" ..." if len(gaps) > 10 else ""))
    if not scores:
        notes.append("no metrics.csv: not evaluated yet, or --eval_every=0")
    names = (*FILES, *(name for _, name in PICTURES))
    files = {name: url(run / name, page_dir) if (run / name).is_file() else None for name in names}
    notes += [f"no {name}" for name in names if files[name] is None and not name.endswith((".csv", ".json"))]
    seconds = sum(r["time_s"] for r in losses if isinstance(r.get("time_s"), float))
    final = {
        **{k: v for k, v in (losses[-1] if losses else {}).items() if k.startswith("test_")},
        **(scores[-1] if scores else {}),
    }
    return {
        "name": Path(os.path.relpath(run, page_dir)).as_posix(),
        "url": url(run, page_dir) + "/",
        "cfg": cfg,
        "done": done,
        "planned": planned,
        "time": f' <span class="floor">in {seconds:.0f} s</span>' if seconds else "",
        "final": final,
        "scored": int(scores[-1]["epoch"]) if scores and "epoch" in scores[-1] else None,
        "best": best_of(scores),
        "grids": grids,
        "files": files,
        "notes": notes,
    }
