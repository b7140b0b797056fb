"""eval.py: the plumbing check (demos replayed open loop succeed), batched policy calls, end-to-end CPU evaluation of
a tiny trained checkpoint with its outputs, the multi-task report, and the physx_cuda check."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vla.data.dataset import ChunkedDataset
from vla.data.transforms import collate
from vla.eval.envs import EnvError, check_sim_backend
from vla.eval.policy import Policy
from vla.runs import resolve_checkpoint
from vla.eval.replay import replay_demos
from vla.eval.report import markdown_table, write_report, write_results
from vla.eval.rollout import write_video

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demos_replayed_open_loop_succeed(demo_files, tasks):
    """Generated demos' recorded actions, replayed in eval's env workers reset with the demo's seed, succeed."""
    results = replay_demos(tasks["pickcube"], demo_files["pickcube"], num_envs=2)
    assert len(results) == 2 and len({r["seed"] for r in results}) == 2
    assert sum(r["success_once"] for r in results) / len(results) >= 0.9
    assert all(r["first_success_step"] <= r["demo_steps"] for r in results)
    # the env's own stage flags come back with each chunk: a successful pick grasped the cube on the way
    assert all(r["reached"]["is_grasped"] and r["reached"]["is_obj_placed"] for r in results)
    # and the cube came within PickCube's goal_thresh (0.025 m) of the goal: the recorded cube-goal distance agrees
    assert all(0 <= r["closest_distance"] <= 0.025 for r in results)


@pytest.mark.slow
def test_goal_distance_naming_no_actor_of_the_env_fails_in_one_line(tasks):
    from dataclasses import replace

    from vla.eval.envs import EnvPool

    task = replace(tasks["pickcube"], goal_distance=["cube", "goal_region"])  # PushCube's goal, not PickCube's
    with EnvPool(task, 1) as pool:
        pool.send(0, "reset", (0, False))  # the distance at the start is the first one read
        with pytest.raises(EnvError, match=r"goal_distance \['cube', 'goal_region'\]: expected two actor names of "
                                            r"PickCube-v1, found actors \['cube', 'goal_site', 'table-workspace'\]"):
            pool.recv(0)


@pytest.mark.slow
def test_benchmark_tasks_name_goal_actors_of_their_env():
    """The goal distance eval records each step (the benchmark's "what failed": how close the object came) reads
    two actors each env has, and they start apart (state observations: the actors are those of the RGB env)."""
    import gymnasium as gym

    import mani_skill.envs  # noqa: F401
    from vla.configs import load_group
    from vla.eval.envs import goal_distance

    for name in ("pushcube", "pullcube", "stackcube", "placesphere", "pickcube_wristcam_rel"):
        task = load_group("task", name)
        env = gym.make(task.env_id, obs_mode="state", num_envs=1)
        try:
            env.reset(seed=100000)
            assert 0.01 < goal_distance(env, task) < 1.0, name
        finally:
            env.close()


@pytest.mark.slow
def test_policy_batches_like_single_calls_and_unnormalizes(trained_run, datasets, tasks):
    policy = Policy.load(trained_run, None, None, action_dim=7)
    assert policy.cfg.name == "pi05_tiny"  # from the checkpoint's config.yaml
    frames = ChunkedDataset(datasets["pickcube"], "vla/maniskill_pickcube", policy.cfg.action_horizon)
    obs = [{k: v for k, v in frames[i].items() if not k.startswith("actions")} for i in (0, 30)]
    noise = torch.randn(2, policy.cfg.action_horizon, policy.cfg.action_dim, generator=torch.Generator().manual_seed(0))
    both = policy.act(obs, noise)
    one = np.concatenate([policy.act([o], n[None]) for o, n in zip(obs, noise, strict=True)])
    assert both.shape == (2, policy.cfg.action_horizon, 7)
    np.testing.assert_allclose(both, one, atol=1e-5)
    # raw = unnormalize(normalized model output): quantile inverse with the checkpoint's stats
    normalized = policy.model.sample_actions(collate([policy.transform(o) for o in obs]), noise=noise)
    stats = json.loads((resolve_checkpoint(trained_run) / "norm_stats.json").read_text())["norm_stats"]["actions"]
    q01, q99 = np.array(stats["q01"]), np.array(stats["q99"])
    expected = (normalized[..., :7].numpy() + 1) / 2 * (q99 - q01 + 1e-6) + q01
    np.testing.assert_allclose(both, expected, rtol=1e-5, atol=1e-5)


