"""How the ranks of a run find each other and talk: the process group, the device mesh, and the few collectives the
training code makes (all-reduce, barrier, gathering a sharded tensor). `parallel.parallelize` decides how the model
is split over the mesh; everything that joins, waits for or reduces across ranks goes through this module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard

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


def num_nodes_started(hw: HardwareConfig, world: int) -> int:
    """The number of nodes this run's ranks are on, which must be `hardware.num_nodes`: under torchrun
    WORLD_SIZE / LOCAL_WORLD_SIZE (its --nnodes), with several nodes `hardware.num_processes` ranks on each (its
    --nproc-per-node), since the mesh's shard groups must be the ranks of one node. One node started some other way
    (train.py's launcher, one process) is accepted as it is."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    nodes = world // local
    started = f"the run has {world} rank(s), {local} on each node"
    if world % local or nodes != hw.num_nodes:
        fix = f"pass hardware.num_nodes={nodes}" if world % local == 0 else "start the same number of ranks on each"
        raise ValueError(f"hardware={hw.name} describes {hw.num_nodes} node(s) (hardware.num_nodes) but {started}: "
                         f"{fix}, or start torchrun with --nnodes {hw.num_nodes}")
    if nodes > 1 and local != hw.num_processes:
        raise ValueError(f"hardware={hw.name} describes {hw.num_processes} rank(s) per node (hardware.num_processes) "
                         f"but {started}: pass hardware.num_processes={local}, or start torchrun with "
                         f"--nproc-per-node {hw.num_processes}")
    return nodes


def init_mesh(device: torch.device, world: int, num_nodes: int = 1) -> DeviceMesh:
    """The mesh FSDP2 shards over. One node: all ranks in one dimension, "shard" (FSDP). Several nodes: 2-D,
    ("replicate", "shard") = (nodes, ranks per node), HSDP as torchtitan lays it out: each parameter is sharded over
    the ranks of a node and replicated across nodes, so the parameter all-gathers and gradient reduce-scatters stay
    on a node's fast links and only one all-reduce of each rank's gradient shard per step crosses between nodes.
    torchrun numbers ranks node by node, so row i of the mesh is node i."""
    if num_nodes == 1:
        return init_device_mesh(device.type, (world,), mesh_dim_names=("shard",))
    if world % num_nodes:
        raise ValueError(f"{world} ranks do not split evenly over {num_nodes} nodes")
    return init_device_mesh(device.type, (num_nodes, world // num_nodes), mesh_dim_names=("replicate", "shard"))


def shard_group(mesh: DeviceMesh, placements: Sequence[Placement]) -> dist.ProcessGroup | None:
    """The ranks among which a DTensor laid out as `placements` on `mesh` is split, whose local pieces add up to the
    whole: the group of its one Shard dimension (a Replicate dimension holds equal copies, which must not be counted
    twice), or None when that dimension has a single rank. FSDP2's layouts are (Shard(0),) on a 1-D mesh and
    (Replicate(), Shard(0)) on HSDP's 2-D mesh; anything else is a ValueError."""
    shard_dims = [i for i, p in enumerate(placements) if isinstance(p, Shard)]
    if len(shard_dims) != 1 or not all(isinstance(p, (Shard, Replicate)) for p in placements):
        raise ValueError(f"expected one Shard dimension and Replicate ones, found placements {tuple(placements)}")
    return mesh.get_group(shard_dims[0]) if mesh.size(shard_dims[0]) > 1 else None


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
