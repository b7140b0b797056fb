"""Plumbing check of the evaluation path without a policy: replay each demo's recorded actions open loop in an env
worker reset with the demo's seed, exactly as eval.py runs episodes (same env construction, reconfigure, workers),
and count successes. `python -m vla.eval.replay --task pickcube --input <demos .h5 or dir> [--num-envs 2]`"""

from __future__ import annotations

import argparse
import json

import numpy as np

from vla.configs import load_group
from vla.data.config import TaskConfig
from vla.data.maniskill import read_episodes
from vla.eval.envs import EnvPool


def replay_demos(task: TaskConfig, input_path, num_envs: int = 2, max_episode_steps: int | None = None) -> list[dict]:
    """One record per demo: seed, demo length, success_once within max_episode_steps (default: task's), the env
    flags that held at some step and the closest goal_distance."""
    episodes = read_episodes(input_path, task)
    limit = max_episode_steps or task.max_episode_steps
    results = []
    with EnvPool(task, min(num_envs, len(episodes))) as pool:
        for start in range(0, len(episodes), len(pool)):
            group = list(enumerate(episodes[start:start + len(pool)]))
            for w, ep in group:
                pool.send(w, "reset", (ep.seed, False))
            for w, _ in group:
                pool.recv(w)
            for w, ep in group:
                pool.send(w, "run", ep.actions[:limit])
            for w, ep in group:
                _, successes, _, reached, distances = pool.recv(w)
                results.append({"seed": ep.seed, "demo_steps": len(ep), "success_once": bool(np.any(successes)),
                                "first_success_step": int(np.argmax(successes)) + 1 if successes.any() else None,
                                "reached": reached,
                                "closest_distance": float(distances.min()) if distances is not None else None})
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", required=True, help="conf/task name, e.g. pickcube")
    ap.add_argument("--input", required=True, help="ManiSkill demo .h5 (with its .json) or a directory of them")
    ap.add_argument("--num-envs", type=int, default=2)
    args = ap.parse_args()
    results = replay_demos(load_group("task", args.task), args.input, args.num_envs)
    rate = sum(r["success_once"] for r in results) / len(results)
    print(json.dumps(results, indent=1))
    print(f"{args.task}: {sum(r['success_once'] for r in results)}/{len(results)} demos replayed open loop "
          f"succeed ({100 * rate:.1f}%)")


if __name__ == "__main__":
    main()
