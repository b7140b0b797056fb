"""ManiSkill side of the data pipeline: validated reading of the files ManiSkill's tools wrote (`read_episodes`),
bad input -> one-line DataError and nothing written (through the `convert` job), and live env observations ==
converted dataset frames after the model transform."""

import json

import h5py
import numpy as np
import pytest
import torch

from tests.data.helpers import expected_state, load_task, read_h5, trajectories
from vla.configs import ConvertConfig
from vla.data.convert import convert
from vla.data.maniskill import DataError, read_episodes
from vla.models import load_policy_config

pytestmark = pytest.mark.slow


def test_read_episodes_matches_h5(demo_files, tasks):
    h5 = demo_files["pickcube"]
    episodes = read_episodes(h5, tasks["pickcube"])
    meta = json.loads(h5.with_suffix(".json").read_text())["episodes"]
    assert [e.traj for e in episodes] == trajectories(h5) == [f"traj_{m['episode_id']}" for m in meta]
    assert [e.seed for e in episodes] == [m["episode_seed"] for m in meta]
    for e in episodes:
        actions = read_h5(h5, e.traj, "actions")
        assert len(e) == len(actions) >= 1
        np.testing.assert_array_equal(e.actions, actions)
        np.testing.assert_array_equal(e.state, expected_state(h5, e.traj, tasks["pickcube"], len(e)))
        assert e.state.dtype == e.actions.dtype == np.float32 and e.state.shape == (len(e), 11)
        # qpos, then PickCube's goal position (hidden from the cameras): fixed within an episode, new each episode
        np.testing.assert_array_equal(e.state[:, :8], read_h5(h5, e.traj, "obs/agent/qpos")[: len(e), :8])
        assert np.ptp(e.state[:, 8:], axis=0).max() < 1e-6
        rgb = read_h5(h5, e.traj, "obs/sensor_data/base_camera/rgb")
        np.testing.assert_array_equal(e.images("base_camera"), rgb[:-1])
    assert len({tuple(e.state[0, 8:].round(4)) for e in episodes}) == len(episodes)
    # a directory of .h5 files reads the same
    assert [e.traj for e in read_episodes(h5.parent, tasks["pickcube"])] == [e.traj for e in episodes]


# ----------------------------------------------------------------------------------------------------------------
# bad input


