"""torchrun / DDP set-up: which device and rank this process is, and the few collectives the loop needs.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is initialised from the
environment variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``): NCCL on
CUDA, gloo on CPU. Launched plainly, everything here degrades to a single process and no collective is called.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from codenas.model.loading import resolve_device


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistContext:
    """Join the torchrun process group when there is one (idempotent) and pick this rank's device.

    The group lives until the process exits: stages chained in one process (``codenas run``) reuse it, because
    destroying a group and creating it again hangs when the ranks reach the second set-up at different times.
    """
    place = context()
    base = resolve_device(device)
    if not place.is_distributed:
        return DistContext(device=base)
    rank, world_size, local_rank = place.rank, place.world_size, place.local_rank
    if base.type == "cuda":
        base = torch.device("cuda", local_rank)
        torch.cuda.set_device(base)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if base.type == "cuda" else "gloo")
        atexit.register(teardown)  # one group per process, shared by every stage it runs (see the module doc)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=base)


def context() -> DistContext:
    """This process's place in a torchrun job (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), read without joining the
    process group, so code that runs before or outside training (the pipeline, the CLI's reports) asks the same
    question the training loop does; a plain launch is rank 0 of 1. The device is left at its default."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    return DistContext(rank=int(os.environ["RANK"]), world_size=world_size,
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def teardown() -> None:
    """Leave the process group (no-op when not distributed); registered to run at exit by ``setup``."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sums of ``values`` over all ranks."""
    if not ctx.is_distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` in rank order (on every rank)."""
    if not ctx.is_distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()
