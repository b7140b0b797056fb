"""Success rates in ManiSkill3: `python eval.py checkpoint=<run or checkpoint dir> [eval.num_episodes=...] [key=value]`.

A training run's recorded recipe (task, model, evaluation protocol) is used unless the command line changes it.
Episode i resets the env with eval.seed + i (reconfigured), the policy predicts a chunk and eval.replan_steps of it
are executed before it predicts again, for max_episode_steps steps (terminations ignored: ManiSkill's protocol).
`critic=<algo=qchunk run> best_of_n=16` acts by the highest-Q of 16 sampled chunks (vla/rl/best_of_n.py).
`actor=<algo=qchunk run with algo.actor.method=distill>` acts with its one-step actor (vla/rl/onestep.py).
Writes episodes.json, summary.json/.md and success.png (+ videos/ with videos=N) into the run directory;
`-m checkpoint=a,b,...` evaluates several and writes the combined report.md/.png into the sweep directory.
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vla.configs import ConfigError, EvalConfig, app_config
from vla.eval.envs import EnvError
from vla.eval.evaluate import evaluate
from vla.models.weights import CheckpointError

log = logging.getLogger("eval")


@hydra.main(config_path="pkg://vla.conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float:
    try:
        cfg = app_config(cfg, EvalConfig, "eval.py", HydraConfig.get().overrides.task)
        wrap = None
        if cfg.actor is not None or cfg.critic is not None:  # a one-step actor or best-of-N under a critic (vla/rl)
            from vla.rl.onestep import acting_wrapper

            wrap = acting_wrapper(cfg)
        summary = evaluate(cfg, HydraConfig.get().runtime.output_dir, wrap)
    except (ConfigError, FileNotFoundError, CheckpointError, EnvError, ValueError) as e:
        print(f"eval.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    return summary["success_once"]


if __name__ == "__main__":
    main()