def _truncate(h5, js):
    size = h5.stat().st_size
    with open(h5, "r+b") as f:
        f.truncate(size // 2)


def _delete(key):
    def corrupt(h5, js):
        with h5py.File(h5, "r+") as f:
            del f[key]

    return corrupt


def _nan_action(h5, js):
    with h5py.File(h5, "r+") as f:
        f["traj_1/actions"][5, 2] = np.nan


def _empty_episode(h5, js):
    with h5py.File(h5, "r+") as f:
        del f["traj_0/actions"]
        f.create_dataset("traj_0/actions", shape=(0, 7), dtype=np.float32)


def _edit_json(edit):
    def corrupt(h5, js):
        meta = json.loads(js.read_text())
        edit(meta)
        js.write_text(json.dumps(meta))

    return corrupt


def _control_mode(meta):
    meta["episodes"][1]["control_mode"] = "pd_joint_pos"


def _env_id(meta):
    meta["env_info"]["env_id"] = "StackCube-v1"


def _no_json(h5, js):
    js.unlink()


BAD_INPUTS = {
    # name: (corruption, task overrides, substrings the message must contain besides the file name)
    "truncated": (_truncate, {}, ["HDF5"]),
    "missing_qpos": (_delete("traj_1/obs/agent/qpos"), {}, ["traj_1", "obs/agent/qpos", "missing"]),
    "missing_actions": (_delete("traj_0/actions"), {}, ["traj_0", "actions", "missing"]),
    "nan_action": (_nan_action, {}, ["traj_1", "actions", "nan", "step 5", "dim 2"]),
    "empty_episode": (_empty_episode, {}, ["traj_0", "actions", "0 steps"]),
    "control_mode": (_edit_json(_control_mode), {}, ["traj_1", "control_mode", "pd_ee_delta_pose", "pd_joint_pos"]),
    "env_id": (_edit_json(_env_id), {}, [".json", "env_id", "PickCube-v1", "StackCube-v1"]),
    "missing_json": (_no_json, {}, [".json", "missing"]),
    "image_size": (None, {"image_size": 64}, ["traj_0", "obs/sensor_data/base_camera/rgb", "64, 64, 3)"]),
    "missing_camera": (None, {"cameras": {"base_camera": "base_0_rgb", "hand_camera": "left_wrist_0_rgb"}},
                       ["traj_0", "obs/sensor_data/hand_camera/rgb", "missing"]),
}


def _convert_cfg(task, input_path, output):
    return ConvertConfig(task=task, model=load_policy_config("pi05_tiny"), input=str(input_path), output=str(output))


def _assert_nothing_written(tmp_path, output):
    assert not output.exists()
    # only the input copy remains: no partial dataset, no lerobot temp dir, no `.tmp` leftovers
    assert [p.name for p in tmp_path.iterdir()] == ["in_pickcube"]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_line_data_error(case, copy_demo, tasks, tmp_path):
    corrupt, overrides, expected = BAD_INPUTS[case]
    h5 = copy_demo("pickcube")
    if corrupt is not None:
        corrupt(h5, h5.with_suffix(".json"))
    task = tasks["pickcube"]
    if overrides:
        from dataclasses import replace

        task = replace(task, **overrides)
    output = tmp_path / "ds"
    with pytest.raises(DataError) as err:
        convert(_convert_cfg(task, h5, output))
    msg = str(err.value)
    assert "\n" not in msg
    named = str(h5.with_suffix(".json")) if ".json" in expected else str(h5)
    assert named in msg, msg
    for s in expected:
        assert s in msg, (s, msg)
    _assert_nothing_written(tmp_path, output)


def test_failure_while_writing_leaves_nothing(copy_demo, tasks, tmp_path, monkeypatch):
    """An episode whose image data cannot be decoded passes validation (shapes, dtypes) and fails mid-conversion,
    after the first episode was written: the temp dir must go and the output must not appear."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    h5 = copy_demo("pickcube")
    key = "traj_1/obs/sensor_data/base_camera/rgb"
    with h5py.File(h5, "r") as f:
        ds = f[key]
        assert ds.compression == "gzip"  # ManiSkill's RecordEpisode compresses images
        info = ds.id.get_chunk_info(ds.id.get_num_chunks() // 2)
    with open(h5, "r+b") as f:  # garble one compressed chunk: its zlib stream no longer inflates
        f.seek(info.byte_offset)
        f.write(b"\xff" * min(info.size, 64))

    saved = []
    original = LeRobotDataset.save_episode

    def save_episode(self, *args, **kwargs):
        saved.append(self.root)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LeRobotDataset, "save_episode", save_episode)
    output = tmp_path / "ds"
    with pytest.raises(DataError) as err:
        convert(_convert_cfg(tasks["pickcube"], h5, output))
    msg = str(err.value)
    assert "\n" not in msg and str(h5) in msg and key.split("/", 1)[1] in msg and "traj_1" in msg
    assert len(saved) == 1 and saved[0].name.startswith(".ds.tmp")  # traj_0 had been written to the temp dir
    _assert_nothing_written(tmp_path, output)


# ----------------------------------------------------------------------------------------------------------------
# live env == dataset


def _assert_model_samples_equal(a, b):
    assert a.keys() == b.keys()
    assert a["images"].keys() == b["images"].keys() == a["image_masks"].keys()
    for k in a["images"]:
        assert torch.equal(a["image_masks"][k], b["image_masks"][k]), k
        diff = (a["images"][k].int() - b["images"][k].int()).abs().max()
        assert torch.equal(a["images"][k], b["images"][k]), (k, diff)
    for k in ("tokens", "token_mask", "state"):
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name, steps", [("pickcube", None), ("stackcube", 45)])
def test_live_env_observation_equals_dataset_frame(name, steps, demo_files, datasets, tasks, tokenizer_path):
    """Replay a demo's recorded actions in a fresh env: the observations at a few steps, through the model transform,
    equal the converted dataset's frames exactly. PickCube is replayed to the end (it must succeed); StackCube, with
    its two cameras (6 steps/s on CPU), only for its first `steps` steps."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from vla.data.lerobot import schema_from_row
    from vla.data.maniskill import make_env, observation_from_env
    from vla.data.norm_stats import load_norm_stats
    from vla.data.tokenizer import PromptTokenizer
    from vla.data.transforms import ModelTransform

    task = tasks[name]
    cfg = load_policy_config("pi05_tiny")
    transform = ModelTransform(cfg, load_norm_stats(datasets[name] / "norm_stats.json"),
                               PromptTokenizer(tokenizer_path, cfg.max_token_len, discrete_state=True))
    dataset = LeRobotDataset(task.repo_id, root=datasets[name])
    episodes = read_episodes(demo_files[name], task)
    ep, start = episodes[-1], sum(len(e) for e in episodes[:-1])  # the last episode: its frames start at an offset
    steps = steps or len(ep)
    check = {0, steps // 3, steps - 1}
    env = make_env(task)
    try:
        obs, _ = env.reset(seed=ep.seed, options=dict(reconfigure=True))
        for t in range(steps):
            if t in check:
                live = observation_from_env(obs, task)
                stored = schema_from_row(dataset[start + t])
                assert dataset[start + t]["frame_index"].item() == t
                assert live["image_masks"] == stored["image_masks"] == {
                    "base_0_rgb": True, "left_wrist_0_rgb": name == "stackcube"}
                assert live["images"]["base_0_rgb"].dtype == np.uint8
                assert live["images"]["base_0_rgb"].shape == (task.image_size, task.image_size, 3)
                np.testing.assert_array_equal(live["state"], stored["state"])
                a, b = transform(live), transform(stored)
                _assert_model_samples_equal(a, b)
                assert a["images"]["base_0_rgb"].any()  # a rendered scene, not a stand-in
            obs, _, _, _, info = env.step(ep.actions[t])
        assert bool(info["success"]) == (steps == len(ep))
    finally:
        env.close()


def test_more_demos_than_attempts_fails_before_any_work(tmp_path):
    """num_demos > demos.max_attempts can never succeed: one line at once, not after every seed has been rendered."""
    from vla.data.maniskill import GenerationError, generate_demos

    task = load_task("pickcube", demos={"num_demos": 1, "max_attempts": 3})  # a valid config; the call asks for 5
    with pytest.raises(GenerationError, match=r"max_attempts=3 < num_demos=5") as e:
        generate_demos(task, tmp_path / "out", num_demos=5, progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_plan_only_then_maniskill_replay_gives_the_generated_demo(demo_files, tasks, tmp_path):
    """task.demos.replay=false writes the motion plans alone (no images); ManiSkill's own replay tool, run on them
    elsewhere (tools/remote_gpu/demos.sh), gives the very demo that planning + replay in one go gave."""
    from mani_skill.trajectory import replay_trajectory

    from tests.data.helpers import IMAGE_SIZE
    from vla.data.maniskill import generate_demos

    task = load_task("pickcube", image_size=IMAGE_SIZE, demos={"num_workers": 1, "replay": False})
    report = generate_demos(task, tmp_path, num_demos=1, progress=False)
    assert report.path == tmp_path / "PickCube-v1.planned.h5" and sorted(p.name for p in tmp_path.iterdir()) == [
        "PickCube-v1.planned.h5", "PickCube-v1.planned.json"]
    meta = json.loads(report.path.with_suffix(".json").read_text())
    assert meta["env_info"]["env_kwargs"]["control_mode"] == "pd_joint_pos" and len(meta["episodes"]) == 1
    with h5py.File(report.path) as f:
        assert len(f["traj_0/obs"]) == 0  # nothing rendered yet

    replay_trajectory.main(replay_trajectory.Args(traj_path=str(report.path), sim_backend=task.sim_backend,
                                                  obs_mode="rgb", target_control_mode=task.control_mode,
                                                  save_traj=True, num_envs=1))
    replayed = read_episodes(tmp_path / f"PickCube-v1.rgb.{task.control_mode}.{task.sim_backend}.h5", task)
    generated = read_episodes(demo_files["pickcube"], tasks["pickcube"])[0]
    assert len(replayed) == 1 and replayed[0].seed == generated.seed == 0
    np.testing.assert_array_equal(replayed[0].actions, generated.actions)
    np.testing.assert_array_equal(replayed[0].state, generated.state)
    np.testing.assert_array_equal(replayed[0].images("base_camera"), generated.images("base_camera"))


def test_wristcam_variant_plans_renders_and_observes_the_hand_camera(tmp_path):
    """pickcube_wristcam.yaml is pickcube.yaml plus ManiSkill's panda_wristcam: its plans record that robot (so
    ManiSkill's replay re-creates it), and a live env fills the wrist image from the hand camera, masked in, where
    `pickcube` has zeros masked out."""
    from tests.data.helpers import IMAGE_SIZE
    from vla.data.maniskill import generate_demos, make_env, observation_from_env

    base, wrist = load_task("pickcube"), load_task("pickcube_wristcam")
    changed = {"name", "robot", "cameras", "repo_id", "dataset_root", "norm_stats", "demos"}
    assert {k: v for k, v in vars(base).items() if k not in changed} == {
        k: v for k, v in vars(wrist).items() if k not in changed}
    assert (wrist.robot, wrist.cameras["hand_camera"], wrist.demos.seed) == ("panda_wristcam", "left_wrist_0_rgb", 0)

    task = load_task("pickcube_wristcam", image_size=IMAGE_SIZE, demos={"num_workers": 1, "replay": False})
    report = generate_demos(task, tmp_path, num_demos=1, progress=False)
    meta = json.loads(report.path.with_suffix(".json").read_text())
    assert meta["env_info"]["env_kwargs"]["robot_uids"] == "panda_wristcam"

    env = make_env(task)
    try:
        obs, _ = env.reset(seed=0)
        live = observation_from_env(obs, task)
    finally:
        env.close()
    assert live["image_masks"] == {"base_0_rgb": True, "left_wrist_0_rgb": True}
    hand = live["images"]["left_wrist_0_rgb"]
    assert hand.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and hand.dtype == np.uint8
    assert hand.std() > 5 and not np.array_equal(hand, live["images"]["base_0_rgb"])
    # the red cube fills a good part of the hand camera's view from the start pose; the base camera sees a few pixels
    red = lambda im: ((im[..., 0] > 150) & (im[..., 1] < 60) & (im[..., 2] < 60)).mean()  # noqa: E731
    assert red(hand) > 5 * red(live["images"]["base_0_rgb"]) > 0


def test_tcp_to_goal_pos_is_goal_minus_gripper_in_demos_and_live_env(demo_files):
    """A DERIVED_STATE entry in state_extra: tcp_to_goal_pos = goal_pos - tcp_pose[:3] (ManiSkill's definition), read
    the same from a replayed demo and from a live env, next to the plain entries; pickcube_wristcam_rel is
    pickcube_wristcam with the absolute goal replaced by it."""
    from tests.data.helpers import IMAGE_SIZE
    from vla.data.maniskill import make_env, observation_from_env

    wrist, rel = load_task("pickcube_wristcam"), load_task("pickcube_wristcam_rel")
    assert rel.state_sources == [("agent/qpos", 8), ("extra/tcp_to_goal_pos", 3)]
    changed = {"name", "state_extra", "repo_id", "dataset_root", "norm_stats", "demos"}
    assert {k: v for k, v in vars(wrist).items() if k not in changed} == {
        k: v for k, v in vars(rel).items() if k not in changed}

    # the base-camera PickCube demos of the shared `demo_files` fixture, with the relative goal after the absolute one
    task = load_task("pickcube", image_size=IMAGE_SIZE, state_dim=14, state_extra={"tcp_to_goal_pos": 3})
    assert [k for k, _ in task.state_sources] == ["agent/qpos", "extra/goal_pos", "extra/tcp_to_goal_pos"]
    h5 = demo_files["pickcube"]
    for e in read_episodes(h5, task):
        goal, tcp = (read_h5(h5, e.traj, f"obs/extra/{k}")[: len(e)] for k in ("goal_pos", "tcp_pose"))
        np.testing.assert_array_equal(e.state[:, 8:11], goal)
        np.testing.assert_array_equal(e.state[:, 11:], goal - tcp[:, :3])
        assert np.linalg.norm(e.state[:, 11:], axis=1).min() < 0.025  # a successful demo brings the cube to the goal

    env = make_env(task)
    try:
        obs, _ = env.reset(seed=read_episodes(h5, task)[0].seed)
        live = observation_from_env(obs, task)["state"]
    finally:
        env.close()
    goal, tcp = obs["extra"]["goal_pos"][0].numpy(), obs["extra"]["tcp_pose"][0, :3].numpy()
    assert live.shape == (14,) and live.dtype == np.float32
    np.testing.assert_allclose(live[11:], goal - tcp, rtol=0, atol=1e-7)
    assert np.abs(live[11:]).max() > 0.05  # at reset the gripper is far from the goal
