"""Several processes: two gloo processes on CPU, through torchrun and through the helpers directly."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import OFFLINE_ENV, ROOT, load_script, test_device

from common import data
from common.batches import Batches

ENV = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(
    script: str, *args: str, nproc: int = 2, device: str = "cpu", timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run a script under torchrun (as `python -m torch.distributed.run`): gloo on CPU, NCCL on CUDA.

    A hang fails the test: subprocess.run raises TimeoutExpired after `timeout` seconds.
    """
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    command += [f"--master_port={free_port()}", str(ROOT / script), f"--device={device}", *args]
    return subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _steps_on_two_ranks(rank: int, port: int, results) -> None:
    """One d_step and one g_step of DCGAN-MNIST in each of two gloo processes."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    from common import distributed, gan

    dcgan = load_script("DCGAN-MNIST.py")
    distributed.setup("cpu")
    torch.manual_seed(rank)  # different initial weights: DDP must make them rank 0's
    models = dcgan.build_models({"LATENT_DIM": 8, "NGF": 4, "NDF": 4})
    generator = distributed.wrap(models["generator"])
    discriminator = distributed.wrap(models["discriminator"], sync_buffers=False)
    opt_g = torch.optim.Adam(generator.parameters())
    opt_d = torch.optim.Adam(discriminator.parameters())
    real = torch.rand(6, 1, 28, 28) * 2 - 1  # each rank its own batch
    gan.d_step(generator, discriminator, opt_d, real)
    flat = lambda tensors: torch.cat([t.detach().flatten() for t in tensors]).tolist()  # noqa: E731
    d_grads_after_d_step = flat(p.grad for p in discriminator.parameters())
    gan.g_step(generator, discriminator, opt_g, 6)
    # plain lists: tensors would travel through shared memory that dies with this process
    results.put(
        (
            rank,
            flat(models["generator"].parameters()),
            d_grads_after_d_step,
            flat(p.grad for p in discriminator.parameters()),
            flat(p.grad for p in generator.parameters()),
        )
    )
    distributed.cleanup()


def test_ddp_averages_what_is_stepped_and_leaves_the_rest_local():
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_steps_on_two_ranks, args=(rank, port, results)) for rank in range(2)]
    for proc in procs:
        proc.start()
    got = sorted((results.get(timeout=120) for _ in procs), key=lambda r: r[0])
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    (_, g0, d_step0, g_step_d0, g_step_g0), (_, g1, d_step1, g_step_d1, g_step_g1) = got
    same = lambda a, b: torch.allclose(torch.tensor(a), torch.tensor(b))  # noqa: E731
    assert same(g0, g1)  # the generator is the same after its (averaged) step
    assert same(d_step0, d_step1)  # D's gradients of its own step: averaged over both processes
    assert same(g_step_g0, g_step_g1)  # G's gradients of its step: averaged
    # G's step computes no gradient for D's weights (D is frozen for it): D's are still those of its own step
    assert same(g_step_d0, d_step0) and same(g_step_d1, d_step1)


def test_torchrun_two_processes_shard_the_data_and_resume(tmp_path):
    out = tmp_path / "run"
    args = ["--dataset=mnist-sample", "--ngf=8", "--ndf=8", "--batch_size=100", "--eval_every=0", f"--out_dir={out}"]
    result = torchrun("DCGAN-MNIST.py", *args, "--epochs=1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("epoch 1/1  loss_d") == 1  # only rank 0 prints
    assert "x 2 processes" in result.stdout
    assert (out / "samples" / "epoch_001.png").exists() and (out / "progress.gif").exists()
    (row,) = rows(out / "losses.csv")
    assert float(row["loss_d"]) > 0 and float(row["img_per_s"]) > 0
    assert "world_size" in (out / "config.json").read_text()

    # each process trains on its own half of the epoch's permutation: disjoint, together all of it
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    train, _ = data.load_sample()
    halves = [torch.cat(Batches(train, 100, 0, rank, 2).indices(1)) for rank in (0, 1)]
    assert not set(halves[0].tolist()) & set(halves[1].tolist())
    assert len(set(halves[0].tolist()) | set(halves[1].tolist())) == 4000
    assert len(state["rng"]["per_rank"]) == 2  # each process resumes its own random stream

    result = torchrun("DCGAN-MNIST.py", *args, "--epochs=2")
    assert result.returncode == 0, result.stderr
    assert "Resuming" in result.stdout and "after epoch 1" in result.stdout
    assert [r["epoch"] for r in rows(out / "losses.csv")] == ["1", "2"]
    assert rows(out / "losses.csv")[0] == row

    # the checkpoint is an ordinary one: a single process can load it and go on
    sample = load_script("DCGAN-MNIST.py").build_models(state["config"])["generator"]
    sample.load_state_dict(torch.load(out / "checkpoints" / "last.pt", weights_only=False)["models"]["generator"])


@pytest.mark.slow
def test_torchrun_two_processes_dcgan_celeba_fake(tmp_path):
    out = tmp_path / "celeba"
    args = ["--dataset=fake", "--image_size=32", "--ngf=8", "--ndf=8", "--batch_size=64", "--epochs=1"]
    result = torchrun("DCGAN-CelebA.py", *args, f"--out_dir={out}", f"--data_dir={tmp_path}", "--workers=1")
    assert result.returncode == 0, result.stderr
    assert (out / "samples" / "epoch_001.png").exists() and (out / "interpolation.png").exists()
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["world_size"] == 2 and len(state["rng"]["per_rank"]) == 2


@pytest.mark.slow
def test_sync_bn_on_cpu_is_refused_under_torchrun_before_writing(tmp_path):
    out = tmp_path / "run"
    result = torchrun("DCGAN-MNIST.py", "--dataset=fake", "--ngf=4", "--ndf=4", "--sync_bn=true", f"--out_dir={out}")
    assert result.returncode != 0 and "--sync_bn=True needs CUDA" in result.stderr
    assert not out.exists()


def test_torchrun_two_processes_with_evaluation_on_finish_and_write_metrics(tmp_path):
    """The default EVAL_EVERY: rank 0 evaluates while rank 1 waits at the end of the epoch. Before
    the fix torchmetrics' compute() waited for rank 1 to join a gather it never called: a hang."""
    out = tmp_path / "run"
    args = ["--dataset=mnist-sample", "--ngf=8", "--ndf=8", "--batch_size=100", "--eval_samples=300"]
    result = torchrun("DCGAN-MNIST.py", *args, "--epochs=1", f"--out_dir={out}", f"--data_dir={tmp_path}", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("metrics epoch 1:") == 1  # rank 0 alone evaluates
    (row,) = rows(out / "metrics.csv")
    assert float(row["fid"]) > 0 and int(row["classes_covered"]) >= 1
    assert (out / "metrics.png").exists() and "Done:" in result.stdout


def test_torchrun_one_process_on_the_suites_device(tmp_path):
    """torchrun with one process joins a real process group (NCCL under --device=cuda, else gloo)
    and trains through DDP, evaluates and resumes as a plain run does."""
    dev = test_device()
    if dev == "mps":
        pytest.skip("torchrun has no MPS backend: the scripts refuse --device=mps under torchrun")
    out = tmp_path / "run"
    args = ["--dataset=mnist-sample", "--hidden=64", "--batch_size=200", "--eval_samples=300"]
    args += [f"--out_dir={out}", f"--data_dir={tmp_path}"]
    result = torchrun("GAN-MNIST.py", *args, "--epochs=1", nproc=1, device=dev, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "x 1 processes" in result.stdout and "metrics epoch 1:" in result.stdout
    result = torchrun("GAN-MNIST.py", *args, "--epochs=2", nproc=1, device=dev, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming" in result.stdout and [r["epoch"] for r in rows(out / "metrics.csv")] == ["1", "2"]
