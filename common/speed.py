"""GPU speed switches shared by the scripts: bf16 autocast, channels_last, cudnn.benchmark, fused Adam, torch.compile.

Each script has one constant per switch (AMP, CHANNELS_LAST, CUDNN_BENCHMARK, FUSED_ADAM, COMPILE).
They act on CUDA only: on CPU and MPS `Speed.from_config` turns them all off and says so once.
`python bench.py --switches` measures each one against the baseline; the README records
what was measured and which are on by default.

    speed = Speed.from_config(cfg, dev)        # also sets cudnn.benchmark
    speed.prepare(model)                       # channels_last weights, in place
    opt = speed.adam(model.parameters(), lr, betas)
    fast = speed.compiled(model)               # train through `fast`; save and sample `model`
    step(fast, opt, speed.input(x), autocast=speed.autocast)

A step function runs its forward pass and loss under its own `with autocast():` and its backward
and optimizer step outside, as PyTorch advises. One region per step matters: autocast keeps the
bf16 copies of the weights it cast until its region ends, so a region spanning several steps
trains on stale weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

Autocast = Callable[[], contextlib.AbstractContextManager]  # what the step functions take: Speed.autocast

NAMES = {  # field -> the scripts' constant
    "amp": "AMP",
    "channels_last": "CHANNELS_LAST",
    "cudnn_benchmark": "CUDNN_BENCHMARK",
    "fused_adam": "FUSED_ADAM",
    "compile": "COMPILE",
}


@dataclass(frozen=True)
class Speed:
    """The speed switches in effect for one run (all off: plain fp32 eager PyTorch)."""

    amp: bool = False  # bf16 autocast of forward and backward (no GradScaler needed for bf16)
    channels_last: bool = False  # NHWC weights and inputs, the layout tensor cores prefer for convolutions
    cudnn_benchmark: bool = False  # cuDNN times its algorithms on the first batch of each shape
    fused_adam: bool = False  # Adam's update in one kernel per parameter group
    compile: bool = False  # torch.compile the training modules (a slower first epoch)
    device_type: str = "cuda"

    @classmethod
    def from_config(cls, cfg: dict, dev: torch.device) -> Speed:
        """The switches the config turns on (missing constants are off); all off unless dev is CUDA."""
        wanted = {f: bool(cfg.get(const, False)) for f, const in NAMES.items()}
        if dev.type != "cuda":
            on = [NAMES[f] for f, value in wanted.items() if value]
            if on:
                print(f"note: {', '.join(on)} act on CUDA only; ignored on {dev.type}")
            return cls(device_type=dev.type)
        if wanted["cudnn_benchmark"] and cfg.get("DETERMINISTIC"):
            print("note: CUDNN_BENCHMARK is off under DETERMINISTIC (its timing picks kernels that differ run to run)")
            wanted["cudnn_benchmark"] = False
        speed = cls(**wanted, device_type=dev.type)
        torch.backends.cudnn.benchmark = speed.cudnn_benchmark
        return speed

    def label(self) -> str:
        """The switches that are on, e.g. 'amp+compile', or 'baseline'."""
        return "+".join(name for name in NAMES if getattr(self, name)) or "baseline"

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when AMP is on, else a no-op."""
        if self.amp:
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model with channels_last weights when asked (in place: `model` keeps its identity)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch in the layout the models expect."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def adam(self, params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
        """Adam, fused when asked."""
        return torch.optim.Adam(params, lr=lr, betas=betas, **({"fused": True} if self.fused_adam else {}))

    def compiled(self, model: nn.Module) -> nn.Module:
        """torch.compile(model) when asked, else model. Attributes (latent_dim) still read through."""
        return torch.compile(model) if self.compile else model  # type: ignore[return-value]
