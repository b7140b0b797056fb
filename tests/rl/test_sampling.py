"""Sampling from the flow policy for Q-learning: N chunks from one prefix pass equal N calls of sample_actions;
best-of-N executes the highest-Q candidate; the flow-matching loss on the cached prefix equals compute_loss; the
actor's loss reaches the action expert's parameters and nothing else."""

import numpy as np
import pytest
import torch

from tests.rl.conftest import random_observations
from vla.data.transforms import collate
from vla.eval.policy import Policy
from vla.rl.best_of_n import BestOfNPolicy, candidate_noise
from vla.rl.critic import ChunkCritic, CriticSpec, critic_inputs
from vla.rl.sampling import (encode_prefix, expert_parameter_names, flow_matching_loss, pathwise_chunks,
                             pooled_prefix_features, sample_chunks)


@pytest.fixture(scope="module")
def policy(tiny_policy) -> Policy:
    return Policy.load(tiny_policy, None, None, action_dim=7)


@pytest.fixture(scope="module")
def critic(policy) -> ChunkCritic:
    c = policy.cfg
    torch.manual_seed(1)
    return ChunkCritic(CriticSpec(task="pushcube", env_id="PushCube-v1", model=c.name, features="policy",
                                  feature_dim=c.vlm.depth * c.vlm.num_kv_heads * c.vlm.head_dim,
                                  state_dim=c.action_dim, chunk_len=5, action_dim=7, hidden_dims=[32], num_qs=2))


def _batch(policy, pushcube, n=3, seed=0):
    return collate([policy.transform(o) for o in random_observations(pushcube, n, seed)])


def _noise(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_chunks_from_one_prefix_pass_equal_sample_actions(policy, pushcube):
    model, batch = policy.model, _batch(policy, pushcube)
    H, A = model.cfg.action_horizon, model.cfg.action_dim
    noise = _noise(3, 4, H, A)
    chunks = sample_chunks(model, encode_prefix(model, batch), noise, num_steps=10)
    for n in range(4):
        torch.testing.assert_close(chunks[:, n], model.sample_actions(batch, noise=noise[:, n]), atol=1e-5, rtol=1e-5)
    assert (chunks[:, 0] - chunks[:, 1]).abs().max() > 1e-2  # the candidates differ


def test_best_of_n_executes_the_highest_q_candidate(policy, critic, pushcube):
    model, batch = policy.model, _batch(policy, pushcube, n=4, seed=3)
    H, A, N = model.cfg.action_horizon, model.cfg.action_dim, 6
    noise = _noise(4, N, H, A, seed=5)
    chosen, q, best = BestOfNPolicy(policy, critic, N).choose(batch, noise)
    # independently: every candidate from its own sample_actions call, scored by the critic one at a time
    features = pooled_prefix_features(encode_prefix(model, batch))
    obs = critic_inputs(critic.spec, batch, features)
    candidates = torch.stack([model.sample_actions(batch, noise=noise[:, n]) for n in range(N)], dim=1)
    q_ref = torch.stack([critic(obs, candidates[:, n]).mean(0) for n in range(N)], dim=1)
    torch.testing.assert_close(q, q_ref, atol=1e-5, rtol=1e-5)
    assert best.tolist() == q_ref.argmax(dim=1).tolist()
    assert best.tolist() != [0] * 4  # not the policy's own first sample everywhere: the choice is tested
    torch.testing.assert_close(chosen, candidates[torch.arange(4), q_ref.argmax(dim=1)], atol=1e-5, rtol=1e-5)


def test_best_of_n_acts_with_the_chosen_chunk_and_of_one_is_the_policy(policy, critic, pushcube):
    obs = random_observations(pushcube, 2, seed=7)
    H, A = policy.cfg.action_horizon, policy.cfg.action_dim
    noise = _noise(2, H, A, seed=9)
    wrapped = BestOfNPolicy(policy, critic, 4)
    chosen, _, _ = wrapped.choose(collate([policy.transform(o) for o in obs]), candidate_noise(noise, 4))
    expected = policy.transform.unnormalize_actions(chosen, 7).numpy()
    np.testing.assert_allclose(wrapped.act(obs, noise), expected, atol=1e-5)
    np.testing.assert_allclose(BestOfNPolicy(policy, critic, 1).act(obs, noise), policy.act(obs, noise), atol=1e-5)
    with pytest.raises(ValueError, match="does not support real-time chunking"):
        wrapped.act(obs, noise, [np.zeros((3, 7)), None])


def test_candidate_noise_depends_on_each_row_alone():
    noise = _noise(3, 4, 2)
    c = candidate_noise(noise, 5)
    assert c.shape == (3, 5, 4, 2) and torch.equal(c[:, 0], noise)
    torch.testing.assert_close(candidate_noise(noise[1:2], 5)[0], c[1])  # the same row alone: the same candidates
    torch.testing.assert_close(candidate_noise(noise, 5), c)
    assert not torch.allclose(c[0, 1], c[1, 1])


def test_flow_matching_loss_on_the_cached_prefix_equals_compute_loss(policy, pushcube):
    model, batch = policy.model, _batch(policy, pushcube)
    H, A = model.cfg.action_horizon, model.cfg.action_dim
    actions, noise, time = _noise(3, H, A, seed=1), _noise(3, H, A, seed=2), torch.tensor([0.1, 0.5, 0.9])
    expected = model.compute_loss({**batch, "actions": actions}, noise=noise, time=time)
    got = flow_matching_loss(model, encode_prefix(model, batch), actions, noise, time)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_actor_loss_reaches_the_action_expert_only(policy, critic, pushcube):
    model, batch = policy.model, _batch(policy, pushcube)
    H, A = model.cfg.action_horizon, model.cfg.action_dim
    for p in model.parameters():  # everything could learn: only the graph decides what gets a gradient
        p.requires_grad_(True)
        p.grad = None
    try:
        ctx = encode_prefix(model, batch)
        bc = flow_matching_loss(model, ctx, _noise(3, H, A, seed=1), _noise(3, H, A, seed=2), torch.rand(3)).mean()
        chunks = pathwise_chunks(model, ctx, _noise(3, H, A, seed=3), num_steps=2)
        obs = critic_inputs(critic.spec, batch, pooled_prefix_features(ctx))
        (bc - critic(obs, chunks).mean()).backward()
        expert = set(expert_parameter_names(model))
        named = dict(model.named_parameters())
        assert any("experts.1." in n for n in expert) and "action_out_proj.weight" in expert
        assert not any(n.startswith(("image_encoder.", "transformer.embed_tokens.")) or ".experts.0." in n
                       for n in expert)
        reached = {n for n, p in named.items() if p.grad is not None}  # in the graph, even with a zero gradient
        assert reached == expert, (sorted(reached - expert)[:5], sorted(expert - reached)[:5])
        assert all(named[n].grad.abs().sum() > 0 for n in expert)
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
