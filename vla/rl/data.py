"""Rollouts with rewards as LeRobot datasets, and the replay data the critic trains on.

A rollout dataset is our converted-dataset layout (vla/data/lerobot.py: image, wrist_image, wrist_mask, state,
actions, the prompt) plus, per frame t (observation t, the action executed from it):
  reward        float32 [1]  ManiSkill's normalized_dense reward of that step (`compute_normalized_dense_reward`)
  success       bool [1]     the env's success after that step: ManiSkill's sparse reward
  done          bool [1]     the env terminated after that step (ManiSkill: success or fail)
  episode_seed  int64 [1]    the env seed the episode was reset with
Frames after an episode's first `done` are not used for learning (an evaluation that ignores terminations may record
them). Written with lerobot's own writer into a temp dir renamed at the end, so a failure leaves nothing behind.

The backup of a chunk starting at frame t spans h frames (Q-chunking, Li, Zhou, Levine 2025, arXiv 2507.07969):
  R_t = sum_{k<n} gamma^k r_{t+k} (n = h, or fewer when the episode terminates first),
  target = R_t + gamma^h * (1 - terminal) * Qbar(s_{t+h}, a').
A chunk whose episode was cut off (no terminal) before s_{t+h} has no next observation and is not trained on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vla.data.config import TaskConfig
from vla.data.lerobot import dataset_features, schema_from_row
from vla.data.norm_stats import compute_norm_stats, save_norm_stats
from vla.data.schema import DATASET_IMAGE_KEYS, DATASET_MASK_KEYS
from vla.data.transforms import Normalizer, pad_last

log = logging.getLogger(__name__)

REWARD_FEATURES = {
    "reward": {"dtype": "float32", "shape": (1,), "names": None},
    "success": {"dtype": "bool", "shape": (1,), "names": None},
    "done": {"dtype": "bool", "shape": (1,), "names": None},
    "episode_seed": {"dtype": "int64", "shape": (1,), "names": None},
}
SCALAR_COLUMNS = (*DATASET_MASK_KEYS.values(), *REWARD_FEATURES)  # the (1,)-shaped features
ROLLOUT_REPO_ID = "vla/rollouts"  # a label only: datasets are always read from their directory


@dataclass
class RolloutEpisode:
    """One recorded episode: frame t pairs observation t (observation schema) with the action executed from it and
    what that step returned."""

    seed: int
    observations: list[dict]
    actions: np.ndarray  # float32 [T, action_dim], raw (as executed, clipped to the controller's box)
    rewards: np.ndarray  # float32 [T], normalized_dense
    successes: np.ndarray  # bool [T]
    dones: np.ndarray  # bool [T]

    def __len__(self) -> int:
        return len(self.actions)


class RolloutWriter:
    """Episodes in, one LeRobot dataset out: `with RolloutWriter(out, task, H) as w: w.add(episode)`. Written in a temp
    dir next to `output` and renamed into place when the block ends without an error; removed otherwise."""

    def __init__(self, output: str | Path, task: TaskConfig, action_horizon: int, overwrite: bool = False):
        self.output, self.task, self.action_horizon = Path(output).absolute(), task, action_horizon
        if self.output.exists() and not overwrite:
            raise FileExistsError(f"{self.output} exists (pass --overwrite to replace it)")
        self.tmp = self.output.parent / f".{self.output.name}.tmp-{os.getpid()}"
        self.states: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.dataset = None

    def __enter__(self) -> RolloutWriter:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        self.output.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.dataset = LeRobotDataset.create(
            repo_id=ROLLOUT_REPO_ID, fps=self.task.control_freq,
            features={**dataset_features(self.task, use_videos=False), **REWARD_FEATURES}, root=self.tmp,
            robot_type="panda", use_videos=False, image_writer_threads=4,
        )
        return self

    def add(self, episode: RolloutEpisode) -> None:
        if len(episode) == 0:
            raise ValueError(f"episode with seed {episode.seed}: no frames")
        for t, obs in enumerate(episode.observations):
            frame = {feature: obs["images"][key] for key, feature in DATASET_IMAGE_KEYS.items()}
            frame |= {mask: np.array([obs["image_masks"][key]]) for key, mask in DATASET_MASK_KEYS.items()}
            self.dataset.add_frame(frame | {
                "state": np.asarray(obs["state"], np.float32),
                "actions": np.asarray(episode.actions[t], np.float32),
                "reward": np.array([episode.rewards[t]], np.float32),
                "success": np.array([episode.successes[t]], bool),
                "done": np.array([episode.dones[t]], bool),
                "episode_seed": np.array([episode.seed], np.int64),
                "task": obs["prompt"],
            })
        # add_frame takes a (1,)-shaped feature as an array of shape (1,), and lerobot 0.4.4 stacks them into (T, 1)
        # for `datasets`, whose scalar encoding calls float()/int() on each row: an error from numpy 2.4 on
        # (huggingface/lerobot#3343). Columns of shape (T,), as lerobot keeps its own frame_index and timestamp,
        # encode on every numpy and give the same episode stats.
        for key in SCALAR_COLUMNS:
            self.dataset.episode_buffer[key] = [value.reshape(()) for value in self.dataset.episode_buffer[key]]
        self.dataset.save_episode()
        self.states.append(np.stack([np.asarray(o["state"], np.float32) for o in episode.observations]))
        self.actions.append(np.asarray(episode.actions, np.float32))

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None or not self.states:
                if self.dataset is not None:  # PNG writer threads would race the removal
                    self.dataset.stop_image_writer()
                if exc_type is None:
                    raise ValueError(f"{self.output}: no episodes recorded")
                return
            self.dataset.finalize()
            images = self.tmp / "images"  # lerobot's PNG staging dir, empty once the frames are in the parquet files
            if images.is_dir() and not any(p.is_file() for p in images.rglob("*")):
                shutil.rmtree(images)
            stats = compute_norm_stats(self.states, self.actions, self.action_horizon)
            save_norm_stats(self.tmp / "norm_stats.json", stats)
            if self.output.exists():
                shutil.rmtree(self.output)
            self.tmp.rename(self.output)
            log.info("wrote %s: %d episodes, %d frames", self.output, len(self.states), sum(map(len, self.states)))
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------------
# chunked backups


def episode_bounds(episode_index: np.ndarray, dones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the end (exclusive) of the part of its episode used for learning (through the first done, if any),
    and whether that part ends in a terminal. Rows are stored episode by episode."""
    n = len(episode_index)
    starts = np.r_[0, np.flatnonzero(np.diff(episode_index)) + 1]
    ends = np.r_[starts[1:], n]
    end, terminal = np.empty(n, np.int64), np.empty(n, bool)
    for s, e in zip(starts, ends):
        first_done = np.flatnonzero(dones[s:e])
        cut = s + int(first_done[0]) + 1 if len(first_done) else e
        end[s:e], terminal[s:e] = cut, len(first_done) > 0
    return end, terminal