def test_run_dir_resolves_to_its_newest_checkpoint_with_weights(tmp_path):
    """Weights-only checkpoints (tools/remote_gpu/pack_checkpoint.py unpack) count; a numbered dir without weights
    does not."""
    for step, name in ((3, "ema.safetensors"), (12, "model.safetensors"), (7, "ema.safetensors")):
        (tmp_path / "checkpoints" / str(step)).mkdir(parents=True)
        (tmp_path / "checkpoints" / str(step) / name).write_bytes(b"")
    (tmp_path / "checkpoints" / "20").mkdir()  # no weights, no train state
    assert resolve_checkpoint(tmp_path) == tmp_path / "checkpoints" / "12"
    assert resolve_checkpoint(tmp_path / "checkpoints" / "3") == tmp_path / "checkpoints" / "3"
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        resolve_checkpoint(tmp_path / "nope")


@pytest.mark.slow
def test_eval_cli_end_to_end(trained_run, tmp_path):
    """A tiny trained checkpoint evaluated on CPU: 3 seeded episodes on 2 env workers, a video, every output file."""
    out = tmp_path / "eval"
    cmd = [sys.executable, str(REPO / "eval.py"), "task=pickcube", "task.image_size=128", f"checkpoint={trained_run}",
           "eval.num_episodes=3", "num_envs=2", "eval.max_episode_steps=12", "eval.replan_steps=4", "videos=1",
           "progress=false",
           f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    episodes = json.loads((out / "episodes.json").read_text())
    assert [e["seed"] for e in episodes] == [100000, 100001, 100002]  # distinct, and none a demo seed
    assert all(e["steps"] == 12 for e in episodes)  # terminations ignored: every episode runs its full length
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 3 and summary["control_mode"] == "pd_ee_delta_pose"
    assert summary["sim_backend"] == "physx_cpu" and summary["replan_steps"] == 4
    assert summary["success_once"] == sum(e["success_once"] for e in episodes) / 3
    assert set(summary["reached_once"]) == {"is_grasped", "is_obj_placed", "is_robot_static"}  # PickCube's flags
    assert summary["reached_once"]["is_grasped"] == sum(e["reached"]["is_grasped"] for e in episodes) / 3
    # PickCube's cube-goal distance: closest over the episode <= the one after its last step, summarized by quartiles
    assert all(0 < e["closest_distance"] <= e["final_distance"] for e in episodes)
    assert all(e["initial_distance"] > 0 for e in episodes)  # at reset, before any step (not part of the closest)
    assert len({e["initial_distance"] for e in episodes}) == 3  # a new scene (cube and goal) for every seed
    assert summary["closest_distance"]["median"] == float(np.median([e["closest_distance"] for e in episodes]))
    assert summary["initial_distance"]["median"] == float(np.median([e["initial_distance"] for e in episodes]))
    assert (out / "success.png").stat().st_size > 0 and "| pickcube | 3 |" in (out / "summary.md").read_text()
    videos = list((out / "videos").glob("episode000_seed100000_*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0


def test_video_keeps_every_frame_and_odd_sizes(tmp_path):
    """Episode videos are written with PyAV directly, whichever imageio plugin is installed. Odd frame sizes are padded,
    not rejected, and no partial file is left behind."""
    import av

    frames = [np.full((37, 51, 3), 20 * i, np.uint8) for i in range(10)]
    path = tmp_path / "videos" / "episode000.mp4"
    write_video(frames, path, fps=20)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 10 and decoded[0].shape == (38, 52, 3)
    assert [round(float(f.mean()) / 20) for f in decoded] == list(range(10))  # the frames, in order
    assert sorted(p.name for p in path.parent.iterdir()) == ["episode000.mp4"]


@pytest.mark.slow
def test_eval_cli_bad_checkpoint_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "eval.py"), f"checkpoint={tmp_path / 'nope'}",
                           f"hydra.run.dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"eval.py: error: checkpoint not found: {tmp_path / 'nope'}"


def test_report_table_and_plot_over_tasks(tmp_path):
    def episodes(successes):
        return [{"index": i, "seed": i, "success_once": s, "success_at_end": s and i % 2 == 0, "steps": 10,
                 "first_success_step": 3 if s else None, "wall_s": 1.0} for i, s in enumerate(successes)]

    info = {"control_mode": "pd_ee_delta_pose", "sim_backend": "physx_cpu", "max_episode_steps": 10,
            "replan_steps": 5, "checkpoint": "ckpt"}
    write_results(tmp_path / "a", episodes([True, False, True, True]), dict(info, task="pushcube"))
    write_results(tmp_path / "b", episodes([False, False]), dict(info, task="pickcube"))
    table = write_report([tmp_path], tmp_path / "report")
    assert "| pushcube | 4 | 75.0% (3/4) | 50.0% (2/4) |" in table
    assert "| pickcube | 2 | 0.0% (0/2) | 0.0% (0/2) |" in table
    assert "Mean success_once over 2 tasks: 37.5%" in table
    assert (tmp_path / "report" / "report.png").stat().st_size > 0
    assert json.loads((tmp_path / "report" / "report.json").read_text())[0]["episodes"] in (2, 4)
    assert markdown_table([json.loads((tmp_path / "a" / "summary.json").read_text())]).count("\n") == 3


def test_summary_counts_how_far_episodes_got():
    """reached_once: per env flag, the share of episodes in which it held at some step (an episode without the flag
    counts as not reached), so that 0% success still says whether the cube was ever grasped."""
    from vla.eval.report import summarize

    reached = [{"is_grasped": True, "is_obj_placed": False}, {"is_grasped": True, "is_obj_placed": True},
               {"is_grasped": False}, {}]
    episodes = [{"seed": i, "success_once": False, "success_at_end": False, "steps": 5, "wall_s": 1.0, "reached": r}
                for i, r in enumerate(reached)]
    summary = summarize(episodes, {"task": "pickcube"})
    assert summary["reached_once"] == {"is_grasped": 0.5, "is_obj_placed": 0.25}
    assert summarize(episodes[3:], {})["reached_once"] == {}
    assert summary["closest_distance"] is None and summary["initial_distance"] is None  # no goal_distance recorded
    for e, d in zip(episodes, (0.01, 0.04, 0.02, 0.03), strict=True):
        e["closest_distance"], e["initial_distance"] = d, 0.2
    summary = summarize(episodes, {})
    assert summary["closest_distance"] == {"p25": 0.0175, "median": 0.025, "p75": 0.0325, "min": 0.01}
    assert summary["initial_distance"] == {"p25": 0.2, "median": 0.2, "p75": 0.2, "min": 0.2}


def test_gpu_physics_refused_offline_in_one_line(tasks, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no PhysX GPU library downloaded there
    task = dataclasses.replace(tasks["pickcube"], sim_backend="physx_cuda")  # a copy: the fixture is shared
    with pytest.raises(EnvError, match="physx_cuda needs SAPIEN's PhysX GPU library .* offline"):
        check_sim_backend(task)


@pytest.mark.slow
def test_eval_multirun_writes_one_result_per_task_and_the_report(datasets, tmp_path):
    """`-m task=a,b`: one result directory per task, and the sweep's combined report (Hydra callback). No checkpoint:
    the from-scratch tiny policy, with each task's own norm stats (data/maniskill_<task>, relative to the cwd)."""
    (tmp_path / "data").mkdir()
    for name, path in datasets.items():
        (tmp_path / "data" / f"maniskill_{name}").symlink_to(path)
    cmd = [sys.executable, str(REPO / "eval.py"), "-m", "task=pickcube,stackcube", "task.image_size=128",
           "eval.num_episodes=1", "num_envs=1", "eval.max_episode_steps=3", "eval.replan_steps=3", "progress=false",
           f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for i, task in enumerate(["pickcube", "stackcube"]):
        assert json.loads((tmp_path / "sweep" / f"{i}-{task}" / "summary.json").read_text())["task"] == task
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "| pickcube | 1 |" in report and "| stackcube | 1 |" in report
    assert (tmp_path / "sweep" / "report.png").is_file()
