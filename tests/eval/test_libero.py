"""LIBERO in eval.py (vla.eval.libero_env, libero_rollout, libero_report), against openpi's protocol
(examples/libero/main.py) computed independently here: the suites' configs, the installed suites' tasks, the
observation and action transforms on a recorded frame, initial states and wait steps in the env workers, a scripted
policy reaching LIBERO's own success flag, and an openpi-layout pi05_libero checkpoint (tiny, synthetic, written with
the repository's exporters) evaluated end to end by eval.py. Tests that need the `libero` extra skip, naming what is
missing, where it is not installed."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vla.configs import ConfigError, compose, load_group, to_object
from vla.eval.libero_env import DUMMY_ACTION, missing_extra

REPO = Path(__file__).resolve().parents[2]
MISSING = missing_extra()
needs_libero = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
# openpi examples/libero/main.py: max_steps per suite (the wait steps come on top), 10 wait steps, seed 7, replan 5
OPENPI_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520,
                    "libero_90": 400}
ASSET_ID = "physical-intelligence/libero"  # openpi's pi05_libero: assets/<repo_id>/norm_stats.json


def small(suite: str, size: int = 64):
    """A suite's task config rendering at `size` px: every protocol setting but the render cost."""
    return load_group("task", suite, [f"task.image_size={size}"])


# ------------------------------------------------------------------------------------------------- configs (no LIBERO)


@pytest.mark.parametrize("suite", list(OPENPI_MAX_STEPS))
def test_suite_configs_carry_openpis_protocol(suite):
    task = load_group("task", suite)
    assert (task.backend, task.env_id, task.prompt) == ("libero", suite, None)
    assert task.max_episode_steps == OPENPI_MAX_STEPS[suite]
    assert (task.libero.num_steps_wait, task.libero.seed, task.libero.replan_steps) == (10, 7, 5)
    assert (task.image_size, task.state_dim, task.action_dim) == (256, 8, 7)
    assert task.libero.cameras == {"agentview": "base_0_rgb", "robot0_eye_in_hand": "left_wrist_0_rgb"}
    assert to_object(compose("eval", [f"task={suite}"])).eval.num_episodes == 50  # per task


def test_maniskill_tasks_keep_their_backend_and_need_a_prompt():
    assert load_group("task", "pickcube").backend == "maniskill"
    with pytest.raises(ConfigError, match=r"task.prompt=null: only LIBERO tasks"):
        load_group("task", "pickcube", ["task.prompt=null"])
    with pytest.raises(ConfigError, match=r"task.backend='gazebo': expected one of maniskill, libero"):
        load_group("task", "pickcube", ["task.backend=gazebo"])


def test_pi05_libero_is_openpis_config():
    """openpi src/openpi/training/config.py: Pi0Config(pi05=True, action_horizon=10, discrete_state_input=False)."""
    libero, pi05 = load_group("model", "pi05_libero"), load_group("model", "pi05")
    assert (libero.pi05, libero.action_horizon, libero.discrete_state_input, libero.max_token_len) == (True, 10, False,
                                                                                                        200)
    assert (libero.vlm, libero.expert, libero.vision, libero.action_dim) == (pi05.vlm, pi05.expert, pi05.vision, 32)


def _stats(dims: int, rng: np.random.Generator) -> dict:
    q01 = rng.uniform(-1, 0, dims)
    return {"mean": rng.normal(size=dims).tolist(), "std": rng.uniform(0.1, 1, dims).tolist(), "q01": q01.tolist(),
            "q99": (q01 + rng.uniform(0.2, 2, dims)).tolist()}


