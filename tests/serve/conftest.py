from pathlib import Path

import pytest

from tests.serve.tiny_policy import write_tiny_policy

IMAGE_SIZE = 64  # the tiny policy's recorded task.image_size: small requests, same code paths


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory) -> Path:
    """pi05_tiny with random weights, recorded for PushCube (base camera only, 8-dim state)."""
    return write_tiny_policy(tmp_path_factory.mktemp("policies") / "pushcube_tiny",
                             overrides=(f"task.image_size={IMAGE_SIZE}",))


@pytest.fixture(scope="session")
def served(tiny_policy_dir):
    from vla.configs import load_group
    from vla.eval.policy import Policy
    from vla.serve.app import ServedPolicy

    task = load_group("task", "pushcube", [f"task.image_size={IMAGE_SIZE}"])
    return ServedPolicy(Policy.load(tiny_policy_dir, None, None, task.action_dim), task)
