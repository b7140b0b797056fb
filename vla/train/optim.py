"""AdamW's step and gradient clipping on the parameters' local shards.

Under FSDP2 every parameter, gradient and AdamW moment is a DTensor sharded on dim 0. torch's AdamW and
`clip_grad_norm_` hand their lists of DTensors to foreach/fused kernels, and DTensor dispatches those tensor by tensor.
For the 3B model's ~800 tensors that was 43 ms of host time in AdamW's step and 33 ms in the clipping per step
(2 x H200, batch 16 per GPU, no recomputation: GPU time 13.5 and 5.7 ms), during which the GPU, done with the
backward, mostly waited. Both are elementwise over the shards apart from one sum, so they run here on each DTensor's
local tensor (`local_shard`) with the same kernels and formulas: 5.6 and 10 ms of host time, and MFU up from
41.6-43.4% to 44.5% on 2 x H200 at batch 22 per GPU (docs/benchmarks.md; the profiles: docs/history/benchmarks_log.md).
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor
from torch.optim.adamw import adamw

from vla.train.distributed import all_reduce_sum_, local_shard, shard_group


class ShardedAdamW(torch.optim.AdamW):
    """torch's AdamW whose step runs its functional `adamw` on the local shards.

    The state is AdamW's (the same keys, and tensors of the same types, dtypes and devices as its lazy initialisation
    makes: a test holds them to it), so the state dict and the checkpoints are AdamW's too."""

    def __init__(self, params, **kwargs):
        if kwargs.get("amsgrad") or kwargs.get("differentiable"):
            raise ValueError("ShardedAdamW: amsgrad and differentiable are not supported")
        super().__init__(params, **kwargs)

    def _state(self, p: torch.Tensor, group: dict) -> dict:
        state = self.state[p]
        if not state:  # AdamW's lazy initialisation: the step count lives on the parameter's device for fused kernels
            fp64 = torch.get_default_dtype() == torch.float64 and not group["fused"]
            state["step"] = torch.zeros((), dtype=torch.float64 if fp64 else torch.float32,
                                        device=p.device if group["fused"] or group["capturable"] else "cpu")
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("ShardedAdamW.step takes no closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p, group) for p in params]
            beta1, beta2 = group["betas"]
            adamw(
                [local_shard(p) for p in params], [local_shard(p.grad) for p in params],
                [local_shard(s["exp_avg"]) for s in states], [local_shard(s["exp_avg_sq"]) for s in states], [],
                [s["step"] for s in states],  # plain scalar tensors, one per parameter
                foreach=group["foreach"], capturable=group["capturable"], differentiable=False, fused=group["fused"],
                amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
                eps=group["eps"], maximize=group["maximize"],
            )
        return None


@torch.no_grad()
def clip_grad_norm_(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ (2-norm, foreach): scales the gradients in place by
    min(1, max_norm / (norm + 1e-6)) and returns the norm of all gradients together, as a plain tensor.

    With sharded gradients each rank takes the norm of its shards and one all-reduce over the mesh's shard dimension
    sums the squares; on HSDP's 2-D mesh the replicate dimension holds equal copies (FSDP2 all-reduced them) and is
    left out, or each would count once per node. That needs every gradient to be a DTensor laid out alike on one mesh
    (FSDP2's (Shard(0),) on a 1-D mesh, or HSDP's (Replicate(), Shard(0)) on a 2-D one), or none to be a DTensor."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    sharded = [g for g in grads if isinstance(g, DTensor)]
    local = [local_shard(g) for g in grads]
    norm = torch.nn.utils.get_total_norm(local, 2.0, foreach=True)
    if sharded:
        mesh, placements = sharded[0].device_mesh, sharded[0].placements
        expected = ("clip_grad_norm_: expected every gradient sharded over one 1-D mesh (FSDP2) or one 2-D "
                    "(replicate, shard) mesh (HSDP), all laid out alike")
        if len(sharded) != len(grads) or any(g.device_mesh != mesh or g.placements != placements for g in sharded):
            raise ValueError(expected)
        try:
            group = shard_group(mesh, placements)
        except ValueError as e:
            raise ValueError(f"{expected}: {e}") from None
        if group is not None:
            norm_sq = norm.square()
            all_reduce_sum_(norm_sq, group=group)
            norm = norm_sq.sqrt()
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    torch._foreach_mul_(local, coef.to(local[0].device))
    return norm