def write_openpi_stats(folder: Path, seed: int = 0) -> Path:
    """norm_stats.json as openpi writes it (src/openpi/shared/normalize.py): LIBERO's 8-D state, 7-D actions."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "norm_stats.json"
    path.write_text(json.dumps({"norm_stats": {"state": _stats(8, rng), "actions": _stats(7, rng)}}))
    return path


def test_openpi_checkpoint_norm_stats_are_found_by_asset_id(tmp_path):
    from vla.models.weights import openpi_norm_stats

    assert openpi_norm_stats(tmp_path, ASSET_ID) is None  # no assets/
    libero = write_openpi_stats(tmp_path / "assets" / ASSET_ID)
    trossen = write_openpi_stats(tmp_path / "assets" / "trossen")
    assert openpi_norm_stats(tmp_path, ASSET_ID) == libero and openpi_norm_stats(tmp_path, "trossen") == trossen
    # another dataset's stats (a base checkpoint's) are never taken for the task's: the task's own file is used
    assert openpi_norm_stats(tmp_path, "vla/maniskill_pushcube") is None and openpi_norm_stats(tmp_path, None) is None


def test_suite_table_sits_beside_the_published_numbers():
    from vla.eval.benchmark import BenchmarkError, wilson_interval
    from vla.eval.libero_report import suite_markdown, suite_rows

    def summary(suite, k, n):
        return {"env_id": suite, "successes_once": k, "episodes": n, "model": "pi05_libero", "checkpoint": "ckpt",
                "per_task": [{"task_id": 0, "prompt": "do it", "successes": k, "episodes": n, "rate": k / n}]}

    runs = [summary("libero_spatial", 490, 500), summary("libero_object", 480, 500), summary("libero_goal", 470, 500)]
    rows = {r["suite"]: r for r in suite_rows(runs)}
    # openpi examples/libero/README.md, "π0.5 @ 30k (finetuned)"
    assert {s: r["published"]["openpi π0.5"] for s, r in rows.items()} == {
        "libero_spatial": 98.8, "libero_object": 98.2, "libero_goal": 98.0, "libero_10": 92.4}
    low, high = wilson_interval(490, 500)
    assert rows["libero_spatial"]["ours"] == 98.0 and rows["libero_spatial"]["low"] == pytest.approx(100 * low)
    assert "ours" not in rows["libero_10"]
    text = suite_markdown(runs)
    assert "| libero_10 | not evaluated |" in text and "average" not in text  # only over all four suites
    text = suite_markdown(runs + [summary("libero_10", 460, 500)])
    assert f"| average of the 4 | {(98 + 96 + 94 + 92) / 4:.1f} | | | {(98.8 + 98.2 + 98 + 92.4) / 4:.1f} |" in text
    with pytest.raises(BenchmarkError, match="libero_goal was evaluated more than once"):
        suite_rows(runs + [summary("libero_goal", 1, 2)])


def test_a_missing_extra_is_named_in_one_line_with_the_install_command():
    from vla.eval.libero_env import INSTALL_HINT, missing_extra

    reason = missing_extra(("no_such_simulator",), ["no-such-assets-9"])
    assert reason == f"LIBERO is not installed (missing no_such_simulator, no-such-assets-9): {INSTALL_HINT}"
    assert "\n" not in reason and "pip install -e '.[libero]'" in reason


def test_assets_link_is_made_kept_or_repaired(tmp_path):
    from vla.eval.libero_env import link_assets

    package, assets, elsewhere = tmp_path / "libero", tmp_path / "wheel_assets", tmp_path / "moved"
    package.mkdir(), assets.mkdir()
    link = link_assets(package, assets)
    assert link == package / "assets" and link.is_symlink() and link.resolve() == assets
    assert link_assets(package, tmp_path / "other") == link and link.resolve() == assets  # a working one is kept
    link.unlink()
    link.symlink_to(elsewhere)  # dangling: the assets moved
    assert link_assets(package, assets).resolve() == assets
    assert sorted(p.name for p in package.iterdir()) == ["assets"]  # no temp link left behind


@needs_libero
def test_prepare_writes_liberos_config_without_touching_a_users_own(tmp_path, monkeypatch):
    import yaml

    from vla.eval.libero_env import CONFIG_KEYS, installed_paths, prepare

    monkeypatch.setenv("LIBERO_CONFIG_PATH", "")  # unset for prepare(), and restored afterwards
    monkeypatch.setenv("VLA_CACHE", str(tmp_path / "cache"))
    config = prepare()
    package, assets = installed_paths()
    written = yaml.safe_load(config.read_text())
    assert config == tmp_path / "cache" / "libero" / "config.yaml" and list(written) == sorted(CONFIG_KEYS)
    assert Path(written["bddl_files"]) == package / "bddl_files" and Path(written["assets"]).resolve() == assets
    assert (Path(written["init_states"]) / "libero_spatial").is_dir()
    assert os.environ["LIBERO_CONFIG_PATH"] == str(config.parent) and os.environ["MUJOCO_GL"]
    users = tmp_path / "mine"
    users.mkdir()
    (users / "config.yaml").write_text("datasets: /my/datasets\n")
    monkeypatch.setenv("LIBERO_CONFIG_PATH", str(users))
    assert prepare() == users / "config.yaml" and (users / "config.yaml").read_text() == "datasets: /my/datasets\n"


# ---------------------------------------------------------------------------- an openpi-layout pi05_libero checkpoint


def libero_model_cfg():
    """pi05_libero's protocol (Pi0.5, 10-action chunks, no state in the prompt) at pi05_tiny's size."""
    from vla.models import load_policy_config

    return load_policy_config("pi05_tiny", discrete_state_input=False)


@pytest.fixture(scope="module")
def openpi_checkpoint(tmp_path_factory) -> Path:
    """The directory layout of openpi's pi05_libero checkpoint: params/ (Orbax, openpi's JAX parameter tree) and
    assets/physical-intelligence/libero/norm_stats.json, with tiny random weights."""
    from vla.models import build_policy
    from vla.models.weights import export_checkpoint, save_openpi

    root = tmp_path_factory.mktemp("openpi")
    cfg = libero_model_cfg()
    torch.manual_seed(0)
    policy = build_policy(cfg)
    with torch.no_grad():
        for p in policy.parameters():
            p.normal_(0.0, 0.1)
    (root / "source").mkdir()
    save_openpi(policy.state_dict(), root / "source" / "model.safetensors")
    checkpoint = export_checkpoint(root / "source", "jax", root / "pi05_libero", cfg)
    write_openpi_stats(checkpoint / "assets" / ASSET_ID)
    return checkpoint


def test_action_output_is_the_first_7_dims_unnormalized_with_the_checkpoints_stats(openpi_checkpoint):
    """openpi's output transforms for pi05_libero: Unnormalize (quantiles, as stored in the checkpoint's assets), then
    LiberoOutputs' actions[..., :7]; written out here from the stored file."""
    from vla.data.transforms import collate
    from vla.eval.policy import Policy

    assert sorted(p.name for p in openpi_checkpoint.iterdir()) == ["assets", "params"]
    policy = Policy.load(openpi_checkpoint, libero_model_cfg(), "no/such/norm_stats.json", 7, asset_id=ASSET_ID)
    stats = json.loads((openpi_checkpoint / "assets" / ASSET_ID / "norm_stats.json").read_text())["norm_stats"]
    rng = np.random.default_rng(1)
    cameras = ("base_0_rgb", "left_wrist_0_rgb")
    obs = {"images": {k: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for k in cameras},
           "image_masks": {k: True for k in cameras}, "state": rng.normal(size=8).astype(np.float32),
           "prompt": "put the bowl on the plate"}
    noise = torch.randn(1, 10, 32, generator=torch.Generator().manual_seed(0))
    actions = policy.act([obs], noise)
    normalized = policy.model.sample_actions(collate([policy.transform(obs)]), noise=noise).numpy()
    q01, q99 = np.array(stats["actions"]["q01"]), np.array(stats["actions"]["q99"])
    expected = (normalized[..., :7] + 1.0) / 2.0 * (q99 - q01 + 1e-6) + q01
    assert actions.shape == (1, 10, 7)
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------ the installed suites


