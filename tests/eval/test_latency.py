"""eval.py's latency mode (vla.eval.latency): which actions a round executes when inference takes d control steps,
the action changes recorded at chunk boundaries, the settings' checks, real-time chunking through Policy.act, and a
short CPU evaluation of the tiny policy in both modes."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.serve.tiny_policy import write_tiny_policy
from vla.configs import ConfigError, LatencyConfig, load_group
from vla.eval import rollout
from vla.eval.latency import ActionChanges, execute_round

REPO = Path(__file__).resolve().parents[2]


def test_a_round_executes_the_previous_chunk_while_the_next_is_computed():
    prev, new = np.arange(10.0)[:, None] + 100, np.arange(10.0)[:, None] + 200
    executed, leftover, takeover = execute_round(new, prev[4:], delay=2, horizon=4)
    assert executed[:, 0].tolist() == [104, 105, 202, 203] and takeover == 2
    assert leftover[:, 0].tolist() == [204, 205, 206, 207, 208, 209]
    executed, leftover, takeover = execute_round(new, None, delay=2, horizon=4)  # the episode's first chunk
    assert executed[:, 0].tolist() == [200, 201, 202, 203] and takeover == 0
    executed, _, takeover = execute_round(new, prev[4:], delay=0, horizon=4)  # no delay: plain evaluation
    assert np.array_equal(executed, new[:4]) and takeover == 0
    with pytest.raises(ValueError, match="1 actions left of the previous chunk cannot cover an inference delay of 2"):
        execute_round(new, prev[9:], delay=2, horizon=4)


def test_action_changes_split_at_the_takeover():
    changes = ActionChanges()
    changes.add(np.array([[0.0, 0.0], [3.0, 4.0]]), takeover=0)  # first actions of an episode: nothing before them
    changes.add(np.array([[3.0, 5.0], [0.0, 5.0], [0.0, 6.0]]), takeover=1)
    assert changes.boundary == [3.0] and changes.interior == [5.0, 1.0, 1.0]
    assert changes.means() == (3.0, pytest.approx(7 / 3))
    assert ActionChanges().means() == (None, None)


def test_latency_settings_checked():
    LatencyConfig(delay_steps=3).check(replan_steps=5, action_horizon=10)
    for replan in (2, 8):
        with pytest.raises(ConfigError, match=rf"latency.delay_steps=3 with eval.replan_steps={replan}: needs "
                                              r"delay_steps <= replan_steps <= action horizon \(10\) - delay_steps"):
            LatencyConfig(delay_steps=3).check(replan_steps=replan, action_horizon=10)
    with pytest.raises(ConfigError, match="latency.schedule='cosine'"):
        LatencyConfig(schedule="cosine")
    with pytest.raises(ConfigError, match="latency.delay_steps=-1"):
        LatencyConfig(delay_steps=-1)


# ------------------------------------------------------------------ the rollout, with stand-ins for envs and policy


@dataclass
class _Cfg:
    action_horizon: int = 10
    action_dim: int = 3


class CountingPolicy:
    """Chunk r (from 1) is 0.1 r + 0.01 i at position i, in every dim (within the [-1, 1] the rollout clips to);
    records what it was asked with."""

    cfg = _Cfg()

    def __init__(self):
        self.calls = []

    def act(self, obs, noise, prev_actions=None, *rtc):
        self.calls.append((prev_actions, rtc))
        r = len(self.calls)
        return np.repeat((0.1 * r + 0.01 * np.arange(10))[None, :, None], len(obs), axis=0).repeat(7, axis=2)


class RecordingPool:
    """One env that executes nothing: records every action sent, never succeeds."""

    executed: list = []

    def __init__(self, task, n):
        self.last = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def send(self, worker, command, payload):
        self.last = (command, payload)
        if command == "run":
            RecordingPool.executed.extend(payload[:, 0].tolist())

    def recv(self, worker):
        command, payload = self.last
        if command == "reset":
            return {}, None, None
        return {}, np.zeros(len(payload), bool), [], {}, None


@pytest.mark.parametrize("rtc", [False, True])
def test_rollout_in_latency_mode(monkeypatch, rtc):
    monkeypatch.setattr(rollout, "EnvPool", RecordingPool)
    RecordingPool.executed = []
    policy = CountingPolicy()
    latency = LatencyConfig(delay_steps=2, rtc=rtc, max_guidance_weight=7.0)
    (episode,) = rollout.run_episodes(policy, load_group("task", "pushcube"), num_episodes=1, seed=0, num_envs=1,
                                      replan_steps=4, max_episode_steps=11, progress=False, latency=latency)
    assert len(RecordingPool.executed) == 11 and episode.steps == 11
    if rtc:  # each call after the first is given what remains of the previous chunk, the delay and the horizon
        prev, settings = policy.calls[1]
        np.testing.assert_allclose(prev[0][:, 0], [0.14, 0.15, 0.16, 0.17, 0.18, 0.19])
        assert settings == (2, 4, 7.0, "exp")
        assert policy.calls[0][0] == [None]
    else:
        assert all(call == (None, ()) for call in policy.calls)
    assert episode.boundary_action_change is not None and episode.interior_action_change is not None


def test_rollout_rounds_follow_the_delay(monkeypatch):
    """Rounds of 4 steps, delay 2: chunk 1 [0:4], chunk 1 [4:6] + chunk 2 [2:4], chunk 2 [4:6] + chunk 3 [2:3]."""
    monkeypatch.setattr(rollout, "EnvPool", RecordingPool)
    RecordingPool.executed = []
    rollout.run_episodes(CountingPolicy(), load_group("task", "pushcube"), num_episodes=1, seed=0, num_envs=1,
                         replan_steps=4, max_episode_steps=11, progress=False, latency=LatencyConfig(delay_steps=2))
    np.testing.assert_allclose(RecordingPool.executed,
                               [0.10, 0.11, 0.12, 0.13, 0.14, 0.15, 0.22, 0.23, 0.24, 0.25, 0.32])


# ------------------------------------------------------------------ real-time chunking through Policy.act


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    from vla.eval.policy import Policy

    path = write_tiny_policy(tmp_path_factory.mktemp("policies") / "pushcube_tiny", overrides=("task.image_size=32",))
    return Policy.load(path, None, None, action_dim=7)


def test_policy_act_guides_only_the_samples_with_a_previous_chunk(tiny_policy):
    rng = np.random.default_rng(0)
    obs = [{"images": {"base_0_rgb": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)},
            "image_masks": {"base_0_rgb": True}, "state": rng.normal(size=8).astype(np.float32),
            "prompt": "Push and move a cube to a goal region in front of it."} for _ in range(2)]
    noise = torch.randn(2, 10, 32, generator=torch.Generator().manual_seed(0))
    plain = tiny_policy.act(obs, noise)
    prev = 0.5 * np.ones((6, 7), np.float32)  # raw actions; the policy normalizes them
    guided = tiny_policy.act(obs, noise, [prev, None], inference_delay=2, execution_horizon=4)
    assert np.array_equal(guided[1], plain[1])
    assert np.abs(guided[0, :2] - prev[:2]).mean() < 0.2 * np.abs(plain[0, :2] - prev[:2]).mean()
    with pytest.raises(ValueError, match=r"previous actions: expected \(steps, 7\), found \(6, 5\)"):
        tiny_policy.act(obs, noise, [prev[:, :5], None], inference_delay=2, execution_horizon=4)


# ------------------------------------------------------------------ eval.py on the CPU


@pytest.mark.slow
@pytest.mark.parametrize("rtc", ["false", "true"])
def test_eval_cli_latency_mode(tmp_path, rtc):
    policy = write_tiny_policy(tmp_path / "policy", overrides=("task.image_size=32",))
    out = tmp_path / "eval"
    cmd = [sys.executable, str(REPO / "eval.py"), f"checkpoint={policy}", "eval.num_episodes=1", "num_envs=1",
           "eval.max_episode_steps=12", "eval.replan_steps=4", "latency.delay_steps=2", f"latency.rtc={rtc}",
           "progress=false", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["latency"] == {"delay_steps": 2, "rtc": rtc == "true", "max_guidance_weight": 5.0,
                                  "schedule": "exp"}
    assert summary["mean_steps"] == 12 and summary["replan_steps"] == 4
    (episode,) = json.loads((out / "episodes.json").read_text())
    # 12 steps in rounds of 4: two chunk boundaries, 9 other step-to-step changes
    assert episode["boundary_action_change"] >= 0 and episode["interior_action_change"] >= 0
    assert summary["action_change"] == {"boundary": episode["boundary_action_change"],
                                        "interior": episode["interior_action_change"]}
