"""Pi0/Pi0.5 policy: reference values computed with openpi's own functions, the numerical conventions of openpi's model
(src/openpi/models/pi0.py, gemma.py) that live in the model, the KV cache."""

import math

import numpy as np
import pytest
import torch

from tests.models.helpers import make_batch, randomized_policy
from vla.models import build_policy
from vla.models.gemma import AdaRMSNorm, RMSNorm, rope
from vla.models.pi0 import jax_linspace, make_attn_mask, sample_flow_time, sincos_time_embedding, trim_prompt_padding

VARIANTS = ["pi05_tiny", "pi0_tiny"]


def test_full_size_parameter_counts_match_openpi_jax():
    # openpi's JAX counts (nnx.eval_shape of src/openpi/models/pi0.py, no extra LM head); built on meta, nothing is
    # allocated.
    with torch.device("meta"):
        pi05, pi0 = build_policy("pi05"), build_policy("pi0")
    assert sum(p.numel() for p in pi05.parameters()) == 3_353_433_872
    assert sum(p.numel() for p in pi0.parameters()) == 3_238_048_528
    assert all(p.is_meta for p in pi05.parameters())


def test_pi0_small_is_pi05_small_with_continuous_state():
    """pi0_small is pi05_small's sizes with Pi0's architecture: the state enters as a projected continuous vector, not
    as numbers in the prompt (and time through Pi0's action-time MLP)."""
    from dataclasses import asdict

    from vla.models import load_policy_config

    pi0, pi05 = asdict(load_policy_config("pi0_small")), asdict(load_policy_config("pi05_small"))
    assert {k for k in pi0 if pi0[k] != pi05[k]} == {"name", "pi05", "discrete_state_input", "max_token_len"}
    with torch.device("meta"):
        model = build_policy("pi0_small")
    assert model.state_proj.in_features == 32  # the padded state vector, projected (Pi0), not tokenized


def test_unknown_model_config_and_unknown_key_fail_by_name():
    with pytest.raises(ValueError, match="unknown model config 'pi06'"):
        build_policy("pi06")
    with pytest.raises(Exception, match="acton_horizon"):
        build_policy({"name": "x", "acton_horizon": 4})


