"""Session fixtures shared by tests/data, tests/train and tests/eval: real ManiSkill demos, generated once per session
by ManiSkill's own motion planners and trajectory replay (`generate_demos`), and the LeRobot datasets converted from
them.

Demos are rendered at IMAGE_SIZE (128) instead of the tasks' 256: CPU rendering dominates generation and replay time,
and every code path is the same (the model transform then resizes the images *up* to 224).
"""

# `slow` marks a test that needs ManiSkill demos or rendering, several processes, an app subprocess or torch.compile.

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the test suite may reach a hub (set before any HF import)
# OpenMP threads sleep while they wait instead of spinning (read when torch loads OpenMP, so before any torch import):
# on a CPU shared with other processes, spinning torch threads make the model tests several times slower
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.data.helpers import ACTION_HORIZON, IMAGE_SIZE, load_task  # noqa: E402


def _generate_all(root: Path) -> dict[str, Path]:
    from vla.data.maniskill import generate_demos

    # Two single-worker pools at once: PickCube's two demos and StackCube's one (two cameras) take about as long,
    # and neither pool wastes a core on a seed whose result is thrown away.
    jobs = {"pickcube": 2, "stackcube": 1}
    out, errors = {}, []

    def run(name: str, n: int) -> None:
        try:
            task = load_task(name, image_size=IMAGE_SIZE, demos={"num_workers": 1})
            out[name] = generate_demos(task, root / name, num_demos=n, progress=False).path
        except BaseException as e:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(e)

    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory) -> dict[str, Path]:
    """{"pickcube": <2-episode .h5>, "stackcube": <1-episode .h5>}, each with its .json next to it. Read only:
    tests that corrupt a file work on a copy (`copy_demo`)."""
    return _generate_all(tmp_path_factory.mktemp("demos"))


@pytest.fixture(scope="session")
def tasks() -> dict:
    return {name: load_task(name, image_size=IMAGE_SIZE) for name in ("pickcube", "stackcube")}


@pytest.fixture(scope="session")
def datasets(demo_files, tasks, tmp_path_factory) -> dict[str, Path]:
    """The demos converted with `write_dataset` (PNG frames, norm stats over ACTION_HORIZON-step chunks)."""
    from vla.data.lerobot import write_dataset
    from vla.data.maniskill import read_episodes

    root = tmp_path_factory.mktemp("datasets")
    return {
        name: write_dataset(read_episodes(demo_files[name], tasks[name]), root / name, tasks[name], ACTION_HORIZON).root
        for name in demo_files
    }


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory) -> Path:
    from vla.data.tokenizer import resolve_tokenizer

    return resolve_tokenizer(None, cache_dir=tmp_path_factory.mktemp("tokenizer"))
