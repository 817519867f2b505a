"""Distributed training with PyTorch's own engine: DistributedDataParallel, launched by torchrun.

`torchrun --nproc_per_node=N -m lstmgen train lm ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK set (and several machines with --nnodes and a rendezvous endpoint). Each process joins the
group here — nccl on GPUs (one per process, cuda:LOCAL_RANK), gloo on CPUs —, reads its own shard of the
token stream (data.batching), and averages gradients through DDP. Rank 0 alone writes checkpoints, logs,
plots and the model folder; the others wait for it where they must read what it wrote.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device_name: str = "auto") -> Dist:
    """Join the process group torchrun describes in the environment (once); a no-op without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local)


def device_for(d: Dist, device: torch.device) -> torch.device:
    """One GPU per process: cuda:LOCAL_RANK under torchrun; CPUs are shared."""
    if d.active and device.type == "cuda":
        return torch.device("cuda", d.local_rank)
    return device


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def mean_of(d: Dist, value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over the ranks (the value itself when not distributed)."""
    if not d.active:
        return value
    v = value.detach().clone().float()
    dist.all_reduce(v)
    return v / d.world


def max_of(d: Dist, value: float, device: torch.device) -> float:
    """The largest of a number over the ranks, so that every rank takes the same decision."""
    if not d.active:
        return value
    v = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(v, op=dist.ReduceOp.MAX)
    return float(v)


def gather_rows(d: Dist, t: Optional[torch.Tensor], dim: int = 1) -> Optional[torch.Tensor]:
    """Every rank's tensor joined along `dim` (rank order), for saving carried states."""
    if t is None or not d.active:
        return t
    parts = [torch.empty_like(t) for _ in range(d.world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim)


def shutdown_distributed() -> None:
    """Leave the process group (if one was joined) before the process ends."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
