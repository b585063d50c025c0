"""A full disk and other failed writes: one line, exit 4, no temporary file, nothing complete lost, and
the rerun resumes; a run that cannot be resumed is moved aside; the collapse warning. DCGAN-MNIST, tiny."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, Disk, generate
from test_distributed import free_port
from test_faults import ENV, assert_same_run, rows

from common import board, checkpoint, config, exits, files, gan, plots

SCRIPT = "DCGAN-MNIST.py"
TINY = ["--dataset=fake", "--ngf=4", "--ndf=4", "--batch_size=128", "--eval_every=0", "--device=cpu"]
# the n-th write of a file of that name fails with ENOSPC where the operating system raises it (the flush to
# the disk), to reach one chosen file; a real full disk (a tmpfs, below) cannot choose the file
FILL_UP = """
import errno, os, runpy, sys
from pathlib import Path
from common import files
real, calls, fsync = files.write_safely, [], os.fsync
def full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")
def write_safely(path, write, *args, **kwargs):
    calls.append(Path(path).name)
    if calls.count({name!r}) == {n} and Path(path).name == {name!r}:
        os.fsync = full
    try:
        return real(path, write, *args, **kwargs)
    finally:
        os.fsync = fsync
files.write_safely = write_safely
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run(*args: str, fail: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    """Run the script to the end; with `fail` (file name, n) the n-th write of that file runs out of space."""
    code = ["-c", FILL_UP.format(name=fail[0], n=fail[1])] if fail else []
    return subprocess.run(
        [sys.executable, *code, str(ROOT / SCRIPT), *TINY, *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a run, checked to be alone and without a traceback."""
    lines = [x for x in result.stderr.replace("\r", "\n").splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*.tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Two uninterrupted epochs."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = run("--epochs=2", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    return out


def test_disk_full_during_a_checkpoint_keeps_the_last_one_and_the_rerun_resumes(tmp_path, reference):
    out = tmp_path / "run"
    result = run("--epochs=2", f"--out_dir={out}", fail=("last.pt", 2))  # epoch 2's checkpoint
    assert result.returncode == exits.WRITE_FAILED, result.stderr
    line = error_line(result)
    assert "checkpoint of epoch 2" in line and "No space left on device" in line, line
    assert "resumes after epoch 1" in line and str(out / "checkpoints" / "last.pt") in line, line
    assert not leftovers(out)
    assert checkpoint.read(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert [r["epoch"] for r in rows(out / "losses.csv")] == ["1"]  # no row ahead of the checkpoint
    assert not (out / "samples" / "epoch_002.png").exists()  # nor a grid
    assert (out / "config.json").exists()

    result = run("--epochs=2", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    assert "after epoch 1" in result.stdout
    assert_same_run(out, reference)


def test_disk_full_on_losses_csv_after_the_checkpoint_rewrites_it_on_resume(tmp_path, reference):
    out = tmp_path / "run"
    result = run("--epochs=2", f"--out_dir={out}", fail=("losses.csv", 2))  # after epoch 2's checkpoint
    assert result.returncode == exits.WRITE_FAILED, result.stderr
    line = error_line(result)
    assert "losses.csv" in line and "resumes after epoch 2" in line, line
    assert not leftovers(out)
    assert [r["epoch"] for r in rows(out / "losses.csv")] == ["1"]  # behind the checkpoint, never ahead

    result = run("--epochs=2", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    assert_same_run(out, reference)  # the table rewritten from the checkpoint: no row missing or twice


def test_a_run_whose_checkpoints_are_all_unreadable_is_moved_aside(tmp_path, reference):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    for name in (checkpoint.LAST, checkpoint.PREVIOUS):
        path = out / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:100])
    damaged = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = run("--epochs=1", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    assert "none of its checkpoints (last.pt, previous.pt) can be read" in result.stdout, result.stdout
    assert result.stdout.count("skipping unreadable checkpoint") == 2 and "Warning" not in result.stderr
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("run-")]
    assert {p.relative_to(aside): p.read_bytes() for p in aside.rglob("*") if p.is_file()} == damaged
    assert checkpoint.read(out / "checkpoints" / "last.pt")["epoch"] == 1  # a fresh run beside it


def test_a_failed_resume_leaves_config_json_as_it_was(tmp_path, reference):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = (out / "config.json").read_bytes()
    result = run("--epochs=3", "--lr=1e30", f"--out_dir={out}")  # diverges at once
    assert result.returncode == exits.DIVERGED, result.stderr
    assert (out / "config.json").read_bytes() == before


def test_collapse_warning_when_the_discriminator_has_won():
    # a D that outputs 0 for every fake and 1 for every real: the epoch's means say so
    assert "the discriminator has won" in gan.collapsed({"epoch": 4, "d_real": 1.0, "d_fake": 0.0})
    assert gan.collapsed({"epoch": 4, "d_real": 0.99, "d_fake": 0.05}) == ""  # G still gets a gradient
    assert gan.collapsed({"epoch": 4, "d_real": 0.8, "d_fake": 0.19}) == ""  # a healthy DCGAN-MNIST epoch
    assert gan.collapsed({"epoch": 4, "train_neg_elbo": 100.0}) == ""  # not a GAN


def test_compare_on_a_full_disk_leaves_no_file(tmp_path, reference, monkeypatch, capsys):
    import compare

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # every write is flushed before its rename: each one fails there
    with pytest.raises(SystemExit) as stopped:
        compare.main([str(run_dir)])
    assert stopped.value.code == exits.WRITE_FAILED
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert line.startswith("error: could not write the comparison table") and "No space left" in line, line
    assert not (tmp_path / "comparison.md").exists() and not leftovers(tmp_path)


def test_disk_full_on_a_grid_stops_at_the_epochs_end_without_its_checkpoint(tmp_path, reference):
    """The grid is written before the epoch's checkpoint: its failure is kept to the epoch's end, where
    nothing of that epoch is written, and the rerun redoes the epoch."""
    out = tmp_path / "run"
    result = run("--epochs=2", f"--out_dir={out}", fail=("epoch_002.png", 1))
    assert result.returncode == exits.WRITE_FAILED, result.stderr
    line = error_line(result)
    assert "an image grid" in line and "epoch_002.png" in line and "resumes after epoch 1" in line, line
    assert not leftovers(out) and not (out / "samples" / "epoch_002.png").exists()
    assert checkpoint.read(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert [r["epoch"] for r in rows(out / "losses.csv")] == ["1"]

    result = run("--epochs=2", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    assert_same_run(out, reference)


def test_disk_full_under_torchrun_stops_every_process_with_one_line(tmp_path):
    """Rank 0 cannot write epoch 2's checkpoint: all processes exit 4 at once, none waits for it."""
    wrapper = tmp_path / "fill_up.py"
    wrapper.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n" + FILL_UP.format(name="last.pt", n=2))
    out = tmp_path / "run"
    args = [str(ROOT / SCRIPT), *TINY, "--epochs=2", f"--out_dir={out}"]  # epoch 2 is the last: it always saves
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    result = subprocess.run(
        [*command, str(wrapper), *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    lines = [x for x in result.stderr.replace("\r", "\n").splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "checkpoint of epoch 2" in lines[0] and "resumes after epoch 1" in lines[0], lines
    # torchrun's own report (its one traceback): every process exited by itself with 4, whichever the agent saw
    # first (distributed.leave); a process left waiting in a collective would be torn down (-15), killed after
    # the agent's grace (-9), or fail in it (1)
    codes = re.findall(r"rank +: (\d) \(local_rank: \d\)\n +exitcode +: (-?\d+) ", result.stderr)
    assert sorted(codes) == [("0", "4"), ("1", "4")], result.stderr
    assert result.stderr.count("Traceback") == 1, result.stderr  # torchrun's, no process's
    assert not leftovers(out)
    assert checkpoint.read(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert [r["epoch"] for r in rows(out / "losses.csv")] == ["1"]


# --- a real full disk: a small tmpfs, filled (tests/conftest.py's `disk`) ---


def test_a_real_full_disk_during_a_checkpoint_keeps_the_last_one_and_the_rerun_resumes(disk: Disk, reference):
    """torch.save on a full disk raised a RuntimeError from its zip writer (a traceback): now one line, exit 4."""
    out = disk.path / "run"
    assert run("--epochs=1", f"--out_dir={out}").returncode == 0
    size = (out / "checkpoints" / "last.pt").stat().st_size
    disk.fill(leave=size // 2)  # room for epoch 2's grid and tables, not for its checkpoint
    result = run("--epochs=2", f"--out_dir={out}")
    assert result.returncode == exits.WRITE_FAILED, result.stderr
    line = error_line(result)
    assert "checkpoint of epoch 2" in line and "No space left on device" in line and "resumes after epoch 1" in line
    assert not leftovers(out)
    assert checkpoint.read(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert [r["epoch"] for r in rows(out / "losses.csv")] == ["1"]
    assert not (out / "samples" / "epoch_002.png").exists()

    disk.empty()
    result = run("--epochs=2", f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    assert_same_run(out, reference)


def test_a_real_full_disk_at_the_start_of_a_run_is_one_line_and_exit_4(disk: Disk):
    disk.fill()
    result = run("--epochs=1", f"--out_dir={disk.path / 'run'}")
    assert result.returncode == exits.WRITE_FAILED, result.stderr
    line = error_line(result)
    assert "No space left on device" in line and str(disk.path / "run") in line, line


def _state(reference: Path) -> dict:
    return checkpoint.read(reference / "checkpoints" / "last.pt")


WRITERS = {  # every kind of file a run or a tool writes, each through its own library
    "last.pt (torch.save)": lambda folder, ref: checkpoint.save(_state(ref), folder),
    "best.pt (torch.save)": lambda folder, ref: checkpoint.save_best(_state(ref), {"fid": 1.0}, folder),
    "a grid (PIL)": lambda folder, ref: plots.save_grid(torch.rand(16, 1, 28, 28), folder / "grid.png"),
    "loss.png (matplotlib)": lambda folder, ref: plots.plot_curves(
        rows(ref / "losses.csv"), folder / "loss.png", [("losses", ("loss_d", "loss_g"))]
    ),
    "losses.csv": lambda folder, ref: plots.write_csv(rows(ref / "losses.csv"), folder / "losses.csv"),
    "config.json": lambda folder, ref: config.save({"EPOCHS": 1}, folder / "config.json"),
    "an .npz (numpy)": lambda folder, ref: files.write_safely(
        folder / "images.npz", lambda f: np.savez_compressed(f, images=np.zeros((64, 28, 28), np.uint8)), "the images"
    ),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_every_writer_on_a_real_full_disk_raises_write_failed_and_keeps_the_old_file(disk: Disk, reference, writer):
    write = WRITERS[writer]
    written = write(disk.path, reference)  # on a disk with room: the old file
    old = {p: p.read_bytes() for p in disk.path.rglob("*") if p.is_file()}
    assert old, written
    disk.fill()
    with pytest.raises(files.WriteFailed, match="No space left on device"):
        write(disk.path, reference)
    now = {p: p.read_bytes() for p in disk.path.rglob("*") if p.is_file() and p.name != ".filler"}
    assert now == old and not leftovers(disk.path)


def test_tensorboard_on_a_real_full_disk_is_write_failed_without_a_thread_traceback(disk: Disk, capfd):
    pytest.importorskip("tensorboard")
    logs = board.Board(disk.path / "tensorboard")
    disk.fill()
    with pytest.raises(files.WriteFailed, match="could not write TensorBoard's logs .*No space left on device"):
        for epoch in range(1, 50):  # its writer thread fails at its first flush; the error comes back here
            logs.epoch(epoch, {f"loss_{k}": 1.0 for k in range(100)}, None, [])
    with pytest.raises(files.WriteFailed):
        logs.close()
    assert "Traceback" not in capfd.readouterr().err


def test_generate_on_a_real_full_disk_leaves_no_file(disk: Disk, reference, capsys):
    disk.fill()
    for name in ("generated.png", "generated.npz"):
        out = disk.path / name
        assert generate(reference, "--out", out, "--device=cpu") == exits.WRITE_FAILED
        (line,) = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert line.startswith("error: could not write") and str(out) in line and "No space left" in line, line
    assert [p.name for p in disk.path.iterdir()] == [".filler"]


def test_a_real_full_disk_at_the_start_under_torchrun_is_exit_4_on_every_process(disk: Disk):
    """Rank 0 finds the disk full while it starts the run folder: every process exits 4 (it was 2, "bad input")."""
    disk.fill()
    args = [str(ROOT / SCRIPT), *TINY, "--epochs=1", f"--out_dir={disk.path / 'run'}"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    result = subprocess.run([*command, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = [x for x in result.stderr.replace("\r", "\n").splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "No space left on device" in lines[0], result.stderr
    codes = re.findall(r"rank +: (\d) \(local_rank: \d\)\n +exitcode +: (-?\d+) ", result.stderr)
    assert sorted(codes) == [("0", "4"), ("1", "4")], result.stderr
