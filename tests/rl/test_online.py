"""The whole loop on the CPU with the tiny policy and real ManiSkill env workers: rollouts recorded with rewards by
`python -m vla.rl.collect`, an offline phase, two online rounds (roll out, add, update, evaluate on held-out seeds),
a resumed run that continues with the next round only, and eval.py's best-of-N acting under the run's critic."""

import json

import pytest

from tests.rl.conftest import TASK_OVERRIDES
from vla.configs import EvalConfig, app_config, compose, train_config
from vla.eval.evaluate import evaluate
from vla.rl.best_of_n import best_of_n_wrapper
from vla.rl.collect import main as collect_main
from vla.rl.data import RolloutData
from vla.rl.trainer import train_qchunk
from vla.runs import read_metrics

SHORT = ["eval.max_episode_steps=8", "eval.replan_steps=4"]
LOOP = ["algo=qchunk", "algo.batch_size=4", "algo.offline_steps=2", "algo.target_best_of_n=2",
        "algo.calql.policy_samples=2", "algo.calql.uniform_samples=2", "algo.num_denoise_steps=2",
        "algo.critic.hidden_dims=[32]", "algo.actor.enabled=true", "algo.actor.start_step=0",
        "algo.actor.pathwise_steps=2", "algo.online.episodes_per_round=2", "algo.online.steps_per_round=2",
        "algo.online.eval_episodes=2", "algo.online.num_envs=1", "algo.online.best_of_n=2", "log_interval=1",
        "progress=false", "run_name=test", *SHORT]


@pytest.mark.slow
def test_two_online_rounds_then_a_resumed_third_and_best_of_n_evaluation(tmp_path, tiny_policy):
    offline = tmp_path / "rollouts"
    assert collect_main(["--out", str(offline), "--episodes", "2", "--seed", "300000", f"checkpoint={tiny_policy}",
                         "num_envs=2", "progress=false", *SHORT]) == 0
    data = RolloutData(offline)
    assert len(data) == 16 and sorted(set(data.episode_seed.tolist())) == [300000, 300001]
    assert ((0 <= data.rewards) & (data.rewards <= 1)).all() and data.rewards.std() > 0  # normalized_dense
    assert json.loads((offline / "rollouts.json").read_text())["episodes"] == 2

    run = tmp_path / "run"
    overrides = [*LOOP, f"checkpoint={tiny_policy}", f"algo.data=[{offline}]", "algo.online.rounds=2"]
    train_qchunk(train_config(compose("train", overrides), overrides), run)
    rounds = [m for m in read_metrics(run) if "online/round" in m]
    assert [m["online/round"] for m in rounds] == [1, 2] and [m["step"] for m in rounds] == [4, 6]
    assert all(0 <= m["online/eval_success"] <= 1 and "online/rollout_success" in m for m in rounds)
    assert [RolloutData(run / "rollouts" / f"round_{r:03d}").episode_seed[0] for r in (0, 1)] == [200000, 200002]
    assert rounds[-1]["replay/episodes"] == 6  # 2 offline + 2 per round
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["6"]

    more = [*overrides[:-1], "algo.online.rounds=3", "algo.online.eval_episodes=0", "resume=true"]
    train_qchunk(train_config(compose("train", more), more), run)
    rounds = [m for m in read_metrics(run) if "online/round" in m]
    assert [m["online/round"] for m in rounds] == [1, 2, 3] and rounds[-1]["step"] == 8
    assert rounds[-1]["replay/episodes"] == 8

    ev = [f"checkpoint={run}", f"critic={run}", "best_of_n=3", "num_envs=1", "eval.num_episodes=1", "progress=false",
          *SHORT]
    cfg = app_config(compose("eval", ev), EvalConfig, "eval.py", ev)
    assert cfg.task.image_size == int(TASK_OVERRIDES[0].split("=")[1])  # the run's recorded task
    summary = evaluate(cfg, tmp_path / "eval", best_of_n_wrapper(cfg.critic, cfg.best_of_n, cfg.task.name))
    assert summary["episodes"] == 1
    info = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert info["best_of_n"] == 3 and info["critic"] == str(run)
