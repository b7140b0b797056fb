"""Online rounds of an algo=qchunk run (after its offline phase): per round r,

  1. roll out the current policy (best-of-`online.best_of_n` under the current critic, of the flow policy's samples
     or, once it trains, of the one-step actor's; the fine-tuned expert when the pathwise actor trains) in
     `online.num_envs` env workers for `episodes_per_round` episodes with seeds
     online.seed + r * episodes_per_round + i, recorded into <run>/rollouts/round_<r>/ (a rollout dataset)
  2. add them to the replay data
  3. `steps_per_round` updates of the critic (and the actor)
  4. evaluate on the held-out seeds (eval.seed onwards, `eval_episodes` of them) with eval's own rollout: the
     recipe's protocol, success at any step
  5. log (online/*) and save a checkpoint: a resumed run continues after the last finished round

The acting policy is the learner's own model and critic, read without gradients; nothing is copied per round.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vla.eval.policy import Policy
from vla.eval.rollout import run_episodes
from vla.rl.best_of_n import BestOfNPolicy
from vla.rl.data import RolloutData, RolloutWriter
from vla.rl.learner import onestep_acts
from vla.rl.onestep import OneStepPolicy
from vla.rl.rollout import collect_episodes
from vla.train.loop import TrainingStopped

if TYPE_CHECKING:
    from vla.rl.run import QChunkRun

log = logging.getLogger(__name__)


def acting_policy(run: QChunkRun) -> Policy:
    learner, n = run.learner, run.cfg.algo.online.best_of_n
    if onestep_acts(learner, run.cfg.algo):
        return OneStepPolicy(learner.policy, learner.onestep, learner.critic, n)
    return BestOfNPolicy(learner.policy, learner.critic, n) if n > 1 else learner.policy


def protocol(run: QChunkRun) -> tuple[int, int]:
    """(replan steps, episode length) of the recipe's evaluation protocol."""
    cfg = run.cfg
    return (cfg.eval.executed_steps(run.learner.policy.cfg.action_horizon),
            cfg.eval.max_episode_steps or cfg.task.max_episode_steps)


def run_round(run: QChunkRun, r: int) -> dict[str, float]:
    cfg, learner, online = run.cfg, run.learner, run.cfg.algo.online
    policy = acting_policy(run)
    replan, max_steps = protocol(run)
    first = online.seed + r * online.episodes_per_round
    out = run.run_dir / "rollouts" / f"round_{r:03d}"
    with RolloutWriter(out, cfg.task, learner.policy.cfg.action_horizon, overwrite=True) as writer:
        stats = collect_episodes(policy, cfg.task, list(range(first, first + online.episodes_per_round)),
                                 online.num_envs, replan, max_steps, online.stop_on_success, writer.add,
                                 cfg.progress)
    learner.replay.add(RolloutData(out))
    values = {"online/round": r + 1, "online/rollout_success": sum(s.success for s in stats) / len(stats),
              "online/rollout_steps": sum(s.steps for s in stats) / len(stats)}
    if not run.train(learner.step + online.steps_per_round, periodic_saves=False):
        raise TrainingStopped(f"stopped by SIGTERM in online round {r + 1} (step {learner.step}); the last "
                              "checkpoint is the previous round's: resume=true repeats this round")
    if online.eval_episodes:
        episodes = run_episodes(acting_policy(run), cfg.task, online.eval_episodes, cfg.eval.seed, online.num_envs,
                                replan, max_steps, progress=cfg.progress)
        values["online/eval_success"] = sum(e.success_once for e in episodes) / len(episodes)
    learner.round = r + 1
    return values | {f"replay/{k}": float(v) for k, v in learner.replay.summary().items()}


def run_rounds(run: QChunkRun) -> None:
    online = run.cfg.algo.online
    for r in range(run.learner.round, online.rounds):
        values = run_round(run, r)
        run.log(values)
        log.info("online round %d/%d: %s", r + 1, online.rounds, ", ".join(f"{k}={v:.3g}" for k, v in values.items()))
        if run.cfg.save_interval is not None:
            run.save()
