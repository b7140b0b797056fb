"""The latency report (vla.eval.latency_report): success with Wilson intervals and action change per delay, naive
beside RTC, per task and checkpoint; the plot and JSON; mixed seeds, protocols and duplicates refused in one line."""

import json

import pytest

from vla.eval.benchmark import wilson_interval
from vla.eval.latency_report import LatencyReportError, main, write_latency_report
from vla.eval.report import write_results


def _episodes(n, successes, first_seed):
    return [{"index": i, "seed": first_seed + i, "success_once": i < successes, "success_at_end": i < successes,
             "first_success_step": 40 if i < successes else None, "steps": 140, "wall_s": 1.0} for i in range(n)]


def _evaluation(path, env_id, successes, delay=None, rtc=False, boundary=None, interior=0.01, n=100, seed=100000,
                checkpoint="runs/push", replan_steps=8, max_guidance_weight=5.0):
    """An evaluation directory as eval.py writes it; delay=None: an older summary without latency records."""
    info = {"task": env_id.split("-")[0].lower(), "env_id": env_id, "control_mode": "pd_ee_delta_pose",
            "max_episode_steps": 140, "replan_steps": replan_steps, "action_horizon": 16, "seed": seed,
            "checkpoint": checkpoint, "model": "pi05_small", "num_denoise_steps": 10}
    if delay is not None:
        info["latency"] = {"delay_steps": delay, "rtc": rtc, "max_guidance_weight": max_guidance_weight,
                           "schedule": "exp"}
        info["action_change"] = {"boundary": boundary, "interior": interior}
    write_results(path, _episodes(n, successes, seed), info)
    return path


@pytest.fixture
def sweep(tmp_path):
    """PushCube at d = 4, 0, 2 (written out of order), naive and RTC except d=0 (naive only); PickCube in the older
    summary format (a plain evaluation)."""
    evals = tmp_path / "evals"
    for delay, naive, rtc in ((4, (40, 0.5), (80, 0.06)), (0, (90, 0.02), None), (2, (60, 0.3), (86, 0.05))):
        _evaluation(evals / f"push_d{delay}_naive", "PushCube-v1", naive[0], delay, False, naive[1], interior=0.011)
        if rtc:
            _evaluation(evals / f"push_d{delay}_rtc", "PushCube-v1", rtc[0], delay, True, rtc[1], interior=0.012)
    _evaluation(evals / "pick_plain", "PickCube-v1", 0, checkpoint="runs/pick")
    return evals


