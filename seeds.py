"""Run one configuration over several seeds and report each final metric's mean and spread.

    python seeds.py DCGAN-MNIST.py --seeds 0,1,2 -- --dataset=mnist-sample --epochs=20
    python seeds.py CDCGAN-MNIST.py --seeds 0,1,2 --out outputs/cdcgan-seeds -- --epochs=20

Each seed trains in OUT/seed_<k>/ (OUT defaults to outputs/<script>-seeds); a run already finished
there is resumed, so an interrupted study continues where it stopped. The arguments after `--`
go to every run. The last row of each run's metrics.csv is collected into OUT/seeds.md and
OUT/seeds.csv: one row per seed, then the mean and the standard deviation of every metric, with
the per-class shares (share_<k>) and per-class label accuracies where the runs have them.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import subprocess
import sys
from pathlib import Path

from common import plots
from common.config import ROOT, fail, hold
from common.domains import Int
from common.run_folders import upgrade_row

SCRIPTS = ("VAE-MNIST.py", "GAN-MNIST.py", "DCGAN-MNIST.py", "CDCGAN-MNIST.py", "DCGAN-CelebA.py")
# seeds.md columns (region_acc: the unconditional VAE's classes drawn from their latent regions)
SHOWN = (
    "fid",
    "fid_floor",
    "kid",
    "is",
    "classes_covered",
    "precision",
    "recall",
    "label_acc",
    "region_acc",
    "test_neg_elbo",
    "test_iwae",
)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The options, and the arguments after `--` that every run gets."""
    passed = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.error = fail  # type: ignore[method-assign]  # the repo's one-line `error: ...`, exit code 2
    parser.add_argument("script", help=f"one of {', '.join(SCRIPTS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--out", help="the study's folder (default outputs/<script>-seeds)")
    args = parser.parse_args(own)
    if args.script not in SCRIPTS:
        fail(f"{args.script} is not a training script; use one of: {', '.join(SCRIPTS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        fail(f"--seeds {args.seeds!r} must be comma-separated integers, e.g. 0,1,2")
    if not args.seeds:
        fail("--seeds names no seed")
    for seed in args.seeds:
        hold("--seeds", seed, Int(0, 2**32 - 1))  # each run's --seed (the scripts' SEED domain)
    bad = [a for a in passed if a.lower().startswith(("--seed=", "--out_dir="))]
    if bad:
        fail(f"{bad[0]} is set by seeds.py for each run; leave it out")
    return args, passed


def last_metrics(run: Path) -> dict[str, float]:
    """The numbers of the last row of a run's metrics.csv ({} if it has none)."""
    path = run / "metrics.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return upgrade_row({k: float(v) for k, v in (rows[-1] if rows else {}).items() if v not in ("", None)})


def summarize(rows: list[dict[str, float]]) -> list[dict[str, float | str]]:
    """The mean and the (sample) standard deviation of every column the runs share."""
    keys = [k for k in rows[0] if k not in ("seed", "epoch") and all(k in r for r in rows)]
    mean = {"seed": "mean", **{k: statistics.fmean(r[k] for r in rows) for k in keys}}
    spread = {"seed": "std", **{k: statistics.stdev([r[k] for r in rows]) if len(rows) > 1 else 0.0 for k in keys}}
    return [mean, spread]


def markdown(script: str, passed: list[str], rows: list[dict], summary: list[dict]) -> str:
    """seeds.md: the command, one row per seed, then mean and std."""
    cols = [k for k in SHOWN if k in summary[0]] + sorted(k for k in summary[0] if k.startswith("share_"))
    cell = lambda v: v if isinstance(v, str) else "" if math.isnan(v) else f"{v:.4g}"  # noqa: E731
    lines = [f"# {script} over {len(rows)} seeds", "", f"`python {script} {' '.join(passed)}`", ""]
    lines += ["| seed | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in [*rows, *summary]:
        lines.append(f"| {cell(row['seed'])} | " + " | ".join(cell(row.get(c, math.nan)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    args, passed = parse(sys.argv[1:] if argv is None else argv)
    out = Path(args.out or Path("outputs") / f"{Path(args.script).stem}-seeds")
    rows = []
    for seed in args.seeds:
        run = out / f"seed_{seed}"
        print(f"--- seed {seed}: {run}", flush=True)
        command = [sys.executable, str(ROOT / args.script), *passed, f"--seed={seed}", f"--out_dir={run}"]
        code = subprocess.run(command).returncode
        if code != 0:
            fail(f"the run of seed {seed} exited with {code}; rerun this command to resume it")
        found = last_metrics(run)
        if not found:
            fail(f"{run} wrote no metrics.csv (is EVAL_EVERY 0, or is its data set 'fake'?)")
        rows.append({"seed": seed, **found})
    summary = summarize(rows)
    plots.write_csv([*rows, *summary], out / "seeds.csv")
    table = markdown(args.script, passed, rows, summary)
    (out / "seeds.md").write_text(table)
    print(table)
    print(f"wrote {out / 'seeds.md'} and {out / 'seeds.csv'}")
    return [*rows, *summary]


if __name__ == "__main__":
    main()
