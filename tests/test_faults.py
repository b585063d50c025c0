"""Faults, with real subprocesses and real signals: Ctrl-C, SIGTERM, kill -9, damaged checkpoints,
divergence and bad input. DCGAN-MNIST on the bundled real-digit sample, at a tiny width."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import OFFLINE_ENV, ROOT, test_device

from common import checkpoint

SCRIPT = "DCGAN-MNIST.py"
# 125 steps of 32 images an epoch: a few seconds, so a signal lands inside an epoch
TINY = ["--dataset=mnist-sample", "--ngf=8", "--ndf=8", "--batch_size=32", "--epochs=2", "--eval_every=0"]
# the suite's device; off the CPU an exact resume is promised only with DETERMINISTIC (docs/devices.md)
TINY += [f"--device={test_device()}"] + (["--deterministic=True"] if test_device() != "cpu" else [])
# one thread per process: on a shared CPU, spinning OpenMP threads slow a small model 10x
ENV = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


class Run:
    """A script running in the background, its stdout and stderr collected as they come."""

    def __init__(self, *args: str, script: str = SCRIPT):
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / script), *args],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(stream, sink: list[bytes]) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            sink.append(chunk)

    @property
    def stdout(self) -> str:
        return b"".join(self.out).decode()

    @property
    def stderr(self) -> str:
        return b"".join(self.err).decode()

    def wait_for(self, text: str, stream: str = "stdout", timeout: float = 120) -> None:
        """Block until `text` appears in the output (or fail if the process ends first)."""
        deadline = time.monotonic() + timeout
        while text not in getattr(self, stream):
            assert self.proc.poll() is None, f"ended before {text!r}:\n{self.stdout}\n{self.stderr}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout}s"
            time.sleep(0.05)

    def wait(self, timeout: float = 180) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code


def run(*args: str) -> subprocess.CompletedProcess:
    """Run the script to the end; returns the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, str(ROOT / SCRIPT), *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300
    )


def rows(path: Path) -> list[dict]:
    """losses.csv without its wall-clock columns."""
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in ("time_s", "img_per_s", "wall_s")} for r in csv.DictReader(f)]


def weights(out: Path) -> dict[str, torch.Tensor]:
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    return {f"{m}.{k}": v for m, sd in state["models"].items() for k, v in sd.items()}


def assert_same_run(out: Path, reference: Path) -> None:
    """Same per-epoch numbers and the same final weights as an uninterrupted run."""
    assert rows(out / "losses.csv") == rows(reference / "losses.csv")
    mine, theirs = weights(out), weights(reference)
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.allclose(mine[name].float(), theirs[name].float(), atol=1e-6), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run with TINY settings, to compare interrupted ones with."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = run(*TINY, f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    return out


