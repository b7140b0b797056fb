"""Shared helpers of the training tests (also used by tests/eval for its trained-run fixture)."""

from pathlib import Path

import torch
from torch import nn
from torch.distributed.fsdp import fully_shard

from vla.configs import TrainConfig, compose, to_object
from vla.runs import read_metrics

# fast settings: no loader workers (no process start-up), a learning rate that moves the weights within a few steps
FAST = ["hardware.num_workers=0", "progress=false", "optim.lr=1e-3", "optim.warmup_steps=1", "batch_size=8",
        "log_interval=1", "save_interval=1000", "optim.ema_decay=0.9"]


def data_overrides(dataset: Path) -> list[str]:
    """train.py overrides that point the task at a converted test dataset and its norm stats."""
    return [f"task.dataset_root={dataset}", f"task.norm_stats={dataset}/norm_stats.json"]


def compose_train(overrides: list[str]) -> TrainConfig:
    """train.py's config as Hydra composes it from `overrides` (run_name fixed, so the run dir is the caller's)."""
    return to_object(compose("train", overrides + ["run_name=test"]))


def losses(run_dir: Path) -> list[float]:
    """The train/loss curve a run logged to its metrics.jsonl."""
    return [m["train/loss"] for m in read_metrics(run_dir)]


def sharded_mlp(mesh) -> nn.Module:
    """A small MLP sharded per layer by FSDP2 over `mesh` (1-D FSDP or 2-D HSDP), the same weights every call; one
    shape (7 rows) splits unevenly over 2 ranks."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 7), nn.GELU(), nn.Linear(7, 3))
    for layer in m:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(m, mesh=mesh)
    return m
