"""The policies shipped in policies/ (released with `python -m vla.models.weights release`): small enough to ship,
evaluation-ready, and they load and act in one short episode of their own recipe's task, as a user without a GPU
would run them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[2]
POLICIES = sorted(p for p in (REPO / "policies").iterdir() if p.is_dir())


def test_the_pushcube_policy_ships():
    assert "pushcube_pi05" in [p.name for p in POLICIES]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_shipped_policy_is_a_bf16_release_of_its_recipe(policy):
    assert sorted(p.name for p in policy.iterdir()) == ["README.md", "config.yaml", "ema.safetensors",
                                                        "norm_stats.json", "tokenizer.model"]
    assert sum(p.stat().st_size for p in policy.iterdir()) <= 60e6
    with safe_open(str(policy / "ema.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    recipe = OmegaConf.load(policy / "config.yaml")
    assert recipe.experiment == policy.name  # released from a run of conf/experiment/<name>.yaml
    assert json.loads((policy / "norm_stats.json").read_text())["norm_stats"].keys() == {"state", "actions"}


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_shipped_policy_loads_and_acts(policy, tmp_path):
    """eval.py on the shipped policy, one short episode on the CPU: its recorded recipe picks the task and protocol."""
    out = tmp_path / "eval"
    cmd = [sys.executable, str(REPO / "eval.py"), f"checkpoint={policy}", "eval.num_episodes=1",
           "eval.max_episode_steps=16", "num_envs=1", "progress=false", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    recipe = OmegaConf.load(policy / "config.yaml")
    assert (summary["task"], summary["model"], summary["experiment"]) == (recipe.task.name, recipe.model.name,
                                                                          policy.name)
    assert summary["replan_steps"] == recipe.eval.replan_steps and summary["episodes"] == 1
    assert summary["mean_steps"] == 16 and summary["seeds"] == [recipe.eval.seed]
