"""The speed bench (python -m common.bench): its table, its markdown file and its errors; no timing is asserted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import OFFLINE_ENV, ROOT, device_args

from common import bench

COLUMNS = ["model", "script", "batch", "steps", "repo img/s", "DataLoader img/s", "ratio", "generation img/s", "notes"]


def rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row after the header and the rule."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == COLUMNS
    assert set(lines[1].replace("|", "").replace(":", "")) == {"-"}  # the alignment rule
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def number(cell: str) -> float:
    return float(cell.replace(",", "").removesuffix("x"))


def check_row(cells: list[str], model: str, steps: int) -> None:
    """One result row: the right model, positive rates, a ratio that is repo / DataLoader."""
    assert cells[0] == model and cells[1] == bench.MODELS[model].script
    assert int(cells[3]) == steps
    repo, loader, ratio, generation = (number(cells[i]) for i in (4, 5, 6, 7))
    assert repo > 0 and loader > 0 and ratio > 0 and generation > 0
    # the printed rates are rounded to 0.1 img/s and the ratio to 0.01
    assert ratio == pytest.approx(repo / loader, rel=0.02, abs=0.01)


def test_quick_run_prints_the_table_and_writes_bench_md(tmp_path: Path):
    out = tmp_path / "result" / "bench.md"
    args = [
        "--quick",
        "--models",
        "dcgan,vae",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch-size",
        "16",
        "--gen-batch",
        "64",
    ]
    env = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "common.bench", *args, *device_args(), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    printed = rows(proc.stdout)
    assert [r[0] for r in printed] == ["dcgan", "vae"]
    for cells in printed:
        assert cells[2] == "16"
        check_row(cells, cells[0], steps=2)
    text = out.read_text()
    assert rows(text) == printed  # the file holds the very table that was printed
    for fact in (
        "- device: cpu",
        "- torch ",
        "- batch size: 16",
        "- steps: 2 timed per path: 1 round(s)",
        "load average",
        "num_workers=2",
    ):
        assert fact in text
    assert "python -m common.bench --quick --models dcgan,vae" in text


def test_gpu_switches_are_ignored_with_a_note_off_cuda(tmp_path: Path, capsys):
    out = tmp_path / "bench.md"
    argv = [
        "--switches",
        "--amp",
        "--compile",
        "--models",
        "gan",
        "--device",
        "cpu",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--rounds",
        "2",
    ]
    results = bench.main([*argv, "--workers", "0", "--batch-size", "8", "--gen-batch", "64", "--out", str(out)])
    printed = capsys.readouterr().out
    assert sum("ignored on cpu" in line for line in printed.splitlines()) == 1
    assert [r.switches for r in results] == ["baseline"]  # the ordinary comparison, not the switches table
    check_row(rows(out.read_text())[0], "gan", steps=2)  # two rounds of one step, summed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "dcgan,bogus"], "unknown model(s) bogus; choose from: vae, gan, cgan, dcgan, cdcgan, celeba"),
        (["--steps", "0"], "--steps must be positive, got 0"),
        (["--batch-size", "-3"], "--batch-size must be >= 0, got -3"),
        (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
        (["--fast"], "unrecognized arguments: --fast"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv: list[str], message: str, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"


def test_idx_files_read_back_through_torchvision(tmp_path: Path):
    from torchvision import datasets

    bench.write_mnist(tmp_path, n_train=4100)  # more than the sample's 4,000: tiled
    ds = datasets.MNIST(str(tmp_path), train=True, download=False)
    assert len(ds) == 4100 and ds.data.shape[1:] == (28, 28)
    assert np.array_equal(ds.data[4000].numpy(), ds.data[0].numpy())  # the tiling repeats the digits


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse(["--help"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    for option in ("--quick", "--device", "--models", "--out", "--batch-size", "--steps", "--switches", "--compile"):
        assert re.search(rf"{option}\b", printed)
