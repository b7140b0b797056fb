"""Record a policy's episodes with ManiSkill's rewards as a LeRobot rollout dataset (vla.rl.data), the offline data
of `train.py algo=qchunk`:

  python -m vla.rl.collect --out data/rollouts/pushcube_r0 --episodes 200 --seed 200000 \\
      checkpoint=policies/pushcube_pi05 num_envs=8 [device=cuda] [critic=<qchunk run> best_of_n=16]

Every other argument is an eval.py override and means what it means there: the policy is loaded and run as eval.py
runs it (the checkpoint's recorded task, model and protocol: replan steps, episode length, denoising steps), with
best-of-N under a critic when `critic=` is given, or a one-step actor with `actor=`. The seeds are given
explicitly (--seed, --episodes) so that no rollout shares an initial state with the held-out evaluation seeds
(eval.seed, 100000 onwards by default) unless asked to. Episodes end at their first success unless
--no-stop-on-success (ManiSkill's evaluation protocol: every episode runs its full length). eval.py's own default path
records nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from vla.configs import ConfigError, EvalConfig, app_config, compose
from vla.eval.envs import EnvError
from vla.eval.policy import Policy
from vla.models.weights import CheckpointError
from vla.rl.critic import CriticError
from vla.rl.data import RolloutWriter
from vla.rl.onestep import acting_wrapper
from vla.rl.rollout import collect_episodes

log = logging.getLogger(__name__)


def load_acting_policy(cfg: EvalConfig) -> Policy:
    """The policy as eval.py loads it, acting as eval.py acts with it (one-step actor, best-of-N: `acting_wrapper`)."""
    policy = Policy.load(cfg.checkpoint, cfg.model, cfg.norm_stats or cfg.task.norm_stats, cfg.task.action_dim,
                         cfg.device, cfg.precision, cfg.eval.num_denoise_steps, cfg.compile)
    wrap = acting_wrapper(cfg)
    return policy if wrap is None else wrap(policy)


def collect(cfg: EvalConfig, out: str | Path, seeds: list[int], stop_on_success: bool = True,
            overwrite: bool = False) -> dict:
    """Record one episode per seed into the rollout dataset `out`; returns (and writes next to it) a summary."""
    if Path(out).exists() and not overwrite:  # before the policy loads
        raise FileExistsError(f"{Path(out).absolute()} exists (pass --overwrite to replace it)")
    policy = load_acting_policy(cfg)
    H = policy.cfg.action_horizon
    replan = cfg.eval.executed_steps(H)
    max_steps = cfg.eval.max_episode_steps or cfg.task.max_episode_steps
    with RolloutWriter(out, cfg.task, H, overwrite) as writer:
        stats = collect_episodes(policy, cfg.task, seeds, cfg.num_envs, replan, max_steps, stop_on_success,
                                 writer.add, cfg.progress)
    summary = {
        "task": cfg.task.name, "checkpoint": str(policy.checkpoint) if policy.checkpoint else None,
        "critic": cfg.critic, "actor": cfg.actor, "best_of_n": cfg.best_of_n if cfg.critic else 1,
        "episodes": len(stats),
        "success_rate": sum(s.success for s in stats) / len(stats),
        "mean_steps": sum(s.steps for s in stats) / len(stats),
        "replan_steps": replan, "max_episode_steps": max_steps, "stop_on_success": stop_on_success,
        "seeds": [seeds[0], seeds[-1]],
    }
    (Path(out) / "rollouts.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%s: %d episodes, success %.1f%%, %.1f steps/episode -> %s", cfg.task.name, len(stats),
             100 * summary["success_rate"], summary["mean_steps"], out)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vla.rl.collect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="rollout dataset directory to write")
    parser.add_argument("--episodes", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True, help="env seed of the first episode (then +1 each)")
    parser.add_argument("--no-stop-on-success", dest="stop_on_success", action="store_false")
    parser.add_argument("--overwrite", action="store_true")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        if args.episodes < 1:
            raise ConfigError(f"--episodes={args.episodes}: must be at least 1")
        cfg = app_config(compose("eval", overrides), EvalConfig, "vla.rl.collect", overrides)
        collect(cfg, args.out, list(range(args.seed, args.seed + args.episodes)), args.stop_on_success,
                args.overwrite)
    except (ConfigError, FileNotFoundError, FileExistsError, CheckpointError, CriticError, EnvError, ValueError) as e:
        print(f"vla.rl.collect: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
