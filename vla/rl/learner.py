"""One update of the critic, and optionally of the policy's action expert, on a batch of replay chunks.

Per update, one prefix pass of the frozen policy over the batch's observations and the observations h steps later
gives the key/value cache every chunk sample reads and (features=policy) the critic's observation features; then

  critic  target = R_{t:t+h} + gamma^h (1 - terminal) Qbar(s_{t+h}, a'), a' the best of `target_best_of_n` policy
          samples under the target critic; loss = TD + alpha * Cal-QL (uniform and policy chunks at s, the policy's
          Q clipped from below by the Monte-Carlo return); Polyak update of the target
  actor   (algo.actor.enabled) by its method:
          pathwise  flow-matching BC on the chunks of the replay's successful episodes + alpha * (-Q) of a chunk
                    sampled with gradients through k Euler steps; the gradient is taken with respect to the action
                    expert's parameters only (the prefix is a constant)
          distill   FQL: the one-step actor's chunk for a bank row's noise against that row (the frozen policy's
                    chunk from the same noise) + alpha * (-Q) of the actor's chunk (vla.rl.onestep). Once it trains
                    (algo.actor.start_step), the backup's and Cal-QL's policy chunks are the actor's samples, as the
                    policy being improved

When the flow policy is a constant (no actor, or distill) `learner.cache` (vla.rl.policy_cache) holds every replay
frame's prefix features and a bank of policy chunks: an update then reads them and draws chunks from the bank, and
runs no policy pass at all. With the pathwise actor the expert changes every update, so the prefix pass and the
samples are computed fresh, as above.

Every random number comes from the learner's generator (on the host), so a resumed run draws what it would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vla.algo_config import ActorConfig, AlgoConfig
from vla.data.transforms import collate, move_to
from vla.eval.policy import Policy
from vla.models.pi0 import sample_flow_time
from vla.rl.critic import ChunkCritic, aggregate, critic_inputs, polyak_update
from vla.rl.data import ReplayBuffer
from vla.rl.losses import calql_regularizer, chunk_backup, td_loss
from vla.rl.onestep import OneStepActor
from vla.rl.policy_cache import PolicyCache
from vla.rl.sampling import (PrefixContext, encode_prefix, flow_matching_loss, pathwise_chunks,
                             pooled_prefix_features, sample_chunks)


@dataclass
class Learner:
    """What the updates change: the critic, its target and optimizer, the policy (its action expert when the actor
    trains), the replay data, the generator, and the counters a checkpoint stores."""

    policy: Policy
    critic: ChunkCritic
    target: ChunkCritic
    critic_optim: torch.optim.Optimizer
    actor_params: list[torch.nn.Parameter]
    actor_optim: torch.optim.Optimizer | None
    replay: ReplayBuffer
    gen: torch.Generator
    num_denoise_steps: int
    step: int = 0  # updates done
    round: int = 0  # online rounds done
    cache: PolicyCache | None = None  # the frozen policy's per-frame outputs (no actor, or distill)
    onestep: OneStepActor | None = None  # algo.actor.method=distill: the one-step actor, trained by actor_optim

    @property
    def device(self) -> torch.device:
        return self.policy.device


@dataclass
class Batch:
    """A sampled batch: replay arrays on the device, the frames of s and s_{t+h}, the critic's inputs, and (without a
    cache) the model batch and prefix pass of s and s_{t+h}."""

    data: dict[str, torch.Tensor]
    frames: np.ndarray
    next_frames: np.ndarray
    obs: dict[str, torch.Tensor]
    obs_next: dict[str, torch.Tensor]
    model_batch: dict | None = None
    ctx: PrefixContext | None = None
    ctx_next: PrefixContext | None = None

    @property
    def size(self) -> int:
        return len(self.frames)


def _randn(learner: Learner, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=learner.gen).to(learner.device)


def sample_batch(learner: Learner, batch_size: int) -> Batch:
    replay, policy, cache = learner.replay, learner.policy, learner.cache
    indices = replay.sample(batch_size, learner.gen)
    next_indices = replay.targets["next_index"][indices]
    data = {k: v.to(learner.device) for k, v in replay.batch(indices).items()}
    if cache is not None:
        return Batch(data, indices, next_indices, cache.critic_inputs(policy, replay, indices),
                     cache.critic_inputs(policy, replay, next_indices))
    observations = replay.observations(np.concatenate([indices, next_indices]))
    both = move_to(collate([policy.transform(o) for o in observations]), learner.device)
    ctx = encode_prefix(policy.model, both)
    features = pooled_prefix_features(ctx) if learner.critic.spec.features == "policy" else None
    inputs = critic_inputs(learner.critic.spec, both, features)
    now, later = slice(0, batch_size), slice(batch_size, 2 * batch_size)
    current = {k: v[now] if isinstance(v, torch.Tensor) else {kk: vv[now] for kk, vv in v.items()}
               for k, v in both.items()}
    return Batch(data, indices, next_indices, {k: v[now] for k, v in inputs.items()},
                 {k: v[later] for k, v in inputs.items()}, current, ctx.rows(now), ctx.rows(later))


def onestep_acts(learner: Learner, algo: AlgoConfig) -> bool:
    """The one-step actor is the policy the critic evaluates once it trains."""
    return learner.onestep is not None and learner.step >= algo.actor.start_step


def policy_chunks(learner: Learner, batch: Batch, n: int, at_next: bool, algo: AlgoConfig) -> torch.Tensor:
    """(B, n, ., .) policy chunks at s (or s_{t+h}): n samples of the one-step actor, n rows of the cached bank, or
    n fresh denoisings."""
    frames = batch.next_frames if at_next else batch.frames
    if onestep_acts(learner, algo):
        model = learner.policy.model
        noise = _randn(learner, batch.size, n, model.cfg.action_horizon, model.cfg.action_dim)
        return learner.onestep(batch.obs_next if at_next else batch.obs, noise)
    if learner.cache is not None:
        return learner.cache.draw(frames, n, learner.gen, learner.device)
    model = learner.policy.model
    noise = _randn(learner, batch.size, n, model.cfg.action_horizon, model.cfg.action_dim)
    return sample_chunks(model, batch.ctx_next if at_next else batch.ctx, noise, learner.num_denoise_steps)


@torch.no_grad()
def backup_target(learner: Learner, batch: Batch, algo: AlgoConfig) -> torch.Tensor:
    """(B,) chunked n-step targets from the target critic and the best of `target_best_of_n` policy samples."""
    next_chunks = policy_chunks(learner, batch, algo.target_best_of_n, at_next=True, algo=algo)
    next_q = aggregate(learner.target(batch.obs_next, next_chunks), algo.target_agg).max(dim=1).values
    d = batch.data
    return chunk_backup(d["chunk_return"], d["bootstrap"], next_q, algo.gamma, learner.critic.spec.chunk_len)


def critic_update(learner: Learner, batch: Batch, algo: AlgoConfig) -> dict[str, torch.Tensor]:
    critic, spec, B = learner.critic, learner.critic.spec, batch.size
    target = backup_target(learner, batch, algo)
    obs = critic.observation(batch.obs)
    q_data = critic(obs, batch.data["chunk"])
    loss_td = td_loss(q_data, target)
    metrics = {"critic/td_loss": loss_td.detach(), "critic/q_data": q_data.detach().mean(),
               "critic/target": target.mean(), "critic/mc_return": batch.data["mc_return"].mean(),
               "critic/q_minus_mc": (q_data.detach().mean(0) - batch.data["mc_return"]).mean()}
    loss = loss_td
    cq = algo.calql
    if cq.alpha > 0:
        with torch.no_grad():
            uniform = torch.rand(B, cq.uniform_samples, spec.chunk_len, spec.action_dim, generator=learner.gen)
            uniform = (uniform * 2.0 - 1.0).to(learner.device)  # the normalized action box
            own = policy_chunks(learner, batch, cq.policy_samples, at_next=False, algo=algo)
        reg, lifted = calql_regularizer(q_data, critic(obs, uniform), critic(obs, own), batch.data["mc_return"],
                                        cq.temperature, cq.bound_uniform)
        loss_reg = reg.mean(dim=1).sum()
        loss = loss + cq.alpha * loss_reg
        metrics |= {"critic/calql": loss_reg.detach(), "critic/bound_rate": lifted}
    learner.critic_optim.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(critic.parameters(), algo.critic.clip_grad_norm)
    learner.critic_optim.step()
    polyak_update(learner.target, critic, algo.critic.tau)
    return metrics | {"critic/grad_norm": grad_norm.detach(), "critic/alpha": torch.tensor(cq.alpha)}


def actor_update(learner: Learner, batch: Batch, algo: AlgoConfig) -> dict[str, torch.Tensor]:
    """Pathwise: BC (flow matching, successful episodes only) + alpha * normalized -Q of a pathwise sample; the
    gradient of the action expert alone."""
    model, ac = learner.policy.model, algo.actor
    B, H, A = batch.ctx.batch_size, model.cfg.action_horizon, model.cfg.action_dim
    d = batch.data
    time = sample_flow_time(B, torch.device("cpu"), learner.gen).to(learner.device)
    per_step = flow_matching_loss(model, batch.ctx, d["bc_actions"], _randn(learner, B, H, A), time)
    weight = (~d["bc_pad"]).float() * d["bc_weight"][:, None]
    bc_loss = (per_step * weight).sum() / weight.sum().clamp_min(1.0)
    chunks = pathwise_chunks(model, batch.ctx, _randn(learner, B, H, A), ac.pathwise_steps)
    return _actor_step(learner, batch, ac, bc_loss, chunks) | {"actor/bc_loss": bc_loss.detach()}


def distill_update(learner: Learner, batch: Batch, algo: AlgoConfig) -> dict[str, torch.Tensor]:
    """FQL's one-step actor loss: mean squared distance to the frozen policy's chunks from the same noise (bank rows)
    + alpha * normalized -Q of the actor's chunks; the gradient of the actor alone."""
    actor, ac, cfg = learner.onestep, algo.actor, learner.policy.cfg
    flow_chunks, noise = learner.cache.draw_with_noise(batch.frames, ac.distill_samples, learner.gen, learner.device,
                                                       (cfg.action_horizon, cfg.action_dim))
    chunks = actor(batch.obs, noise)
    distill_loss = (chunks - flow_chunks).pow(2).mean()
    return _actor_step(learner, batch, ac, distill_loss, chunks) | {"actor/distill_loss": distill_loss.detach()}


