"""Training of Pi0.5 / Pi0: `python train.py [+experiment=<recipe>] [task=...] [model=...] [key=value ...]`.

Composes conf/train.yaml with the `task`, `model`, `optim`, `hardware` and `algo` groups (and a recipe from
conf/experiment); `algo=qchunk checkpoint=<policy>` trains a chunk critic for a trained policy (vla/rl) instead of SFT;
`-m +experiment=a,b` sweeps (one run directory each). Writes into the run directory: TensorBoard events,
metrics.jsonl, config.yaml (the whole recipe, read back by eval.py), checkpoints/<step>/.
"""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig

from vla.configs import ConfigError, TrainConfig, train_config
from vla.train.launch import launch, rank_argv
from vla.train.loop import TrainingError, TrainingStopped

log = logging.getLogger("train")


@hydra.main(config_path="pkg://vla.conf", config_name="train", version_base="1.3")
def main(cfg: TrainConfig) -> float | None:
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        cfg = train_config(cfg, HydraConfig.get().overrides.task)  # typed dataclasses from here on
        if cfg.algo.name == "qchunk":  # a critic for a trained policy (vla/rl); SFT otherwise
            from vla.rl.trainer import train_qchunk

            last = train_qchunk(cfg, run_dir)
        else:
            last = launch(cfg, run_dir)
    except TrainingStopped as e:  # SIGTERM: the run saved its last step; 143 = 128 + SIGTERM, as if killed by it
        print(f"train.py: {e}", file=sys.stderr)
        sys.exit(143)
    except (ConfigError, FileNotFoundError, ValueError, TrainingError) as e:  # bad input or a stopped run: one line
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    log.info("done: %s", ", ".join(f"{k}={v:.4g}" for k, v in (last or {}).items()))
    return (last or {}).get("train/loss", (last or {}).get("critic/td_loss"))  # the sweep's objective


if __name__ == "__main__":
    try:
        sys.argv[1:] = rank_argv(sys.argv[1:])  # torchrun: one run directory, written by rank 0
    except ValueError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    main()
