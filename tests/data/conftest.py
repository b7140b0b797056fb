"""Fixtures of the data tests; the session-wide ManiSkill demos and datasets are in tests/conftest.py."""

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def copy_demo(demo_files, tmp_path):
    """copy_demo(name) -> a private copy of a generated .h5 (with its .json) to corrupt."""

    def copy(name: str) -> Path:
        src = demo_files[name]
        dst_dir = tmp_path / f"in_{name}"
        dst_dir.mkdir()
        shutil.copy(src.with_suffix(".json"), dst_dir / src.with_suffix(".json").name)
        return Path(shutil.copy(src, dst_dir / src.name))

    return copy

