"""Success rates in ManiSkill3: `python eval.py task=pickcube checkpoint=<dir> [num_episodes=50] [key=value ...]`.

Episode i resets the env with seed + i (reconfigured), the policy predicts a chunk and `replan_steps` of it are
executed before it predicts again, for max_episode_steps steps (terminations ignored: ManiSkill's protocol).
Writes episodes.json, summary.json/.md and success.png (+ videos/ with videos=N) into the run directory;
`-m task=a,b,...` evaluates several tasks and writes the combined report.md/.png into the sweep directory.
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from vla.data.config import register_configs as register_data_configs
from vla.eval.config import EvalConfig, register_configs
from vla.eval.envs import EnvError
from vla.eval.evaluate import evaluate
from vla.models.config import register_configs as register_model_configs
from vla.models.weights import CheckpointError

register_data_configs()
register_model_configs()
register_configs()
log = logging.getLogger("eval")


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: EvalConfig) -> float:
    cfg = OmegaConf.to_object(cfg)
    try:
        summary = evaluate(cfg, HydraConfig.get().runtime.output_dir)
    except (FileNotFoundError, CheckpointError, EnvError, ValueError) as e:
        print(f"eval.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    return summary["success_once"]


if __name__ == "__main__":
    main()
