"""Fixtures of the vla.rl tests: a tiny random policy for PushCube (32 px frames, so rollouts render fast), random
observations in its schema, and a synthetic rollout dataset (no simulator needed)."""

from pathlib import Path

import numpy as np
import pytest

from tests.serve.tiny_policy import write_tiny_policy
from vla.configs import load_group
from vla.rl.data import RolloutEpisode, RolloutWriter

IMAGE_SIZE = 32
TASK_OVERRIDES = (f"task.image_size={IMAGE_SIZE}",)


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory) -> Path:
    return write_tiny_policy(tmp_path_factory.mktemp("rl") / "policy", "pushcube", TASK_OVERRIDES)


@pytest.fixture(scope="session")
def pushcube():
    return load_group("task", "pushcube", list(TASK_OVERRIDES))


def random_observations(task, n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    S = task.image_size
    return [{"images": {"base_0_rgb": rng.integers(0, 256, (S, S, 3), dtype=np.uint8),
                        "left_wrist_0_rgb": np.zeros((S, S, 3), np.uint8)},
             "image_masks": {"base_0_rgb": True, "left_wrist_0_rgb": False},
             "state": rng.normal(size=task.state_dim).astype(np.float32), "prompt": task.prompt} for _ in range(n)]


def random_episode(task, length: int, seed: int, success_at: int | None = None) -> RolloutEpisode:
    """Random frames, actions in [-1, 1] and rewards; terminal (success) after frame `success_at`, if given."""
    rng = np.random.default_rng(seed)
    successes = np.zeros(length, bool)
    if success_at is not None:
        successes[success_at] = True
    return RolloutEpisode(seed, random_observations(task, length, seed),
                          rng.uniform(-1, 1, (length, task.action_dim)).astype(np.float32),
                          rng.uniform(0, 1, length).astype(np.float32), successes, successes.copy())


def write_rollouts(out: Path, task, lengths_and_success: list[tuple[int, int | None]], seed: int = 0) -> list:
    episodes = [random_episode(task, n, seed + i, s) for i, (n, s) in enumerate(lengths_and_success)]
    with RolloutWriter(out, task, action_horizon=10) as writer:
        for ep in episodes:
            writer.add(ep)
    return episodes


@pytest.fixture(scope="session")
def rollouts(tmp_path_factory, pushcube) -> Path:
    """Three episodes: 14 frames ending in success, 12 frames cut off, 9 frames ending in success."""
    out = tmp_path_factory.mktemp("rollouts") / "r0"
    write_rollouts(out, pushcube, [(14, 13), (12, None), (9, 8)])
    return out


def write_demo_dataset(out: Path, task) -> Path:
    """A converted-demos dataset (our schema without rewards), written with lerobot's writer as convert.py does."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vla.data.lerobot import dataset_features

    ds = LeRobotDataset.create(repo_id="vla/demos", fps=task.control_freq, features=dataset_features(task, False),
                               root=out, use_videos=False)
    episode = random_episode(task, 2, 0)
    for obs, action in zip(episode.observations, episode.actions):
        ds.add_frame({"image": obs["images"]["base_0_rgb"], "wrist_image": obs["images"]["left_wrist_0_rgb"],
                      "wrist_mask": np.array([False]), "state": obs["state"], "actions": action,
                      "task": task.prompt})
    ds.save_episode()
    ds.finalize()
    return out
