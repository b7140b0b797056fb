"""Shared helpers of the training tests (also used by tests/eval for its trained-run fixture)."""

from pathlib import Path

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
