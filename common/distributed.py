"""Several processes with torchrun (DDP): NCCL on GPUs, gloo on CPU; no-ops in a plain run.

    torchrun --nproc_per_node=4 DCGAN-MNIST.py      # one process per GPU, cuda:LOCAL_RANK each

Everything here is keyed on the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK). Without
it, `setup` just picks the device, `wrap` returns the model itself and the collectives return
their input, so a single-process script reads exactly as it would without this module.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import datetime
import inspect
import os
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from common import device as device_lib
from common import exits, rendezvous, restarts
from common.config import fail

# How long a process waits for the others at one collective before it calls them lost (one line, exit 6,
# which torchrun --max-restarts restarts). At the start (joining, every node preparing its data: a first
# download or CelebA's image cache, the evaluator) as long as gloo's own default; in training 10 minutes,
# NCCL's default: far above the longest wait of a healthy run there (rank 0's evaluation, checkpoint and
# pictures at an epoch's end: seconds to a minute or two on a CPU), far below the 30 gloo would wait.
START_TIMEOUT = datetime.timedelta(minutes=30)
TIMEOUT = datetime.timedelta(minutes=10)
LOST_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out", "timed out")
SYNC_BN_NEEDS_CUDA = "--sync_bn=True needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); use --sync_bn=False"


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank, world size, local rank and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints and writes files."""
        return self.rank == 0


def launched() -> bool:
    """True when started by torchrun (even with one process) or with a WORLD_SIZE over 1 set by hand."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_name: str = "auto", sync_bn: bool = False) -> Dist:
    """Pick the device and, under torchrun, join the process group (NCCL on CUDA, gloo on CPU).

    `device_id=` binds NCCL to this process's GPU at once (torch >= 2.3, the floor in requirements.txt).
    `sync_bn` is only checked here (it needs CUDA), so that bad input stops before anything is written.
    """
    if not launched():
        return Dist(0, 1, 0, device_lib.pick(device_name))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = device_lib.pick(device_name)  # validates the name: --device=cuda without CUDA exits 2
    if wanted.type == "cuda":
        if wanted.index not in (None, local_rank):
            fail(f"--device={device_name}: under torchrun each process uses cuda:LOCAL_RANK; use --device=cuda")
        if local_rank >= torch.cuda.device_count():
            fail(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) exist")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        _join("nccl", device_id=dev)
    elif wanted.type == "cpu":
        if sync_bn:
            fail(SYNC_BN_NEEDS_CUDA)
        dev = wanted
        _join("gloo")
    else:
        fail(f"--device={wanted.type} is not supported with torchrun; use cuda (NCCL) or cpu (gloo)")
    atexit.register(cleanup)  # also on errors and sys.exit, so no process group is left behind
    if rank != 0:
        _quiet_stdout()
    return Dist(rank, world_size, local_rank, dev)


def _join(backend: str, **kwargs: Any) -> None:
    """Join the job's process group, waiting START_TIMEOUT for the others: a peer that never comes is one line."""
    try:
        store = rendezvous.fresh_store(START_TIMEOUT)  # after an elastic restart: never the dead workers' keys
        if store is not None:
            kwargs.update(store=store, rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
        torch_dist.init_process_group(backend, timeout=START_TIMEOUT, **kwargs)
    except RuntimeError as exc:  # DistError and its kin: a peer gone or silent, a store lost
        _lost(exc, "joining the job")


def started() -> None:
    """The run's start is over (data, run folder, evaluator): from here a peer silent for TIMEOUT is lost."""
    if active():
        set_timeout = getattr(torch_dist, "set_timeout", None)  # the public name, where torch has one
        set_timeout = set_timeout or getattr(torch_dist.distributed_c10d, "_set_pg_timeout", None)
        if set_timeout is not None:
            set_timeout(TIMEOUT)


def is_lost_peer(exc: BaseException | None) -> bool:
    """Whether `exc` is a collective that failed because another process died or went silent."""
    if exc is None or not active() or not isinstance(exc, RuntimeError):
        return False
    dist_error = getattr(torch_dist, "DistError", ())
    return isinstance(exc, dist_error) or any(sign in str(exc) for sign in LOST_SIGNS)


def lost_peer(exc: BaseException, doing: str = "training") -> NoReturn:
    """One line for a peer lost while `doing`, and exit LOST_PEER: a restart (--max-restarts) resumes the run."""
    _lost(exc, doing)


def where() -> str:
    """This process as a user finds it in one line: its node (torchrun's GROUP_RANK), host and rank."""
    return f"node {os.environ.get('GROUP_RANK', '0')} ({socket.gethostname()}, rank {os.environ.get('RANK', '0')})"


def _lost(exc: BaseException, doing: str) -> NoReturn:
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    print(
        f"error: {where()} lost the job's other "
        f"processes while {doing}: one died, or its node stopped answering ({first[:300]}). With torchrun "
        "--max-restarts=N the job restarts and resumes from the last checkpoint; else rerun the same command",
        file=sys.stderr,
        flush=True,
    )
    leave(exits.LOST_PEER)


def _quiet_stdout() -> None:
    """Drop print() to stdout on ranks other than 0: one copy of each line, not one per process.

    Messages to stderr (errors, warnings) still appear, so a failure on any rank is visible.
    """
    original = builtins.print

    def print_to_stderr_only(*args: Any, **kwargs: Any) -> None:
        if kwargs.get("file") is sys.stderr:
            original(*args, **kwargs)

    builtins.print = print_to_stderr_only


def active() -> bool:
    """True inside a process group (torchrun), even one of a single process: then DDP and the
    collectives run as they would with several, on one."""
    return torch_dist.is_available() and torch_dist.is_initialized()


def rank() -> int:
    """This process's rank (0 in a plain run)."""
    return torch_dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of processes (1 in a plain run)."""
    return torch_dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on the process that prints and writes: rank 0, or the only one."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (no-op in a plain run)."""
    if active():
        torch_dist.barrier()


def leave(code: int) -> NoReturn:
    """Exit with `code`, agreed by every process: each one exits by itself, with that code.

    torchrun's agent sends SIGTERM to the processes still running as soon as one has exited, so which
    exit code each one shows would depend on who the agent saw first. A process that is already
    leaving ignores that SIGTERM (it ends within the agent's grace period), and every process reports
    `code`, the same in every run.
    """
    if active():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    restarts.record(code)  # under torchrun --max-restarts: an exit no restart can fix is said once
    raise SystemExit(code)


def cleanup() -> None:
    """Leave the process group, if any."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


class DDP(DistributedDataParallel):
    """DistributedDataParallel that also answers the wrapped model's own attributes (e.g. latent_dim).

    So a step function written for the plain model (`generator.latent_dim`) works on either.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: nn.Module, sync_bn: bool = False, sync_buffers: bool = True) -> nn.Module:
    """The model wrapped in DDP under torchrun (BatchNorm made SyncBatchNorm if asked), else itself.

    The conversion happens in place, on the same parameters, so `model` itself stays the plain
    module to sample from and to save (its state_dict keys have no "module." prefix).
    `sync_buffers=False`: buffers (BatchNorm running statistics) are made equal once, at the
    start, and then each process keeps its own instead of taking rank 0's before every forward.
    """
    if not active():
        return model
    dev = next(model.parameters()).device
    if sync_bn:
        if dev.type != "cuda":
            fail(SYNC_BN_NEEDS_CUDA)
        for name, child in list(model.named_children()):  # in place, so `model` keeps its identity
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    # newer PyTorch renames broadcast_buffers (and deprecates the old name); same meaning here
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        option = {"forward_sync_buffers": sync_buffers}
    else:
        option = {"broadcast_buffers": sync_buffers}
    return DDP(model, device_ids=[dev] if dev.type == "cuda" else None, **option)


