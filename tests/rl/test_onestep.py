"""The one-step actor of algo.actor.method=distill (FQL beside the frozen flow policy): it learns the policy's own
chunk for the noise that chunk was denoised from, its Q term moves it toward higher Q, it acts in place of denoising
(alone or best-of-N under the critic), and its checkpoint resumes exactly and loads for eval.py with one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.rl.conftest import random_observations
from tests.rl.test_trainer import REPO, qchunk_config
from vla.configs import ConfigError, EvalConfig, EvalProtocol, app_config, compose
from vla.data.transforms import collate
from vla.rl.best_of_n import candidate_noise
from vla.rl.collect import load_acting_policy
from vla.rl.critic import CriticError, aggregate
from vla.rl.learner import distill_update, policy_chunks, sample_batch, update
from vla.eval.policy import Policy
from vla.rl.onestep import OneStepPolicy, load_actor, onestep_wrapper
from vla.rl.policy_cache import frame_noise
from vla.rl.sampling import encode_prefix, pooled_prefix_features
from vla.rl.trainer import build_learner, train_qchunk

DISTILL = ["algo.actor.enabled=true", "algo.actor.method=distill", "algo.actor.hidden_dims=[64,64]",
           "algo.actor.start_step=0", "algo.cache_samples=4", "algo.calql.policy_samples=2"]


def distill_learner(tiny_policy, rollouts, *overrides):
    cfg = qchunk_config(tiny_policy, [rollouts], *DISTILL, *overrides)
    learner = build_learner(cfg)
    learner.cache.extend(learner.policy, learner.replay, batch_size=8)
    return learner, cfg


def distill_error(learner, cfg, frames: np.ndarray, shuffle_noise: bool) -> float:
    """Mean squared distance of the actor's chunk to every bank row of `frames`, given that row's noise (or another
    frame's noise for the same row)."""
    model_cfg, cache = learner.policy.cfg, learner.cache
    rows = range(cache.num_samples)
    noise = torch.stack([frame_noise(cfg.seed, int(f), rows, (model_cfg.action_horizon, model_cfg.action_dim))
                         for f in frames])
    if shuffle_noise:
        noise = noise.roll(1, dims=0)
    with torch.no_grad():
        chunks = learner.onestep(learner.cache.critic_inputs(learner.policy, learner.replay, frames), noise)
    return float((chunks - cache.samples[frames]).pow(2).mean())


def test_distillation_learns_the_flow_chunk_of_each_noise(tiny_policy, rollouts):
    learner, cfg = distill_learner(tiny_policy, rollouts, "algo.actor.alpha=0", "algo.actor.onestep_lr=3e-3",
                                   "algo.actor.distill_samples=4", "algo.batch_size=16", "algo.calql.alpha=0")
    frames = learner.replay.starts[::3]
    before = distill_error(learner, cfg, frames, shuffle_noise=False)
    expert = {k: v.clone() for k, v in learner.policy.model.state_dict().items()}
    metrics = [update(learner, cfg.algo) for _ in range(300)]
    after = distill_error(learner, cfg, frames, shuffle_noise=False)
    # it fits the chunk of the noise it is given, not the frame's average chunk: another noise gives a worse fit
    assert after < 0.1 * before, (before, after)
    assert after < 0.25 * distill_error(learner, cfg, frames, shuffle_noise=True)
    assert float(metrics[-1]["actor/distill_loss"]) < 0.1 * float(metrics[0]["actor/distill_loss"])
    assert all(torch.equal(v, expert[k]) for k, v in learner.policy.model.state_dict().items())  # the flow is frozen


def test_q_term_raises_the_q_of_the_actors_chunks(tiny_policy, rollouts):
    def actor_q(alpha: float) -> float:
        learner, cfg = distill_learner(tiny_policy, rollouts, f"algo.actor.alpha={alpha}", "algo.batch_size=16")
        for _ in range(40):  # the actor alone moves; the critic stays as initialized (the same seed in both runs)
            distill_update(learner, sample_batch(learner, cfg.algo.batch_size), cfg.algo)
        batch = sample_batch(learner, 64)
        with torch.no_grad():
            chunks = policy_chunks(learner, batch, 4, at_next=False, algo=cfg.algo)
            return float(aggregate(learner.critic(batch.obs, chunks), "mean").mean())

    assert actor_q(10.0) > actor_q(0.0) + 0.05


def test_onestep_policy_acts_with_the_actor_and_picks_the_best_under_the_critic(tiny_policy, rollouts, pushcube):
    learner, cfg = distill_learner(tiny_policy, rollouts)
    policy, model_cfg = learner.policy, learner.policy.cfg
    observations = random_observations(pushcube, 3, seed=5)
    noise = torch.randn(3, model_cfg.action_horizon, model_cfg.action_dim, generator=torch.Generator().manual_seed(0))
    batch = collate([policy.transform(o) for o in observations])
    with torch.no_grad():
        obs = {"features": pooled_prefix_features(encode_prefix(policy.model, batch)), "state": batch["state"]}
        own = learner.onestep(obs, noise)
    acted = OneStepPolicy(policy, learner.onestep).act(observations, noise)
    assert acted.shape == (3, learner.critic.spec.chunk_len, 7)
    np.testing.assert_allclose(acted, policy.transform.unnormalize_actions(own, 7).numpy(), atol=1e-5)

    n = 5
    with torch.no_grad():
        candidates = learner.onestep(obs, candidate_noise(noise, n))
        q = aggregate(learner.critic(obs, candidates), "mean")
    best = candidates[torch.arange(3), q.argmax(dim=1)]
    assert (q.argmax(dim=1) != 0).any()  # the choice is not the plain sample here
    acted = OneStepPolicy(policy, learner.onestep, learner.critic, n).act(observations, noise)
    np.testing.assert_allclose(acted, policy.transform.unnormalize_actions(best, 7).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="real-time|inference delay"):
        OneStepPolicy(policy, learner.onestep).act(observations, noise, [np.zeros((2, 7))] * 3, 2, 5, 5.0, "exp")


def test_distill_run_resumes_exactly_and_its_actor_loads_for_eval(tmp_path, tiny_policy, rollouts):
    def run(steps: int, out, resume: bool = False):
        cfg = qchunk_config(tiny_policy, [rollouts], *DISTILL, f"algo.offline_steps={steps}", "save_interval=2",
                            f"resume={str(resume).lower()}")
        return train_qchunk(cfg, out)

    last = run(4, tmp_path / "straight")
    assert "actor/distill_loss" in last and "actor/bc_loss" not in last
    run(2, tmp_path / "split")
    run(4, tmp_path / "split", resume=True)
    straight, split = (load_actor(tmp_path / d, "pushcube", "pi05_tiny") for d in ("straight", "split"))
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(split.state_dict()[k], v, rtol=0, atol=0)
    assert not (tmp_path / "straight" / "checkpoints" / "4" / "model.safetensors").exists()  # the flow is unchanged
    with pytest.raises(CriticError, match=r"actor.json: trained for task pushcube, asked to act for task pickcube"):
        load_actor(tmp_path / "straight", "pickcube", "pi05_tiny")
    with pytest.raises(FileNotFoundError, match=r"actor=.*: no actor.json in it"):
        load_actor(tmp_path / "elsewhere", "pushcube", "pi05_tiny")


def test_distill_settings_are_checked_in_one_line(tmp_path, tiny_policy, rollouts):
    with pytest.raises(ConfigError, match="algo.actor.method=distill reads the policy's prefix features"):
        qchunk_config(tiny_policy, [rollouts], *DISTILL, "algo.critic.features=encoder")
    with pytest.raises(ConfigError, match="algo.actor.method='fql': expected pathwise or distill"):
        qchunk_config(tiny_policy, [rollouts], "algo.actor.method=fql")
    cfg = qchunk_config(tiny_policy, [rollouts], *DISTILL, "algo.chunk_len=3")
    with pytest.raises(ConfigError, match=r"algo.chunk_len=3: the one-step actor predicts only .* eval.replan_steps=5"):
        train_qchunk(cfg, tmp_path / "run")
    ev = [f"checkpoint={tiny_policy}", f"actor={tmp_path}", "latency.delay_steps=2"]
    with pytest.raises(ConfigError, match="actor= with latency.delay_steps=2"):
        app_config(compose("eval", ev), EvalConfig, "eval.py", ev)


def test_the_one_step_actor_acts_in_online_rounds_once_it_trains(tmp_path, tiny_policy, rollouts):
    from vla.rl.online import acting_policy
    from vla.rl.run import QChunkRun
    from vla.train.loop import StopRequest

    learner, cfg = distill_learner(tiny_policy, rollouts, "algo.actor.start_step=3", "algo.online.best_of_n=2")
    with StopRequest() as stop:
        run = QChunkRun(cfg, tmp_path, learner, stop)
        assert not isinstance(acting_policy(run), OneStepPolicy)  # before start_step: the flow policy's samples
        learner.step = 3
        acting = acting_policy(run)
        run.metrics.close()
    assert isinstance(acting, OneStepPolicy) and acting.n == 2 and acting.critic is learner.critic


def test_eval_refuses_more_actions_per_decision_than_the_actor_predicts(tmp_path, tiny_policy, rollouts):
    train_qchunk(qchunk_config(tiny_policy, [rollouts], *DISTILL, "algo.offline_steps=1"), tmp_path / "run")
    policy = Policy.load(tiny_policy, None, None, action_dim=7)
    with pytest.raises(ValueError, match=rf"eval.replan_steps=8: the one-step actor of {tmp_path / 'run'} predicts "
                                         r"5 actions per decision; evaluate with eval.replan_steps<=5"):
        onestep_wrapper(str(tmp_path / "run"), "pushcube", EvalProtocol(replan_steps=8))(policy)
    assert onestep_wrapper(str(tmp_path / "run"), "pushcube", EvalProtocol())(policy).actor.spec.chunk_len == 5
    # vla.rl.collect acts as eval.py does: actor= records the one-step actor's episodes
    ev = [f"checkpoint={tiny_policy}", f"actor={tmp_path / 'run'}"]
    assert isinstance(load_acting_policy(app_config(compose("eval", ev), EvalConfig, "eval.py", ev)), OneStepPolicy)


@pytest.mark.slow
def test_eval_py_acts_with_a_one_step_actor(tmp_path, tiny_policy, rollouts):
    train_qchunk(qchunk_config(tiny_policy, [rollouts], *DISTILL, "algo.offline_steps=2"), tmp_path / "run")
    done = subprocess.run([sys.executable, "eval.py", f"checkpoint={tiny_policy}", f"actor={tmp_path / 'run'}",
                           f"critic={tmp_path / 'run'}", "best_of_n=2", "num_envs=1", "eval.num_episodes=1",
                           "eval.max_episode_steps=10", "progress=false", f"hydra.run.dir={tmp_path / 'ev'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert info["episodes"] == 1 and info["actor"] == str(tmp_path / "run") and info["best_of_n"] == 2