def chunk_backup_targets(rewards: np.ndarray, end: np.ndarray, terminal: np.ndarray, h: int, gamma: float) -> dict:
    """For every frame t as the start of an h-step chunk (`end`, `terminal` from `episode_bounds`):
      chunk_return  sum_{k < n} gamma^k r_{t+k}, n = min(h, end - t)
      bootstrap     1 if the backup adds gamma^h Qbar(s_{t+h}, .), 0 when the episode terminates within the chunk
      next_index    t + h where bootstrap, else t (unused)
      valid         the chunk has a target: it terminates, or s_{t+h} was recorded (t + h < end)
      mc_return     sum_{k >= 0} gamma^k r_{t+k} to the end of the used episode (Cal-QL's lower bound)
    Frames past a first done (t >= end) are not valid."""
    n_frames = len(rewards)
    t = np.arange(n_frames)
    steps = np.minimum(h, end - t)
    discounts = gamma ** np.arange(h)
    chunk_return = np.zeros(n_frames, np.float64)
    for k in range(h):
        idx = np.minimum(t + k, n_frames - 1)
        chunk_return += np.where(k < steps, discounts[k] * rewards[idx], 0.0)
    within = t < end
    reaches_terminal = terminal & (t + h >= end)
    has_next = t + h < end
    mc_return = np.zeros(n_frames, np.float64)
    for i in range(n_frames - 1, -1, -1):  # backwards: G_t = r_t + gamma G_{t+1} inside a used episode part
        mc_return[i] = rewards[i] + (gamma * mc_return[i + 1] if i + 1 < end[i] else 0.0)
    return {
        "chunk_return": chunk_return.astype(np.float32),
        "bootstrap": (within & has_next).astype(np.float32),
        "next_index": np.where(within & has_next, t + h, t),
        "valid": within & (reaches_terminal | has_next),
        "mc_return": mc_return.astype(np.float32),
    }