def no_sync(model: nn.Module) -> contextlib.AbstractContextManager:
    """Within it, backward through a DDP model leaves its gradients local (no all-reduce).

    Looks through torch.compile's wrapper (COMPILE=True compiles the DDP model).
    """
    model = getattr(model, "_orig_mod", model)
    return model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext()


def _tensor(values: list[float]) -> torch.Tensor:
    """A float64 tensor on the device the backend reduces on (CUDA for NCCL, CPU for gloo)."""
    on_cuda = torch_dist.get_backend() == "nccl"
    dev = torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")
    return torch.tensor(values, dtype=torch.float64, device=dev)


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Element-wise sum, max or mean of a list of numbers over all processes (the list itself alone)."""
    if not active():
        return list(values)
    t = _tensor(values)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX if op == "max" else torch_dist.ReduceOp.SUM)
    if op == "mean":
        t /= world_size()
    return t.tolist()


def flagged(*values: float) -> list[float]:
    """Did any process flag this? The largest of each value over every process (the values themselves in a
    plain run): the one collective behind every agreement of the processes (a stop, a NaN, a failed write)."""
    return all_reduce([float(v) for v in values], "max")


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order ([obj] in a plain run)."""
    if not active():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    torch_dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every process (`obj` itself in a plain run)."""
    if not active():
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def node_first() -> Iterator[None]:
    """Local rank 0 of each node runs the block, then the node's other processes: each node prepares its
    own DATA_DIR once (downloads, caches), and nodes that share one take turns (common/shared_lock.py)."""
    first = int(os.environ.get("LOCAL_RANK", "0")) == 0
    if not first:
        barrier()
    yield
    if first:
        barrier()


def reduce_row(row: dict[str, Any]) -> dict[str, Any]:
    """An epoch's numbers over all processes: means, the slowest time_s, the summed img_per_s (every process calls it)."""
    if not active():
        return row
    keys = [k for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))]
    reduced = {**row, **dict(zip(keys, all_reduce([float(row[k]) for k in keys], "mean"), strict=True))}
    reduced["time_s"] = all_reduce([float(row["time_s"])], "max")[0]
    reduced["img_per_s"] = all_reduce([float(row["img_per_s"])], "sum")[0]
    return reduced
