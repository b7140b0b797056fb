"""ManiSkill demos -> LeRobot dataset (vla.data.lerobot.write_dataset), read back with lerobot's own LeRobotDataset and
compared with the HDF5 files ManiSkill wrote, read directly with h5py."""

import time

import numpy as np
import pytest
import torch

from tests.data.helpers import expected_state, read_h5, trajectories
from vla.data.lerobot import schema_from_row, write_dataset
from vla.data.maniskill import read_episodes

pytestmark = pytest.mark.slow


def _open(root, task):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(task.repo_id, root=root)


def _to_uint8_hwc(chw: torch.Tensor) -> np.ndarray:
    assert chw.dtype == torch.float32 and chw.min() >= 0 and chw.max() <= 1
    return (chw * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("name", ["pickcube", "stackcube"])
def test_dataset_equals_maniskill_files(name, demo_files, datasets, tasks):
    task, h5 = tasks[name], demo_files[name]
    ds = _open(datasets[name], task)
    S = task.image_size

    assert ds.fps == task.control_freq
    feats = ds.meta.info["features"]
    assert feats["image"]["dtype"] == feats["wrist_image"]["dtype"] == "image"  # PNG frames: lossless
    assert tuple(feats["image"]["shape"]) == tuple(feats["wrist_image"]["shape"]) == (S, S, 3)
    assert feats["wrist_mask"]["dtype"] == "bool"
    assert feats["state"]["dtype"] == feats["actions"]["dtype"] == "float32"
    assert tuple(feats["state"]["shape"]) == (task.state_dim,) == ({"pickcube": 11, "stackcube": 8}[name],)
    assert feats["state"]["names"][-1] == {"pickcube": "goal_pos_2", "stackcube": "finger"}[name]
    assert tuple(feats["actions"]["shape"]) == (task.action_dim,)

    trajs = trajectories(h5)
    assert ds.num_episodes == len(trajs) == {"pickcube": 2, "stackcube": 1}[name]
    lengths = [read_h5(h5, t, "actions").shape[0] for t in trajs]
    assert list(ds.meta.episodes["length"]) == lengths  # one frame per action; the final observation is dropped
    assert len(ds) == sum(lengths)

    wrist_cam = {"pickcube": None, "stackcube": "hand_camera"}[name]
    i = 0
    for ep, traj in enumerate(trajs):
        actions = read_h5(h5, traj, "actions")
        state = expected_state(h5, traj, task, len(actions))
        base = read_h5(h5, traj, "obs/sensor_data/base_camera/rgb")
        wrist = read_h5(h5, traj, f"obs/sensor_data/{wrist_cam}/rgb") if wrist_cam else None
        for t in range(len(actions)):
            row = ds[i]
            assert row["episode_index"].item() == ep and row["frame_index"].item() == t
            assert row["task"] == task.prompt
            assert row["image"].shape == row["wrist_image"].shape == (3, S, S)
            np.testing.assert_array_equal(_to_uint8_hwc(row["image"]), base[t])
            if wrist is None:
                assert not row["wrist_mask"].item() and not row["wrist_image"].any()
            else:
                assert row["wrist_mask"].item()
                np.testing.assert_array_equal(_to_uint8_hwc(row["wrist_image"]), wrist[t])
            assert row["state"].dtype == row["actions"].dtype == torch.float32
            np.testing.assert_array_equal(row["state"].numpy(), state[t])
            np.testing.assert_array_equal(row["actions"].numpy(), actions[t])
            i += 1
    assert base.shape[0] == len(actions) + 1  # sanity: ManiSkill stores T+1 observations


def test_no_staging_left_behind(datasets):
    for root in datasets.values():
        assert (root / "meta" / "info.json").is_file() and (root / "norm_stats.json").is_file()
        assert not (root / "images").exists()  # lerobot's PNG staging dir is removed once empty
        assert not [p for p in root.parent.iterdir() if ".tmp" in p.name]


def test_schema_from_row(datasets, tasks):
    ds = _open(datasets["stackcube"], tasks["stackcube"])
    row = ds[3]
    s = schema_from_row(row)
    assert set(s["images"]) == set(s["image_masks"]) == {"base_0_rgb", "left_wrist_0_rgb"}
    assert s["image_masks"] == {"base_0_rgb": True, "left_wrist_0_rgb": True}
    assert torch.equal(s["images"]["left_wrist_0_rgb"], row["wrist_image"])
    assert s["prompt"] == tasks["stackcube"].prompt and isinstance(s["state"], np.ndarray)
    assert not schema_from_row(_open(datasets["pickcube"], tasks["pickcube"])[0])["image_masks"]["left_wrist_0_rgb"]


def test_existing_output_needs_overwrite(demo_files, tasks, tmp_path):
    task = tasks["stackcube"]
    episodes = read_episodes(demo_files["stackcube"], task)
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(out)):
        write_dataset(episodes, out, task, action_horizon=4)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp dir was even created

    report = write_dataset(episodes, out, task, action_horizon=4, overwrite=True)
    assert report.frames == len(episodes[0]) and report.episodes == 1
    assert not (out / "keep.txt").exists() and (out / "meta" / "info.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert len(_open(out, task)) == len(episodes[0])


def test_interrupt_mid_episode_leaves_nothing(demo_files, tasks, tmp_path, monkeypatch):
    """Ctrl-C in the middle of an episode, with PNG writes still queued in lerobot's writer threads: they must be
    finished before the temp dir is removed (a write landing during the removal would leave the temp dir behind)."""
    from lerobot.datasets import image_writer
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    task = tasks["stackcube"]
    episodes = read_episodes(demo_files["stackcube"], task)
    writes = []
    original_write = image_writer.write_image

    def slow_write(*args, **kwargs):  # slow PNG writes: the queue is never empty when the interrupt comes
        time.sleep(0.01)
        original_write(*args, **kwargs)
        writes.append(time.monotonic())

    frames = []
    original_add = LeRobotDataset.add_frame

    def add_frame(self, frame):
        frames.append(frame)
        if len(frames) == 40:
            raise KeyboardInterrupt
        return original_add(self, frame)

    monkeypatch.setattr(image_writer, "write_image", slow_write)
    monkeypatch.setattr(LeRobotDataset, "add_frame", add_frame)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(episodes, tmp_path / "ds", task, action_horizon=4)
    raised, written = time.monotonic(), len(writes)
    time.sleep(0.3)
    assert len(writes) == written, "lerobot's writer threads were still writing PNGs after write_dataset returned"
    assert written == 2 * 39 and max(writes) <= raised  # both cameras of the 39 frames added before the interrupt
    assert list(tmp_path.iterdir()) == []


def test_video_dataset_reads_back_through_the_training_dataset(demo_files, tasks, datasets, tmp_path):
    """use_videos=True: AV1 mp4s written by lerobot, decoded by lerobot (torchcodec) through ChunkedDataset; lossy
    but close to the exact PNG frames, and much smaller."""
    from vla.data.dataset import ChunkedDataset

    task = tasks["pickcube"]
    report = write_dataset(read_episodes(demo_files["pickcube"], task), tmp_path / "vds", task, 10, use_videos=True)
    assert list((tmp_path / "vds" / "videos").rglob("*.mp4")) and not list((tmp_path / "vds" / "data").rglob("*.png"))
    video, png = (ChunkedDataset(root, task.repo_id, 10) for root in (report.root, datasets["pickcube"]))
    assert len(video) == len(png) == report.frames
    for i in (0, len(png) // 2, len(png) - 1):
        a, b = video[i], png[i]
        diff = (a["images"]["base_0_rgb"] - b["images"]["base_0_rgb"]).abs().mean().item() * 255
        assert diff < 8, (i, diff)  # measured ~3.4/255 at 256 px
        np.testing.assert_array_equal(a["state"], b["state"])
        np.testing.assert_array_equal(a["actions"], b["actions"])
    png_bytes = sum(p.stat().st_size for p in (datasets["pickcube"] / "data").rglob("*.parquet"))
    assert report.bytes < png_bytes / 2
    # the start-up frame cache (PyAV, whole files) gives exactly lerobot's per-row decode (torchcodec, by timestamp)
    cached = ChunkedDataset(report.root, task.repo_id, 10, cache_images=True)
    for i in range(len(video)):
        a, b = cached[i], video[i]
        for key in ("base_0_rgb", "left_wrist_0_rgb"):
            assert torch.equal(a["images"][key], (b["images"][key] * 255).round().to(torch.uint8).permute(1, 2, 0)), (i, key)
        assert a["prompt"] == b["prompt"] and a["image_masks"] == b["image_masks"]
        np.testing.assert_array_equal(a["state"], b["state"])


def test_sharded_write_equals_serial_write(demo_files, tasks, datasets, tmp_path):
    """convert.py num_workers>1: shards written by parallel processes and merged by lerobot's aggregate_datasets make
    the same dataset, row for row and pixel for pixel, with the same norm stats."""
    task = tasks["pickcube"]
    episodes = read_episodes(demo_files["pickcube"], task)
    report = write_dataset(episodes, tmp_path / "sharded", task, 10, num_workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded"]  # the shards are gone
    assert (report.episodes, report.frames) == (2, sum(len(e) for e in episodes))
    a, b = _open(report.root, task), _open(datasets["pickcube"], task)
    assert a.meta.info["total_episodes"] == b.meta.info["total_episodes"] == 2
    assert list(a.meta.episodes["length"]) == list(b.meta.episodes["length"])
    assert len(a) == len(b) == report.frames
    for i in range(len(a)):
        x, y = a[i], b[i]
        for key in ("image", "wrist_image", "wrist_mask", "state", "actions", "episode_index", "frame_index", "index"):
            assert torch.equal(x[key], y[key]), (i, key)
        assert x["task"] == y["task"]
    assert (report.root / "norm_stats.json").read_text() == (datasets["pickcube"] / "norm_stats.json").read_text()
