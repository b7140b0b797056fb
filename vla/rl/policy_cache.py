"""The frozen policy's outputs per replay frame, computed once: what a run whose flow policy stays frozen (no actor,
or algo.actor.method=distill) would otherwise recompute in every update.

Then the policy never changes, so a frame's prefix features (the critic's input for
features=policy) and its chunk samples are a function of the frame and the sampling noise alone. The cache holds,
for every frame a batch can read as s or s_{t+h}:

  features  (features=policy) the pooled prefix pass (vla.rl.sampling.pooled_prefix_features) and the model's
            state; with features=encoder the critic's image input is rebuilt from the frame per batch (the
            policy's transform only, no model pass), as it would take 48 KiB a frame to keep
  samples   a bank of `algo.cache_samples` chunks (the critic's h x action_dim slice), each denoised from noise
            seeded by (run seed, frame index, row): the same bank whatever the batching, the order frames were added
            in, or a resume, and a row's noise is regenerated on demand (`draw_with_noise`, for the one-step actor's
            distillation) without being stored

Updates draw `calql.policy_samples` and `target_best_of_n` distinct bank rows per state with the learner's generator.
Frames added by an online round are cached before that round's updates (`extend`, from QChunkRun.train); best-of-N
acting under the critic does not change the policy's own samples. With the pathwise actor the expert moves every
update, so its samples must be fresh: no cache then (vla.rl.learner's denoising path).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vla.data.transforms import collate, move_to
from vla.eval.policy import Policy
from vla.rl.critic import CriticSpec, critic_inputs
from vla.rl.data import ReplayBuffer
from vla.rl.sampling import encode_prefix, pooled_prefix_features, sample_chunks


def bank_noise(seed: int, frame: int, row: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The starting noise of one bank row: a generator of its own, seeded from the run seed, the frame index and the
    row, independent of the update generator."""
    gen = torch.Generator().manual_seed(((seed * 1_000_003 + frame) * 65_537 + row) % 2**63)
    return torch.randn(*shape, generator=gen)


def frame_noise(seed: int, frame: int, rows: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """(len(rows), *shape): the noise of a frame's bank rows."""
    return torch.stack([bank_noise(seed, frame, int(r), shape) for r in rows])


def frames_read(replay: ReplayBuffer) -> np.ndarray:
    """Every frame an update can read: the chunk starts and their s_{t+h}."""
    starts = replay.starts
    return np.unique(np.concatenate([starts, replay.targets["next_index"][starts]]))


@dataclass
class PolicyCache:
    """Per replay frame (rows by global frame index; `cached` says which are filled)."""

    spec: CriticSpec
    seed: int
    num_samples: int
    num_denoise_steps: int
    cached: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    samples: torch.Tensor | None = None  # (frames, num_samples, h, action_dim)
    features: torch.Tensor | None = None  # (frames, feature_dim), features=policy
    state: torch.Tensor | None = None  # (frames, state_dim): the model's normalized, padded state, features=policy

    def _grow(self, frames: int) -> None:
        old = len(self.cached)
        if frames <= old:
            return
        s = self.spec
        self.cached = np.r_[self.cached, np.zeros(frames - old, bool)]
        more = torch.zeros(frames - old, self.num_samples, s.chunk_len, s.action_dim)
        self.samples = more if self.samples is None else torch.cat([self.samples, more])
        if s.features == "policy":
            for name, width in (("features", s.feature_dim), ("state", s.state_dim)):
                more = torch.zeros(frames - old, width)
                setattr(self, name, more if getattr(self, name) is None else torch.cat([getattr(self, name), more]))

    @torch.no_grad()
    def compute(self, policy: Policy, frames: np.ndarray, observations: list[dict]) -> dict[str, torch.Tensor]:
        """One batch of frames through the policy: one prefix pass, then the bank from each frame's own noise."""
        model, s = policy.model, self.spec
        batch = move_to(collate([policy.transform(o) for o in observations]), policy.device)
        ctx = encode_prefix(model, batch)
        shape = (model.cfg.action_horizon, model.cfg.action_dim)
        rows = range(self.num_samples)
        noise = torch.stack([frame_noise(self.seed, int(f), rows, shape) for f in frames]).to(policy.device)
        chunks = sample_chunks(model, ctx, noise, self.num_denoise_steps)
        out = {"samples": chunks[:, :, :s.chunk_len, :s.action_dim].cpu()}
        if s.features == "policy":
            out["features"] = pooled_prefix_features(ctx).float().cpu()
            out["state"] = batch["state"].float().cpu()
        return out

    def extend(self, policy: Policy, replay: ReplayBuffer, batch_size: int,
               progress: bool = False) -> tuple[int, float]:
        """Cache the frames the replay can now read that are not cached yet; (frames computed, seconds)."""
        from tqdm import tqdm

        start = time.perf_counter()
        self._grow(len(replay))
        todo = frames_read(replay)
        todo = todo[~self.cached[todo]]
        for i in tqdm(range(0, len(todo), batch_size), desc="policy cache", unit="batch", disable=not progress):
            frames = todo[i:i + batch_size]
            out = self.compute(policy, frames, replay.observations(frames))
            rows = torch.from_numpy(frames)
            self.samples[rows] = out["samples"]
            if self.features is not None:
                self.features[rows], self.state[rows] = out["features"], out["state"]
            self.cached[frames] = True
        return len(todo), time.perf_counter() - start

    def _check(self, frames: np.ndarray) -> None:
        if len(self.cached) <= frames.max() or not self.cached[frames].all():
            raise RuntimeError("policy cache: frames read before they were cached (PolicyCache.extend after "
                               "ReplayBuffer.add)")

    def _pick(self, frames: np.ndarray, n: int, gen: torch.Generator) -> torch.Tensor:
        self._check(frames)
        return torch.rand(len(frames), self.num_samples, generator=gen).argsort(dim=1)[:, :n]

    def draw(self, frames: np.ndarray, n: int, gen: torch.Generator, device) -> torch.Tensor:
        """(B, n, h, action_dim): n distinct bank rows per frame, chosen with `gen`."""
        pick = self._pick(frames, n, gen)
        return self.samples[torch.from_numpy(frames)[:, None], pick].to(device)

    def draw_with_noise(self, frames: np.ndarray, n: int, gen: torch.Generator, device,
                        noise_shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """`draw`'s chunks and the noise (B, n, *noise_shape) each was denoised from."""
        pick = self._pick(frames, n, gen)
        noise = torch.stack([frame_noise(self.seed, int(f), rows.tolist(), noise_shape)
                             for f, rows in zip(frames, pick, strict=True)])
        return self.samples[torch.from_numpy(frames)[:, None], pick].to(device), noise.to(device)

    def critic_inputs(self, policy: Policy, replay: ReplayBuffer, frames: np.ndarray) -> dict[str, torch.Tensor]:
        """The critic's observation inputs of `frames`: cached features (policy) or the rebuilt image (encoder)."""
        self._check(frames)
        if self.spec.features == "policy":
            rows = torch.from_numpy(frames)
            return {"state": self.state[rows].to(policy.device), "features": self.features[rows].to(policy.device)}
        batch = move_to(collate([policy.transform(o) for o in replay.observations(frames)]), policy.device)
        return critic_inputs(self.spec, batch, None)
