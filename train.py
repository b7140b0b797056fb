"""Supervised fine-tuning of Pi0.5 / Pi0: `python train.py task=pickcube [model=...] [hardware=...] [key=value ...]`.

Composes conf/train.yaml with the `task`, `model`, `optim` and `hardware` groups; `-m task=a,b` sweeps (one run
directory each). Runs in the run directory: TensorBoard events, metrics.jsonl, config.yaml, checkpoints/<step>/.
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from vla.data.config import register_configs as register_data_configs
from vla.models.config import register_configs as register_model_configs
from vla.train.config import TrainConfig, register_configs
from vla.train.launch import launch
from vla.train.loop import TrainingError, TrainingStopped

register_data_configs()
register_model_configs()
register_configs()
log = logging.getLogger("train")


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: TrainConfig) -> float | None:
    cfg = OmegaConf.to_object(cfg)  # typed dataclasses from here on
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        last = launch(cfg, run_dir)
    except TrainingStopped as e:  # SIGTERM: the run saved its last step; 143 = 128 + SIGTERM, as if killed by it
        print(f"train.py: {e}", file=sys.stderr)
        sys.exit(143)
    except (FileNotFoundError, ValueError, TrainingError) as e:  # bad input or a stopped run: one line, no traceback
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    log.info("done: %s", ", ".join(f"{k}={v:.4g}" for k, v in (last or {}).items()))
    return (last or {}).get("train/loss")  # the sweep's objective


if __name__ == "__main__":
    main()
