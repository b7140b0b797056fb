"""The critic's losses, as plain functions of Q-values (tested against hand-computed values).

  chunk_backup        R_{t:t+h} + gamma^h * bootstrap * Qbar(s_{t+h}, a'), Q-chunking's n-step backup of a chunk
                      (Li, Zhou, Levine 2025, arXiv 2507.07969; ColinQiyangLi/qc agents/acfql.py)
  td_loss             squared error of every ensemble member against the (shared) target, over the valid chunks
  calql_regularizer   Cal-QL (Nakamoto et al. 2023, arXiv 2303.05479) in the form of CQL's logsumexp: over the
                      chunks sampled at s (uniform ones and the policy's, the policy's Q clipped from below by the
                      Monte-Carlo return of the data) and the data chunk, temp * logsumexp(Q / temp) - temp log(n),
                      minus Q(s, a_data). Flow policies have no tractable density, so no importance weights.
"""

from __future__ import annotations

import math

import torch


def chunk_backup(chunk_return: torch.Tensor, bootstrap: torch.Tensor, next_q: torch.Tensor, gamma: float,
                 chunk_len: int) -> torch.Tensor:
    """(B,) targets; `bootstrap` is 0 where the episode terminated within the chunk."""
    return chunk_return + (gamma ** chunk_len) * bootstrap * next_q


def td_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """q (E, B) against target (B,) (no gradient): mean over the batch of the squared errors summed over the ensemble,
    so that each member learns as it would alone."""
    return (q - target.detach()[None]).pow(2).mean(dim=1).sum()


def calql_regularizer(q_data: torch.Tensor, q_uniform: torch.Tensor, q_policy: torch.Tensor,
                      mc_return: torch.Tensor, temperature: float = 1.0,
                      bound_uniform: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """q_data (E, B), q_uniform (E, B, Mu), q_policy (E, B, Mp), mc_return (B,) -> (the regularizer (E, B), the
    fraction of bounded Q-values that the Monte-Carlo return lifted). The regularizer is 0 when every Q is the same."""
    lower = mc_return[None, :, None]
    bounded = [q_policy] + ([q_uniform] if bound_uniform else [])
    lifted = torch.cat([(q < lower).flatten() for q in bounded]).float().mean() if any(q.numel() for q in bounded) \
        else torch.zeros((), device=q_data.device)
    q_policy = torch.maximum(q_policy, lower)
    if bound_uniform:
        q_uniform = torch.maximum(q_uniform, lower)
    samples = torch.cat([q_uniform, q_policy, q_data[..., None]], dim=-1)
    ood = temperature * torch.logsumexp(samples / temperature, dim=-1) - temperature * math.log(samples.shape[-1])
    return ood - q_data, lifted
