"""clip_grad_norm_ on HSDP's 2-D mesh (replicate x shard, FSDP2 `fully_shard(mesh=2-D)`) against torch's
clip_grad_norm_ on the full gradients, gathered: spawned gloo ranks on the CPU, laid out by `init_mesh` as torchrun's
nodes would be."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.tensor import DTensor, Replicate, Shard

from tests.train.helpers import sharded_mlp
from vla.train.distributed import init_mesh
from vla.train.optim import clip_grad_norm_

pytestmark = pytest.mark.slow  # several processes


def check_clip(rank: int, world: int, nodes: int, max_norm: float) -> None:
    mesh = init_mesh(torch.device("cpu"), world, nodes)
    per_node = world // nodes
    assert mesh.mesh_dim_names == ("replicate", "shard")
    # the shard groups are the ranks of one node (torchrun numbers ranks node by node), the replicate groups one
    # rank of each node
    assert mesh["shard"].mesh.tolist() == list(range(rank // per_node * per_node, (rank // per_node + 1) * per_node))
    assert mesh["replicate"].mesh.tolist() == list(range(rank % per_node, world, per_node))

    model = sharded_mlp(mesh)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1 + rank))  # every rank its own data
    model(x).pow(2).sum().backward()
    params = list(model.parameters())
    assert all(p.grad.placements == (Replicate(), Shard(0)) for p in params)
    full_before = [p.grad.full_tensor().clone() for p in params]  # a collective (a view when nothing is split)
    plain = [torch.zeros_like(g, requires_grad=True) for g in full_before]  # torch's clip on plain full gradients
    for t, g in zip(plain, full_before):
        t.grad = g.clone()
    norm_ref = torch.nn.utils.clip_grad_norm_(plain, max_norm, foreach=True)
    assert norm_ref > 0

    norm = clip_grad_norm_(params, max_norm)
    assert not isinstance(norm, DTensor)
    torch.testing.assert_close(norm, norm_ref, rtol=1e-6, atol=0)
    after = [p.grad.full_tensor() for p in params]
    for got, ref in zip(after, plain):
        torch.testing.assert_close(got, ref.grad, rtol=1e-6, atol=1e-8)
    assert (norm_ref > max_norm) == any(not torch.equal(a, b) for a, b in zip(after, full_before))


def _worker(rank: int, world: int, nodes: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        check_clip(rank, world, nodes, max_norm=0.05)  # clips
        check_clip(rank, world, nodes, max_norm=1e6)  # leaves the gradients as they are
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("nodes,per_node", [(2, 2), (2, 1)], ids=["2x2", "2x1"])
def test_clip_on_a_2d_mesh_matches_torch_on_the_full_gradients(nodes, per_node, tmp_path):
    """2x2: the squares summed within a node only; 2x1: a shard dimension of one rank (nothing to sum)."""
    mp.spawn(_worker, args=(nodes * per_node, nodes, str(tmp_path / "store")), nprocs=nodes * per_node, join=True)
