"""The convert job: `convert(cfg)` refuses an existing output before doing anything; the `convert.py` command line
works end to end and reports bad input as one `convert.py: error:` line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.data.helpers import IMAGE_SIZE, load_task, trajectories
from vla.configs import ConvertConfig
from vla.data.config import DataConfig
from vla.data.convert import convert
from vla.models import load_policy_config

REPO = Path(__file__).resolve().parents[2]


def test_existing_output_fails_before_generating(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    task = load_task("pickcube", demos={"out_dir": str(tmp_path / "demos")})
    cfg = ConvertConfig(task=task, model=load_policy_config("pi05_tiny"), input="generate", output=str(out))
    with pytest.raises(FileExistsError, match="overwrite=true"):
        convert(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no demo dir: nothing was generated
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("kind", ["missing", "empty_dir"])
def test_missing_input(kind, tmp_path):
    from vla.data.maniskill import DataError

    path = tmp_path / ("nope.h5" if kind == "missing" else "empty")
    if kind == "empty_dir":
        path.mkdir()
    cfg = ConvertConfig(task=load_task("pickcube"), model=load_policy_config("pi05_tiny"), input=str(path),
                        output=str(tmp_path / "ds"))
    expected = "no such file or directory" if kind == "missing" else "no .h5 files in directory"
    with pytest.raises(DataError, match=f"^{path}: {expected}$"):
        convert(cfg)
    assert not (tmp_path / "ds").exists()
    if kind == "missing":  # an existing output is not what is wrong: the missing input is reported
        (tmp_path / "ds").mkdir()
        with pytest.raises(DataError, match=f"^{path}: {expected}$"):
            convert(cfg)


@pytest.mark.slow
def test_outlier_frame_is_refused_or_its_episode_dropped(copy_demo, tmp_path):
    """A dimension constant but for one frame (q01 = q99) would normalize that frame to ~1e5 (openpi's normalization
    does not clip)."""
    import re

    import h5py

    from vla.data.maniskill import DataError

    h5 = copy_demo("pickcube")
    trajs = trajectories(h5)
    with h5py.File(h5, "r+") as f:
        for traj in trajs:
            actions = f[traj]["actions"][()]
            actions[:, 3] = 0.0
            if traj == trajs[0]:
                actions[5, 3] = 0.05
            f[traj]["actions"][...] = actions
    out = tmp_path / "ds"
    cfg = ConvertConfig(task=load_task("pickcube", image_size=IMAGE_SIZE), model=load_policy_config("pi05_tiny"),
                        input=str(h5), output=str(out))
    expected = (rf"^{re.escape(str(h5))}: {trajs[0]}: actions\[5, 3\] = 0.05 normalizes to .* q01=0, q99=0, "
                r".*data.drop_outliers=true")
    with pytest.raises(DataError, match=expected):
        convert(cfg)
    assert not out.exists()
    cfg.data.drop_outliers = True
    report = convert(cfg)
    assert report.episodes == len(trajs) - 1
    stats = json.loads((out / "norm_stats.json").read_text())["norm_stats"]["actions"]
    assert stats["q01"][3] == stats["q99"][3] == 0.0 and stats["std"][3] == 0.0


def _cli(tmp_path, *overrides):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "convert.py", "task=pickcube", f"task.image_size={IMAGE_SIZE}",
           f"hydra.run.dir={tmp_path / 'hydra'}", *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_converts(demo_files, datasets, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    h5 = demo_files["pickcube"]
    out = tmp_path / "ds"
    proc = _cli(tmp_path, f"input={h5}", f"output={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "norm_stats.json").is_file()
    ds = LeRobotDataset("vla/maniskill_pickcube", root=out)
    assert ds.num_episodes == len(trajectories(h5)) and ds.fps == 20
    assert tuple(ds.meta.info["features"]["image"]["shape"]) == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert np.isfinite(ds[0]["state"].numpy()).all()
    assert "converted 2 episodes" in (tmp_path / "hydra" / "convert.log").read_text()
    # the command line and write_dataset (with the model's action horizon) agree
    reference = datasets["pickcube"] / "norm_stats.json"
    assert json.loads((out / "norm_stats.json").read_text()) == json.loads(reference.read_text())


@pytest.mark.slow
def test_cli_bad_input_is_one_error_line(copy_demo, tmp_path):
    import h5py

    h5 = copy_demo("pickcube")
    with h5py.File(h5, "r+") as f:
        del f["traj_0/obs/agent/qpos"]
    out = tmp_path / "ds"
    proc = _cli(tmp_path, f"input={h5}", f"output={out}")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convert.py: error: "), proc.stderr[-3000:]
    assert str(h5) in lines[0] and "traj_0" in lines[0] and "obs/agent/qpos" in lines[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.slow
def test_idle_frames_are_left_out_with_their_images(demo_files, tmp_path):
    """idle_action_max leaves out the frames in which the planner holds the arm still (before the descent, after the
    gripper closes); each kept frame keeps its own recorded image, state and action."""
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from tests.data.helpers import expected_state, read_h5

    h5 = demo_files["pickcube"]
    task = load_task("pickcube", image_size=IMAGE_SIZE)
    out = tmp_path / "ds"
    cfg = ConvertConfig(task=task, model=load_policy_config("pi05_tiny"), input=str(h5), output=str(out),
                        data=DataConfig(idle_action_max=0.02))
    report = convert(cfg)
    kept = {}  # traj -> recorded steps expected in the dataset, worked out here frame by frame
    for traj in trajectories(h5):
        actions = read_h5(h5, traj, "actions")
        kept[traj] = [t for t in range(len(actions))
                      if max(abs(actions[t, :6])) > 0.02 or (t > 0 and actions[t, 6] != actions[t - 1, 6])]
        closes = [t for t in range(1, len(actions)) if actions[t, 6] < 0 <= actions[t - 1, 6]]
        assert closes and closes[0] + 1 not in kept[traj], traj  # the planner's wait after closing is left out...
        assert closes[0] in kept[traj], traj  # ...the close command itself is not
    assert report.frames == sum(map(len, kept.values())) < sum(len(read_h5(h5, t, "actions")) for t in kept)
    ds = LeRobotDataset(task.repo_id, root=out)
    i = 0
    for traj, steps in kept.items():
        actions = read_h5(h5, traj, "actions")
        state = expected_state(h5, traj, task, len(actions))
        rgb = read_h5(h5, traj, f"obs/sensor_data/{next(iter(task.cameras))}/rgb")
        for t in steps:
            row = ds[i]
            np.testing.assert_array_equal(row["actions"].numpy(), actions[t])
            np.testing.assert_array_equal(row["state"].numpy(), state[t])
            image = (row["image"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(image, rgb[t])
            i += 1
    assert i == len(ds)


def test_an_episode_that_never_moves_is_refused_in_one_line(tmp_path):
    from vla.data.convert import drop_idle_frames
    from vla.data.maniskill import DataError, Episode

    still = np.zeros((5, 7), np.float32)
    still[:, 6] = 1.0  # gripper held open throughout
    moving = still.copy()
    moving[2, 0] = 0.5
    eps = [Episode(tmp_path / "a.h5", f"traj_{i}", i, np.zeros((5, 9), np.float32), actions)
           for i, actions in enumerate([moving, still])]
    with pytest.raises(DataError, match=r"^.*a\.h5: traj_1: actions: expected a frame that moves the arm or the "
                                        r"gripper, found every one of 5 within idle_action_max=0\.02$"):
        drop_idle_frames(eps, 0.02)
    (kept,) = drop_idle_frames(eps[:1], 0.02)
    assert kept.steps.tolist() == [2] and kept.actions.tolist() == [moving[2].tolist()]
