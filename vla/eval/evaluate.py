"""The eval job: load the policy, run the seeded episodes, write results (see vla.eval.report)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from vla.configs import EvalConfig
from vla.eval.latency import action_change_means
from vla.eval.policy import Policy
from vla.eval.report import write_results
from vla.eval.rollout import run_episodes

log = logging.getLogger(__name__)


def evaluate(cfg: EvalConfig, out_dir: str | Path, wrap_policy: Callable[[Policy], Policy] | None = None) -> dict:
    """`wrap_policy`: what acts in place of the loaded policy (eval.py's critic= option: best-of-N under a critic)."""
    out_dir = Path(out_dir)
    task = cfg.task
    protocol = cfg.eval
    if task.backend == "libero":
        from vla.eval.libero_env import prepare

        prepare()  # a missing `libero` extra fails here in one line, before the policy is loaded
    policy = Policy.load(
        cfg.checkpoint, cfg.model, cfg.norm_stats or task.norm_stats, task.action_dim, cfg.device, cfg.precision,
        protocol.num_denoise_steps, cfg.compile, asset_id=task.repo_id,
    )
    if wrap_policy is not None:
        policy = wrap_policy(policy)
    if task.backend == "libero":
        from vla.eval.libero_rollout import evaluate_libero

        return evaluate_libero(cfg, policy, out_dir)
    H = policy.cfg.action_horizon
    replan = protocol.executed_steps(H)
    if replan > H:
        raise ValueError(f"eval.replan_steps={replan}: the policy predicts {H} actions at a time")
    max_steps = protocol.max_episode_steps or task.max_episode_steps
    t0 = time.perf_counter()
    episodes = run_episodes(
        policy, task, protocol.num_episodes, protocol.seed, cfg.num_envs, replan, max_steps, cfg.prompt, cfg.videos,
        out_dir / "videos", cfg.progress, cfg.latency,
    )
    info = {
        "task": task.name, "env_id": task.env_id, "control_mode": task.control_mode, "sim_backend": task.sim_backend,
        "max_episode_steps": max_steps, "replan_steps": replan, "action_horizon": H, "seed": protocol.seed,
        "experiment": cfg.experiment,
        "checkpoint": str(policy.checkpoint) if policy.checkpoint else None,
        "model": policy.cfg.name, "num_denoise_steps": protocol.num_denoise_steps or policy.cfg.num_denoise_steps,
        "prompt": cfg.prompt or task.prompt, "num_envs": cfg.num_envs, "device": cfg.device,
        "precision": cfg.precision, "compile": cfg.compile, "wall_s": time.perf_counter() - t0,
        "latency": asdict(cfg.latency), "action_change": action_change_means(episodes),
    }
    if cfg.critic is not None:
        info |= {"critic": cfg.critic, "best_of_n": cfg.best_of_n}
    if cfg.actor is not None:
        info |= {"actor": cfg.actor}
    summary = write_results(out_dir, [e.report() for e in episodes], info)
    log.info(
        "%s: success_once %.1f%% (%d/%d), success_at_end %.1f%%, %.1f steps/episode, %.1f s -> %s",
        task.env_id, 100 * summary["success_once"], summary["successes_once"], summary["episodes"],
        100 * summary["success_at_end"], summary["mean_steps"], info["wall_s"], out_dir,
    )
    change = summary["action_change"]
    if change["boundary"] is not None:
        log.info("%s: inference delay %d steps, rtc %s: mean action change %.4f where a new chunk takes over, %.4f "
                 "elsewhere", task.env_id, cfg.latency.delay_steps, cfg.latency.rtc, change["boundary"],
                 change["interior"] or float("nan"))
    if summary["reached_once"]:
        log.info("%s: reached at some step: %s", task.env_id,
                 ", ".join(f"{k} {100 * v:.0f}%" for k, v in summary["reached_once"].items()))
    if summary["closest_distance"]:
        d = summary["closest_distance"]
        log.info("%s: closest %s-%s distance per episode: median %.3f m (quartiles %.3f-%.3f, min %.3f); "
                 "at the start: median %.3f m", task.env_id, *task.goal_distance, d["median"], d["p25"], d["p75"],
                 d["min"], summary["initial_distance"]["median"])
    return summary
