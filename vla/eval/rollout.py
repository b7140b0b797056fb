"""Seeded evaluation episodes, many at once: env workers step in parallel, and every round the observations of all
workers waiting for actions go through one batched policy call. Each predicted chunk is executed for `replan_steps`
steps (open loop) before the policy is asked again; in latency mode (`vla.eval.latency`) the first
`latency.delay_steps` of them come from the previous chunk."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vla.configs import LatencyConfig
from vla.data.config import TaskConfig
from vla.eval.envs import EnvPool, merge_reached
from vla.eval.latency import ActionChanges, execute_round
from vla.eval.policy import Policy


@dataclass
class Episode:
    index: int
    seed: int
    success_once: bool = False
    success_at_end: bool = False
    first_success_step: int | None = None
    steps: int = 0
    wall_s: float = 0.0
    video: str | None = None
    reached: dict[str, bool] = field(default_factory=dict)  # env flag (e.g. is_grasped) -> held at some step
    # the task's goal_distance (m; PickCube: cube to goal): at the start, smallest after any step, and after the last
    # (closest not below initial: the cube never came nearer; closest counts only after steps, so it can exceed
    # initial when the cube settles or is pushed away); None: not recorded
    initial_distance: float | None = None
    closest_distance: float | None = None
    final_distance: float | None = None
    # mean L2 change of the executed action from one step to the next, where a new chunk takes over and elsewhere
    boundary_action_change: float | None = None
    interior_action_change: float | None = None
    # running state, not reported
    t0: float = field(default=0.0, repr=False)
    obs: dict | None = field(default=None, repr=False)
    frames: list | None = field(default=None, repr=False)
    generator: torch.Generator | None = field(default=None, repr=False)
    leftover: np.ndarray | None = field(default=None, repr=False)  # what remains of the last chunk (raw actions)
    changes: ActionChanges = field(default_factory=ActionChanges, repr=False)

    def report(self) -> dict:
        d = asdict(self)
        for k in ("t0", "obs", "frames", "generator", "leftover", "changes"):
            d.pop(k)
        return d


def write_video(frames: list[np.ndarray], path: Path, fps: int) -> None:
    """Write RGB frames as an H.264 mp4 with PyAV (lerobot's own video library). imageio's writer depends on which
    plugin happens to be installed: with PyAV instead of imageio-ffmpeg it rejects its own `quality` argument, which
    would end an evaluation at its first video. Odd sizes are padded by one edge pixel (yuv420p needs even)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    tmp = path.with_name(path.name + ".partial")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        for frame in frames:
            image = np.ascontiguousarray(np.pad(frame, pad, mode="edge"))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder
    tmp.replace(path)


def run_episodes(
    policy: Policy,
    task: TaskConfig,
    num_episodes: int,
    seed: int,
    num_envs: int,
    replan_steps: int,
    max_episode_steps: int,
    prompt: str | None = None,
    videos: int = 0,
    video_dir: Path | None = None,
    progress: bool = True,
    latency: LatencyConfig | None = None,
) -> list[Episode]:
    from tqdm import tqdm

    H, A = policy.cfg.action_horizon, policy.cfg.action_dim
    if not 1 <= replan_steps <= H:
        raise ValueError(f"replan_steps={replan_steps} must be in [1, action_horizon={H}]")
    latency = latency or LatencyConfig()
    latency.check(replan_steps, H)
    pending = list(range(num_episodes))
    done: list[Episode] = []
    n = min(num_envs, num_episodes)
    running: dict[int, Episode] = {}
    with EnvPool(task, n) as pool, tqdm(
        total=num_episodes, desc=f"eval {task.name}", unit="episode", disable=not progress
    ) as bar:

        def start(workers: list[int]) -> None:
            workers = workers[: len(pending)]
            for w in workers:
                i = pending.pop(0)
                ep = Episode(i, seed + i, t0=time.perf_counter(), generator=torch.Generator().manual_seed(seed + i))
                running[w] = ep
                pool.send(w, "reset", (ep.seed, ep.index < videos))
            for w in workers:
                running[w].obs, running[w].frames, running[w].initial_distance = pool.recv(w)

        start(list(range(n)))
        while running:
            workers = sorted(running)
            obs = []
            for w in workers:
                o = running[w].obs
                if prompt is not None:
                    o = dict(o, prompt=prompt)
                obs.append(o)
            noise = torch.stack([torch.randn(H, A, generator=running[w].generator) for w in workers])
            if latency.rtc:
                chunks = policy.act(obs, noise, [running[w].leftover for w in workers], latency.delay_steps,
                                    replan_steps, latency.max_guidance_weight, latency.schedule)
            else:
                chunks = policy.act(obs, noise)
            for w, chunk in zip(workers, chunks, strict=True):
                ep = running[w]
                executed, ep.leftover, takeover = execute_round(chunk, ep.leftover, latency.delay_steps, replan_steps)
                actions = np.clip(executed[:max_episode_steps - ep.steps], -1.0, 1.0)  # pd_ee_delta_pose: [-1, 1]
                ep.changes.add(actions, takeover)
                pool.send(w, "run", actions)
            finished = []
            for w in workers:
                ep = running[w]
                ep.obs, successes, frames, reached, distances = pool.recv(w)
                merge_reached(ep.reached, reached)
                if distances is not None and len(distances):
                    ep.final_distance = float(distances[-1])
                    closest = float(distances.min())
                    ep.closest_distance = closest if ep.closest_distance is None else min(ep.closest_distance, closest)
                if successes.any() and ep.first_success_step is None:
                    ep.first_success_step = ep.steps + int(np.argmax(successes)) + 1
                ep.success_once |= bool(successes.any())
                ep.steps += len(successes)
                if ep.frames is not None:
                    ep.frames += frames
                if ep.steps >= max_episode_steps:
                    ep.success_at_end = bool(successes[-1])
                    ep.wall_s = time.perf_counter() - ep.t0
                    ep.boundary_action_change, ep.interior_action_change = ep.changes.means()
                    if ep.frames is not None and video_dir is not None:
                        outcome = "success" if ep.success_once else "failure"
                        path = video_dir / f"episode{ep.index:03d}_seed{ep.seed}_{outcome}.mp4"
                        write_video(ep.frames, path, task.control_freq)
                        ep.video = str(path)
                    ep.frames = ep.obs = ep.generator = None
                    done.append(ep)
                    finished.append(w)
                    bar.update(1)
                    bar.set_postfix(success=f"{sum(e.success_once for e in done)}/{len(done)}")
            for w in finished:
                del running[w]
            start(finished)
    return sorted(done, key=lambda e: e.index)
