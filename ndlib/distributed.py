"""Multi-process training helpers: DistributedDataParallel under ``torchrun``.

``torchrun --nproc_per_node=N -m ndlib train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`context_from_env` reads them and :func:`init_process_group` joins the
group (NCCL on GPUs, gloo on CPU).  Each rank trains on its shard of every epoch's
permutation with ``batch_size / world_size`` images per step, DDP averages the gradients, so
one step sees the configured global batch.  Only rank 0 writes records and checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "context_from_env", "init_process_group", "all_reduce_sum", "wrap_model", "barrier"]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """The process's place in the group, from torchrun's environment (single process if unset)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    return DistContext(rank, world_size, local_rank)


def init_process_group(context: DistContext, device: torch.device) -> bool:
    """Join the process group if needed; returns True when this call created it."""
    if not context.enabled or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=context.rank, world_size=context.world_size)
    return True


def all_reduce_sum(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (in place); a no-op for a single process."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def wrap_model(model: torch.nn.Module, context: DistContext, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when there is more than one process."""
    if not context.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)
