"""Shared helpers of the data tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from omegaconf import OmegaConf

from vla.configs import load_group
from vla.data.config import TaskConfig

IMAGE_SIZE = 128  # demo render size in the tests (the tasks use 256; CPU rendering time scales with pixels)
ACTION_HORIZON = 10  # pi05_tiny's H, used for the norm stats of the test datasets


def load_task(name: str, **fields) -> TaskConfig:
    """conf/task/<name>.yaml as Hydra composes it, with `fields` merged on top (e.g. image_size=128, demos={...})."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(load_group("task", name)), fields))


def trajectories(path: Path) -> list[str]:
    """traj_<i> groups of a ManiSkill .h5, in episode order."""
    with h5py.File(path, "r") as f:
        return sorted(f, key=lambda k: int(k.split("_")[1]))


def expected_state(path: Path, traj: str, task, length: int) -> np.ndarray:
    """The state a task's episode should carry: qpos[:qpos_dim], then each state_extra key of obs/extra."""
    parts = [read_h5(path, traj, "obs/agent/qpos")[:length, : task.qpos_dim]]
    parts += [read_h5(path, traj, f"obs/extra/{key}")[:length, :dims] for key, dims in task.state_extra.items()]
    return np.concatenate(parts, axis=1)


def read_h5(path: Path, traj: str, key: str) -> np.ndarray:
    """One dataset of a ManiSkill .h5 read directly with h5py (independently of vla.data.maniskill)."""
    with h5py.File(path, "r") as f:
        return f[traj][key][()]
