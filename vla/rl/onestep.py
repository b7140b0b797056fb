"""A one-step policy distilled from the frozen flow policy and steered by the critic: Flow Q-Learning (Park, Li,
Levine 2025, arXiv 2502.02538; seohongpark/fql agents/fql.py), with the SFT policy as FQL's behavior-cloning flow.

  mu(s, z) -> the h x A actions a decision executes, in one MLP pass from the observation features and the noise
  loss     mean |mu(s, z) - flow(s, z)|^2 + alpha * (-Q(s, mu(s, z))) / mean|Q|

flow(s, z) is the frozen policy's own chunk for the same starting noise z: the rows of the policy cache's bank
(vla.rl.policy_cache), whose noise is regenerated from (run seed, frame, row), so no denoising runs during training.
The Q term is normalized by FQL's `normalize_q_loss`; FQL's alpha weighs the distillation instead, so FQL's
alpha = a corresponds to alpha = 1 / a here. The observation is the critic's (the policy's pooled prefix pass and
the normalized state): acting costs one prefix pass and one MLP, no Euler steps.

Saved as actor.safetensors + actor.json beside the critic; `eval.py checkpoint=<policy> actor=<run>` acts with it,
and with `critic=<run> best_of_n=N` executes the best of its N samples under the critic.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vla.configs import EvalConfig, EvalProtocol
from vla.data.transforms import collate, move_to
from vla.eval.policy import Policy
from vla.rl.best_of_n import best_of_n_wrapper, best_under_critic, candidate_noise
from vla.rl.critic import ChunkCritic, check_fit, critic_inputs, find_saved, load_critic, mlp
from vla.rl.sampling import encode_prefix, pooled_prefix_features, prefix_feature_dim

ACTOR_WEIGHTS, ACTOR_META = "actor.safetensors", "actor.json"


@dataclass
class OneStepSpec:
    """Everything needed to rebuild a one-step actor and check it fits a task and policy (actor.json)."""

    task: str
    env_id: str
    model: str  # the policy whose prefix features it reads and whose samples it was distilled from
    feature_dim: int
    state_dim: int
    horizon: int  # the noise: the policy's action horizon x its padded action width
    noise_dim: int
    chunk_len: int  # what it predicts: the h actions a decision executes, of the task's action_dim
    action_dim: int
    hidden_dims: list[int] = field(default_factory=lambda: [512, 512, 512, 512])
    policy_checkpoint: str | None = None


class OneStepActor(nn.Module):
    """forward(obs, noise) -> normalized chunks (B, N, h, A) for noise (B, N, H, noise_dim), or (B, h, A) for
    (B, H, noise_dim); `obs` holds the policy's pooled prefix `features` and `state`, or is `observation(obs)`."""

    def __init__(self, spec: OneStepSpec):
        super().__init__()
        self.spec = spec
        obs_dim = spec.feature_dim + spec.state_dim
        self.obs_norm = nn.LayerNorm(obs_dim)
        self.net = mlp(obs_dim + spec.horizon * spec.noise_dim, list(spec.hidden_dims),
                       spec.chunk_len * spec.action_dim)

    def observation(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.obs_norm(torch.cat([obs["features"].float(), obs["state"].float()], dim=-1))

    def forward(self, obs: dict[str, torch.Tensor] | torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        single = noise.dim() == 3
        if single:
            noise = noise[:, None]
        B, N = noise.shape[:2]
        o = obs if isinstance(obs, torch.Tensor) else self.observation(obs)
        x = torch.cat([o[:, None].expand(B, N, o.shape[-1]), noise.float().flatten(2)], dim=-1)
        chunks = self.net(x).view(B, N, self.spec.chunk_len, self.spec.action_dim)
        return chunks[:, 0] if single else chunks


def save_actor(actor: OneStepActor, out_dir: str | Path) -> None:
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    save_file({k: v.detach().cpu().contiguous() for k, v in actor.state_dict().items()}, out_dir / ACTOR_WEIGHTS)
    (out_dir / ACTOR_META).write_text(json.dumps(asdict(actor.spec), indent=2) + "\n")


def load_actor(path: str | Path, task: str, model: str, device: str | torch.device = "cpu") -> OneStepActor:
    """The one-step actor of an algo=qchunk run or checkpoint dir, checked against the task and policy model."""
    from safetensors.torch import load_file

    ckpt = find_saved(path, ACTOR_META, "actor", "an algo=qchunk run with algo.actor.method=distill")
    meta = ckpt / ACTOR_META
    try:
        spec = OneStepSpec(**json.loads(meta.read_text()))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{meta}: not a one-step actor description ({str(e).splitlines()[0]})") from None
    check_fit(meta, spec.task, spec.model, task, model, "act for")
    actor = OneStepActor(spec)
    actor.load_state_dict(load_file(ckpt / ACTOR_WEIGHTS))
    return actor.to(device).eval()


class OneStepPolicy(Policy):
    """`policy`'s prefix pass + the one-step actor in place of its denoising; with a critic and n > 1, the best of n
    actor samples under it (each candidate's noise as in vla.rl.best_of_n, the first the episode's own)."""

    def __init__(self, policy: Policy, actor: OneStepActor, critic: ChunkCritic | None = None, n: int = 1):
        super().__init__(policy.model, policy.transform, policy.action_dim, policy.device, policy.num_denoise_steps,
                         policy.checkpoint)
        s, cfg = actor.spec, policy.cfg
        fits = (prefix_feature_dim(cfg), cfg.action_horizon, cfg.action_dim, policy.action_dim)
        if (s.feature_dim, s.horizon, s.noise_dim, s.action_dim) != fits:
            raise ValueError(f"a one-step actor of {s.model} ({s.horizon} x {s.noise_dim} noise, {s.action_dim} "
                             f"actions) cannot act for this {cfg.name} policy with {policy.action_dim} actions")
        if n > 1 and critic is None:
            raise ValueError(f"best_of_n={n} with a one-step actor needs critic=<run> to choose among its samples")
        self.actor, self.critic, self.n = actor, critic, n

    @torch.no_grad()
    def choose(self, batch: dict, noise: torch.Tensor) -> torch.Tensor:
        """Model batch + noise (B, n, H, noise_dim) -> normalized chunks (B, h, A)."""
        features = pooled_prefix_features(encode_prefix(self.model, batch))
        candidates = self.actor({"features": features, "state": batch["state"]}, noise)
        if self.n == 1:
            return candidates[:, 0]
        chosen, _, _ = best_under_critic(self.critic, critic_inputs(self.critic.spec, batch, features), candidates)
        return chosen

    @torch.no_grad()
    def act(self, observations: list[dict], noise: torch.Tensor | None = None,
            prev_actions: Sequence[np.ndarray | None] | None = None, *rtc) -> np.ndarray:
        """(B, h, action_dim) raw actions: the h a decision executes (the actor predicts no more)."""
        if prev_actions is not None and any(p is not None for p in prev_actions):
            raise ValueError("a one-step actor predicts only the actions one decision executes: it cannot act with "
                             "an inference delay (latency.delay_steps > 0)")
        batch = move_to(collate([self.transform(o) for o in observations]), self.device)
        if noise is None:
            noise = torch.randn(len(observations), self.cfg.action_horizon, self.cfg.action_dim)
        chunks = self.choose(batch, candidate_noise(noise, self.n).to(self.device))
        return self.transform.unnormalize_actions(chunks.float().cpu(), self.action_dim).numpy()


def onestep_wrapper(actor_path: str, task: str, protocol: EvalProtocol, critic_path: str | None = None,
                    n: int = 1) -> Callable[[Policy], Policy]:
    """What eval.py's `actor=` option wraps its loaded policy with (checked against task, model and the actions a
    decision of `protocol` executes)."""

    def wrap(policy: Policy) -> Policy:
        actor = load_actor(actor_path, task, policy.cfg.name, policy.device)
        replan = protocol.executed_steps(policy.cfg.action_horizon)
        if replan > actor.spec.chunk_len:
            raise ValueError(f"eval.replan_steps={replan}: the one-step actor of {actor_path} predicts "
                             f"{actor.spec.chunk_len} actions per decision; evaluate with "
                             f"eval.replan_steps<={actor.spec.chunk_len}")
        critic = load_critic(critic_path, task, policy.cfg.name, policy.device) if critic_path else None
        return OneStepPolicy(policy, actor, critic, n)

    return wrap


def acting_wrapper(cfg: EvalConfig) -> Callable[[Policy], Policy] | None:
    """How eval.py and vla.rl.collect act with their loaded policy: the one-step actor (`actor=`, best-of-N of its
    samples with `critic=`), best-of-N of the policy's own samples under a critic (`critic=` alone), or as it is."""
    if cfg.actor is not None:
        return onestep_wrapper(cfg.actor, cfg.task.name, cfg.eval, cfg.critic, cfg.best_of_n)
    if cfg.critic is not None:
        return best_of_n_wrapper(cfg.critic, cfg.best_of_n, cfg.task.name)
    return None