# ---------------------------------------------------------------------------------------------------------------------
# reading


def _column(table, name: str) -> np.ndarray:
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    return col.to_numpy(zero_copy_only=False)


class RolloutData:
    """One rollout dataset: its per-frame columns as arrays and its observations (frames decoded once into memory)."""

    def __init__(self, root: str | Path):
        from vla.data.dataset import ChunkedDataset

        self.root = Path(root)
        info = self.root / "meta" / "info.json"
        if not info.is_file():
            raise FileNotFoundError(f"{self.root}: not a LeRobot dataset (no meta/info.json); record rollouts with "
                                    "`python -m vla.rl.collect`")
        features = json.loads(info.read_text()).get("features", {})
        missing = [k for k in REWARD_FEATURES if k not in features]
        if missing:  # checked before any frame is decoded
            raise ValueError(f"{self.root}: no {', '.join(repr(k) for k in missing)} column(s): a dataset without "
                             "rewards (converted demos?); record rollouts with `python -m vla.rl.collect`")
        self.frames = ChunkedDataset(self.root, ROLLOUT_REPO_ID, 1, cache_images=True)
        table = self.frames.lerobot.hf_dataset.data
        self.state = _column(table, "state").astype(np.float32)
        self.actions = _column(table, "actions").astype(np.float32)
        self.rewards = _column(table, "reward").reshape(-1).astype(np.float32)
        self.successes = _column(table, "success").reshape(-1).astype(bool)
        self.dones = _column(table, "done").reshape(-1).astype(bool)
        self.episode_seed = _column(table, "episode_seed").reshape(-1).astype(np.int64)
        self.episode_index = _column(table, "episode_index").astype(np.int64)

    def __len__(self) -> int:
        return len(self.actions)

    def observation(self, i: int) -> dict:
        return schema_from_row(self.frames.row(i))


