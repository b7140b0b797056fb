"""conf/hardware/*.yaml: every file composes into train.py's schema under its own name, and an `<N>x<gpu>` file
starts N ranks, an `<M>x<N>x<gpu>` file N ranks on each of M nodes (a file extended from another whose count was not
set would silently train on the wrong GPU count)."""

import re

import pytest

from vla.configs import group_options, load_group

NAMES = group_options("hardware")


@pytest.mark.parametrize("name", NAMES)
def test_hardware_config_composes_with_its_name_and_rank_count(name):
    hw = load_group("hardware", name)
    assert hw.name == name
    count = re.fullmatch(r"(?:(\d+)x)?(\d+)x[a-z]\w*", name)
    if count:
        assert hw.num_processes == int(count.group(2)) and hw.device == "cuda" and hw.backend == "nccl"
        assert hw.num_nodes == int(count.group(1) or 1)


def test_the_gpu_configs_users_name_exist():
    assert {"1xgpu", "4xh100", "8xh100"} <= set(NAMES)
