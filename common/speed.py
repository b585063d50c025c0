"""Speed switches shared by the scripts: bf16 autocast, channels_last, cudnn.benchmark, fused Adam, torch.compile.

Each script has one constant per switch (AMP, CHANNELS_LAST, CUDNN_BENCHMARK, FUSED_ADAM, COMPILE), each
"auto", True or False. True and False are obeyed wherever the device can run the switch (cudnn.benchmark
is CUDA's alone; a note says so). "auto" chooses per device, from what was measured:

- CUDA: the switches as the scripts had them before "auto" (all off): no GPU measurement of them yet;
- CPU: bf16 autocast and channels_last when the processor computes bf16 natively (AVX512_BF16 or
  AMX-BF16, `native_bf16`); else fp32, since emulated bf16 ran DCGAN-MNIST at 0.55x fp32 on an AVX-512
  Xeon without them. Fused Adam and compile stay off (about 1.0x there);
- MPS: all off until measured on a Mac; AMP=True gives bf16 autocast there, CHANNELS_LAST=True NHWC.

`Speed.from_config` prints one line at the start of a run: what is in effect and why. `python bench.py`
measures the auto choice against plain fp32, `python bench.py --switches` each switch alone.

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
import functools
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

Autocast = Callable[[], contextlib.AbstractContextManager]  # what the step functions take: Speed.autocast

AUTO = "auto"  # a switch's value that lets the device choose
NAMES = {  # field -> the scripts' constant
    "amp": "AMP",
    "channels_last": "CHANNELS_LAST",
    "cudnn_benchmark": "CUDNN_BENCHMARK",
    "fused_adam": "FUSED_ADAM",
    "compile": "COMPILE",
}
WORDS = {  # field -> what the run's line calls it when on
    "amp": "bf16 autocast",
    "channels_last": "channels_last",
    "cudnn_benchmark": "cudnn.benchmark",
    "fused_adam": "fused Adam",
    "compile": "torch.compile",
}
CUDA_AUTO = dict.fromkeys(NAMES, False)  # what auto turns on on CUDA: the scripts' defaults before auto
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # x86 instructions that compute bf16 natively (else it is emulated)
# dense (no sparsity) peak TFLOP/s from NVIDIA's data sheets: (name substring, bf16, TF32); first match wins
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.0, 495.0),
    ("H200", 989.0, 495.0),  # also the GH200
    ("A100", 312.0, 156.0),
)


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's /proc/cpuinfo fields (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_flags() -> set[str]:
    """The processor's feature flags, as torch's cpuinfo and Linux's /proc/cpuinfo report them."""
    flags = set(_cpuinfo().get("flags", "").split())
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # public in recent torch
    if capabilities is not None:
        flags |= {name for name, on in capabilities().items() if on is True}
    else:  # older torch: the private probes (every AMX processor so far has AMX-BF16)
        probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
        flags |= {flag for flag, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()}
    return flags


def native_bf16() -> str:
    """The processor's native bf16 instructions ('amx_bf16' or 'avx512_bf16'); '' where bf16 is emulated."""
    flags = cpu_flags()
    return next((flag for flag in BF16_FLAGS if flag in flags), "")


def cpu_name() -> str:
    """The processor's model name, e.g. 'Intel(R) Xeon(R) Processor @ 2.80GHz'."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "this CPU"


def known_peak(gpu_name: str, amp: bool) -> float | None:
    """A GPU's dense peak TFLOP/s by name: bf16 when amp, else TF32; None if unknown."""
    return next(((bf16 if amp else tf32) for key, bf16, tf32 in PEAK_TFLOPS if key in gpu_name), None)


def flop_limit(dev: torch.device, amp: bool) -> tuple[float | None, str]:
    """The device's dense peak TFLOP/s (None: unknown) and which it is, in words (bench.py's FLOP share)."""
    if dev.type != "cuda":
        return None, f"n/a on {dev.type}"
    name = torch.cuda.get_device_name(dev)
    peak = known_peak(name, amp)
    if peak is None:
        return None, f"n/a: {name} is not in the built-in table"
    # cuDNN runs fp32 convolutions as TF32 by default; fp32 matmuls stay full FP32 unless
    # torch.set_float32_matmul_precision allows TF32, so the MLP models cannot reach this limit
    kind = "bf16 dense (under AMP)" if amp else "TF32 dense (no AMP; fp32 matmuls run below it, in full FP32)"
    return peak, f"{peak:g} TFLOP/s: {name}, {kind}"