def _actor_step(learner: Learner, batch: Batch, ac: ActorConfig, imitation_loss: torch.Tensor,
                chunks: torch.Tensor) -> dict[str, torch.Tensor]:
    """One optimizer step of the actor's parameters on imitation_loss + alpha * (-Q) of `chunks` (divided by mean |Q|
    with normalize_q, FQL's normalize_q_loss); the critic's gradient is not taken."""
    with torch.no_grad():
        obs = learner.critic.observation(batch.obs)
    q = learner.critic(obs, chunks).mean(dim=0)
    q_loss = -q.mean()
    if ac.normalize_q:
        q_loss = q_loss / q.detach().abs().mean().clamp_min(1e-6)
    grads = torch.autograd.grad(imitation_loss + ac.alpha * q_loss, learner.actor_params)
    for p, g in zip(learner.actor_params, grads, strict=True):
        p.grad = g
    grad_norm = torch.nn.utils.clip_grad_norm_(learner.actor_params, ac.clip_grad_norm)
    learner.actor_optim.step()
    learner.actor_optim.zero_grad(set_to_none=True)
    return {"actor/q": q.detach().mean(), "actor/grad_norm": grad_norm.detach(), "actor/alpha": torch.tensor(ac.alpha)}


def update(learner: Learner, algo: AlgoConfig) -> dict[str, torch.Tensor]:
    """One critic update and, when due, one actor update on the same batch."""
    batch = sample_batch(learner, algo.batch_size)
    metrics = critic_update(learner, batch, algo)
    ac = algo.actor
    if ac.enabled and learner.step >= ac.start_step and (learner.step - ac.start_step) % ac.every == 0:
        metrics |= (distill_update if learner.onestep is not None else actor_update)(learner, batch, algo)
    learner.step += 1
    return metrics
