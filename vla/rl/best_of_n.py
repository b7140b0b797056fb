"""Best-of-N acting under a chunk critic (the QC agent of Q-chunking, Li, Zhou, Levine 2025, arXiv 2507.07969):
each decision samples N chunks from the flow policy, one prefix pass shared by all N, and executes the chunk the
critic scores highest (the ensemble's mean). An inference-only wrapper of `vla.eval.policy.Policy`, so eval.py,
the online rounds and anything that runs a Policy can act with it:

  python eval.py checkpoint=<policy> critic=<algo=qchunk run or checkpoint> best_of_n=16

Each observation's first candidate starts from the noise the caller passes (the episode's own draw, so N=1 is the
plain policy); the other N - 1 start from noise drawn from a generator seeded with a hash of that noise, so every
candidate depends on the episode seed alone, not on which other episodes share the batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

from vla.data.transforms import collate, move_to
from vla.eval.policy import Policy
from vla.rl.critic import ChunkCritic, aggregate, critic_inputs, load_critic
from vla.rl.sampling import encode_prefix, pooled_prefix_features, sample_chunks


def candidate_noise(noise: torch.Tensor, n: int) -> torch.Tensor:
    """(B, H, A) -> (B, n, H, A): row 0 is `noise`, rows 1.. come from a generator seeded by noise's bytes."""
    if n == 1:
        return noise[:, None]
    extra = []
    for row in noise.detach().float().cpu():
        seed = int.from_bytes(hashlib.blake2b(row.numpy().tobytes(), digest_size=8).digest(), "little") >> 1
        extra.append(torch.randn(n - 1, *row.shape, generator=torch.Generator().manual_seed(seed)))
    return torch.cat([noise[:, None], torch.stack(extra).to(noise.device, noise.dtype)], dim=1)


def best_under_critic(critic: ChunkCritic, obs: dict[str, torch.Tensor], candidates: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """candidates (B, N, H, A) -> (the highest-Q one per observation (B, H, A), every candidate's Q (B, N) (the
    ensemble's mean), the chosen index (B,))."""
    q = aggregate(critic(obs, candidates), "mean")
    best = q.argmax(dim=1)
    return candidates[torch.arange(len(best), device=best.device), best], q, best


class BestOfNPolicy(Policy):
    """`policy` acting by best-of-`n` under `critic`."""

    def __init__(self, policy: Policy, critic: ChunkCritic, n: int):
        super().__init__(policy.model, policy.transform, policy.action_dim, policy.device, policy.num_denoise_steps,
                         policy.checkpoint)
        if critic.spec.action_dim != policy.action_dim or critic.spec.chunk_len > policy.cfg.action_horizon:
            raise ValueError(f"critic of {critic.spec.chunk_len} x {critic.spec.action_dim} actions cannot score "
                             f"chunks of {policy.cfg.action_horizon} x {policy.action_dim}")
        self.critic, self.n = critic, n

    @torch.no_grad()
    def choose(self, batch: dict, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model batch + starting noise (B, N, H, A) -> (the chosen normalized chunks (B, H, A), every candidate's Q
        (B, N), the chosen index (B,))."""
        model = self.model
        ctx = encode_prefix(model, batch)
        steps = self.num_denoise_steps or model.cfg.num_denoise_steps
        candidates = sample_chunks(model, ctx, noise, steps)
        features = pooled_prefix_features(ctx) if self.critic.spec.features == "policy" else None
        return best_under_critic(self.critic, critic_inputs(self.critic.spec, batch, features), candidates)

    @torch.no_grad()
    def act(self, observations: list[dict], noise: torch.Tensor | None = None,
            prev_actions: Sequence[np.ndarray | None] | None = None, *rtc) -> np.ndarray:
        if prev_actions is not None and any(p is not None for p in prev_actions):
            raise ValueError("best-of-N acting does not support real-time chunking (latency.rtc)")
        batch = move_to(collate([self.transform(o) for o in observations]), self.device)
        if noise is None:
            noise = torch.randn(len(observations), self.cfg.action_horizon, self.cfg.action_dim)
        chunks, _, _ = self.choose(batch, candidate_noise(noise, self.n).to(self.device))
        return self.transform.unnormalize_actions(chunks.float().cpu(), self.action_dim).numpy()


def best_of_n_wrapper(critic_path: str, n: int, task: str) -> Callable[[Policy], Policy]:
    """What eval.py's `critic=` option wraps its loaded policy with (the critic checked against task and model)."""

    def wrap(policy: Policy) -> Policy:
        critic = load_critic(critic_path, task, policy.cfg.name, policy.device)
        return BestOfNPolicy(policy, critic, n)

    return wrap
