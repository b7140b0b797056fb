"""A trained (or pretrained) policy behind one call: observation-schema samples in, raw robot action chunks out.
The observations go through the same `ModelTransform` as training data; actions are unnormalized with the norm stats
the checkpoint was trained with."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from vla.data.transforms import ModelTransform, collate, move_to
from vla.models import build_policy, load_policy_config
from vla.models.config import DTYPES, PolicyConfig
from vla.models.rtc import RTC_MAX_GUIDANCE_WEIGHT, RTC_SCHEDULE
from vla.models.weights import find_weights, load_pretrained, openpi_norm_stats
from vla.runs import resolve_checkpoint

log = logging.getLogger(__name__)


class Policy:
    def __init__(self, model: torch.nn.Module, transform: ModelTransform, action_dim: int, device: torch.device,
                 num_denoise_steps: int | None = None, checkpoint: Path | None = None, compiled: bool = False):
        self.model, self.transform, self.action_dim, self.device = model, transform, action_dim, device
        self.num_denoise_steps = num_denoise_steps
        self.checkpoint = checkpoint  # the directory the weights came from (a run dir resolved to its checkpoint)
        self.cfg: PolicyConfig = model.cfg
        self.compiled = compiled  # compile_for_inference ran: batches are padded to batch_size_for(n)

    def batch_size_for(self, n: int) -> int:
        """The batch size a call with `n` observations runs at. Compiled, each batch size compiles and captures its
        own graphs (and torch.compile stops recompiling after a few shapes, falling back to eager), so batches are
        padded to the next power of two: a server or an evaluation whose batch varies from 1 to 16 builds 5 sets of
        graphs, not 16. Eager, every size runs as it is."""
        return 1 << (n - 1).bit_length() if self.compiled else n

    def warm_up_sizes(self, n: int) -> list[int]:
        """The batch sizes to run once before serving calls of 1..n observations: compiled, every size such calls are
        padded to (each builds its graphs); eager, one call."""
        return sorted({self.batch_size_for(k) for k in range(1, n + 1)}) if self.compiled else [1]

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | None,
        model_cfg: PolicyConfig,
        norm_stats: str | Path,
        action_dim: int,
        device: str = "cpu",
        precision: str = "fp32",
        num_denoise_steps: int | None = None,
        compile: bool = False,
        asset_id: str | None = None,
    ) -> Policy:
        """`checkpoint`: one of our checkpoint dirs (its config.yaml overrides `model_cfg`, its norm_stats.json and
        tokenizer.model are used), a run dir, or any weights `load_pretrained` reads; None: from-scratch init. An
        openpi checkpoint's own norm stats for dataset `asset_id` (assets/<asset_id>/norm_stats.json) are used as
        stored."""
        tokenizer = None
        if checkpoint is not None:
            checkpoint = resolve_checkpoint(checkpoint)
            if (checkpoint / "config.yaml").is_file():
                model_cfg = load_policy_config(OmegaConf.load(checkpoint / "config.yaml").model)
            if (checkpoint / "norm_stats.json").is_file():
                norm_stats = checkpoint / "norm_stats.json"
            elif (openpi_stats := openpi_norm_stats(checkpoint, asset_id)) is not None:
                norm_stats = openpi_stats
            if (checkpoint / "tokenizer.model").is_file():
                tokenizer = checkpoint / "tokenizer.model"
        dev = torch.device(device)
        with torch.device("meta"):  # allocated on the device directly: no CPU init of a 3B model first
            model = build_policy(model_cfg)
        model.to_empty(device=dev)
        if checkpoint is not None:
            model.init_buffers()
            load_pretrained(model, checkpoint)
            log.info("policy %s: weights %s, norm stats %s", model_cfg.name, find_weights(checkpoint)[1], norm_stats)
        else:
            model.init_weights()
            log.warning("no checkpoint given: evaluating the from-scratch init of %s", model_cfg.name)
        model = model.to(DTYPES[precision]).eval()
        if compile:
            model.compile_for_inference()
        transform = ModelTransform.load(model_cfg, norm_stats, tokenizer)
        return cls(model, transform, action_dim, dev, num_denoise_steps, checkpoint, compiled=compile)

    @torch.no_grad()
    def act(
        self, observations: list[dict], noise: torch.Tensor | None = None,
        prev_actions: Sequence[np.ndarray | None] | None = None, inference_delay: int = 0,
        execution_horizon: int | None = None, max_guidance_weight: float = RTC_MAX_GUIDANCE_WEIGHT,
        schedule: str = RTC_SCHEDULE,
    ) -> np.ndarray:
        """Observation-schema samples -> raw action chunks (B, H, action_dim). `noise` (B, H, model action_dim)
        fixes the flow's starting point (one generator per episode makes rollouts reproducible).

        Real-time chunking when `prev_actions` holds any chunk: per sample, the raw actions that remain of its
        previous chunk, aligned with the new one (its first action is for the control step the new chunk's first is
        for), or None (that sample is sampled without guidance). See `Pi0Policy.sample_actions` for the rest."""
        n = len(observations)
        rtc = {}
        if prev_actions is not None and any(p is not None for p in prev_actions):
            prev_chunk, horizons = self._previous_chunks(prev_actions, execution_horizon)
            rtc = dict(prev_chunk=prev_chunk, inference_delay=inference_delay, execution_horizon=horizons,
                       max_guidance_weight=max_guidance_weight, schedule=schedule)
        size = n if rtc else self.batch_size_for(n)  # guided sampling runs eager: no graphs to reuse
        samples = [self.transform(o) for o in observations]
        batch = move_to(collate(samples + samples[-1:] * (size - n)), self.device)  # padding: the last sample again
        if noise is not None:
            noise = torch.cat([noise, noise[-1:].expand(size - n, *noise.shape[1:])]).to(self.device)
        actions = self.model.sample_actions(batch, noise=noise, num_steps=self.num_denoise_steps, **rtc)[:n]
        return self.transform.unnormalize_actions(actions.float().cpu(), self.action_dim).numpy()

    def _previous_chunks(self, prev_actions: Sequence[np.ndarray | None],
                         execution_horizon: int | None) -> tuple[torch.Tensor, list[int]]:
        """Raw previous chunks -> normalized (B, H', action_dim) zero-padded to the longest, and per sample the
        execution horizon that ends its guidance where its own actions end (H for a sample without one)."""
        H = self.cfg.action_horizon
        lengths = [0 if p is None else len(p) for p in prev_actions]
        if max(lengths) > H:
            raise ValueError(f"previous actions: {max(lengths)} steps, but the policy predicts {H} at a time")
        prev = np.zeros((len(prev_actions), max(lengths), self.action_dim), np.float32)
        for b, p in enumerate(prev_actions):
            if p is not None and len(p):
                p = np.asarray(p, np.float32)
                if p.shape[1:] != (self.action_dim,):
                    raise ValueError(f"previous actions: expected (steps, {self.action_dim}), found {p.shape}")
                prev[b, :len(p)] = self.transform.action_norm.normalize(p)
        horizons = [max(H - n, execution_horizon or 0) for n in lengths]
        return torch.from_numpy(prev), horizons
