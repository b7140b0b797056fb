"""An algo=qchunk run in progress: the learner, the run directory it writes (metrics, config.yaml, checkpoints), and
the update loop that the offline phase and every online round use."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from vla.configs import TrainConfig
from vla.rl import checkpoint as ckpt_io
from vla.rl.learner import Learner, update
from vla.runs import resolve_checkpoint
from vla.train.loop import StopRequest, TrainingError
from vla.train.metrics import MetricsLogger

log = logging.getLogger(__name__)


def policy_norm_stats(cfg: TrainConfig) -> Path:
    """The norm stats the policy is loaded with (Policy.load's rule: the checkpoint's own, else the task's)."""
    own = resolve_checkpoint(cfg.checkpoint) / "norm_stats.json"
    return own if own.is_file() else Path(cfg.task.norm_stats)


class MetricWindow:
    """Sums of each metric over the updates since the last record, on the device (read once per log interval)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.start = time.perf_counter()

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums[k] + v.detach().float() if k in self.sums else v.detach().float()
            self.counts[k] = self.counts.get(k, 0) + 1

    def record(self, step: int, run_dir: Path) -> dict[str, float]:
        out = {k: float(v.cpu()) / self.counts[k] for k, v in self.sums.items()}
        bad = [k for k, v in out.items() if v != v or abs(v) == float("inf")]
        if bad:
            raise TrainingError(f"non-finite {', '.join(bad)} by step {step} (run dir {run_dir}); stopped without "
                                "saving it")
        updates = max(self.counts.values(), default=0)
        if updates:
            out["perf/update_time_s"] = (time.perf_counter() - self.start) / updates
        self.sums, self.counts, self.start = {}, {}, time.perf_counter()
        return out


class QChunkRun:
    """The run: the learner, where it writes, and the update loop the offline phase and every round use."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, learner: Learner, stop: StopRequest):
        self.cfg, self.run_dir, self.learner, self.stop = cfg, run_dir, learner, stop
        recipe = dataclasses.replace(cfg, model=learner.policy.cfg)  # the policy's model, whatever was composed
        self.config_yaml = OmegaConf.to_yaml(OmegaConf.structured(recipe))
        self.extra_files = {"norm_stats.json": policy_norm_stats(cfg),
                            "tokenizer.model": learner.policy.transform.tokenizer.model_path}
        self.metrics = MetricsLogger(run_dir)
        self.last: dict[str, float] = {}

    def log(self, values: dict[str, float]) -> None:
        self.metrics.log(values, self.learner.step)
        self.last |= values

    def save(self) -> None:
        cfg = self.cfg
        path = ckpt_io.save(self.learner, self.run_dir, self.extra_files, self.config_yaml, cfg.keep_last,
                            cfg.keep_period)
        log.info("step %d (round %d): saved %s", self.learner.step, self.learner.round, path)

    def extend_cache(self) -> dict[str, float]:
        """Cache the policy's outputs for the replay frames not cached yet (actor disabled); its perf/ metrics."""
        learner = self.learner
        if learner.cache is None:
            return {}
        frames, seconds = learner.cache.extend(learner.policy, learner.replay, self.cfg.algo.cache_batch_size,
                                               self.cfg.progress)
        log.info("policy cache: %d new frame(s) (%d chunk samples each) in %.1f s", frames,
                 learner.cache.num_samples, seconds)
        return {"perf/cache_build_s": seconds, "perf/cache_frames": float(frames)}

    def train(self, until: int, periodic_saves: bool) -> bool:
        """Updates until step `until`; False when a stop request (SIGTERM) ended them early."""
        cfg, learner = self.cfg, self.learner
        cache = self.extend_cache()  # logged with the first record
        window = MetricWindow()
        replay = {f"replay/{k}": float(v) for k, v in learner.replay.summary().items()}
        while learner.step < until:
            window.add(update(learner, cfg.algo))
            if learner.step % cfg.log_interval == 0 or learner.step == until:
                self.log(window.record(learner.step, self.run_dir) | replay | cache)
                cache = {}
            if periodic_saves and cfg.save_interval and learner.step % cfg.save_interval == 0:
                self.save()
            if self.stop.requested:
                return False
        return True
