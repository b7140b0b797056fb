from pathlib import Path

import pytest

from tests.train.helpers import FAST, compose_train, data_overrides
from vla.train.loop import train


@pytest.fixture(scope="session")
def trained_run(datasets, tmp_path_factory) -> Path:
    """A tiny policy trained 3 steps on the PickCube test dataset (its run dir: checkpoint, config, norm stats)."""
    run = tmp_path_factory.mktemp("run")
    train(compose_train(FAST + data_overrides(datasets["pickcube"]) + ["num_steps=3"]), run)
    return run
