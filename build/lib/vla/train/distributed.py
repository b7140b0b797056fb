"""How the ranks of a run find each other and talk: the process group, the device mesh, and the few collectives the
training code makes (all-reduce, barrier, gathering a sharded tensor). `parallel.parallelize` decides how the model
is split over the mesh; everything that joins, waits for or reduces across ranks goes through this module.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor

from vla.configs import HardwareConfig


def init_distributed(hw: HardwareConfig) -> tuple[int, int, torch.device, bool]:
    """Join the process group started by torchrun / train.py's launcher, or form a group of one: (rank, world size,
    this rank's device, whether this call created the group). Whoever created the group destroys it
    (`destroy_distributed`); a caller that runs several trainings in one process (bench/train_step.py) creates it
    once, since re-creating the default group under torchrun can read the previous group's rendezvous keys (seen as
    "Gloo connectFullMesh failed" / a rank exiting on the second setting)."""
    if "RANK" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    else:
        rank, world, local_rank = 0, 1, 0
    if hw.device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"hardware={hw.name} asks for CUDA but no GPU is visible (use hardware=cpu)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    created = not dist.is_initialized()
    if created:
        if "RANK" in os.environ:
            # 30 min: the other ranks wait at a barrier while rank 0 writes the consolidated weights (2 x 13 GB)
            dist.init_process_group(hw.backend, device_id=device if hw.device == "cuda" else None,
                                    timeout=timedelta(minutes=30))
        else:
            dist.init_process_group(hw.backend, store=dist.HashStore(), rank=0, world_size=1)
    return rank, world, device, created


def destroy_distributed() -> None:
    dist.destroy_process_group()


def init_mesh(device: torch.device, world: int) -> DeviceMesh:
    """The one-dimensional mesh of all ranks that FSDP2 shards over."""
    return init_device_mesh(device.type, (world,))


def get_rank() -> int:
    return dist.get_rank()


def barrier() -> None:
    dist.barrier()


def all_reduce_sum_(t: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Sum `t` over the ranks of `group` (default: all), in place; returns it."""
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def all_reduce_max_(t: torch.Tensor) -> torch.Tensor:
    """Maximum of `t` over all ranks, in place; returns it."""
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether `flag` is set on any rank (a collective, and a host sync)."""
    return bool(all_reduce_max_(torch.tensor(int(flag), device=device)).item())


def local_shard(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (under no_grad a view, ~0.4 us; DTensor's own ops dispatch at ~20 us a tensor),
    or the tensor itself."""
    return t.to_local() if isinstance(t, DTensor) else t


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole of a DTensor, gathered or reduced onto every rank (a collective: every rank must call it), or the
    tensor itself."""
    return t.full_tensor() if isinstance(t, DTensor) else t
