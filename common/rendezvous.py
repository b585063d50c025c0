"""A clean key space for each start of a torchrun job's workers, so an elastic restart never meets the dead.

    store = rendezvous.fresh_store(timeout)   # under torchrun's shared store: a new prefix, agreed by all
    torch_dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)

torchrun (c10d or static rendezvous) serves the workers' TCPStore from its agent, and keeps the same
store for every round of a job (TORCHELASTIC_USE_AGENT_STORE=True). The process group writes each
rank's address under the same keys in every round, so after a restart a fast rank 0 can read the
address of the worker that died and fail with "Gloo connectFullMesh failed ... Connection refused":
measured here as two failed restarts in three with two nodes on 127.0.0.1. Each new worker therefore
joins under a prefix of its own round. Rank 0 draws it; every other rank posts a greeting with a
random name and waits for rank 0's answer to that name, which old greetings can never be; rank 0
answers every greeting it sees until each rank has said it got the prefix. A worker that finds no
agent store (launched by hand, or torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: a new store
each round) joins as usual.
"""

from __future__ import annotations

import datetime
import os
import time
import uuid

import torch.distributed as torch_dist

POLL_S = 0.05  # rank 0's pace while it answers the greetings


def fresh_store(timeout: datetime.timedelta) -> torch_dist.Store | None:
    """The workers' store under a prefix new to this round, or None where torchrun does not share its store."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_ADDR" not in os.environ:
        return None
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = torch_dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False, timeout=timeout
    )
    if rank == 0:
        prefix = f"gan-repo/{uuid.uuid4().hex}"
        _answer(store, prefix, world_size, timeout)
    else:
        name = uuid.uuid4().hex
        store.set(f"gan-repo/hello/{rank}", name)
        prefix = store.get(f"gan-repo/answer/{name}").decode()  # waits, up to `timeout`, for rank 0
        store.set(f"{prefix}/has/{rank}", "1")
    return torch_dist.PrefixStore(prefix, store)


def _answer(store: torch_dist.Store, prefix: str, world_size: int, timeout: datetime.timedelta) -> None:
    """Rank 0: answer each greeting (old ones too: no one waits for those) until every rank has the prefix."""
    answered: set[str] = set()
    waiting = set(range(1, world_size))
    deadline = time.monotonic() + timeout.total_seconds()
    while waiting:
        for rank in sorted(waiting):
            if store.check([f"gan-repo/hello/{rank}"]):
                name = store.get(f"gan-repo/hello/{rank}").decode()
                if name not in answered:
                    store.set(f"gan-repo/answer/{name}", prefix)
                    answered.add(name)
            if store.check([f"{prefix}/has/{rank}"]):
                waiting.discard(rank)
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"Timed out: rank(s) {sorted(waiting)} never joined the job's new round")
        if waiting:
            time.sleep(POLL_S)
