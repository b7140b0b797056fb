"""ManiSkill episodes -> LeRobot v3.0 dataset, written with lerobot's own writer, atomically.

Features (the layout of the ManiSkill converter in openpi's ManiSkill3 fork EasonAI-5589/openpi,
examples/maniskill/convert_maniskill_data_to_lerobot.py, plus an explicit wrist mask and the task's state_extra):
  image            uint8 [S, S, 3]  base camera (schema key base_0_rgb); S = task.image_size
  wrist_image      uint8 [S, S, 3]  hand camera (left_wrist_0_rgb), zeros when the task has none
  wrist_mask       bool  [1]        False when wrist_image is such a zero stand-in (not "wrist_image_mask": lerobot
                                    0.4.4 validates stats of every feature whose name contains "image" as an image's)
  state            float32 [D]      qpos[:qpos_dim] (7 arm joints + 1 finger), then the task's state_extra entries;
                                    D = task.state_dim, e.g. 8 + goal_pos 3 = 11 for PickCube
  actions          float32 [7]      pd_ee_delta_pose action (task.action_dim)
  task                              the task prompt
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla.data.config import TaskConfig
from vla.data.maniskill import Episode
from vla.data.norm_stats import compute_norm_stats, save_norm_stats
from vla.data.schema import DATASET_IMAGE_KEYS, DATASET_MASK_KEYS, camera_for

log = logging.getLogger(__name__)

STATE_NAMES = ["joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "joint7", "finger"]
ACTION_NAMES = ["dx", "dy", "dz", "drx", "dry", "drz", "gripper"]


def state_names(task: TaskConfig) -> list[str]:
    return STATE_NAMES[: task.qpos_dim] + [f"{key}_{i}" for key, dims in task.state_extra.items() for i in range(dims)]


def dataset_features(task: TaskConfig, use_videos: bool) -> dict[str, dict]:
    S = task.image_size
    image = {"dtype": "video" if use_videos else "image", "shape": (S, S, 3), "names": ["height", "width", "channel"]}
    return {
        "image": dict(image),
        "wrist_image": dict(image),
        "wrist_mask": {"dtype": "bool", "shape": (1,), "names": None},
        "state": {"dtype": "float32", "shape": (task.state_dim,), "names": state_names(task)},
        "actions": {"dtype": "float32", "shape": (task.action_dim,), "names": ACTION_NAMES[: task.action_dim]},
    }


def schema_from_row(row: dict) -> dict:
    """A row of a converted dataset (as `LeRobotDataset[i]` returns it) -> observation-schema sample (no actions)."""
    images, masks = {}, {}
    for schema_key, feature in DATASET_IMAGE_KEYS.items():
        images[schema_key] = row[feature]
        mask_feature = DATASET_MASK_KEYS.get(schema_key)
        masks[schema_key] = bool(row[mask_feature]) if mask_feature else True
    state = row["state"]
    return {
        "images": images,
        "image_masks": masks,
        "state": state.numpy() if hasattr(state, "numpy") else np.asarray(state),
        "prompt": row["task"],
    }


@dataclass
class WriteReport:
    root: Path
    episodes: int
    frames: int
    bytes: int
    seconds: float


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _write_frames(episodes: list[Episode], root: Path, task: TaskConfig, use_videos: bool,
                  encoder_threads: int | None, in_shard: bool = False) -> None:
    """The LeRobot dataset itself (no norm stats) into the new directory `root`, with lerobot's own writer.
    `encoder_threads`: threads of each video encoder (lerobot's default, None, lets SVT-AV1 take every core).
    `in_shard`: this runs in one of _write_shards' spawned workers, where each episode's cameras are encoded
    one after the other. lerobot encodes them in a process pool of the default start method, and in a spawned process
    that default is spawn: two fresh interpreters per episode, each importing torch and lerobot, made a worker 8x
    slower than the same write in the main process (6 episodes: 69 s against 9 s, docs/history/results_log.md)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    base_cam = camera_for(task, "base_0_rgb")
    wrist_cam = camera_for(task, "left_wrist_0_rgb")
    if base_cam is None:
        raise ValueError(f"task {task.name}: cameras {dict(task.cameras)} map no camera to base_0_rgb")
    ds = None
    try:
        ds = LeRobotDataset.create(
            repo_id=task.repo_id,
            fps=task.control_freq,
            features=dataset_features(task, use_videos),
            root=root,
            robot_type="panda",
            use_videos=use_videos,
            image_writer_threads=4,  # PNG encoding releases the GIL
            encoder_threads=encoder_threads,
        )
        zeros = np.zeros((task.image_size, task.image_size, 3), np.uint8)
        has_wrist = np.array([wrist_cam is not None])
        for ep in episodes:
            base = ep.images(base_cam)
            wrist = ep.images(wrist_cam) if wrist_cam is not None else None
            for t in range(len(ep)):
                ds.add_frame({
                    "image": base[t],
                    "wrist_image": wrist[t] if wrist is not None else zeros,
                    "wrist_mask": has_wrist,
                    "state": ep.state[t],
                    "actions": ep.actions[t],
                    "task": task.prompt,
                })
            ds.save_episode(parallel_encoding=not in_shard)
        ds.finalize()
    except BaseException:
        if ds is not None:  # let lerobot's PNG writer threads finish first: their writes would race the removal
            ds.stop_image_writer()
        raise
    images_dir = root / "images"  # lerobot's PNG staging dir, empty once the frames are in the parquet files
    if images_dir.is_dir() and not any(p.is_file() for p in images_dir.rglob("*")):
        shutil.rmtree(images_dir)


def _write_shards(episodes: list[Episode], work: Path, task: TaskConfig, use_videos: bool, num_workers: int) -> Path:
    """Contiguous shards of `episodes` written into `work` by `num_workers` processes at once (PNG and video encoding
    are CPU-bound), then merged in episode order with lerobot's own `aggregate_datasets`; returns the merged dataset."""
    from lerobot.datasets.aggregate import aggregate_datasets

    shards = [idx for idx in np.array_split(np.arange(len(episodes)), num_workers) if len(idx)]
    n = len(shards)
    roots = [work / f"shard{i:04d}" for i in range(n)]
    work.mkdir(parents=True)
    # spawned (lerobot's writer threads must not be forked), and not daemonic: lerobot starts processes of its own.
    # Each shard's video encoder gets its share of the cores: SVT-AV1 otherwise starts a thread per core in every
    # shard, and 48 shards on 64 cores ran at a load of 156 and had not converted 1,000 demos after 13 minutes.
    threads = max(1, len(os.sched_getaffinity(0)) // n)  # the cores this process may use, not the host's count
    with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_write_frames, [[episodes[j] for j in idx] for idx in shards], roots, [task] * n,
                      [use_videos] * n, [threads] * n, [True] * n))
    merged = work / "merged"
    aggregate_datasets([task.repo_id] * n, task.repo_id, roots=roots, aggr_root=merged)
    return merged