def test_ctrl_c_checkpoints_mid_epoch_and_resumes_exactly(tmp_path, reference):
    out = tmp_path / "run"
    job = Run(*TINY, f"--out_dir={out}", "--resume=false")
    job.wait_for("epoch 1/2", "stderr")  # the progress bar is up: training has begun
    job.proc.send_signal(signal.SIGINT)
    assert job.wait() == 130, job.stderr
    assert "SIGINT: stopping after this step" in job.stderr
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 0 and state["partial"]["step"] >= 1  # stopped inside epoch 1
    # the printed command resumes (and leaves out --resume=false, which would move the run aside)
    command = job.stdout.split("Resume with:")[1].strip().splitlines()[0]
    assert command.startswith("python ") and SCRIPT in command and "--resume" not in command

    result = run(*TINY, f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    assert f"in epoch 1, after step {state['partial']['step']}" in result.stdout
    assert_same_run(out, reference)


def test_an_auto_cadence_run_scores_its_last_epoch_and_resumes_exactly_after_ctrl_c(tmp_path):
    """EVAL_EVERY=auto (the default) evaluates when the budget allows, always the last epoch (so best.pt is there),
    and evaluating never changes training: a run stopped by Ctrl-C resumes to the same numbers."""
    auto = [*(a for a in TINY if not a.startswith("--eval_every")), "--eval_every=auto", "--eval_samples=200"]
    whole = tmp_path / "whole"
    assert run(*auto, f"--out_dir={whole}").returncode == 0
    out = tmp_path / "run"
    job = Run(*auto, f"--out_dir={out}")
    job.wait_for("epoch 1/2", "stderr")
    job.proc.send_signal(signal.SIGINT)
    assert job.wait() == 130, job.stderr
    result = run(*auto, f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    assert rows(out / "losses.csv") == rows(whole / "losses.csv")  # number for number
    for folder in (whole, out):
        assert [r["epoch"] for r in csv.DictReader(open(folder / "metrics.csv"))][-1] == "2"
        assert checkpoint.read(folder / "checkpoints" / "best.pt")["scores"]["epoch"] >= 1


@pytest.mark.slow  # the same path as Ctrl-C, another signal
def test_sigterm_checkpoints_and_exits_143(tmp_path):
    out = tmp_path / "run"
    job = Run(*TINY, f"--out_dir={out}")
    job.wait_for("epoch 1/2", "stderr")
    job.proc.send_signal(signal.SIGTERM)
    assert job.wait() == 143, job.stderr
    assert "Resume with:" in job.stdout
    state = checkpoint.read(out / "checkpoints" / "last.pt")
    assert "partial" in state and state["partial"]["step"] >= 1


def test_kill_9_mid_epoch_rerun_continues_from_last_checkpoint(tmp_path, reference):
    out = tmp_path / "run"
    job = Run(*TINY, f"--out_dir={out}")
    job.wait_for("epoch 1/2  loss_d")  # epoch 1 is checkpointed; epoch 2 is under way
    job.proc.kill()
    assert job.wait() == -signal.SIGKILL
    assert not (out / "samples" / "epoch_002.png").exists()

    result = run(*TINY, f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    assert "Resuming" in result.stdout and "after epoch 1" in result.stdout
    # the lock died with its process: the rerun takes the folder over, and says so
    assert f"note: {out} was held by process {job.proc.pid} (" in result.stdout, result.stdout
    assert "this run takes it over" in result.stdout
    assert not (tmp_path / ".run.lock").exists()  # a run that ends by itself removes its lock
    assert_same_run(out, reference)


def test_a_second_run_into_the_same_folder_stops_at_once_and_touches_nothing(tmp_path):
    out = tmp_path / "run"
    first = Run(*TINY, "--epochs=100", f"--out_dir={out}")
    first.wait_for("epoch 1/100  loss_d")  # its first checkpoint is written, epoch 2 is under way
    for args in ([], ["--resume=False"]):  # resuming it, or moving it aside: both would mix two runs
        second = run(*TINY, f"--out_dir={out}", *args)
        assert second.returncode == 2, second.stderr
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith(f"error: {out} is in use by another run: process {first.proc.pid} ("), line
        assert "Traceback" not in second.stderr and "Resuming" not in second.stdout
    assert first.proc.poll() is None  # still training
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("run-")]  # nothing moved aside
    first.proc.send_signal(signal.SIGINT)
    assert first.wait() == 130, first.stderr
    assert "partial" in checkpoint.read(out / "checkpoints" / "last.pt")  # the first run's own stop
    assert "error" not in first.stderr
    assert not (tmp_path / ".run.lock").exists()  # its lock went with it


def test_truncated_last_checkpoint_is_skipped_for_previous(tmp_path, reference, capsys, recwarn):
    folder = tmp_path / "checkpoints"
    checkpoint.save({"config": {}, "epoch": 1}, folder)
    checkpoint.save({"config": {}, "epoch": 2}, folder)
    last = folder / checkpoint.LAST
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    state = checkpoint.load_latest(folder)
    assert state["epoch"] == 1
    assert checkpoint.load_latest(folder)["epoch"] == 1  # read again (at the resume): said once
    (line,) = capsys.readouterr().out.splitlines()  # one line, and none of torch's own warnings
    assert line.startswith("warning: skipping unreadable checkpoint") and not recwarn.list

    # the script does the same: a half-written last.pt of epoch 2, so it redoes epoch 2 from previous.pt
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    last = out / "checkpoints" / checkpoint.LAST
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    result = run(*TINY, f"--out_dir={out}")
    assert result.returncode == 0, result.stderr
    assert "skipping unreadable checkpoint" in result.stdout and "after epoch 1" in result.stdout
    assert_same_run(out, reference)


def test_divergence_stops_with_a_message_and_keeps_the_last_good_epoch(tmp_path):
    fast = ["--dataset=mnist-sample", "--ngf=8", "--ndf=8", "--batch_size=500"]
    # an absurd learning rate really makes the losses NaN: exit 3 naming epoch and step, nothing saved
    out = tmp_path / "fresh"
    result = run(*fast, "--epochs=1", "--lr=1e30", f"--out_dir={out}")
    assert result.returncode == 3, result.stderr
    (line,) = [x for x in result.stderr.replace("\r", "\n").splitlines() if x.startswith("error:")]
    # the losses stay on the device and are read every half second: the line names the step by which it was seen
    assert re.search(r"is nan at epoch 1, by step \d+: training diverged", line), line
    assert not (out / "checkpoints" / "last.pt").exists() and not (out / "samples").exists()

    # a good epoch, then one that diverges (the absurd rate from epoch 2 on; a target of inf, as before, is outside
    # REAL_LABEL's domain now): the good checkpoint and grid stay as they were
    out = tmp_path / "good"
    assert run(*fast, "--epochs=1", f"--out_dir={out}").returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "config.json"}
    result = run(*fast, "--epochs=2", "--lr=1e30", f"--out_dir={out}")
    assert result.returncode == 3, result.stderr
    assert re.search(r"at epoch 2, (by step \d+|in its last steps): training diverged", result.stderr), result.stderr
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "config.json"}
    assert after == before