def test_time_embedding_reference_values():
    # computed with openpi's posemb_sincos (src/openpi/models/pi0.py)
    emb = sincos_time_embedding(torch.tensor([0.5, 1.0]), 1024)
    np.testing.assert_allclose(emb[0, 0:3], [-3.107323e-05, 9.004954e-01, -8.631482e-01], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(emb[0, 512:515], [1.0, -0.4348655, -0.5049507], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(emb[1, 0:3], [-6.214646e-05, -7.831888e-01, 8.716945e-01], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(emb[1, 1021:1024], [-4.30343e-02, -2.13766e-02, -4.37e-08], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("width", [32, 64, 128, 256, 512, 1024])
def test_time_embedding_fractions_are_jnp_linspace_bit_for_bit(width):
    """The log-spacing fractions of the time embedding equal openpi's `jnp.linspace(0.0, 1.0, width // 2)` exactly
    (torch.linspace does not: some elements are 1 ulp apart)."""
    import jax.numpy as jnp

    ours = jax_linspace(width // 2).numpy()
    theirs = np.asarray(jnp.linspace(0.0, 1.0, width // 2))
    assert ours.dtype == theirs.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    assert jax_linspace(1).tolist() == np.asarray(jnp.linspace(0.0, 1.0, 1)).tolist() == [0.0]


def test_attention_mask_reference_example():
    # openpi's make_attn_mask (src/openpi/models/pi0.py) on valid=[1,0,1,1,1], ar=[0,0,1,1,0] (1 image token, 1 pad,
    # state, 2 actions)
    mask = make_attn_mask(torch.tensor([[1, 0, 1, 1, 1]]).bool(), torch.tensor([[0, 0, 1, 1, 0]]).bool())
    expected = [[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 1, 0, 0], [1, 0, 1, 1, 1], [1, 0, 1, 1, 1]]
    assert mask[0].int().tolist() == expected


def test_flow_time_distribution():
    # openpi's compute_loss (src/openpi/models/pi0.py): 0.999 * Beta(1.5, 1) + 0.001 -> mean 0.6005, median 0.630
    # (= 0.5^(1/1.5) * 0.999 + 0.001)
    t = sample_flow_time(400_000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert t.min() >= 0.001 and t.max() <= 1.0
    assert abs(t.mean().item() - 0.6005) < 2e-3
    assert abs(t.median().item() - (0.5 ** (1 / 1.5) * 0.999 + 0.001)) < 3e-3


@pytest.mark.parametrize("name", VARIANTS)
def test_euler_times_and_step_count(name, monkeypatch):
    # openpi's sample_actions (src/openpi/models/pi0.py): float32-accumulated evaluation times of the 10-step Euler loop
    policy = randomized_policy(name)
    seen = []
    original = type(policy).embed_suffix

    def spy(self, state, x, t, *args, **kwargs):
        seen.append(t[0].item())
        return original(self, state, x, t, *args, **kwargs)

    monkeypatch.setattr(type(policy), "embed_suffix", spy)
    policy.sample_actions(make_batch(policy.cfg))
    ref = [1.0, 0.9, 0.79999995, 0.69999993, 0.5999999, 0.4999999, 0.3999999, 0.2999999, 0.19999993, 0.09999993]
    np.testing.assert_allclose(seen, ref, rtol=0, atol=1e-7)


def test_rmsnorm_and_adarmsnorm_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    norm = RMSNorm(8)
    torch.nn.init.normal_(norm.weight)
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + norm.weight)
    torch.testing.assert_close(norm(x)[0], ref)  # openpi gemma.py: (1 + w)

    ada = AdaRMSNorm(8, cond_dim=4)
    torch.nn.init.normal_(ada.dense.weight)
    torch.nn.init.normal_(ada.dense.bias)
    cond = torch.randn(2, 4)
    # openpi gemma.py splits the modulation as [scale, shift, gate]
    scale, shift, gate = (cond @ ada.dense.weight.T + ada.dense.bias)[:, None].chunk(3, -1)
    out, g = ada(x, cond)
    torch.testing.assert_close(out, x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + scale) + shift)
    torch.testing.assert_close(g, gate)


def test_rope_rotate_half_and_timescales():
    head_dim = 256
    x = torch.randn(1, 3, 2, head_dim)
    pos = torch.tensor([[0, 5, 17]])
    out = rope(x, pos)
    timescale = 10_000 ** (2 * torch.arange(128, dtype=torch.float64) / 256)
    np.testing.assert_allclose([timescale[0], timescale[1], timescale[-1]], [1.0, 1.0746078, 9305.7204], rtol=1e-6)
    ang = pos[..., None].double() / timescale
    x1, x2 = x.double()[..., :128], x.double()[..., 128:]
    sin, cos = torch.sin(ang)[:, :, None], torch.cos(ang)[:, :, None]
    ref = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 0], x[:, 0])  # position 0 is the identity


def test_language_embedding_scale_and_geglu():
    policy = randomized_policy("pi05_tiny")
    tr = policy.transformer
    tokens = torch.tensor([[3, 7]])
    # language tokens scaled by sqrt(width) (openpi gemma.py)
    torch.testing.assert_close(tr.embed(tokens), tr.embed_tokens.weight[tokens] * math.sqrt(tr.vlm_width))
    blk = tr.layers[0].experts[0]
    x = torch.randn(1, 4, blk.gate_proj.in_features)
    g, u = x @ blk.gate_proj.weight.T, x @ blk.up_proj.weight.T
    tanh_gelu = 0.5 * g * (1 + torch.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3)))  # openpi lora.py
    torch.testing.assert_close(blk.mlp(x), (tanh_gelu * u) @ blk.down_proj.weight.T, atol=1e-5, rtol=1e-5)


def test_from_scratch_init_zeroes_adarms_and_image_head():
    policy = build_policy("pi05_tiny")
    for layer in policy.transformer.layers:
        ada = layer.experts[1].attn_norm
        assert isinstance(ada, AdaRMSNorm) and ada.dense.weight.abs().sum() == 0 and ada.dense.bias.abs().sum() == 0
        assert isinstance(layer.experts[0].attn_norm, RMSNorm)
    assert policy.image_encoder.proj.weight.abs().sum() == 0
    assert all(isinstance(layer.experts[1].attn_norm, RMSNorm) for layer in build_policy("pi0_tiny").transformer.layers)


@pytest.mark.parametrize("name", VARIANTS)
def test_kv_cache_equals_full_recompute(name):
    policy = randomized_policy(name)
    batch = make_batch(policy.cfg, masked=("right_wrist_0_rgb",))
    batch["image_masks"]["left_wrist_0_rgb"] = torch.tensor([True, False])
    noise = torch.randn(2, policy.cfg.action_horizon, policy.cfg.action_dim, generator=torch.Generator().manual_seed(1))
    cached = policy.sample_actions(batch, noise=noise)
    full = policy.sample_actions(batch, noise=noise, use_kv_cache=False)
    assert cached.shape == (2, policy.cfg.action_horizon, policy.cfg.action_dim)
    assert cached.abs().max() > 0.1  # not a degenerate all-zero model
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_compiled_inference_equals_eager():
    """compile_for_inference (eval.py compile=true) samples the same actions, call after call (CUDA graphs only
    exist on the GPU; on the CPU this checks the compiled functions and the loop that calls them)."""
    policy = randomized_policy("pi05_tiny")
    batch = make_batch(policy.cfg, masked=("right_wrist_0_rgb",))
    noise = torch.randn(2, policy.cfg.action_horizon, policy.cfg.action_dim, generator=torch.Generator().manual_seed(1))
    eager = policy.sample_actions(batch, noise=noise)
    policy.compile_for_inference()
    for _ in range(2):
        torch.testing.assert_close(policy.sample_actions(batch, noise=noise), eager, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", VARIANTS)
def test_fused_projections_sample_the_same_and_stay_out_of_checkpoints(name):
    """fuse_projections (compile_for_inference's first step) changes how the matmuls are grouped, not what they
    compute, and the fused copies are no checkpoint keys; LoRA-wrapped projections are left unfused."""
    from vla.models.lora import apply_lora

    policy = randomized_policy(name)
    batch = make_batch(policy.cfg)
    noise = torch.randn(2, policy.cfg.action_horizon, policy.cfg.action_dim, generator=torch.Generator().manual_seed(1))
    keys = set(policy.state_dict())
    unfused = policy.sample_actions(batch, noise=noise)
    policy.transformer.fuse_projections()
    vlm, expert = policy.transformer.layers[0].experts
    assert vlm.qkv_weight is not None and vlm.gate_up_weight is None  # the VLM's gate/up stays unfused (memory)
    assert expert.qkv_weight is not None and expert.gate_up_weight is not None
    assert set(policy.state_dict()) == keys
    torch.testing.assert_close(policy.sample_actions(batch, noise=noise), unfused, atol=1e-5, rtol=1e-5)

    lora = randomized_policy(name)
    apply_lora(lora, 2, 2.0, 2, 2.0)
    lora.transformer.fuse_projections()
    assert all(e.qkv_weight is None and e.gate_up_weight is None for e in lora.transformer.layers[0].experts)


@pytest.mark.parametrize("name", VARIANTS)
def test_trimming_prompt_padding_is_exact(name):
    """sample_actions drops the prompt columns no sample uses (rounded up to model.prompt_bucket): the same actions
    as the full padded prompt, with and without the KV cache."""
    policy = randomized_policy(name)
    batch = make_batch(policy.cfg, lengths=(7, 13))
    L = policy.cfg.max_token_len
    assert trim_prompt_padding(batch, 1)["tokens"].shape == (2, 13)
    assert trim_prompt_padding(batch, 8)["token_mask"].shape == (2, 16)
    assert trim_prompt_padding(batch, L) is batch
    with pytest.raises(ValueError, match="model.prompt_bucket"):
        trim_prompt_padding(batch, 0)
    noise = torch.randn(2, policy.cfg.action_horizon, policy.cfg.action_dim, generator=torch.Generator().manual_seed(1))
    policy.cfg.prompt_bucket = L
    full = [policy.sample_actions(batch, noise=noise, use_kv_cache=c) for c in (True, False)]
    policy.cfg.prompt_bucket = 1
    for cache, ref in zip((True, False), full, strict=True):
        torch.testing.assert_close(policy.sample_actions(batch, noise=noise, use_kv_cache=cache), ref,
                                   atol=1e-5, rtol=1e-5)


def test_step_modulations_are_the_per_step_adarms_modulations():
    """Pi0.5 sampling reads each step's adaRMS [scale | shift | gate] from one precomputed table: row k of it must be
    what the norms compute from the time condition at the k-th Euler time."""
    policy = randomized_policy("pi05_tiny")
    times = torch.tensor([1.0, 0.9, 0.5])
    table = policy.step_modulations(times)
    depth = len(policy.transformer.layers)
    assert table.shape == (3, 2 * depth + 1, 3 * policy.cfg.expert.width)
    for k, t in enumerate(times):
        cond = policy.time_condition(t[None])
        layer = policy.transformer.layers[depth - 1]
        torch.testing.assert_close(table[k, 2 * depth - 2], layer.experts[1].attn_norm.dense(cond)[0])
        torch.testing.assert_close(table[k, 2 * depth - 1], layer.experts[1].mlp_norm.dense(cond)[0])
        torch.testing.assert_close(table[k, -1], policy.transformer.expert_norm.dense(cond)[0])


@pytest.mark.parametrize("name", VARIANTS)
def test_loss_matches_flow_matching_definition(name, monkeypatch):
    """As openpi's compute_loss (src/openpi/models/pi0.py): x_t = t*noise + (1-t)*actions goes into the suffix and the
    loss is MSE to (noise - actions)."""
    policy = randomized_policy(name)
    batch = make_batch(policy.cfg)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(batch["actions"].shape, generator=g)
    time = torch.tensor([0.25, 0.9])
    captured = {}
    original_embed, original_out = type(policy).embed_suffix, policy.action_out_proj.forward

    def spy_embed(self, state, x_t, t, *args, **kwargs):
        captured["x_t"], captured["t"] = x_t, t
        return original_embed(self, state, x_t, t, *args, **kwargs)

    def spy_out(x):
        captured["v"] = original_out(x)
        return captured["v"]

    monkeypatch.setattr(type(policy), "embed_suffix", spy_embed)
    monkeypatch.setattr(policy.action_out_proj, "forward", spy_out)
    loss = policy.compute_loss(batch, noise=noise, time=time)
    t = time[:, None, None]
    torch.testing.assert_close(captured["x_t"], t * noise + (1 - t) * batch["actions"])
    torch.testing.assert_close(captured["t"], time)
    torch.testing.assert_close(loss, (captured["v"] - (noise - batch["actions"])).pow(2).mean(-1))
    assert loss.shape == (2, policy.cfg.action_horizon)


@pytest.mark.parametrize("name", VARIANTS)
def test_padding_and_masked_cameras_are_invisible(name):
    """Masked cameras and padded prompt tokens never influence valid outputs (openpi's position ids and attention
    mask): changing their content, or dropping a masked camera from the batch altogether, leaves loss and actions
    unchanged."""
    policy = randomized_policy(name)
    batch = make_batch(policy.cfg)
    noise = torch.randn(batch["actions"].shape, generator=torch.Generator().manual_seed(2))
    time = torch.tensor([0.3, 0.7])
    loss = policy.compute_loss(batch, noise, time)
    actions = policy.sample_actions(batch, noise=noise)

    changed = dict(batch, images=dict(batch["images"]), tokens=batch["tokens"].clone())
    changed["images"]["right_wrist_0_rgb"] = 255 - batch["images"]["right_wrist_0_rgb"]
    changed["tokens"][~batch["token_mask"]] = 5
    torch.testing.assert_close(policy.compute_loss(changed, noise, time), loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(policy.sample_actions(changed, noise=noise), actions, atol=1e-6, rtol=0)

    dropped = dict(batch, images={k: v for k, v in batch["images"].items() if k != "right_wrist_0_rgb"})
    torch.testing.assert_close(policy.compute_loss(dropped, noise, time), loss, atol=1e-5, rtol=0)

    # ... while a visible camera does matter (the test can fail)
    visible = dict(batch, images=dict(batch["images"]))
    visible["images"]["base_0_rgb"] = 255 - batch["images"]["base_0_rgb"]
    assert (policy.compute_loss(visible, noise, time) - loss).abs().max() > 1e-4


def test_positions_skip_masked_camera():
    """Positions are cumsum(valid) - 1 as in openpi (src/openpi/models/pi0.py): with the middle camera masked, language
    tokens take the positions right after the valid image tokens."""
    policy = randomized_policy("pi05_tiny")
    batch = make_batch(policy.cfg, masked=("left_wrist_0_rgb",))
    _, mask, _ = policy.embed_prefix(batch)
    positions = torch.cumsum(mask.long(), 1) - 1
    patches = policy.image_encoder.num_patches
    first_lang = 3 * patches
    assert positions[0, first_lang].item() == 2 * patches  # 512 for the full model's 256 patches/camera


def test_state_input_by_variant():
    """Pi0 reads the continuous state token; Pi0.5 never sees batch['state'] (its state is in the prompt)."""
    for name, uses_state in (("pi0_tiny", True), ("pi05_tiny", False)):
        policy = randomized_policy(name)
        batch = make_batch(policy.cfg)
        noise = torch.randn(batch["actions"].shape, generator=torch.Generator().manual_seed(4))
        a = policy.sample_actions(batch, noise=noise)
        b = policy.sample_actions(dict(batch, state=batch["state"] + 1.0), noise=noise)
        assert ((a - b).abs().max() > 1e-4) == uses_state, name


def test_backward_reaches_every_trained_parameter():
    policy = randomized_policy("pi05_tiny").train()
    policy.compute_loss(make_batch(policy.cfg)).mean().backward()
    # The VLM's last-layer queries, output projection, MLP and final norm feed only the discarded prefix output.
    last = len(policy.transformer.layers) - 1
    unused = set(policy.unused_parameter_names())
    assert f"transformer.layers.{last}.experts.0.q_proj.weight" in unused and "transformer.vlm_norm.weight" in unused
    assert not any(n.startswith(f"transformer.layers.{last}.experts.0.k_proj") for n in unused)  # its K/V are used
    for name, p in policy.named_parameters():
        if name in unused:
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bf16_compute_close_to_fp32():
    policy = randomized_policy("pi05_tiny", std=0.05)
    batch = make_batch(policy.cfg)
    noise = torch.randn(batch["actions"].shape, generator=torch.Generator().manual_seed(5))
    time = torch.tensor([0.4, 0.8])
    ref = policy.compute_loss(batch, noise, time)
    bf16 = policy.to(torch.bfloat16).compute_loss(batch, noise, time)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, ref, rtol=5e-2, atol=5e-2)
