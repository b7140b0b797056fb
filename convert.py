"""Demos -> LeRobot dataset (+ norm_stats.json): `python convert.py [+experiment=<recipe>] [task=...] [key=value ...]`.

  input=generate (default)   generate task.demos.num_demos demos with ManiSkill's motion planners + replay first
  input=<file.h5 | dir>      convert existing ManiSkill trajectories (the task's control mode, RGB observations)
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig

from vla.configs import ConfigError, ConvertConfig, app_config
from vla.data.convert import convert
from vla.data.maniskill import DataError, GenerationError


@hydra.main(config_path="pkg://vla.conf", config_name="convert", version_base="1.3")
def main(cfg: ConvertConfig) -> None:
    try:
        convert(app_config(cfg, ConvertConfig, "convert.py", HydraConfig.get().overrides.task))
    except (ConfigError, DataError, GenerationError, FileExistsError, FileNotFoundError) as e:
        print(f"convert.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