class ReplayBuffer:
    """Rollout datasets concatenated, with every frame's chunk backup (`chunk_backup_targets`) and its chunks in the
    policy's normalized action space. Indices are global over the datasets in the order they were added. Chunks start
    at every `start_stride`-th frame of an episode (from its first): with the stride h of a policy that replans
    every h steps, only its decision frames, whose chunks are its own samples and whose s_{t+h} are starts too."""

    def __init__(self, action_norm: Normalizer, chunk_len: int, action_horizon: int, model_action_dim: int,
                 gamma: float, reward: str, start_stride: int = 1):
        self.action_norm, self.h, self.H = action_norm, chunk_len, action_horizon
        self.model_action_dim = model_action_dim
        self.gamma, self.reward, self.start_stride = gamma, reward, start_stride
        self.datasets: list[RolloutData] = []
        self.offsets = np.zeros(1, np.int64)

    def add(self, data: RolloutData) -> None:
        if data.actions.shape[1:] != (len(self.action_norm.q01),):
            raise ValueError(f"{data.root}: actions have {data.actions.shape[1]} dims, the policy's norm stats "
                             f"{len(self.action_norm.q01)}: rollouts of another task?")
        self.datasets.append(data)
        self.offsets = np.r_[0, np.cumsum([len(d) for d in self.datasets])]
        self._index()

    def _index(self) -> None:
        cat = lambda name: np.concatenate([getattr(d, name) for d in self.datasets])  # noqa: E731
        episode = np.concatenate([d.episode_index + 1_000_000_000 * k for k, d in enumerate(self.datasets)])
        self.actions = self.action_norm.normalize(cat("actions"))
        self.successes = cat("successes")
        rewards = cat("rewards") if self.reward == "normalized_dense" else self.successes.astype(np.float32)
        self.end, terminal = episode_bounds(episode, cat("dones"))
        self.targets = chunk_backup_targets(rewards, self.end, terminal, self.h, self.gamma)
        first = np.r_[0, np.flatnonzero(np.diff(episode)) + 1]
        in_episode = np.arange(len(episode)) - np.repeat(first, np.diff(np.r_[first, len(episode)]))
        self.starts = np.flatnonzero(self.targets["valid"] & (in_episode % self.start_stride == 0))
        # whether the frame's episode succeeded within its used part (the behaviour-cloning weight of the actor)
        success_frames = np.where(self.successes & (np.arange(len(episode)) < self.end))[0]
        succeeded_episodes = np.unique(episode[success_frames])
        self.episode_succeeded = np.isin(episode, succeeded_episodes)
        self.episode_start = first

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def sample(self, batch_size: int, generator: torch.Generator) -> np.ndarray:
        """Uniform chunk starts among the frames with a target."""
        if len(self.starts) == 0:
            raise ValueError("replay data: no chunk has a target (episodes shorter than the chunk and not terminal)")
        pick = torch.randint(len(self.starts), (batch_size,), generator=generator).numpy()
        return self.starts[pick]

    def observations(self, indices: np.ndarray) -> list[dict]:
        out = []
        for i in indices:
            k = int(np.searchsorted(self.offsets, i, side="right") - 1)
            out.append(self.datasets[k].observation(int(i - self.offsets[k])))
        return out

    def chunks(self, indices: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalized action chunks (B, length, action_dim) from each index, repeated past the used episode's end
        (as the training datasets pad), and the padding flags (B, length)."""
        steps = indices[:, None] + np.arange(length)[None, :]
        end = self.end[indices][:, None]
        return self.actions[np.minimum(steps, end - 1)], steps >= end

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """Everything but the observations for chunk starts `indices`."""
        chunk, _ = self.chunks(indices, self.h)
        bc_chunk, bc_pad = self.chunks(indices, self.H)
        t = {k: v[indices] for k, v in self.targets.items()}
        return {
            "chunk": torch.from_numpy(chunk),
            "chunk_return": torch.from_numpy(t["chunk_return"]),
            "bootstrap": torch.from_numpy(t["bootstrap"]),
            "mc_return": torch.from_numpy(t["mc_return"]),
            "bc_actions": torch.from_numpy(pad_last(bc_chunk, self.model_action_dim)),
            "bc_pad": torch.from_numpy(bc_pad),
            "bc_weight": torch.from_numpy(self.episode_succeeded[indices].astype(np.float32)),
        }

    def summary(self) -> dict[str, float]:
        if not self.datasets:
            return {"frames": 0, "episodes": 0, "episode_success": 0.0, "chunks": 0}
        episodes = len(self.episode_start)
        succeeded = self.episode_succeeded[self.episode_start].sum()
        return {"frames": len(self), "episodes": episodes, "episode_success": succeeded / max(episodes, 1),
                "chunks": len(self.starts)}
