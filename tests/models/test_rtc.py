"""Real-time chunking (vla.models.rtc, Pi0Policy.sample_actions(prev_chunk=...)): the paper's soft mask and clipped
guidance weight against hand-computed values, the guided Euler update against its closed form for a linear velocity
field, plain sampling recovered exactly with guidance weight 0, and the committed prefix followed more closely as
the weight grows."""

import math

import numpy as np
import pytest
import torch

from tests.models.helpers import make_batch, randomized_policy
from vla.models.rtc import guidance_target, guidance_weight, prefix_weights

VARIANTS = ["pi05_tiny", "pi0_tiny"]


def test_prefix_weights_hand_computed():
    # start=2, end=6, total=10: c_i = (end - i) / (end - start + 1), clipped to [0, 1], and 0 from `end` on
    c = [1.0, 1.0, 4 / 5, 3 / 5, 2 / 5, 1 / 5, 0.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(prefix_weights(2, 6, 10, "linear"), c, atol=1e-7)
    np.testing.assert_allclose(prefix_weights(2, 6, 10, "exp"), [x * math.expm1(x) / (math.e - 1) for x in c],
                               atol=1e-7)
    np.testing.assert_allclose(prefix_weights(2, 6, 10, "ones"), [1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(prefix_weights(2, 6, 10, "zeros"), [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])  # the hard mask
    # no delay: the whole overlap is soft; end before start: nothing past end is guided; end 0: nothing at all
    np.testing.assert_allclose(prefix_weights(0, 4, 6, "linear"), [4 / 5, 3 / 5, 2 / 5, 1 / 5, 0, 0], atol=1e-7)
    np.testing.assert_allclose(prefix_weights(5, 3, 6, "linear"), [1, 1, 1, 0, 0, 0])
    assert not prefix_weights(2, 0, 6, "exp").any()
    with pytest.raises(ValueError, match="schedule 'cosine'"):
        prefix_weights(2, 6, 10, "cosine")


def test_guidance_weight_hand_computed():
    # min(beta, (tau^2 + (1 - tau)^2) / (tau (1 - tau))); pure noise (tau = 1) takes beta
    assert guidance_weight(1.0, 5.0) == 5.0
    assert guidance_weight(0.5, 5.0) == pytest.approx(2.0)  # (0.25 + 0.25) / 0.25
    assert guidance_weight(0.2, 5.0) == pytest.approx(4.25)  # (0.04 + 0.64) / 0.16
    assert guidance_weight(0.9, 5.0) == 5.0  # unclipped 9.11
    assert guidance_weight(0.9, 10.0) == pytest.approx(0.82 / 0.09)
    assert guidance_weight(0.3, 0.0) == 0.0
    with pytest.raises(ValueError, match="max_guidance_weight=-1"):
        guidance_weight(0.5, -1.0)


def test_guidance_target_pads_and_masks_per_sample():
    prev = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    Y, W = guidance_target(prev, horizon=5, action_dim=4, inference_delay=1, execution_horizon=[2, 5],
                           schedule="ones")
    assert Y.shape == W.shape == (2, 5, 4)
    assert torch.equal(Y[:, :3, :2], prev) and not Y[:, 3:].any() and not Y[:, :, 2:].any()
    # sample 0: end = min(3 actions given, 5 - 2) = 3; sample 1: execution horizon = chunk: not guided
    assert torch.equal(W[0, :, 0], torch.tensor([1.0, 1, 1, 0, 0])) and not W[0, :, 2:].any()
    assert not W[1].any()
    with pytest.raises(ValueError, match=r"at most \(5, 4\)"):
        guidance_target(torch.zeros(1, 6, 4), 5, 4, 1, None, "exp")


def test_guided_euler_update_closed_form_for_a_linear_field(monkeypatch):
    """With v(x) = a x + b: x0_hat = (1 - tau a) x - tau b, its Jacobian is (1 - tau a) I, so the guided velocity is
    v - w (1 - tau a) W (Y - x0_hat). Two Euler steps (tau = 1, 0.5; w = beta = 5, then min(5, 2) = 2), computed here
    in float64 from the formulas alone."""
    policy = randomized_policy("pi05_tiny")
    cfg = policy.cfg
    H, A = cfg.action_horizon, cfg.action_dim
    a, g = 0.7, torch.Generator().manual_seed(3)
    b = torch.randn(1, H, A, generator=g)
    monkeypatch.setattr(policy, "denoise_step", lambda x, *args: a * x + b)
    noise, prev = torch.randn(2, H, A, generator=g), torch.randn(2, H - 4, 7, generator=g)
    out = policy.sample_actions(make_batch(cfg), noise=noise, num_steps=2, prev_chunk=prev, inference_delay=2,
                                execution_horizon=4, max_guidance_weight=5.0, schedule="exp")

    c = np.array([1.0, 1.0, 0.8, 0.6, 0.4, 0.2] + [0.0] * (H - 6))  # d=2, end = H - s = 6
    mask = np.zeros((H, A))
    mask[:, :7] = (c * np.expm1(c) / (math.e - 1))[:, None]
    Y = np.zeros((2, H, A))
    Y[:, :H - 4, :7] = prev.double().numpy()
    x, bb = noise.double().numpy(), b.double().numpy()
    for tau, w in ((1.0, 5.0), (0.5, 2.0)):
        v = a * x + bb
        x0_hat = (1 - tau * a) * x - tau * bb
        v_guided = v - w * (1 - tau * a) * mask * (Y - x0_hat)
        x = x - 0.5 * v_guided
    np.testing.assert_allclose(out.double().numpy(), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_guidance_weight_zero_is_plain_sampling(name):
    policy = randomized_policy(name)
    cfg = policy.cfg
    batch = make_batch(cfg)
    g = torch.Generator().manual_seed(1)
    noise, prev = torch.randn(2, cfg.action_horizon, cfg.action_dim, generator=g), torch.randn(2, 6, 7, generator=g)
    plain = policy.sample_actions(batch, noise=noise)
    off = policy.sample_actions(batch, noise=noise, prev_chunk=prev, inference_delay=2, max_guidance_weight=0.0)
    assert torch.equal(off, plain)
    # a sample whose execution horizon is the whole chunk is not guided, whatever its neighbour is
    mixed = policy.sample_actions(batch, noise=noise, prev_chunk=prev, inference_delay=2,
                                  execution_horizon=[4, cfg.action_horizon])
    assert torch.equal(mixed[1], plain[1]) and not torch.allclose(mixed[0], plain[0])


@pytest.mark.parametrize("name", VARIANTS)
def test_committed_prefix_followed_more_closely_as_the_weight_grows(name):
    policy = randomized_policy(name)
    cfg = policy.cfg
    batch = make_batch(cfg)
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(2, cfg.action_horizon, cfg.action_dim, generator=g)
    prev = torch.randn(2, cfg.action_horizon - 4, 7, generator=g)
    d = 3

    def prefix_error(beta: float) -> float:
        out = policy.sample_actions(batch, noise=noise, prev_chunk=prev, inference_delay=d, execution_horizon=4,
                                    max_guidance_weight=beta)
        return (out[:, :d, :7] - prev[:, :d]).pow(2).mean().sqrt().item()

    errors = [prefix_error(beta) for beta in (0.0, 0.5, 1.0, 2.0, 5.0)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 * errors[0], errors


def test_guided_sampling_same_with_and_without_kv_cache():
    policy = randomized_policy("pi05_tiny")
    cfg = policy.cfg
    batch = make_batch(cfg)
    g = torch.Generator().manual_seed(4)
    noise, prev = torch.randn(2, cfg.action_horizon, cfg.action_dim, generator=g), torch.randn(2, 6, 7, generator=g)
    kwargs = dict(noise=noise, prev_chunk=prev, inference_delay=2, execution_horizon=4)
    np.testing.assert_allclose(policy.sample_actions(batch, **kwargs),
                               policy.sample_actions(batch, use_kv_cache=False, **kwargs), atol=1e-5)
