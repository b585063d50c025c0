"""Out of memory (common/memory.py): sizes that plainly cannot fit are one line before training (exit 2), and a
real allocation failing mid-run is one line, exit 5, the last complete checkpoint kept, a smaller rerun resuming."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest
import torch
from conftest import OFFLINE_ENV, ROOT, run_script, test_device

from common import checkpoint, exits, memory

SCRIPT = "DCGAN-MNIST.py"
TINY = ["--dataset=mnist-sample", "--ngf=8", "--ndf=8", "--batch_size=200", "--eval_samples=300", "--amp=false"]
ENV = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
HUGE_EVAL = 1_000_000  # evaluation noise alone: 1e6 x 100 float32 = 400 MB, far over the limit's margin
MARGIN = 150 * 2**20  # address space allowed above the first run's peak: the same run again fits, the noise not
PEAK = "import atexit, runpy, sys; atexit.register(lambda: sys.stderr.write([l for l in open('/proc/self/status') if l.startswith('VmPeak')][0])); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"  # noqa: E501


def run(
    *args: str, limit: int | None = None, wrapper: str | None = None, script: str = SCRIPT
) -> subprocess.CompletedProcess:
    """The script as a subprocess on the CPU; `limit`: its address space in bytes (RLIMIT_AS, a real limit)."""

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    head = [sys.executable, "-c", wrapper] if wrapper else [sys.executable]
    return subprocess.run(
        [*head, str(ROOT / script), *args, "--device=cpu"], cwd=ROOT, env=ENV, capture_output=True, text=True,
        timeout=300, preexec_fn=limited if limit else None,
    )  # fmt: skip


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="the address-space peak is read from /proc")
def test_running_out_of_memory_mid_run_is_one_line_keeps_the_checkpoint_and_a_smaller_rerun_resumes(tmp_path):
    """The same for generate.py afterwards, with the run it trained."""
    out = tmp_path / "run"
    if (memory.free_bytes(torch.device("cpu")) or 0) < 2 * HUGE_EVAL * (784 + 100) * 4:
        pytest.skip("the size check before training would refuse the evaluation: too little memory free here")
    first = run(f"--out_dir={out}", *TINY, "--epochs=1", wrapper=PEAK)  # one epoch, evaluated: the peak of a run
    assert first.returncode == 0, first.stderr
    peak = int(first.stderr.strip().splitlines()[-1].split()[1]) * 1024  # VmPeak, kB
    before = (out / "checkpoints" / "last.pt").read_bytes()

    limited = run(f"--out_dir={out}", *TINY, "--epochs=2", f"--eval_samples={HUGE_EVAL}", limit=peak + MARGIN)
    assert limited.returncode == exits.OUT_OF_MEMORY, limited.stderr[-3000:]
    assert "Traceback" not in limited.stderr
    (line,) = errors(limited.stderr)
    assert line.startswith("error: out of memory on cpu (") and "while evaluating epoch 2" in line, line
    assert "lower --eval_samples" in line and "a rerun resumes after epoch 1" in line, line
    assert (out / "checkpoints" / "last.pt").read_bytes() == before  # the last complete checkpoint, untouched
    assert checkpoint.read(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert not (out / "samples" / "epoch_002.png").exists()  # nothing of epoch 2 ahead of its checkpoint

    rerun = run(f"--out_dir={out}", *TINY, "--epochs=2")  # the smaller setting (--eval_samples=300): resumes
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Resum" in rerun.stdout + rerun.stderr and checkpoint.read(out / "checkpoints" / "last.pt")["epoch"] == 2
    assert (out / "samples" / "epoch_002.png").exists()

    small = run(str(out), "--n=4", f"--out={tmp_path / 'four.png'}", wrapper=PEAK, script="generate.py")
    assert small.returncode == 0, small.stderr[-3000:]
    peak = int(small.stderr.strip().splitlines()[-1].split()[1]) * 1024
    many = run(
        str(out), f"--n={HUGE_EVAL}", f"--out={tmp_path / 'many.png'}", limit=peak + MARGIN, script="generate.py"
    )
    assert many.returncode == exits.OUT_OF_MEMORY and "Traceback" not in many.stderr, many.stderr[-3000:]
    (line,) = errors(many.stderr)
    assert f"while generating {HUGE_EVAL} images" in line and "lower --n" in line, line
    assert not (tmp_path / "many.png").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--ndf=100000"], "the models need at least"),
        (["--eval_samples=100000000"], "--eval_samples=100000000 needs at least"),
    ],
)
def test_sizes_that_plainly_cannot_fit_are_one_line_before_anything_is_written(tmp_path, args, words):
    out = tmp_path / "run"
    result = run_script(SCRIPT, "--dataset=fake", f"--out_dir={out}", *args, timeout=60)
    assert result.returncode == exits.BAD_INPUT, result.stderr[-3000:]
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == errors(result.stderr)
    (line,) = errors(result.stderr)
    assert words in line and "free" in line and "Traceback" not in result.stderr
    assert not out.exists()


def test_out_of_memory_is_told_from_other_errors():
    assert memory.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert memory.is_out_of_memory(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you"))
    assert memory.is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert memory.is_out_of_memory(MemoryError())
    assert not memory.is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not memory.is_out_of_memory(ValueError("out of memory"))  # only the allocators' own kinds
    assert not memory.is_out_of_memory(None)


def test_a_tools_block_out_of_memory_is_one_line_and_exit_5(capsys):
    with pytest.raises(SystemExit) as exc:
        with memory.reported(torch.device("cpu"), "generating 64 images", "--n"):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes")
    assert exc.value.code == exits.OUT_OF_MEMORY
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: out of memory on cpu (") and "lower --n" in err
    with pytest.raises(RuntimeError, match="shapes"):  # anything else goes through untouched
        with memory.reported(torch.device("cpu"), "generating", "--n"):
            raise RuntimeError("shapes")


def test_the_size_check_counts_parameters_without_allocating_them():
    dcgan = __import__("conftest").load_script(SCRIPT)
    cfg = {**{k: getattr(dcgan, k) for k in ("LATENT_DIM", "NGF", "NDF", "CLUSTERS")}, "NDF": 10**6}
    n = memory.parameters(lambda: dcgan.build_models(cfg))  # 10^12 weights: terabytes, were they allocated
    assert n > 10**12


@pytest.mark.skipif(test_device() != "cuda", reason="a CUDA out of memory needs a GPU: python -m pytest --device=cuda")
def test_cuda_out_of_memory_mid_run_is_one_line_and_a_smaller_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    cap = "import runpy, sys, torch; torch.cuda.set_per_process_memory_fraction(float(sys.argv[1])); sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"  # noqa: E501
    total = torch.cuda.mem_get_info()[1]
    fraction = str(min(0.5, 2 * 2**30 / total))  # 2 GiB: the run fits, an evaluation of 1e6 images (3 GB) not
    args = [f"--out_dir={out}", *TINY, "--device=cuda"]

    def cuda_run(*more: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", cap, fraction, str(ROOT / SCRIPT), *args, *more]
        return subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)

    assert cuda_run("--epochs=1").returncode == 0
    limited = cuda_run("--epochs=2", f"--eval_samples={HUGE_EVAL}")
    assert limited.returncode == exits.OUT_OF_MEMORY, limited.stderr[-3000:]
    (line,) = errors(limited.stderr)
    assert line.startswith("error: out of memory on cuda") and "while evaluating epoch 2" in line, line
    assert checkpoint.read(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert cuda_run("--epochs=2").returncode == 0
    assert checkpoint.read(out / "checkpoints" / "last.pt")["epoch"] == 2
