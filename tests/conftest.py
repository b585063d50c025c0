"""Shared test helpers: tiny MNIST IDX files that torchvision reads, and running scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import data, run  # noqa: E402

# Every network attempt fails at once (connection refused), so "offline" is the same everywhere.
OFFLINE_ENV = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}


def make_idx_dataset(root: Path, folder: str = "MNIST", n_train: int = 256, n_test: int = 128) -> Path:
    """A tiny MNIST-format data set of real digits under root/<folder>/raw; returns root."""
    train, test = data.load_sample()
    raw = root / folder / "raw"
    data.write_idx(raw, train.images[:n_train, 0].numpy(), train.labels[:n_train].numpy(), "train")
    data.write_idx(raw, test.images[:n_test, 0].numpy(), test.labels[:n_test].numpy(), "t10k")
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
    return run.load_script(name)
