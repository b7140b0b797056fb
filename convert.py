"""Convert ManiSkill3 demos into a LeRobot dataset (+ norm_stats.json): `python convert.py task=pickcube`.

  input=generate (default)   generate task.demos.num_demos demos with ManiSkill's motion planners + replay first
  input=<file.h5 | dir>      convert existing ManiSkill trajectories (pd_ee_delta_pose, RGB 256x256)
"""

import sys

import hydra
from omegaconf import OmegaConf

from vla.data.config import ConvertConfig, register_configs
from vla.data.convert import convert
from vla.data.maniskill import DataError, GenerationError
from vla.models.config import register_configs as register_model_configs

register_configs()
register_model_configs()


@hydra.main(config_path="conf", config_name="convert", version_base="1.3")
def main(cfg: ConvertConfig) -> None:
    cfg = OmegaConf.to_object(cfg)  # typed dataclasses from here on
    try:
        convert(cfg)
    except (DataError, GenerationError, FileExistsError) as e:
        print(f"convert.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
