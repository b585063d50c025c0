"""Shared test helpers: tiny MNIST IDX files that torchvision reads, and running scripts."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import data  # noqa: E402

# Every network attempt fails at once (connection refused), so "offline" is the same everywhere.
OFFLINE_ENV = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}


def write_idx(raw: Path, images: np.ndarray, labels: np.ndarray, prefix: str) -> None:
    """Write images [N, 28, 28] uint8 and labels [N] as MNIST IDX files (uncompressed)."""
    raw.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    with open(raw / f"{prefix}-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, h, w))
        f.write(images.astype(np.uint8).tobytes())
    with open(raw / f"{prefix}-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 0x801, n))
        f.write(labels.astype(np.uint8).tobytes())


def make_idx_dataset(root: Path, folder: str = "MNIST", n_train: int = 256, n_test: int = 128) -> Path:
    """A tiny MNIST-format data set of real digits under root/<folder>/raw; returns root."""
    train, test = data.load_sample()
    raw = root / folder / "raw"
    write_idx(raw, train.images[:n_train, 0].numpy(), train.labels[:n_train].numpy(), "train")
    write_idx(raw, test.images[:n_test, 0].numpy(), test.labels[:n_test].numpy(), "t10k")
    return root


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """DATA_DIR holding a tiny real-digit MNIST in torchvision's layout."""
    return make_idx_dataset(tmp_path / "data")


def run_script(script: str, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """Run a top-level script as a subprocess; returns the CompletedProcess (text)."""
    full_env = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load_script(name: str):
    """Import a hyphenated top-level script as a module (its main() is not run)."""
    spec = importlib.util.spec_from_file_location(name.replace("-", "_").removesuffix(".py"), ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
