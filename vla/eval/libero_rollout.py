"""LIBERO evaluation episodes, many at once, with openpi's protocol (examples/libero/main.py): for each task of the
suite, episode j starts from the task's fixed initial state j, waits task.libero.num_steps_wait no-op steps, then the
policy predicts a chunk of which `replan_steps` actions run before it predicts again, until LIBERO's done flag (the
task's success) or max_episode_steps policy steps. Workers run whole tasks (vla.eval.libero_env says why); every
round the observations of all workers go through one batched policy call."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vla.configs import EvalConfig
from vla.data.config import TaskConfig
from vla.eval.libero_env import env_pool, suite_tasks
from vla.eval.policy import Policy
from vla.eval.report import write_results
from vla.eval.rollout import write_video

log = logging.getLogger(__name__)


@dataclass
class LiberoEpisode:
    task_id: int  # the task's index in the suite (LIBERO's task order 0)
    index: int  # the episode within its task = the index of its initial state
    seed: int  # of the policy's noise
    prompt: str
    success: bool = False  # LIBERO's done flag was set within max_episode_steps
    steps: int = 0  # policy steps executed (the wait steps not counted)
    wall_s: float = 0.0
    video: str | None = None
    t0: float = field(default=0.0, repr=False)
    obs: dict | None = field(default=None, repr=False)
    frames: list | None = field(default=None, repr=False)
    generator: torch.Generator | None = field(default=None, repr=False)

    def report(self) -> dict:
        d = asdict(self)
        for key in ("t0", "obs", "frames", "generator"):
            d.pop(key)
        # the keys vla.eval.report reads: the episode ends at its success, so "once" and "at end" agree
        d.update(success_once=self.success, success_at_end=self.success,
                 first_success_step=self.steps if self.success else None)
        return d


def _finish(ep: LiberoEpisode, success: bool, video_dir: Path | None, fps: int) -> None:
    ep.success, ep.wall_s = success, time.perf_counter() - ep.t0
    if ep.frames is not None and video_dir is not None:
        path = video_dir / f"task{ep.task_id:02d}_episode{ep.index:02d}_{'success' if success else 'failure'}.mp4"
        write_video(ep.frames, path, fps)
        ep.video = str(path)
    ep.obs = ep.frames = ep.generator = None  # what a finished episode no longer needs


def schedule(task_ids: list[int], episodes_per_task: int) -> list[list[tuple[int, int]]]:
    """One job per task: its (task_id, episode) pairs in order."""
    return [[(t, j) for j in range(episodes_per_task)] for t in task_ids]


def run_libero_episodes(
    policy: Policy,
    task: TaskConfig,
    episodes_per_task: int,
    seed: int,
    num_envs: int,
    replan_steps: int,
    max_episode_steps: int,
    prompt: str | None = None,
    videos: int = 0,
    video_dir: Path | None = None,
    progress: bool = True,
) -> list[LiberoEpisode]:
    """The suite's episodes (task.libero.task_ids, or every task), sorted by task and episode. Episode k overall (in
    task-major order) draws its policy noise from seed + k; the first `videos` episodes of each task are recorded."""
    from tqdm import tqdm

    H, A = policy.cfg.action_horizon, policy.cfg.action_dim
    if not 1 <= replan_steps <= H:
        raise ValueError(f"replan_steps={replan_steps} must be in [1, action_horizon={H}]")
    num_tasks = len(suite_tasks(task))
    task_ids = list(task.libero.task_ids) if task.libero.task_ids is not None else list(range(num_tasks))
    if max(task_ids) >= num_tasks:
        raise ValueError(f"task.libero.task_ids={task_ids}: {task.env_id} has {num_tasks} tasks (0-{num_tasks - 1})")
    jobs = schedule(task_ids, episodes_per_task)
    position = {t: i for i, t in enumerate(task_ids)}
    n = min(num_envs, len(jobs))
    done: list[LiberoEpisode] = []
    queues: dict[int, list[tuple[int, int]]] = {}  # worker -> the rest of its task's episodes
    running: dict[int, LiberoEpisode] = {}
    with env_pool(task, n) as pool, tqdm(total=sum(map(len, jobs)), desc=f"eval {task.name}", unit="episode",
                                         disable=not progress) as bar:

        def start(workers: list[int]) -> None:
            for w in workers:
                if not queues.get(w):
                    if not jobs:
                        continue
                    queues[w] = jobs.pop(0)
                task_id, j = queues[w].pop(0)
                k = position[task_id] * episodes_per_task + j
                running[w] = LiberoEpisode(task_id, j, seed + k, "", t0=time.perf_counter(),
                                           generator=torch.Generator().manual_seed(seed + k))
                pool.send(w, "reset", (task_id, j, j < videos))
            for w in workers:
                if w in running and running[w].obs is None:
                    ep = running[w]
                    ep.obs, ep.frames = pool.recv(w)
                    ep.prompt = prompt if prompt is not None else ep.obs["prompt"]
                    ep.obs["prompt"] = ep.prompt

        start(list(range(n)))
        while running:
            workers = sorted(running)
            noise = torch.stack([torch.randn(H, A, generator=running[w].generator) for w in workers])
            chunks = policy.act([running[w].obs for w in workers], noise)
            for w, chunk in zip(workers, chunks, strict=True):
                pool.send(w, "run", chunk[:replan_steps][:max_episode_steps - running[w].steps])
            finished = []
            for w in workers:
                ep = running[w]
                obs, success, steps, frames = pool.recv(w)
                ep.obs = dict(obs, prompt=ep.prompt)
                ep.steps += steps
                if ep.frames is not None:
                    ep.frames += frames
                if success or ep.steps >= max_episode_steps:
                    _finish(ep, success, video_dir, task.control_freq)
                    done.append(ep)
                    finished.append(w)
                    bar.update(1)
                    bar.set_postfix(success=f"{sum(e.success for e in done)}/{len(done)}")
            for w in finished:
                del running[w]
            start(finished)
    return sorted(done, key=lambda e: (position[e.task_id], e.index))


def per_task(episodes: list[dict]) -> list[dict]:
    """Success per task: task_id, prompt, successes, episodes, rate."""
    rows: dict[int, dict] = {}
    for e in episodes:
        row = rows.setdefault(e["task_id"], {"task_id": e["task_id"], "prompt": e["prompt"], "successes": 0,
                                             "episodes": 0})
        row["successes"] += bool(e["success"])
        row["episodes"] += 1
    return [dict(r, rate=r["successes"] / r["episodes"]) for r in rows.values()]


def evaluate_libero(cfg: EvalConfig, policy: Policy, out_dir: Path) -> dict:
    """eval.py for a LIBERO task (`task.backend: libero`): the episodes, then episodes.json, summary.json/.md,
    success.png and libero.md (per task, and the suite beside the published numbers)."""
    from vla.eval.libero_report import suite_markdown

    task, protocol = cfg.task, cfg.eval
    if cfg.latency.delay_steps or cfg.latency.rtc:
        raise ValueError("latency.delay_steps / latency.rtc: the latency mode is evaluated on ManiSkill tasks only")
    H = policy.cfg.action_horizon
    replan = protocol.replan_steps or task.libero.replan_steps
    if replan > H:
        raise ValueError(f"replan_steps={replan}: the policy predicts {H} actions at a time")
    max_steps = protocol.max_episode_steps or task.max_episode_steps
    t0 = time.perf_counter()
    episodes = run_libero_episodes(policy, task, protocol.num_episodes, protocol.seed, cfg.num_envs, replan, max_steps,
                                   cfg.prompt, cfg.videos, out_dir / "videos", cfg.progress)
    reports = [e.report() for e in episodes]
    info = {
        "task": task.name, "backend": task.backend, "env_id": task.env_id, "control_mode": task.control_mode,
        "sim_backend": task.sim_backend, "max_episode_steps": max_steps, "replan_steps": replan, "action_horizon": H,
        "seed": protocol.seed, "episodes_per_task": protocol.num_episodes, "libero": asdict(task.libero),
        "image_size": task.image_size, "experiment": cfg.experiment,
        "checkpoint": str(policy.checkpoint) if policy.checkpoint else None, "model": policy.cfg.name,
        "num_denoise_steps": protocol.num_denoise_steps or policy.cfg.num_denoise_steps, "prompt": cfg.prompt,
        "num_envs": cfg.num_envs, "device": cfg.device, "precision": cfg.precision, "compile": cfg.compile,
        "wall_s": time.perf_counter() - t0, "per_task": per_task(reports),
    }
    summary = write_results(out_dir, reports, info)
    (out_dir / "libero.md").write_text(suite_markdown([summary]))
    log.info("%s: success %.1f%% (%d/%d) over %d tasks, %.1f policy steps/episode, %.1f s -> %s", task.env_id,
             100 * summary["success_once"], summary["successes_once"], summary["episodes"], len(info["per_task"]),
             summary["mean_steps"], info["wall_s"], out_dir)
    return summary