@needs_libero
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_suite_builds_from_the_installed_package():
    """Task 0 of each suite, and a task of each other scene family of libero_10 (task 0: living room; 2: kitchen, with
    the stove's articulation; 5: study): the env builds, resets to its initial state 0 and renders; each task has the
    50 initial states openpi's 50 trials use."""
    from vla.eval.libero_env import make_env, observation_from_libero, suite_tasks

    builds = [(suite, 0) for suite in OPENPI_MAX_STEPS] + [("libero_10", 2), ("libero_10", 5)]
    languages = {suite: suite_tasks(small(suite)) for suite in OPENPI_MAX_STEPS}
    assert {s: len(v) for s, v in languages.items()} == {s: 90 if s == "libero_90" else 10 for s in OPENPI_MAX_STEPS}
    for suite, task_id in builds:
        task = small(suite)
        env, language, init_states = make_env(task, task_id)
        try:
            assert language == languages[suite][task_id] and language
            assert init_states.ndim == 2 and len(init_states) == 50, (suite, task_id, init_states.shape)
            env.reset()
            schema = observation_from_libero(env.set_init_state(init_states[0]), task, language)
            assert {k: v.shape for k, v in schema["images"].items()} == {k: (64, 64, 3) for k in
                                                                        ("base_0_rgb", "left_wrist_0_rgb")}
            assert schema["images"]["base_0_rgb"].std() > 5, (suite, task_id)  # a rendered scene, not a blank
            assert schema["state"].shape == (8,) and np.isfinite(schema["state"]).all()
        finally:
            env.close()


def axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """robosuite's quat2axisangle, written out: angle 2 acos(w) about the axis xyz / sin(angle / 2)."""
    w = min(max(float(quat_xyzw[3]), -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    return np.zeros(3) if math.isclose(den, 0.0) else np.asarray(quat_xyzw[:3]) * 2.0 * math.acos(w) / den


@needs_libero
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_observation_transform_equals_openpis_on_a_recorded_frame(openpi_checkpoint):
    """A frame of libero_spatial task 0 rendered at 256 after the 10 wait steps, through our LIBERO observation and
    ModelTransform, against openpi's client (image_tools, rotation, state) + LiberoInputs + Normalize (quantiles) +
    tokenizer + padding, written out here."""
    import sentencepiece
    from openpi_client import image_tools

    from vla.data.transforms import ModelTransform
    from vla.eval.libero_env import make_env, observation_from_libero

    task = load_group("task", "libero_spatial")
    env, language, init_states = make_env(task, 0)
    try:
        env.reset()
        obs = env.set_init_state(init_states[0])
        for _ in range(10):
            obs, _, _, _ = env.step(DUMMY_ACTION)
    finally:
        env.close()
    raw = {k: np.array(v) for k, v in obs.items()}
    stats_path = openpi_checkpoint / "assets" / ASSET_ID / "norm_stats.json"
    transform = ModelTransform.load(libero_model_cfg(), stats_path)
    sample = transform(observation_from_libero(obs, task, language))

    for key, camera in (("base_0_rgb", "agentview_image"), ("left_wrist_0_rgb", "robot0_eye_in_hand_image")):
        turned = np.ascontiguousarray(raw[camera][::-1, ::-1])
        expected = image_tools.convert_to_uint8(image_tools.resize_with_pad(turned, 224, 224))
        assert not np.array_equal(expected, image_tools.resize_with_pad(raw[camera], 224, 224))  # the turn matters
        np.testing.assert_array_equal(sample["images"][key].numpy().transpose(1, 2, 0), expected)
    assert set(sample["images"]) == {"base_0_rgb", "left_wrist_0_rgb"}  # right wrist: absent (openpi: zeros, False)

    state = np.concatenate([raw["robot0_eef_pos"], axis_angle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]])
    s = json.loads(stats_path.read_text())["norm_stats"]["state"]
    q01, q99 = np.array(s["q01"]), np.array(s["q99"])
    normalized = (state - q01) / (q99 - q01 + 1e-6) * 2.0 - 1.0
    np.testing.assert_allclose(sample["state"][:8].numpy(), normalized, rtol=1e-5, atol=1e-5)
    assert not sample["state"][8:].any() and sample["state"].shape == (32,)

    sp = sentencepiece.SentencePieceProcessor(model_file=str(transform.tokenizer.model_path))
    ids = sp.encode(language.strip().replace("_", " ").replace("\n", " "), add_bos=True) + sp.encode("\n")
    assert sample["tokens"][:len(ids)].tolist() == ids and sample["token_mask"].sum() == len(ids)  # no state


@needs_libero
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_episode_j_starts_from_initial_state_j_after_the_wait_steps():
    """A worker's episode 3 of libero_spatial task 0 shows what LIBERO shows after env.seed(7), reset,
    set_init_state(init_states[3]) and 10 no-op steps; not initial state 0, and not the frame before the wait."""
    from vla.eval.libero_env import env_pool, make_env, observation_from_libero

    task = small("libero_spatial")
    with env_pool(task, 1) as pool:
        pool.send(0, "reset", (0, 3, False))
        schema, frames = pool.recv(0)
    assert frames is None
    env, language, init_states = make_env(task, 0)

    def reference(episode: int, waits: int) -> dict:
        env.seed(7)  # as built: the worker's first reset follows env.seed(7)
        env.reset()
        obs = env.set_init_state(init_states[episode])
        for _ in range(waits):
            obs, _, _, _ = env.step([0.0] * 6 + [-1.0])
        return observation_from_libero(obs, task, language)

    try:
        expected, other_state, no_wait = reference(3, 10), reference(0, 10), reference(3, 0)
    finally:
        env.close()
    assert schema["prompt"] == language
    for key in ("base_0_rgb", "left_wrist_0_rgb"):
        np.testing.assert_array_equal(schema["images"][key], expected["images"][key])
    np.testing.assert_array_equal(schema["state"], expected["state"])
    assert not np.array_equal(schema["images"]["base_0_rgb"], other_state["images"]["base_0_rgb"])
    assert not np.array_equal(schema["state"], no_wait["state"])


class WaypointPolicy:
    """A hand-made pick-and-place for libero_goal task 8, "put the bowl on the plate", from its initial state 0: end
    effector waypoints (world frame, m) around where the bowl and the plate rest after the wait (read once from that
    scene). Each call heads for the current waypoint with a proportional step (the state's first 3 dims are the eef
    position) and moves on once it has been within 1 cm for `hold` calls. The fingers close along y: the bowl is
    gripped by its rim on the +y side."""

    BOWL, PLATE, RIM = np.array([-0.098, -0.009, 0.898]), np.array([0.062, -0.009, 0.903]), np.array([0, 0.045, 0])
    OPEN, CLOSED = -1.0, 1.0

    def __init__(self, idle: bool = False):
        up = np.array([0, 0, 0.15])
        b, p = self.BOWL + self.RIM, self.PLATE + self.RIM
        self.waypoints = [(b + up, self.OPEN, 0), (b + [0, 0, 0.02], self.OPEN, 5), (b + [0, 0, 0.02], self.CLOSED, 15),
                          (b + up, self.CLOSED, 0), (p + up, self.CLOSED, 0), (p + [0, 0, 0.06], self.CLOSED, 3),
                          (p + [0, 0, 0.06], self.OPEN, 15), (p + up, self.OPEN, 10)]
        self.cfg = SimpleNamespace(action_horizon=10, action_dim=7)
        self.idle, self.calls, self.current, self.held = idle, 0, 0, 0

    def act(self, observations: list[dict], noise: torch.Tensor) -> np.ndarray:
        (obs,) = observations
        self.calls += 1
        action = np.array(DUMMY_ACTION)
        if not self.idle:
            eef = obs["state"][:3].astype(np.float64)
            target, gripper, hold = self.waypoints[self.current]
            if np.linalg.norm(target - eef) < 0.01:
                self.held += 1
                if self.held > hold and self.current < len(self.waypoints) - 1:
                    self.current, self.held = self.current + 1, 0
            target, gripper, _ = self.waypoints[self.current]
            action[:3], action[6] = np.clip((target - eef) * 10.0, -1.0, 1.0), gripper
        return np.repeat(action[None, None], self.cfg.action_horizon, axis=1)


@needs_libero
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_scripted_policy_reaches_liberos_success_flag():
    """Through the evaluation's own episode loop: the scripted pick-and-place ends its episode at LIBERO's done flag
    (one policy call per executed action with replan_steps=1); a policy that holds still does not succeed."""
    from vla.eval.libero_rollout import run_libero_episodes

    task = load_group("task", "libero_goal", ["task.image_size=64", "task.libero.task_ids=[8]"])
    scripted = WaypointPolicy()
    (episode,) = run_libero_episodes(scripted, task, 1, 0, 1, replan_steps=1, max_episode_steps=200, progress=False)
    assert (episode.task_id, episode.index, episode.prompt) == (8, 0, "put the bowl on the plate")
    assert episode.success and episode.steps == scripted.calls < 200
    assert scripted.current >= 5  # it got there by carrying the bowl over the plate
    idle = WaypointPolicy(idle=True)
    (episode,) = run_libero_episodes(idle, task, 1, 0, 1, replan_steps=5, max_episode_steps=12, progress=False)
    assert not episode.success and episode.steps == 12 and idle.calls == 3  # 5 + 5 + 2 actions


@needs_libero
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_eval_runs_an_openpi_pi05_libero_checkpoint_end_to_end(openpi_checkpoint, tmp_path):
    """eval.py with the openpi-layout checkpoint: its params/ and its assets' norm stats, one libero_spatial episode,
    the results files and the suite table."""
    out = tmp_path / "eval"
    cmd = [sys.executable, "eval.py", f"checkpoint={openpi_checkpoint}", "task=libero_spatial", "model=pi05_tiny",
           "model.discrete_state_input=false", "task.libero.task_ids=[0]", "eval.num_episodes=1",
           "eval.max_episode_steps=10", "task.image_size=64", "num_envs=1", "videos=1", "progress=false",
           f"hydra.run.dir={out}"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=360, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["backend"], summary["env_id"], summary["episodes"]) == ("libero", "libero_spatial", 1)
    assert (summary["replan_steps"], summary["action_horizon"], summary["max_episode_steps"]) == (5, 10, 10)
    assert summary["checkpoint"] == str(openpi_checkpoint) and summary["model"] == "pi05_tiny"
    (episode,) = json.loads((out / "episodes.json").read_text())
    assert episode["task_id"] == 0 and episode["index"] == 0 and episode["steps"] == 10  # the wait not counted
    assert episode["prompt"] == summary["per_task"][0]["prompt"] == "pick up the black bowl between the plate and " \
                                                                     "the ramekin and place it on the plate"
    assert f"assets/{ASSET_ID}/norm_stats.json" in (out / "eval.log").read_text()  # the checkpoint's own stats
    assert "| libero_spatial | 0.0 |" in (out / "libero.md").read_text() and "98.8" in (out / "libero.md").read_text()
    assert [p.name for p in (out / "videos").iterdir()] == ["task00_episode00_failure.mp4"]
