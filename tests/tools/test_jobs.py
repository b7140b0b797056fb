"""tools/remote_gpu/jobs.py: the Python steps of the remote-GPU-host scripts (run sizing, reports, newest checkpoint,
evaluation summaries, a task's env)."""

import json
import time

import pytest

from tools.remote_gpu import jobs


def write_jsonl(path, records, tail=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_steps_for_budget():
    # a 100-step probe at 0.5 s/step that took 80 s in all: 30 s of start-up; (420 - 30) / 0.5 = 780 -> 700
    assert jobs.steps_for_budget(0.5, 80.0, 100, 420.0, max_steps=20000, multiple=100) == (700, 30.0)
    assert jobs.steps_for_budget(0.5, 80.0, 100, 420.0, max_steps=500, multiple=100)[0] == 500
    assert jobs.steps_for_budget(0.5, 80.0, 100, 20.0, max_steps=20000, multiple=100)[0] == 100  # never below one
    assert jobs.steps_for_budget(0.5, 80.0, 100, 420.0, max_steps=20000, multiple=50)[0] == 750


def test_size_run_cli_uses_the_probes_newest_step_time(tmp_path, capsys):
    metrics = tmp_path / "probe" / "metrics.jsonl"
    write_jsonl(metrics, [{"step": 50, "perf/step_time_s": 2.0}, {"step": 100, "perf/step_time_s": 0.5},
                          {"step": 100, "eval/loss": 1.0}], tail='{"step": 1')  # a record still being written
    jobs.main(["size-run", str(metrics), "--started", str(time.time() - 80), "--probe-steps", "100",
               "--budget", "420", "--max-steps", "20000"])
    out = capsys.readouterr()
    assert out.out.strip() == "700"
    assert "500.0 ms/step" in out.err


def test_size_run_bad_probe(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        jobs.probe_step_time(tmp_path / "missing.jsonl")
    write_jsonl(tmp_path / "m.jsonl", [{"step": 0, "train/loss": 1.0}])
    with pytest.raises(SystemExit, match="no record with perf/step_time_s"):
        jobs.probe_step_time(tmp_path / "m.jsonl")


def make_checkpoint(run, name, weights):
    path = run / "checkpoints" / name
    path.mkdir(parents=True)
    if weights:
        (path / weights).write_bytes(b"")
    return path


def test_newest_checkpoint_is_the_highest_step_with_weights(tmp_path):
    run = tmp_path / "a"
    make_checkpoint(run, "500", "model.safetensors")
    newest = make_checkpoint(run, "1000", "ema.safetensors")  # 1000 > 999 by number, not by name
    make_checkpoint(run, "999", "model.safetensors")
    make_checkpoint(run, "1500", None)  # no weights: not a checkpoint pack.sh can send
    make_checkpoint(run, ".tmp-2000", "model.safetensors")  # a save in progress
    assert jobs.newest_checkpoint(run) == newest


def test_newest_checkpoint_without_one(tmp_path):
    with pytest.raises(SystemExit, match="no such run directory"):
        jobs.newest_checkpoint(tmp_path / "missing")
    make_checkpoint(tmp_path / "a", "100", None)
    with pytest.raises(SystemExit, match="no numbered checkpoint with ema.safetensors or model.safetensors"):
        jobs.newest_checkpoint(tmp_path / "a")


def test_run_report(tmp_path):
    write_jsonl(tmp_path / "a" / "metrics.jsonl", [{"step": 50, "train/loss": 0.5},
                                                   {"step": 100, "train/loss": 0.123456, "train/lr": 3e-4,
                                                    "perf/step_time_s": 0.25, "perf/mfu": 0.4}])
    assert jobs.run_report(tmp_path, "a", "running") == (
        "a running {'step': 100, 'train/loss': 0.1235, 'train/lr': 0.0003, 'perf/step_time_s': 0.25}")
    assert jobs.run_report(tmp_path, "b", "exited") == "b exited {}"


def test_eval_summaries(tmp_path, capsys):
    for name, success in (("b_100000", 0.5), ("a_100000", 0.25)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(
            {"episodes": 4, "success_once": success, "success_at_end": success, "seed": 100000}))
    (tmp_path / "c_100000").mkdir()  # still running: no summary yet
    jobs.main(["summaries", str(tmp_path)])
    assert capsys.readouterr().out.splitlines() == [
        f"{tmp_path}/a_100000/summary.json: {{'episodes': 4, 'success_once': 0.25, 'success_at_end': 0.25}}",
        f"{tmp_path}/b_100000/summary.json: {{'episodes': 4, 'success_once': 0.5, 'success_at_end': 0.5}}",
    ]


def test_recipe(capsys):
    jobs.main(["recipe", "pushcube_pi05"])
    root, env_id, control, backend = capsys.readouterr().out.split()
    assert (root, env_id) == ("data/pushcube_128px_1000demos", "PushCube-v1")
    assert (control, backend) == ("pd_ee_delta_pose", "physx_cpu")  # what ManiSkill's replay names its output by
    with pytest.raises(SystemExit, match="recipe: .*nope"):
        jobs.main(["recipe", "nope"])