def check_bad_input(tmp_path: Path, cases: dict[str, list[str]]) -> None:
    """Each case exits 2 with one `error:` line, and an existing run is not moved, changed or deleted."""
    old = tmp_path / "old"
    assert (
        run("--dataset=fake", "--ngf=4", "--ndf=4", "--batch_size=512", "--epochs=1", f"--out_dir={old}").returncode
        == 0
    )
    before = {p: p.stat().st_mtime_ns for p in old.rglob("*")}
    beside = sorted(p.name for p in tmp_path.iterdir())  # the old run and the page of its outputs folder
    base = ["--dataset=mnist-sample", "--ngf=4", "--ndf=4", "--epochs=1"]
    jobs = {  # all at once: most of each is starting Python and torch
        name: subprocess.Popen(
            [sys.executable, str(ROOT / SCRIPT), *base, *[a.format(old=old, tmp=tmp_path) for a in args]],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in cases.items()
    }
    for name, job in jobs.items():
        stdout, stderr = job.communicate(timeout=180)
        assert job.returncode == 2, f"{name}: {stderr}"
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {stderr}"
        assert "Traceback" not in stdout + stderr, name
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == beside  # nothing created, nothing moved aside
    assert {p: p.stat().st_mtime_ns for p in old.rglob("*")} == before


def test_bad_input_found_late_still_touches_nothing(tmp_path):
    # the checks that come after loading data: they must still come before anything is written
    check_bad_input(
        tmp_path,
        {
            "--resume=false, then too large a batch": ["--resume=false", "--batch_size=5000", "--out_dir={old}"],
            "resume with another width": ["--dataset=fake", "--ngf=8", "--ndf=4", "--out_dir={old}"],
            "out_dir under a file": ["--out_dir={old}/config.json/run"],
        },
    )


@pytest.mark.slow
def test_bad_values_exit_2_before_anything_is_written(tmp_path):
    cases = {
        "epochs": ["--epochs=0", "--out_dir={tmp}/new"],
        "batch_size": ["--batch_size=-1", "--out_dir={tmp}/new"],
        "lr": ["--lr=0", "--out_dir={tmp}/new"],
        "batch larger than the data": ["--batch_size=5000", "--out_dir={tmp}/new"],
        "dataset": ["--dataset=cifar10", "--out_dir={tmp}/new"],
    }
    if not torch.cuda.is_available():
        cases["cuda without CUDA"] = ["--device=cuda", "--out_dir={tmp}/new"]
    check_bad_input(tmp_path, cases)
