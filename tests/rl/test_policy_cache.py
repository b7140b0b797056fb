"""The frozen policy's per-frame cache (actor disabled): its bank rows are the policy's own samples for those frames
from the frames' noise, an update reads it and runs no policy pass, and new frames are cached without touching the
old ones."""

import numpy as np
import pytest
import torch

from tests.rl.conftest import write_rollouts
from tests.rl.test_trainer import qchunk_config
from vla.data.transforms import collate
from vla.rl.data import RolloutData
from vla.rl.learner import update
from vla.rl.policy_cache import frame_noise, frames_read
from vla.rl.sampling import encode_prefix, pooled_prefix_features
from vla.rl.trainer import build_learner

MODEL_PASSES = ("forward", "compute_loss", "sample_actions", "prefix_cache", "denoise_step", "embed_prefix")


@pytest.fixture
def learner(tiny_policy, rollouts):
    cfg = qchunk_config(tiny_policy, [rollouts], "algo.cache_samples=3", "algo.calql.policy_samples=3")
    learner = build_learner(cfg)
    learner.cache.extend(learner.policy, learner.replay, batch_size=4)
    return learner, cfg


def count_model_passes(model) -> dict[str, int]:
    """Wraps the policy model's passes on this instance so that every call is counted."""
    calls = dict.fromkeys(MODEL_PASSES, 0)
    for name in MODEL_PASSES:
        original = getattr(model, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        setattr(model, name, counted)
    return calls


def test_bank_rows_are_the_policys_samples_with_the_frames_noise(learner):
    learner, cfg = learner
    cache, policy, model = learner.cache, learner.policy, learner.policy.model
    frames = np.array([0, 7, 30])
    assert set(frames) <= set(frames_read(learner.replay)) and cache.cached[frames_read(learner.replay)].all()
    batch = collate([policy.transform(o) for o in learner.replay.observations(frames)])
    H, A, h = model.cfg.action_horizon, model.cfg.action_dim, cache.spec.chunk_len
    for n in range(cache.num_samples):
        noise = torch.stack([frame_noise(cfg.seed, int(f), [n], (H, A))[0] for f in frames])
        direct = model.sample_actions(batch, noise=noise, num_steps=learner.num_denoise_steps)
        torch.testing.assert_close(cache.samples[frames, n], direct[:, :h, :7], atol=1e-5, rtol=1e-5)
    assert (cache.samples[frames, 0] - cache.samples[frames, 1]).abs().max() > 1e-2  # the bank's rows differ
    features = pooled_prefix_features(encode_prefix(model, batch))
    torch.testing.assert_close(cache.features[frames], features, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache.state[frames], batch["state"].float())


def test_cached_update_runs_no_policy_pass(learner):
    learner, cfg = learner
    calls = count_model_passes(learner.policy.model)
    before = [p.detach().clone() for p in learner.critic.parameters()]
    metrics = [update(learner, cfg.algo) for _ in range(2)]
    assert calls == dict.fromkeys(MODEL_PASSES, 0)
    assert all(torch.isfinite(m["critic/calql"]) and torch.isfinite(m["critic/td_loss"]) for m in metrics)
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.critic.parameters()))
    # drawn rows are distinct bank rows of the sampled frames
    frames = np.array([0, 0, 30])
    drawn = learner.cache.draw(frames, 3, torch.Generator().manual_seed(0), "cpu")
    for b, f in enumerate(frames):
        bank = learner.cache.samples[f]
        rows = [int(torch.nonzero((bank == d).flatten(1).all(1))[0]) for d in drawn[b]]
        assert sorted(rows) == [0, 1, 2]


def test_new_frames_are_cached_alone(learner, tmp_path, pushcube):
    learner, _ = learner
    cache = learner.cache
    old_frames = len(learner.replay)
    old = cache.samples.clone()
    write_rollouts(tmp_path / "more", pushcube, [(8, 7)], seed=50)
    learner.replay.add(RolloutData(tmp_path / "more"))
    calls = count_model_passes(learner.policy.model)
    computed, _ = cache.extend(learner.policy, learner.replay, batch_size=4)
    assert computed == 8 and calls["prefix_cache"] == 2  # the 8 new frames, in two batches of 4
    assert torch.equal(cache.samples[:old_frames], old) and cache.cached.all()
    assert cache.extend(learner.policy, learner.replay, batch_size=4)[0] == 0


def test_too_small_a_bank_is_refused(tiny_policy, rollouts):
    with pytest.raises(Exception, match=r"algo.cache_samples=2: an update draws 3 distinct cached chunks"):
        qchunk_config(tiny_policy, [rollouts], "algo.cache_samples=2", "algo.calql.policy_samples=3")
