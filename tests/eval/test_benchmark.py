"""The benchmark report (vla.eval.benchmark): Wilson intervals, the anchors file, the table over recorded evaluations
(with the run's demos and training time), the plot, the uniqueness rule, and bad input in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vla.eval.benchmark import (
    DEFAULT_SPEC,
    BenchmarkError,
    load_spec,
    seed_range,
    train_seconds,
    wilson_interval,
    write_benchmark,
)
from vla.eval.report import write_results

REPO = Path(__file__).resolve().parents[2]
TASKS = ["PushCube-v1", "PullCube-v1", "StackCube-v1", "PickCube-v1", "PlaceSphere-v1", "PegInsertionSide-v1"]


# -------------------------------------------------------------------------------------------- Wilson score interval


def test_wilson_interval_matches_hand_computed_values():
    # z = 1.959964 (two-sided 95%), z^2 = 3.841459; for k/n: centre (p + z^2/2n) / (1 + z^2/n),
    # half-width z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2), worked through by hand:
    #   86/100: centre 0.879207 / 1.038415 = 0.846682, half 1.887458 * 0.036056 = 0.068054 -> [0.77863, 0.91474]
    #   0/100:  [0, z^2 / (n + z^2)] = [0, 3.841459 / 103.841459] = [0, 0.036993]
    #   100/100: [n / (n + z^2), 1] = [100 / 103.841459, 1] = [0.963007, 1]
    assert wilson_interval(86, 100) == pytest.approx((0.77863, 0.91474), abs=2e-5)
    assert wilson_interval(0, 100) == pytest.approx((0.0, 0.036993), abs=2e-6)
    assert wilson_interval(100, 100) == pytest.approx((0.963007, 1.0), abs=2e-6)
    # a wider level widens it: 99% z = 2.575829 -> 0/100 upper z^2 / (n + z^2) = 6.634897 / 106.634897 = 0.062221
    assert wilson_interval(0, 100, 0.99)[1] == pytest.approx(0.062221, abs=2e-6)


@pytest.mark.parametrize("k, n", [(7, 20), (1, 40), (35, 40), (3, 3)])
def test_wilson_bounds_are_where_the_score_test_is_at_its_critical_value(k, n):
    """The defining property, independent of the closed form: at each bound p that is not 0 or 1,
    (k/n - p)^2 = z^2 p (1 - p) / n."""
    z2 = 1.959963984540054 ** 2
    for p in wilson_interval(k, n):
        if 0 < p < 1:
            assert (k / n - p) ** 2 == pytest.approx(z2 * p * (1 - p) / n, rel=1e-9)


def test_wilson_refuses_impossible_counts():
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        wilson_interval(5, 4)


# ------------------------------------------------------------------------------------------------ the anchors file


def test_anchors_file_loads_with_tasks_targets_and_sources():
    spec = load_spec(DEFAULT_SPEC)
    assert [t.env_id for t in spec.tasks] == TASKS
    assert [t.target for t in spec.tasks] == [95, 90, 80, 80, 30, 15]
    anchors = {a.name: a for a in spec.anchors}
    assert anchors["openpi fork, π0 after SFT"].success == {
        "PushCube-v1": 70.0, "PullCube-v1": 87.5, "StackCube-v1": 60.0, "PickCube-v1": 2.5, "PlaceSphere-v1": 27.5,
        "PegInsertionSide-v1": None}
    assert anchors["Diffusion Policy, 5,000 demos"].success == {
        "PushCube-v1": 88.0, "PickCube-v1": 40.0, "StackCube-v1": 80.0, "PegInsertionSide-v1": 0.0}
    assert anchors["RDT-1B"].success == {
        "PushCube-v1": 100.0, "PickCube-v1": 77.2, "StackCube-v1": 74.0, "PegInsertionSide-v1": 13.2}
    for a in spec.anchors:
        assert a.source.startswith("https://") and a.citation and a.demos and a.model


def test_bad_spec_fails_in_one_line(tmp_path):
    raw = yaml.safe_load(DEFAULT_SPEC.read_text())
    raw["anchors"][0]["success"]["PushCube-v1"] = "seventy"
    (tmp_path / "wrong_type.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(BenchmarkError, match=r"wrong_type.yaml: anchors\[0\].success.PushCube-v1: Value 'seventy' "
                                             r"of type 'str' could not be converted to Float; fix the file") as e:
        load_spec(tmp_path / "wrong_type.yaml")
    assert "\n" not in str(e.value)
    raw["anchors"][0]["success"] = {"PullCubeTool-v1": 7.5}
    (tmp_path / "unknown_task.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(BenchmarkError, match="task 'PullCubeTool-v1' is not one of tasks"):
        load_spec(tmp_path / "unknown_task.yaml")


# ------------------------------------------------------------------------------------- recorded evaluations, faked


def _episodes(n, once, at_end, first_seed, reached=None, closest=None):
    """n hand-written episode records in eval.py's format: the first `once` succeed at some step, the first `at_end`
    at the end."""
    records = []
    for i in range(n):
        e = {"index": i, "seed": first_seed + i, "success_once": i < once, "success_at_end": i < at_end,
             "first_success_step": 40 if i < once else None, "steps": 140, "wall_s": 6.0, "video": None}
        if reached is not None:
            e["reached"] = reached(i)
        if closest is not None:
            e["initial_distance"], e["closest_distance"], e["final_distance"] = 0.2, closest(i), closest(i)
        records.append(e)
    return records


def _info(task, env_id, model, checkpoint, device, wall_s, seed):
    return {"task": task, "env_id": env_id, "control_mode": "pd_ee_delta_pose", "sim_backend": "physx_cpu",
            "max_episode_steps": 140, "replan_steps": 8, "action_horizon": 16, "seed": seed, "checkpoint": checkpoint,
            "model": model, "num_denoise_steps": 10, "prompt": "p", "num_envs": 2, "device": device,
            "precision": "fp32", "compile": False, "wall_s": wall_s}


def _run(root, name, device, processes, dataset_root, num_demos, metrics):
    """A fake training run dir: checkpoints/<step>/config.yaml (as train.py writes it) and metrics.jsonl."""
    run = root / "runs" / name
    config = {"task": {"name": name, "dataset_root": dataset_root, "demos": {"num_demos": num_demos}},
              "hardware": {"device": device, "num_processes": processes}, "log_interval": 100}
    for step in (300, 400):
        (run / "checkpoints" / str(step)).mkdir(parents=True)
        (run / "checkpoints" / str(step) / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "train/loss": 0.1, "perf/step_time_s": t}) + "\n" for s, t in metrics))
    return run


@pytest.fixture
def evaluations(tmp_path):
    """Three recorded evaluations under tmp_path/evals: PushCube with Pi0.5 on a GPU (86/100), PickCube with Pi0
    on the CPU (0/100, grasped every time), StackCube with Pi0.5 in the older summary format (100/100, no
    checkpoint, no failure info). Their runs live under tmp_path/runs (the --root)."""
    root, evals = tmp_path, tmp_path / "evals"
    # 2 GPUs; windows of 100 steps at 0.6, 0.3, 0.3 s/step up to the evaluated step 300 = 120 s = 2 min -> 4 GPU-min
    # (the window after it, at 9.9 s/step, trained past the checkpoint and is not its cost)
    _run(root, "push", "cuda", 2, "data/push", 4, [(100, 0.6), (200, 0.3), (300, 0.3), (400, 9.9)])
    meta = root / "data" / "push" / "meta"
    meta.mkdir(parents=True)
    (meta / "info.json").write_text(json.dumps({"codebase_version": "v3.0", "total_episodes": 1200}))
    write_results(evals / "push", _episodes(100, 86, 84, 100000),
                  _info("pushcube", "PushCube-v1", "pi05_small", "runs/push/checkpoints/300", "cuda", 600.0, 100000))
    # CPU run, no dataset on disk: demos from the config; 300 steps at 2 s/step = 10 CPU-min
    _run(root, "pick", "cpu", 1, "data/missing", 250, [(100, 2.0), (200, 2.0), (300, 2.0)])
    write_results(evals / "pick", _episodes(100, 0, 0, 300000,
                                            reached=lambda i: {"is_grasped": True, "is_obj_placed": False},
                                            closest=lambda i: 0.04 + 0.0004 * i),
                  _info("pickcube_wristcam_rel", "PickCube-v1", "pi0_small", "runs/pick/checkpoints/300", "cpu",
                        1200.0, 300000))
    stack = evals / "stack"
    stack.mkdir(parents=True)
    episodes = _episodes(100, 100, 100, 100000)
    (stack / "episodes.json").write_text(json.dumps(episodes))
    (stack / "summary.json").write_text(json.dumps({
        **_info("stackcube", "StackCube-v1", "pi05", None, "cuda", 300.0, 100000), "episodes": 100,
        "successes_once": 100, "successes_at_end": 100, "success_once": 1.0, "success_at_end": 1.0,
        "mean_steps": 140.0, "mean_episode_wall_s": 6.0, "seeds": [e["seed"] for e in episodes]}))
    return root, evals


def _row(table: str, task: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(f"| {task} |"))


def test_benchmark_table_plot_and_json(evaluations, tmp_path):
    root, evals = evaluations
    out = tmp_path / "benchmark"
    text = write_benchmark([evals], out, root=root)
    assert text == (out / "benchmark.md").read_text()
    summary, details = text.split("## Our evaluations")
    # rows in the spec's order, a missing task or model says so
    assert [line.split(" | ")[0][2:] for line in summary.splitlines() if line.startswith("| ") and "-v1" in line] \
        == TASKS
    for task in ("PullCube-v1", "PlaceSphere-v1", "PegInsertionSide-v1"):
        assert _row(summary, task).count("not trained yet") == 4  # two cells, two verdicts
    push = _row(summary, "PushCube-v1")
    assert "**86.0 [77.9, 91.5]**, at end 84.0 [75.6, 89.9]; n=100, `pi05_small`" in push  # hand-computed Wilson
    assert push.endswith("| 70 | 88 | 100 | Pi0.5: short by 9.0 points; Pi0: not trained yet |")
    assert "Pi0.5: met" in _row(summary, "StackCube-v1")
    assert "**100.0 [96.3, 100.0]**" in _row(summary, "StackCube-v1")
    assert "**0.0 [0.0, 3.7]**" in _row(summary, "PickCube-v1")
    assert "Pi0.5: not trained yet; Pi0: short by 80.0 points" in _row(summary, "PickCube-v1")
    # anchors: marked as others', with their names; a task an anchor did not report says so
    assert "| † openpi fork, π0 after SFT | † Diffusion Policy, 5,000 demos | † RDT-1B |" in summary
    assert "| – (not reported) | 0 | 13.2 |" in _row(summary, "PegInsertionSide-v1")
    assert "not measured here" in summary and "https://github.com/thu-ml/RoboticsDiffusionTransformer" in text

    push, pick, stack = (_row(details, t) for t in ("PushCube-v1", "PickCube-v1", "StackCube-v1"))
    # seeds, demos (dataset's count over the config's 4), GPU minutes up to the checkpoint, times 2 GPUs
    assert "| 100 | 100000–100099 | 1,200 (dataset) | 4.0 (2 GPU) | 10.0 | not recorded |" in push
    assert "| 100 | 300000–300099 | 250 (config) | 0 (cpu: 10.0 min) | 0 (cpu: 20.0 min) |" in pick
    assert "`pi0_small` (pickcube_wristcam_rel)" in pick
    # what failed: every episode grasped, none placed; closest distances 4.00, 4.04, ..., 7.96 cm: quartiles by
    # linear interpolation at ranks 24.75, 49.5, 74.25 -> 4.99, 6.00, 6.97 cm
    assert "reached at some step: is_grasped 100%, is_obj_placed 0%" in pick
    assert "closest goal distance median 6.0 cm (quartiles 5.0–7.0, min 4.0)" in pick
    assert "| 100 | 100000–100099 | ? | ? | 5.0 | not recorded |" in stack  # no checkpoint recorded
    assert "Pi0 |" not in push and "| PushCube-v1 | Pi0 |" not in details  # no detail row for a missing cell

    png = (out / "benchmark.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    data = json.loads((out / "benchmark.json").read_text())
    cell = data["rows"][0]["ours"]["Pi0.5"]
    assert cell["success_once_interval"] == pytest.approx([0.77863, 0.91474], abs=2e-5)
    assert cell["train_gpu_minutes"] == pytest.approx(4.0) and cell["demos"] == 1200
    assert data["rows"][0]["best_anchor"] == {"name": "RDT-1B", "short": "RDT-1B", "success": 100.0}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the temp dir is gone


def test_two_evaluations_of_one_task_and_model_fail_unless_a_seed_set_selects_one(evaluations, tmp_path):
    root, evals = evaluations
    # PushCube with Pi0.5 again, on fresh seeds, scoring better: the report must not pick it silently
    write_results(evals / "push_fresh", _episodes(100, 95, 95, 300000),
                  _info("pushcube", "PushCube-v1", "pi05_small", "runs/push/checkpoints/300", "cuda", 600.0, 300000))
    out = tmp_path / "benchmark"
    with pytest.raises(BenchmarkError) as e:
        write_benchmark([evals], out, root=root)
    message = str(e.value)
    assert "\n" not in message and message.startswith("2 evaluations of PushCube-v1 with Pi0.5: ")
    assert str((evals / "push" / "summary.json").resolve()) in message
    assert str((evals / "push_fresh" / "summary.json").resolve()) in message
    assert "--seed" in message
    assert not out.exists()  # nothing written
    # the seed set chosen by the caller decides: seeds from 100000 keep the first PushCube evaluation
    text = write_benchmark([evals], out, root=root, seed=100000)
    assert "**86.0 [77.9, 91.5]**" in _row(text, "PushCube-v1")
    assert "not trained yet" in _row(text.split("## Our")[0], "PickCube-v1")  # PickCube ran on seeds 300000..
    # the same directory given twice (itself and its parent) is one evaluation, not two
    write_benchmark([evals / "push", evals / "pick", evals / "stack", evals / "push"], out, root=root)


def test_bad_input_fails_in_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "vla.eval.benchmark", str(tmp_path / "empty"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"benchmark: error: {tmp_path / 'empty'}: no summary.json in it or below it; expected an evaluation "
        f"directory written by eval.py (or a sweep directory above several)"]
    assert not (tmp_path / "out").exists()


def test_an_unknown_model_or_task_fails_by_name(tmp_path):
    write_results(tmp_path / "a", _episodes(2, 1, 1, 0), _info("t", "PushCube-v1", "octo", None, "cpu", 1.0, 0))
    with pytest.raises(BenchmarkError, match=r"a/summary.json: model 'octo': expected a name starting with pi05"):
        write_benchmark([tmp_path / "a"], tmp_path / "out")
    write_results(tmp_path / "b", _episodes(2, 1, 1, 0), _info("t", "TurnFaucet-v1", "pi05", None, "cpu", 1.0, 0))
    with pytest.raises(BenchmarkError, match=r"b/summary.json: env_id 'TurnFaucet-v1' is not a task of the bench"):
        write_benchmark([tmp_path / "b"], tmp_path / "out")


# ------------------------------------------------------------------------------------------------ training time


def test_training_seconds_per_log_window_with_a_stop_and_a_resume():
    # a SIGTERM stop logs step 250 and resumes there: windows 100, 100, 50, 50
    stopped = [(100, 1.0), (200, 1.0), (250, 2.0), (300, 4.0)]
    assert train_seconds([{"step": s, "perf/step_time_s": t} for s, t in stopped]) == 100 + 100 + 100 + 200
    # killed after step 300, resumed from the checkpoint at 200: step 300 is trained (and logged) again
    killed = [(100, 1.0), (200, 1.0), (300, 1.0), (300, 3.0), (400, 1.0)]
    records = [{"step": s, "perf/step_time_s": t} for s, t in killed]
    assert train_seconds(records) == 100 + 100 + 100 + 300 + 100
    assert train_seconds(records, up_to_step=200) == 200


def test_seed_range():
    assert seed_range(list(range(100000, 100100))) == "100000–100099"
    assert seed_range([5, 7, 6]) == "5–7"
    assert seed_range([1, 2, 9]) == "3 seeds in 1–9"
    assert seed_range([]) == "?"
