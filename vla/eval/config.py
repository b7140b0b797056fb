"""Typed schema of conf/eval.yaml (registered with Hydra's ConfigStore: a typo in an override fails at composition)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from vla.data.config import TaskConfig
from vla.models.config import PolicyConfig


@dataclass
class EvalConfig:
    task: TaskConfig = MISSING
    # A training checkpoint dir (its config.yaml, norm_stats.json and tokenizer.model are used), a run dir (its newest
    # checkpoint), or any weights vla.models.weights loads (openpi JAX/PyTorch, LeRobot: then `model`, `norm_stats`
    # and model.tokenizer say the rest). null evaluates the from-scratch init of `model` (a plumbing check).
    checkpoint: str | None = None
    model: PolicyConfig = MISSING  # used when the checkpoint carries no config.yaml
    norm_stats: str | None = None  # null: the checkpoint's norm_stats.json, else task.norm_stats
    num_episodes: int = 50
    # episode i resets the env with seed + i and draws its policy noise from seed + i; the default is far from the
    # demo seeds (task.demos.seed = 0, 1, ...), so no episode starts from a training demo's initial state
    seed: int = 100000
    num_envs: int = 2  # env worker processes (CPU physics); their observations go through one batched policy call
    replan_steps: int | None = None  # actions executed per predicted chunk; null: half the action horizon
    max_episode_steps: int | None = None  # null: task.max_episode_steps (about 2x the mean demo length)
    num_denoise_steps: int | None = None  # null: the model's (10)
    device: str = "cpu"  # cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 (policy compute)
    compile: bool = False  # GPU: compiled prefix pass and denoising step, replayed as CUDA graphs (docs/benchmarks.md)
    prompt: str | None = None  # null: task.prompt
    videos: int = 0  # record mp4s of the first N episodes
    progress: bool = True


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="eval_schema", node=EvalConfig)
