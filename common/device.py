"""Device selection (cuda, then mps, then cpu), seeding, random states and the DETERMINISTIC switch."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from common.config import fail


def pick(name: str = "auto") -> torch.device:
    """Return the requested device, or the best available one for "auto"; exit if unavailable."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        fail(f"--device={name} is not a device; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            fail(f"--device={name} but CUDA is not available here; use --device=auto or cpu")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            fail(f"--device={name} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        fail(f"--device={name} but MPS is not available here; use --device=auto or cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        fail(f"--device={name} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device


def describe(device: torch.device) -> str:
    """A human-readable name for the device, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA, MPS), so a clock read next reads what was really done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seed_all(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); `deterministic` also picks only repeatable kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        make_deterministic()


def make_deterministic() -> None:
    """Only repeatable kernels from here on, so a CUDA run (and its resume) repeats number for number.

    cuDNN's fastest convolution algorithms and some atomics-based CUDA kernels differ in the last
    bits from run to run; this trades some speed for runs that repeat. Ops with no deterministic
    CUDA kernel warn instead of stopping the run (warn_only). Call it before the first CUDA work:
    cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it starts.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    """The random states of Python, NumPy and torch (CPU, every CUDA device, MPS), all on the host, for a checkpoint."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state().cpu()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the random states saved by `rng_state`, whatever machine saved them.

    The device states are restored where this machine has that device: a run saved on 8 GPUs
    resumes on 1 with GPU 0's state, and a CUDA or MPS state is ignored on a machine without one.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"].cpu())


@contextlib.contextmanager
def keep_rng(device: torch.device | str = "cpu", seed: int | None = None) -> Iterator[None]:
    """Run a block without touching the global random state (so evaluating never changes training)."""
    device = torch.device(device)
    if device.type in ("cuda", "mps"):  # that device's generator is put back too
        forked = torch.random.fork_rng(devices=[device], device_type=device.type)
    else:
        forked = torch.random.fork_rng(devices=[])
    with forked:
        if seed is not None:
            torch.manual_seed(seed)
        yield