def _table_row(text: str, env_id: str, delay: int) -> list[str]:
    section = text.split(f"## {env_id}")[1].split("## ")[0]
    rows = [line for line in section.splitlines() if line.startswith(f"| {delay} |")]
    assert len(rows) == 1, section
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_table_places_naive_and_rtc_by_delay(sweep, tmp_path):
    out = tmp_path / "report"
    groups = write_latency_report([sweep], out)
    assert [g["env_id"] for g in groups] == ["PickCube-v1", "PushCube-v1"]
    push = groups[1]
    assert [r["delay_steps"] for r in push["rows"]] == [0, 2, 4]
    assert push["rows"][0]["rtc"] is None and push["rows"][0]["naive"]["successes_once"] == 90
    assert push["rows"][1]["naive"]["success_once_interval"] == list(wilson_interval(60, 100))
    assert push["rows"][2]["rtc"]["success_once_interval"] == list(wilson_interval(80, 100))

    text = (out / "latency.md").read_text()
    # 86/100: [0.77863, 0.91474] (worked by hand in test_benchmark); 60/100 and 86/100 in their own columns
    d2 = _table_row(text, "PushCube-v1", 2)
    lo, hi = wilson_interval(60, 100)
    assert d2[1] == f"60.0 [{100 * lo:.1f}, {100 * hi:.1f}] (60/100)"
    assert d2[2] == "86.0 [77.9, 91.5] (86/100)"
    assert d2[3:6] == ["0.3000", "0.0500", "0.0110 / 0.0120"]
    assert d2[6:] == ["100", "100000–100099"]
    d0 = _table_row(text, "PushCube-v1", 0)
    assert d0[1:6] == ["90.0 [82.6, 94.5] (90/100)", "–", "0.0200", "–", "0.0110 / –"]
    # rows in delay order
    section = text.split("## PushCube-v1")[1]
    assert section.index("| 0 |") < section.index("| 2 |") < section.index("| 4 |")
    assert "Checkpoint `runs/push`" in section and "eval.replan_steps=8" in section
    assert "max_guidance_weight=5, schedule=exp" in section
    # the older summary: a plain evaluation (d=0 naive), 0/100 -> [0, 3.7], no action change recorded
    assert _table_row(text, "PickCube-v1", 0)[1:6] == ["0.0 [0.0, 3.7] (0/100)", "–", "–", "–", "– / –"]
    assert "no RTC evaluation" in text.split("## PickCube-v1")[1].split("## ")[0]

    png = (out / "latency.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert json.loads((out / "latency.json").read_text()) == {"confidence": 0.95, "groups": groups}
    assert sorted(p.name for p in out.iterdir()) == ["latency.json", "latency.md", "latency.png"]  # no temp left


def test_two_evaluations_of_one_setting_are_refused(sweep, tmp_path):
    again = _evaluation(tmp_path / "again", "PushCube-v1", 70, 2, True, 0.04)
    out = tmp_path / "report"
    with pytest.raises(LatencyReportError) as e:
        write_latency_report([sweep, again], out)
    message = str(e.value)
    assert "\n" not in message and "delay_steps=2 rtc=true" in message
    assert str(sweep / "push_d2_rtc") in message and str(again) in message
    assert not out.exists()
    # one evaluation reached twice (a sweep and a directory in it) is one evaluation
    assert len(write_latency_report([sweep, sweep / "push_d2_rtc"], out)) == 2
    # the same setting for another checkpoint is another group
    other = _evaluation(tmp_path / "other", "PushCube-v1", 70, 2, True, 0.04, checkpoint="runs/push2")
    assert len(write_latency_report([sweep, other], out)) == 3


def test_mixed_seeds_are_refused_and_seed_selects(sweep, tmp_path):
    fresh = _evaluation(tmp_path / "fresh", "PushCube-v1", 70, 6, False, 0.6, seed=300000)
    with pytest.raises(LatencyReportError, match=r"differ in seeds \(100000–100099 vs 300000–300099\)") as e:
        write_latency_report([sweep, fresh], tmp_path / "report")
    assert "\n" not in str(e.value) and str(fresh) in str(e.value) and "--seed N" in str(e.value)
    groups = write_latency_report([sweep, fresh], tmp_path / "report", seed=300000)
    assert [(g["env_id"], [r["delay_steps"] for r in g["rows"]]) for g in groups] == [("PushCube-v1", [6])]


@pytest.mark.parametrize("change, what", [({"replan_steps": 4}, "protocol (replan_steps 8 vs 4)"),
                                          ({"max_guidance_weight": 10.0}, "RTC settings (max_guidance_weight")])
def test_mixed_settings_are_refused(sweep, tmp_path, change, what):
    odd = _evaluation(tmp_path / "odd", "PushCube-v1", 70, 6, True, 0.04, **change)
    with pytest.raises(LatencyReportError) as e:
        write_latency_report([sweep, odd], tmp_path / "report")
    assert "\n" not in str(e.value) and what in str(e.value) and str(odd) in str(e.value)


def test_cli(sweep, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # --out is required
        main([str(sweep)])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "missing"), "--out", str(tmp_path / "report")])
    assert str(e.value.code).startswith("latency_report: error: ") and "no summary.json" in str(e.value.code)
    main([str(sweep), "--out", str(tmp_path / "report")])
    assert "## PushCube-v1" in capsys.readouterr().out and (tmp_path / "report" / "latency.png").is_file()
