"""Episodes of any policy with ManiSkill's rewards, in eval's env worker pool (vla.eval.envs.EnvPool) with a worker
that records every step: the observation, ManiSkill's normalized_dense reward (the reward mode vla.data.maniskill's
make_env leaves at ManiSkill's default; checked), the success flag (the sparse reward) and the termination flag.

Episode i is reset with seeds[i] and draws its policy noise from a generator seeded with it, as eval.py's episodes do;
`replan_steps` actions of each chunk are executed, clipped to the controller's [-1, 1], for at most `max_steps`
steps; with `stop_on_success` an episode ends at its first termination (the terminal state of the sparse reward).
Finished episodes are handed to `on_episode` in seed order, whatever order the workers finish them in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from vla.data.config import TaskConfig
from vla.data.maniskill import make_env, observation_from_env, quiet_worker
from vla.eval.envs import EnvPool, serve_commands
from vla.eval.policy import Policy
from vla.rl.data import RolloutEpisode

REWARD_MODE = "normalized_dense"  # ManiSkill's compute_normalized_dense_reward: the dense reward scaled to [0, 1]


def _first(x) -> float:
    return np.asarray(x.cpu() if hasattr(x, "cpu") else x).reshape(-1)[0].item()


class _RecordingWorker:
    """("reset", seed) -> observation; ("run", (actions (k, A), stop_on_done)) -> (observations after each executed
    step, rewards, successes, dones), stopping after a termination when stop_on_done."""

    def __init__(self, task: TaskConfig):
        self.task, self.env = task, make_env(task)
        if self.env.unwrapped.reward_mode != REWARD_MODE:
            mode = self.env.unwrapped.reward_mode
            self.env.close()
            raise ValueError(f"{task.env_id}: reward mode {mode!r}, expected {REWARD_MODE!r}")

    def handle(self, cmd: str, arg):
        env, task = self.env, self.task
        if cmd == "reset":
            obs, _ = env.reset(seed=int(arg), options=dict(reconfigure=True))
            return observation_from_env(obs, task)
        if cmd == "run":
            actions, stop_on_done = arg
            observations, rewards, successes, dones = [], [], [], []
            for action in actions:
                obs, reward, terminated, _, info = env.step(action)
                observations.append(observation_from_env(obs, task))
                rewards.append(_first(reward))
                successes.append(bool(_first(info["success"])))
                dones.append(bool(_first(terminated)))
                if stop_on_done and dones[-1]:
                    break
            return observations, np.array(rewards, np.float32), np.array(successes, bool), np.array(dones, bool)
        raise ValueError(f"recording env worker: unknown command {cmd!r}")

    def close(self) -> None:
        self.env.close()


def _recording_worker(conn, task: TaskConfig) -> None:
    quiet_worker()
    torch.set_num_threads(1)
    serve_commands(conn, lambda: _RecordingWorker(task))


@dataclass
class EpisodeStats:
    seed: int
    steps: int
    success: bool  # succeeded at some step
    dense_return: float  # undiscounted sum of the normalized_dense rewards
    wall_s: float


@dataclass
class _Running:
    index: int
    seed: int
    generator: torch.Generator
    obs: dict
    t0: float
    observations: list[dict] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[np.ndarray] = field(default_factory=list)
    successes: list[np.ndarray] = field(default_factory=list)
    dones: list[np.ndarray] = field(default_factory=list)
    steps: int = 0

    def episode(self) -> RolloutEpisode:
        return RolloutEpisode(self.seed, self.observations, np.concatenate(self.actions).astype(np.float32),
                              np.concatenate(self.rewards), np.concatenate(self.successes), np.concatenate(self.dones))


def collect_episodes(
    policy: Policy, task: TaskConfig, seeds: list[int], num_envs: int, replan_steps: int, max_steps: int,
    stop_on_success: bool = True, on_episode: Callable[[RolloutEpisode], None] | None = None, progress: bool = False,
) -> list[EpisodeStats]:
    """Run one episode per seed (see the module docstring); returns their statistics in seed order."""
    from tqdm import tqdm

    H, A = policy.cfg.action_horizon, policy.cfg.action_dim
    if not 1 <= replan_steps <= H:
        raise ValueError(f"replan_steps={replan_steps} must be in [1, action_horizon={H}]")
    pending = list(enumerate(seeds))
    done: dict[int, tuple[EpisodeStats, RolloutEpisode]] = {}
    emitted: list[EpisodeStats] = []
    n = min(num_envs, len(seeds))
    running: dict[int, _Running] = {}
    with EnvPool(task, n, worker=_recording_worker) as pool, tqdm(
            total=len(seeds), desc=f"rollouts {task.name}", unit="episode", disable=not progress) as bar:

        def start(workers: list[int]) -> None:
            workers = workers[: len(pending)]
            for w in workers:
                i, seed = pending.pop(0)
                running[w] = _Running(i, seed, torch.Generator().manual_seed(seed), {}, time.perf_counter())
                pool.send(w, "reset", seed)
            for w in workers:
                running[w].obs = pool.recv(w)

        start(list(range(n)))
        while running:
            workers = sorted(running)
            noise = torch.stack([torch.randn(H, A, generator=running[w].generator) for w in workers])
            chunks = policy.act([running[w].obs for w in workers], noise)
            sent = {}
            for w, chunk in zip(workers, chunks, strict=True):
                sent[w] = np.clip(chunk[:replan_steps][: max_steps - running[w].steps], -1.0, 1.0)
                pool.send(w, "run", (sent[w], stop_on_success))
            finished = []
            for w in workers:
                ep = running[w]
                observations, rewards, successes, dones = pool.recv(w)
                k = len(rewards)
                ep.observations += [ep.obs] + observations[:-1]  # frame t: the observation the action was taken in
                ep.actions.append(sent[w][:k])
                ep.rewards.append(rewards)
                ep.successes.append(successes)
                ep.dones.append(dones)
                ep.obs, ep.steps = observations[-1], ep.steps + k
                if ep.steps >= max_steps or (stop_on_success and dones[-1]):
                    episode = ep.episode()
                    stats = EpisodeStats(ep.seed, ep.steps, bool(episode.successes.any()),
                                         float(episode.rewards.sum()), time.perf_counter() - ep.t0)
                    done[ep.index] = (stats, episode)
                    finished.append(w)
                    bar.update(1)
            for w in finished:
                del running[w]
            while len(emitted) in done:  # in seed order: the dataset does not depend on the number of workers
                stats, episode = done.pop(len(emitted))
                if on_episode is not None:
                    on_episode(episode)
                emitted.append(stats)
            start(finished)
    return emitted
