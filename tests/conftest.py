"""Shared test helpers: tiny MNIST IDX files that torchvision reads, running scripts, and the
`--device=cpu|cuda|mps` option under which the end-to-end tests train on that device.

    python -m pytest                      # everything on the CPU (CI)
    python -m pytest --device=cuda        # the end-to-end tests on the GPU
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import config, data, mnist_files  # noqa: E402

# Every network attempt fails at once (connection refused), so "offline" is the same everywhere.
OFFLINE_ENV = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}
# scripts that take --device: run_script passes the suite's device to them unless a test chose one
TAKES_DEVICE = ("VAE-MNIST.py", "GAN-MNIST.py", "DCGAN-MNIST.py", "CDCGAN-MNIST.py", "DCGAN-CelebA.py", "generate.py")
_device = "cpu"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        choices=("cpu", "cuda", "mps"),
        help="the device the end-to-end tests train on (default cpu)",
    )


def pytest_configure(config: pytest.Config) -> None:
    global _device
    _device = config.getoption("--device")
    # one thread per process (this one and every script a test starts): the suite runs in parallel workers
    # (pytest-xdist, -n in pyproject.toml), and spinning OpenMP threads on a shared CPU slow a small model 10x
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

    if _device == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device=cuda but CUDA is not available here")
    if _device == "mps" and not torch.backends.mps.is_available():
        raise pytest.UsageError("--device=mps but MPS is not available here")


def test_device() -> str:
    """The device the end-to-end tests run on: cpu, cuda or mps (pytest --device)."""
    return _device


test_device.__test__ = False  # a helper, not a test


def device_args(*args: str) -> list[str]:
    """`--device=<the suite's device>` unless `args` already name one."""
    return [] if any(a.startswith("--device") for a in args) else [f"--device={_device}"]


def make_idx_dataset(root: Path, folder: str = "MNIST", n_train: int = 256, n_test: int = 128) -> Path:
    """A tiny MNIST-format data set of real digits under root/<folder>/raw; returns root."""
    train, test = data.load_sample()
    raw = root / folder / "raw"
    mnist_files.write_idx(raw, train.images[:n_train, 0].numpy(), train.labels[:n_train].numpy(), "train")
    mnist_files.write_idx(raw, test.images[:n_test, 0].numpy(), test.labels[:n_test].numpy(), "t10k")
    return root


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """DATA_DIR holding a tiny real-digit MNIST in torchvision's layout."""
    return make_idx_dataset(tmp_path / "data")


def run_script(script: str, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Run a top-level script as a subprocess; returns the CompletedProcess (text)."""
    full_env = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1", **(env or {})}
    extra = device_args(*args) if script in TAKES_DEVICE else []
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args, *extra],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load_script(name: str):
    """Import a hyphenated top-level script as a module (its main() is not run)."""
    return config.load_script(name)


@functools.cache
def _generate_module():
    return load_script("generate.py")


def generate(*args) -> int:
    """Run generate.py's main() in this process (no interpreter start-up); returns the exit code."""
    try:
        _generate_module().main([str(a) for a in args] + device_args(*map(str, args)))
    except SystemExit as exc:
        return exc.code
    return 0


class Disk:
    """A small tmpfs mounted for one test: a real disk that really fills up (ENOSPC from the kernel)."""

    def __init__(self, path: Path):
        self.path = path

    def free(self) -> int:
        """Bytes still free."""
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Take all but about `leave` bytes with a filler file (page-sized: tmpfs counts in pages)."""
        with open(self.path / ".filler", "ab") as f:
            chunk = b"\0" * 4096
            try:
                while self.free() > leave:
                    f.write(chunk)
                    f.flush()
            except OSError:  # full: less than `leave` is left only when `leave` was under a page
                pass

    def empty(self) -> None:
        """Free the space again."""
        (self.path / ".filler").unlink(missing_ok=True)


@pytest.fixture
def disk(tmp_path: Path):
    """A 16 MB tmpfs at tmp_path/disk (CI runs as root); skipped, with the reason, where mounting is refused."""
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"a real full disk needs a tmpfs, and mounting one was refused: {mounted.stderr.strip()}")
    try:
        yield Disk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
