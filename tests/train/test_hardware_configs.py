"""conf/hardware/*.yaml: every file composes into train.py's schema under its own name, and an `<N>x<gpu>` file
starts N ranks (a copied file whose count was not edited would silently train on the wrong number of GPUs)."""

import re

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vla.models import CONF_DIR

NAMES = sorted(p.stem for p in (CONF_DIR / "hardware").glob("*.yaml"))


@pytest.mark.parametrize("name", NAMES)
def test_hardware_config_composes_with_its_name_and_rank_count(name):
    from vla.data.config import register_configs as register_data
    from vla.models.config import register_configs as register_model
    from vla.train.config import register_configs

    register_data(), register_model(), register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hw = OmegaConf.to_object(compose("train", overrides=[f"hardware={name}", "run_name=test"])).hardware
    assert hw.name == name
    count = re.fullmatch(r"(\d+)x\w+", name)
    if count:
        assert hw.num_processes == int(count.group(1)) and hw.device == "cuda" and hw.backend == "nccl"


def test_the_gpu_configs_users_name_exist():
    assert {"1xgpu", "4xh100", "8xh100"} <= set(NAMES)
