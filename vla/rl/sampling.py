"""What Q-learning needs from the flow policy, built from `Pi0Policy`'s own pieces (`prefix_cache`,
`step_modulations`, `denoise_step`), so that the policy's numerics stay those of vla/models/pi0.py:

  encode_prefix      one prefix pass (images + prompt) under no_grad: the key/value cache every chunk sample reads,
                     and the critic's observation features (`pooled_prefix_features`)
  sample_chunks      N chunks per observation from one prefix pass: the cache is repeated, not recomputed, and
                     the N x B suffixes denoise as one batch (the Euler steps of `sample_actions`)
  pathwise_chunks    a chunk sampled with gradients through k Euler steps of the action expert (the prefix stays a
                     constant: the VLM and vision tower get no gradient)
  flow_matching_loss the training loss of `compute_loss`, with the prefix taken from the cache

The action expert's parameters are `expert_parameter_names`: what Q-guided fine-tuning may change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vla.models.pi0 import Pi0Policy, trim_prompt_padding


@dataclass
class PrefixContext:
    """One batch's prefix pass: per-layer (k, v) (B, Tp, K, Dh), the prefix validity mask (B, Tp), the padded state
    (B, action_dim; read by Pi0 only)."""

    kv_cache: list[tuple[torch.Tensor, torch.Tensor]]
    prefix_mask: torch.Tensor
    state: torch.Tensor | None

    @property
    def batch_size(self) -> int:
        return self.prefix_mask.shape[0]

    def rows(self, rows: slice) -> PrefixContext:
        return PrefixContext([(k[rows], v[rows]) for k, v in self.kv_cache], self.prefix_mask[rows],
                             None if self.state is None else self.state[rows])

    def repeat(self, n: int) -> PrefixContext:
        """Each row n times in a row (row b -> rows b * n .. b * n + n - 1)."""
        if n == 1:
            return self
        rep = lambda x: x.repeat_interleave(n, dim=0)  # noqa: E731
        return PrefixContext([(rep(k), rep(v)) for k, v in self.kv_cache], rep(self.prefix_mask),
                             None if self.state is None else rep(self.state))


@torch.no_grad()
def encode_prefix(policy: Pi0Policy, batch: dict) -> PrefixContext:
    """The prefix pass of `sample_actions` (unused prompt padding dropped first), without gradients."""
    batch = trim_prompt_padding(batch, policy.cfg.prompt_bucket)
    kv_cache, prefix_mask = policy.prefix_cache(batch)
    return PrefixContext(kv_cache, prefix_mask, batch.get("state"))


def prefix_feature_dim(cfg) -> int:
    """The width of `pooled_prefix_features` for a model config: depth * num_kv_heads * head_dim of its VLM."""
    return cfg.vlm.depth * cfg.vlm.num_kv_heads * cfg.vlm.head_dim


def pooled_prefix_features(ctx: PrefixContext) -> torch.Tensor:
    """(B, depth * num_kv_heads * head_dim): each layer's prefix values averaged over the valid prefix tokens. The
    values carry no rotary position (only keys do), so their mean is a summary of what the layer read from the images
    and the prompt (with Pi0.5's discretized state), and it costs nothing beyond the pass sampling needs anyway."""
    mask = ctx.prefix_mask.float()[:, :, None, None]
    count = mask.sum(dim=1).clamp_min(1.0)
    pooled = [((v.float() * mask).sum(dim=1) / count).flatten(1) for _, v in ctx.kv_cache]
    return torch.cat(pooled, dim=1)


def _velocity_fn(policy: Pi0Policy, ctx: PrefixContext, times: torch.Tensor, precomputed: bool):
    """v(x, k) at Euler step k. `precomputed`: Pi0.5's modulations for all steps at once, as `sample_actions` does
    (no gradient through the time MLP); otherwise the time condition is computed inside each step."""
    modulations = policy.step_modulations(times) if precomputed and policy.cfg.pi05 else None

    def velocity(x: torch.Tensor, k: int) -> torch.Tensor:
        mods = None if modulations is None else modulations[k:k + 1]
        return policy.denoise_step(x, times[k].expand(x.shape[0]), ctx.state, ctx.kv_cache, ctx.prefix_mask, mods)

    return velocity


@torch.no_grad()
def sample_chunks(policy: Pi0Policy, ctx: PrefixContext, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """noise (B, N, H, A) -> N chunks per observation (B, N, H, A), normalized: the Euler integration of
    `sample_actions` from t=1 to 0, on the prefix cache of `ctx` repeated N times."""
    B, N = noise.shape[:2]
    rep = ctx.repeat(N)
    times = Pi0Policy.euler_times(num_steps).to(noise.device)
    dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32, device=noise.device)
    velocity = _velocity_fn(policy, rep, times, precomputed=True)
    x = noise.float().flatten(0, 1)
    for k in range(num_steps):
        x = x + dt * velocity(x, k)
    return x.view(B, N, *x.shape[1:])


def pathwise_chunks(policy: Pi0Policy, ctx: PrefixContext, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """noise (B, H, A) -> chunks (B, H, A) with the autograd graph of `num_steps` Euler steps through the action
    expert (run in the caller's grad mode). The prefix cache is a constant here: gradients reach the expert only."""
    times = Pi0Policy.euler_times(num_steps).to(noise.device)
    dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32, device=noise.device)
    velocity = _velocity_fn(policy, ctx, times, precomputed=False)
    x = noise.float()
    for k in range(num_steps):
        x = x + dt * velocity(x, k)
    return x


def flow_matching_loss(policy: Pi0Policy, ctx: PrefixContext, actions: torch.Tensor, noise: torch.Tensor,
                       time: torch.Tensor) -> torch.Tensor:
    """(B, H) per-step loss of `compute_loss` (x_t = t noise + (1 - t) actions, target noise - actions), its suffix
    attending to the cached prefix: the same attention pattern as the joint pass, without recomputing the prefix."""
    t = time.float()[:, None, None]
    x_t = t * noise + (1.0 - t) * actions.float()
    v_t = policy.denoise_step(x_t, time, ctx.state, ctx.kv_cache, ctx.prefix_mask)
    return (v_t - (noise - actions.float())).pow(2).mean(dim=-1)


def expert_parameter_names(policy: Pi0Policy) -> list[str]:
    """The action expert: its half of every joint layer, its final norm, and the action/time (Pi0: state) projections.
    The VLM, its embedding and the vision tower are not among them."""
    own = ("transformer.expert_norm.", "action_in_proj.", "action_out_proj.", "time_mlp_in.", "time_mlp_out.",
           "state_proj.", "action_time_mlp_in.", "action_time_mlp_out.")
    return [n for n, _ in policy.named_parameters()
            if n.startswith(own) or (n.startswith("transformer.layers.") and ".experts.1." in n)]
