"""The `algo` config group: sft is train.py's default and changes nothing; qchunk composes with the other groups;
bad values and settings that cannot work are one line, in train.py and in eval.py's critic option."""

import subprocess
import sys
from pathlib import Path

import pytest

from vla.configs import ConfigError, EvalConfig, TrainConfig, compose, group_options, load_recipe, to_object
from vla.rl.critic import ChunkCritic, CriticSpec, save_critic

REPO = Path(__file__).resolve().parents[2]


def test_sft_is_the_default_and_qchunk_composes_with_a_recipe():
    assert group_options("algo") == ["qchunk", "sft"]
    default = to_object(compose("train", []))
    assert default.algo.name == "sft" and default.checkpoint is None
    recipe = load_recipe("pushcube_pi05", overrides=["algo=qchunk", "checkpoint=policies/pushcube_pi05",
                                                     "algo.critic.num_qs=4", "hardware=1xgpu"])
    assert recipe.algo.name == "qchunk" and recipe.algo.critic.num_qs == 4 and recipe.task.name == "pushcube"
    assert recipe.algo.critic.features == "policy" and recipe.algo.calql.alpha > 0


@pytest.mark.parametrize("overrides,message", [
    (["checkpoint=runs/x"], "checkpoint=runs/x: read by algo=qchunk only; SFT starts from model.pretrained"),
    (["algo=qchunk"], "algo=qchunk: needs checkpoint=<the trained policy: a run, checkpoint or policy dir>"),
    (["algo=qchunk", "checkpoint=x", "algo.gamma=1.5"], "algo.gamma=1.5: must be in (0, 1]"),
    (["algo=qchunk", "checkpoint=x", "algo.critic.features=resnet"],
     "algo.critic.features='resnet': expected policy or encoder"),
    (["algo=qchunk", "checkpoint=x", "algo.target_agg=max"], "algo.target_agg='max': expected min or mean"),
    (["algo=qchunk", "checkpoint=x", "algo.calql.uniform_samples=0", "algo.calql.policy_samples=0"],
     "algo.calql: uniform_samples=0, policy_samples=0: expected counts >= 0, not both 0"),
])
def test_bad_algo_settings_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        to_object(compose("train", overrides))
    assert str(e.value) == message


def test_eval_critic_settings_are_checked():
    with pytest.raises(ConfigError, match=r"best_of_n=4: needs critic="):
        to_object(compose("eval", ["best_of_n=4"]))
    with pytest.raises(ConfigError, match=r"critic= with latency.rtc=true"):
        to_object(compose("eval", ["critic=runs/x", "latency.rtc=true"]))
    cfg = to_object(compose("eval", ["critic=runs/x", "best_of_n=8"]))
    assert isinstance(cfg, EvalConfig) and cfg.best_of_n == 8
    assert "algo" not in {f for f in EvalConfig.reads} and isinstance(to_object(compose("train", [])), TrainConfig)


@pytest.mark.slow
def test_eval_py_refuses_a_critic_of_another_task_in_one_line(tmp_path, tiny_policy):
    spec = CriticSpec(task="pickcube", env_id="PickCube-v1", model="pi05_tiny", features="policy", feature_dim=32,
                      state_dim=32, chunk_len=5, action_dim=7, hidden_dims=[8])
    save_critic(ChunkCritic(spec), tmp_path)
    done = subprocess.run([sys.executable, "eval.py", f"checkpoint={tiny_policy}", f"critic={tmp_path}",
                           "best_of_n=4", f"hydra.run.dir={tmp_path / 'eval'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"eval.py: error: {tmp_path / 'critic.json'}: trained for task pickcube, asked to score chunks of task "
        "pushcube; train one for pushcube (train.py algo=qchunk task=pushcube ...)")
