"""ShardedAdamW and clip_grad_norm_ on FSDP2 shards against torch's AdamW and clip_grad_norm_ on the same DTensors:
1 rank in this process, 2 gloo ranks in spawned processes."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor
from torch.optim.adamw import adamw as torch_adamw

import vla.train.optim as optim
from tests.train.helpers import sharded_mlp
from vla.train.optim import ShardedAdamW, clip_grad_norm_


def twin_models(world: int) -> tuple[nn.Module, nn.Module]:
    """Two identical FSDP2-sharded MLPs over `world` ranks."""
    mesh = init_device_mesh("cpu", (world,))
    return sharded_mlp(mesh), sharded_mlp(mesh)


def run_steps(world: int, rank: int, fused: bool, steps: int = 3) -> None:
    """torch's AdamW + clip_grad_norm_ vs ours on twin models, same data; max_norm small enough to clip."""
    ref, ours = twin_models(world)
    kw = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=fused, foreach=not fused)
    opt_ref = torch.optim.AdamW(ref.parameters(), **kw)
    opt_ours = ShardedAdamW(ours.parameters(), **kw)
    gen = torch.Generator().manual_seed(1 + rank)
    for _ in range(steps):
        x = torch.randn(5, 6, generator=gen)
        for model in (ref, ours):
            model(x).pow(2).sum().backward()
        norm_ref = torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 0.5, foreach=True)
        norm_ref = norm_ref.full_tensor() if isinstance(norm_ref, DTensor) else norm_ref
        norm_ours = clip_grad_norm_(list(ours.parameters()), 0.5)
        assert not isinstance(norm_ours, DTensor)
        torch.testing.assert_close(norm_ours, norm_ref, rtol=1e-6, atol=0)
        assert norm_ref > 0.5  # the clipping scaled the gradients
        for p_ref, p_ours in zip(ref.parameters(), ours.parameters(), strict=True):
            torch.testing.assert_close(p_ours.grad.to_local(), p_ref.grad.to_local(), rtol=1e-6, atol=0)
            p_ours.grad.copy_(p_ref.grad)  # the optimizers' comparison starts from the same gradients
        opt_ref.step()
        opt_ours.step()
        opt_ref.zero_grad(set_to_none=True)
        opt_ours.zero_grad(set_to_none=True)
        for p_ref, p_ours in zip(ref.parameters(), ours.parameters(), strict=True):
            assert torch.equal(p_ours.to_local(), p_ref.to_local())  # the same kernel on the same shard values
    # AdamW's state layout: same keys, tensor types, dtypes and devices, and equal values
    s_ref, s_ours = opt_ref.state_dict(), opt_ours.state_dict()
    assert s_ours["param_groups"] == s_ref["param_groups"]
    assert s_ours["state"].keys() == s_ref["state"].keys()
    for i, st in s_ref["state"].items():
        assert st.keys() == s_ours["state"][i].keys()
        for k, t in st.items():
            o = s_ours["state"][i][k]
            assert (type(o), o.dtype, o.device) == (type(t), t.dtype, t.device), (i, k)
            assert torch.equal(o.to_local() if isinstance(o, DTensor) else o, t.to_local() if isinstance(t, DTensor) else t)


def _worker(rank: int, world: int, init_file: str, fused: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        run_steps(world, rank, fused)
    finally:
        dist.destroy_process_group()


@pytest.fixture
def one_rank():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("fused", [False, True])
def test_matches_torch_on_one_rank(one_rank, fused, monkeypatch):
    seen = []

    def recording_adamw(params, grads, *args, **kwargs):  # wraps our module's reference to torch's functional adamw
        seen.append(any(isinstance(t, DTensor) for t in params + grads))
        return torch_adamw(params, grads, *args, **kwargs)

    monkeypatch.setattr(optim, "adamw", recording_adamw)
    run_steps(1, 0, fused)
    assert seen == [False, False, False]  # every step ran on the local shards


@pytest.mark.slow
@pytest.mark.parametrize("fused", [False, True])
def test_matches_torch_on_two_gloo_ranks(fused, tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), fused), nprocs=2, join=True)


def test_clip_refuses_a_mix_of_sharded_and_plain_gradients(one_rank):
    sharded, _ = twin_models(1)
    plain = nn.Linear(2, 2)
    sharded(torch.ones(1, 6)).sum().backward()
    plain(torch.ones(1, 2)).sum().backward()
    with pytest.raises(ValueError, match="sharded over one 1-D mesh"):
        clip_grad_norm_([*sharded.parameters(), *plain.parameters()], 1.0)


def test_clip_plain_gradients_as_torch(one_rank):
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    a(torch.randn(2, 4)).pow(2).sum().backward()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        pb.grad = pa.grad.clone()
    n_ref = torch.nn.utils.clip_grad_norm_(list(a.parameters()), 0.1, foreach=True)
    n_ours = clip_grad_norm_(list(b.parameters()), 0.1)
    torch.testing.assert_close(n_ours, n_ref, rtol=0, atol=0)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=0, atol=0)
