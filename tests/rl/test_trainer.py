"""train.py algo=qchunk on the CPU with a tiny policy and synthetic rollouts (no simulator): the run directory it
writes (metrics, checkpoints with the critic and the fine-tuned policy), the action expert as the only part of the
policy that moves, exact resumption in the offline phase, and bad inputs refused in one line."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.rl.conftest import write_demo_dataset
from vla.configs import ConfigError, compose, load_group, train_config
from vla.eval.policy import Policy
from vla.rl.critic import load_critic
from vla.rl.sampling import expert_parameter_names
from vla.rl.trainer import train_qchunk
from vla.runs import read_metrics

REPO = Path(__file__).resolve().parents[2]
SMALL = ["algo=qchunk", "algo.batch_size=4", "algo.target_best_of_n=2", "algo.calql.policy_samples=2",
         "algo.calql.uniform_samples=2", "algo.num_denoise_steps=2", "algo.critic.hidden_dims=[32]",
         "log_interval=1", "progress=false", "run_name=test"]


def qchunk_config(policy: Path, data: list[Path], *overrides: str):
    ov = [*SMALL, f"checkpoint={policy}", f"algo.data=[{','.join(map(str, data))}]", *overrides]
    return train_config(compose("train", ov), ov)


def test_offline_run_trains_critic_and_expert(tmp_path, tiny_policy, rollouts):
    cfg = qchunk_config(tiny_policy, [rollouts], "algo.offline_steps=4", "algo.actor.enabled=true",
                        "algo.actor.start_step=1", "algo.actor.pathwise_steps=2", "save_interval=2")
    assert cfg.task.name == "pushcube" and cfg.model.name == "pi05_tiny"  # the policy's recorded recipe
    last = train_qchunk(cfg, tmp_path / "run")
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for key in ("critic/td_loss", "critic/q_data", "critic/mc_return", "critic/q_minus_mc", "critic/calql",
                "critic/alpha", "replay/frames"):
        assert key in metrics[0], key
    assert "actor/bc_loss" not in metrics[0] and "actor/bc_loss" in metrics[1] and "actor/alpha" in last
    ckpt = tmp_path / "run" / "checkpoints" / "4"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["4"]  # keep_last=1
    critic = load_critic(tmp_path / "run", "pushcube", "pi05_tiny")
    assert critic.spec.chunk_len == 5 and critic.spec.policy_checkpoint == str(tiny_policy)
    # only the action expert moved, and the written policy loads as eval.py loads one (eval.py checkpoint=<run>)
    before = dict(Policy.load(tiny_policy, None, None, action_dim=7).model.named_parameters())
    after = dict(Policy.load(tmp_path / "run", None, None, action_dim=7).model.named_parameters())
    expert = set(expert_parameter_names(Policy.load(tiny_policy, None, None, action_dim=7).model))
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and moved <= expert, sorted(moved - expert)[:5]
    recorded = (ckpt / "config.yaml").read_text()
    assert "name: qchunk" in recorded and "name: pi05_tiny" in recorded and "image_size: 32" in recorded


def test_offline_phase_resumes_exactly(tmp_path, tiny_policy, rollouts):
    straight = tmp_path / "straight"
    train_qchunk(qchunk_config(tiny_policy, [rollouts], "algo.offline_steps=6"), straight)
    split = tmp_path / "split"
    train_qchunk(qchunk_config(tiny_policy, [rollouts], "algo.offline_steps=3"), split)
    with pytest.raises(ValueError, match=r"already holds checkpoints \[3\]: pass resume=true"):
        train_qchunk(qchunk_config(tiny_policy, [rollouts], "algo.offline_steps=6"), split)
    train_qchunk(qchunk_config(tiny_policy, [rollouts], "algo.offline_steps=6", "resume=true"), split)
    a, b = read_metrics(straight), read_metrics(split)
    assert [m["step"] for m in b] == [1, 2, 3, 4, 5, 6]
    for key in ("critic/td_loss", "critic/q_data", "critic/calql"):
        assert [m[key] for m in a] == [m[key] for m in b], key


def test_rollouts_without_rewards_are_refused_in_one_line(tmp_path, tiny_policy, rollouts):
    demos = write_demo_dataset(tmp_path / "demos", load_group("task", "pushcube", ["task.image_size=32"]))
    with pytest.raises(ValueError, match=r"demos: no 'reward', 'success', 'done', 'episode_seed' column\(s\): a "
                                         r"dataset without rewards") as e:
        train_qchunk(qchunk_config(tiny_policy, [demos], "algo.offline_steps=1"), tmp_path / "run")
    assert "\n" not in str(e.value)


def test_train_py_refuses_bad_qchunk_settings_in_one_line(tmp_path, tiny_policy, rollouts):
    with pytest.raises(ConfigError, match=r"task=pickcube: .*config.yaml was trained with task pushcube"):
        ov = [*SMALL, f"checkpoint={tiny_policy}", "task=pickcube"]
        train_config(compose("train", ov), ov)
    with pytest.raises(ConfigError, match=r"runs in one process on one device, found hardware=cpu \(1 node\(s\) x 2"):
        train_qchunk(qchunk_config(tiny_policy, [rollouts], "hardware.num_processes=2"), tmp_path / "run")
    with pytest.raises(ConfigError, match=r"no data: give algo.data="):
        ov = [*SMALL, f"checkpoint={tiny_policy}"]
        train_qchunk(train_config(compose("train", ov), ov), tmp_path / "run")


@pytest.mark.slow
def test_train_py_dispatches_to_qchunk(tmp_path, tiny_policy, rollouts):
    """The app itself: one subprocess, a few steps; a bad input is one line and exit code 1."""
    args = [sys.executable, "train.py", *SMALL, f"checkpoint={tiny_policy}", f"algo.data=[{rollouts}]",
            "algo.offline_steps=2", f"run_root={tmp_path}"]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [m["step"] for m in read_metrics(tmp_path / "test")] == [1, 2]
    bad = subprocess.run([*args[:-1], f"run_root={tmp_path}/other", "algo.data=[/nonexistent]"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == ("train.py: error: algo.data: /nonexistent: not a dataset; record "
                                                    "rollouts with `python -m vla.rl.collect --out <dir> ...`")