def write_dataset(
    episodes: list[Episode],
    output: str | Path,
    task: TaskConfig,
    action_horizon: int,
    use_videos: bool = False,
    overwrite: bool = False,
    num_workers: int = 1,
) -> WriteReport:
    """Write `episodes` (already validated by read_episodes) + norm_stats.json to `output`.

    `num_workers` > 1: shards written in parallel processes and merged (`_write_shards`); the same dataset, and the
    norm stats computed once over all episodes either way. Everything goes into a temp dir next to `output` and the
    dataset is renamed into place at the end; on any error the temp dir is removed, so a failed conversion leaves
    nothing behind.
    """
    output = Path(output).absolute()
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists (pass overwrite=true to replace it)")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    num_workers = min(num_workers, len(episodes))
    try:
        if num_workers > 1:
            dataset = _write_shards(episodes, tmp, task, use_videos, num_workers)
        else:
            _write_frames(episodes, tmp, task, use_videos, encoder_threads=None)
            dataset = tmp
        stats = compute_norm_stats([e.state for e in episodes], [e.actions for e in episodes], action_horizon)
        save_norm_stats(dataset / "norm_stats.json", stats)
        if output.exists():
            shutil.rmtree(output)
        dataset.rename(output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the shards, or nothing once the serial dataset is renamed into place
    frames = sum(len(e) for e in episodes)
    report = WriteReport(output, len(episodes), frames, dir_size(output), time.perf_counter() - t0)
    log.info("wrote %s%s: %d episodes, %d frames, %.1f MB in %.1f s", output,
             f" from {num_workers} shards" if num_workers > 1 else "", report.episodes, report.frames,
             report.bytes / 1e6, report.seconds)
    return report