def auto_choice(device_type: str) -> tuple[dict[str, bool], str]:
    """What "auto" turns on for a device type, and why (for the run's line)."""
    off = dict.fromkeys(NAMES, False)
    if device_type == "cuda":
        return {**off, **CUDA_AUTO}, "off as before: no GPU measurement of the switches yet"
    if device_type == "cpu":
        native = native_bf16()
        if native:
            return {**off, "amp": True, "channels_last": True}, f"native bf16: {native}"
        return off, f"{cpu_name()}, no native bf16: bf16 autocast would be emulated and slower"
    return off, f"not measured on {device_type} yet; --amp=true and --channels_last=true turn them on"


def unsupported(name: str, device_type: str) -> str:
    """Why a switch cannot act on a device type in this torch ('' when it can)."""
    if name == "cudnn_benchmark" and device_type != "cuda":
        return "acts on CUDA only"
    if name == "fused_adam":
        from torch.utils import _foreach_utils

        devices = getattr(_foreach_utils, "_get_fused_kernels_supported_devices", lambda: ["cuda"])()
        if device_type not in devices:
            return f"torch {torch.__version__} has no fused Adam on {device_type}"
    if name == "amp":
        available = getattr(torch.amp, "is_autocast_available", lambda kind: kind in ("cpu", "cuda"))  # torch < 2.4
        if not available(device_type):
            return f"torch {torch.__version__} has no autocast on {device_type}"
    return ""


@dataclass(frozen=True)
class Speed:
    """The speed switches in effect for one run (all off: plain fp32 eager PyTorch)."""

    amp: bool = False  # bf16 autocast of forward and backward (no GradScaler needed for bf16)
    channels_last: bool = False  # NHWC weights and inputs, the layout tensor cores and oneDNN prefer for convolutions
    cudnn_benchmark: bool = False  # cuDNN times its algorithms on the first batch of each shape
    fused_adam: bool = False  # Adam's update in one kernel per parameter group
    compile: bool = False  # torch.compile the training modules (a slower first epoch)
    device_type: str = "cuda"
    summary: str = field(default="", compare=False)  # the run's line: what is in effect and why

    @classmethod
    def from_config(cls, cfg: dict, dev: torch.device, verbose: bool = True) -> Speed:
        """The switches in effect: each constant's True or False, or auto's choice for dev; says so in one line.

        A constant the script does not have is off (GAN-MNIST's MLPs have no CHANNELS_LAST).
        """
        auto, why = auto_choice(dev.type)
        present = {name: cfg[const] for name, const in NAMES.items() if const in cfg}
        for name, value in present.items():
            if value != AUTO and not isinstance(value, bool):
                raise ValueError(f"{NAMES[name]} must be 'auto', True or False, got {value!r}")
        wanted = {name: auto[name] if value == AUTO else value for name, value in present.items()}
        reasons = [why] if AUTO in present.values() else []
        for name in [name for name, on in wanted.items() if on]:
            reason = unsupported(name, dev.type)
            if name == "cudnn_benchmark" and not reason and cfg.get("DETERMINISTIC"):
                reason = "off under DETERMINISTIC (its timing picks kernels that differ run to run)"
            if reason:
                wanted[name] = False
                reasons.append(f"{NAMES[name]} ignored: {reason}")
        if wanted.get("amp") and present["amp"] is True and dev.type == "cpu" and not native_bf16():
            reasons.append(f"AMP asked: {cpu_name()} has no native bf16, so bf16 autocast is emulated and slower")
        speed = cls(**wanted, device_type=dev.type)
        if present:
            words = speed.describe(layout="channels_last" in present)
            head = f"auto -> {words}" if AUTO in present.values() else words
            tail = f" ({'; '.join(reasons)})" if reasons else ""
            speed = replace(speed, summary=f"speed: {head} on {dev.type}{tail}")
        if verbose and speed.summary:
            print(speed.summary)
        torch.backends.cudnn.benchmark = speed.cudnn_benchmark
        return speed

    def label(self) -> str:
        """The switches that are on, e.g. 'amp+compile', or 'baseline'."""
        return "+".join(name for name in NAMES if getattr(self, name)) or "baseline"

    def describe(self, layout: bool = True) -> str:
        """The switches in words, e.g. 'bf16 autocast + channels_last', or 'fp32, NCHW' (layout: name NCHW too)."""
        on = [WORDS[name] for name in NAMES if getattr(self, name)]
        if on:
            return " + ".join(on)
        return "fp32, NCHW" if layout else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when AMP is on, else a no-op (bf16 on MPS too: fp16 would need a GradScaler)."""
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
