"""Checkpoint layouts: openpi PyTorch, LeRobot, openpi JAX (Orbax) — key coverage, round trips, clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.models.helpers import make_batch, randomized_policy
from vla.models import build_policy, load_policy_config
from vla.models import weights as W

REPO = Path(__file__).resolve().parents[2]
PALI, EXPERT = W.PALI, W.EXPERT
SIG = PALI + "vision_tower.vision_model."


def openpi_pt_keys(pi05: bool) -> dict[str, tuple]:
    """Every key of openpi's PI0Pytorch state dict (src/openpi/models_pytorch/pi0_pytorch.py) with its shape, written
    out by hand (less the two LM heads, which are tied / unused and never exported)."""
    k: dict[str, tuple] = {
        SIG + "embeddings.patch_embedding.weight": (1152, 3, 14, 14), SIG + "embeddings.patch_embedding.bias": (1152,),
        SIG + "embeddings.position_embedding.weight": (256, 1152),
        SIG + "post_layernorm.weight": (1152,), SIG + "post_layernorm.bias": (1152,),
        PALI + "multi_modal_projector.linear.weight": (2048, 1152), PALI + "multi_modal_projector.linear.bias": (2048,),
        PALI + "language_model.embed_tokens.weight": (257152, 2048), PALI + "language_model.norm.weight": (2048,),
        "action_in_proj.weight": (1024, 32), "action_in_proj.bias": (1024,),
        "action_out_proj.weight": (32, 1024), "action_out_proj.bias": (32,),
    }
    for i in range(27):
        p = f"{SIG}encoder.layers.{i}."
        for n in ("layer_norm1", "layer_norm2"):
            k[p + n + ".weight"], k[p + n + ".bias"] = (1152,), (1152,)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            k[p + f"self_attn.{n}.weight"], k[p + f"self_attn.{n}.bias"] = (1152, 1152), (1152,)
        k[p + "mlp.fc1.weight"], k[p + "mlp.fc1.bias"] = (4304, 1152), (4304,)
        k[p + "mlp.fc2.weight"], k[p + "mlp.fc2.bias"] = (1152, 4304), (1152,)
    for base, d, f in ((PALI + "language_model.", 2048, 16384), (EXPERT, 1024, 4096)):
        for i in range(18):
            p = f"{base}layers.{i}."
            k[p + "self_attn.q_proj.weight"] = (2048, d)
            k[p + "self_attn.k_proj.weight"] = k[p + "self_attn.v_proj.weight"] = (256, d)
            k[p + "self_attn.o_proj.weight"] = (d, 2048)
            k[p + "mlp.gate_proj.weight"] = k[p + "mlp.up_proj.weight"] = (f, d)
            k[p + "mlp.down_proj.weight"] = (d, f)
            for n in ("input_layernorm", "post_attention_layernorm"):
                if base == EXPERT and pi05:
                    k[p + n + ".dense.weight"], k[p + n + ".dense.bias"] = (3072, 1024), (3072,)
                else:
                    k[p + n + ".weight"] = (d,)
    if pi05:
        k[EXPERT + "norm.dense.weight"], k[EXPERT + "norm.dense.bias"] = (3072, 1024), (3072,)
        for n in ("time_mlp_in", "time_mlp_out"):
            k[n + ".weight"], k[n + ".bias"] = (1024, 1024), (1024,)
    else:
        k[EXPERT + "norm.weight"] = (1024,)
        k["state_proj.weight"], k["state_proj.bias"] = (1024, 32), (1024,)
        k["action_time_mlp_in.weight"], k["action_time_mlp_in.bias"] = (1024, 2048), (1024,)
        k["action_time_mlp_out.weight"], k["action_time_mlp_out.bias"] = (1024, 1024), (1024,)
    return k


def jax_param_shapes(pi05: bool) -> dict[str, tuple]:
    """openpi's JAX `params` tree (src/openpi/models/pi0.py, gemma.py, siglip.py; layer stacks scanned), flat paths and
    shapes."""
    img, enc, llm = "PaliGemma/img/", "PaliGemma/img/Transformer/encoderblock/", "PaliGemma/llm/"
    s = {
        img + "embedding/kernel": (14, 14, 3, 1152), img + "embedding/bias": (1152,), img + "pos_embedding": (1, 256, 1152),
        img + "Transformer/encoder_norm/scale": (1152,), img + "Transformer/encoder_norm/bias": (1152,),
        img + "head/kernel": (1152, 2048), img + "head/bias": (2048,),
        llm + "embedder/input_embedding": (257152, 2048), llm + "final_norm/scale": (2048,),
        "action_in_proj/kernel": (32, 1024), "action_in_proj/bias": (1024,),
        "action_out_proj/kernel": (1024, 32), "action_out_proj/bias": (32,),
    }
    for n in ("LayerNorm_0", "LayerNorm_1"):
        s[enc + n + "/scale"] = s[enc + n + "/bias"] = (27, 1152)
    for n in ("query", "key", "value"):
        s[enc + f"MultiHeadDotProductAttention_0/{n}/kernel"] = (27, 1152, 16, 72)
        s[enc + f"MultiHeadDotProductAttention_0/{n}/bias"] = (27, 16, 72)
    s[enc + "MultiHeadDotProductAttention_0/out/kernel"] = (27, 16, 72, 1152)
    s[enc + "MultiHeadDotProductAttention_0/out/bias"] = (27, 1152)
    s[enc + "MlpBlock_0/Dense_0/kernel"], s[enc + "MlpBlock_0/Dense_0/bias"] = (27, 1152, 4304), (27, 4304)
    s[enc + "MlpBlock_0/Dense_1/kernel"], s[enc + "MlpBlock_0/Dense_1/bias"] = (27, 4304, 1152), (27, 1152)
    for sfx, d, f in (("", 2048, 16384), ("_1", 1024, 4096)):
        L = llm + "layers/"
        s[f"{L}attn/q_einsum{sfx}/w"] = (18, 8, d, 256)
        s[f"{L}attn/kv_einsum{sfx}/w"] = (18, 2, 1, d, 256)
        s[f"{L}attn/attn_vec_einsum{sfx}/w"] = (18, 8, 256, d)
        s[f"{L}mlp{sfx}/gating_einsum"] = (18, 2, d, f)
        s[f"{L}mlp{sfx}/linear"] = (18, f, d)
        for n in ("pre_attention_norm", "pre_ffw_norm"):
            if sfx and pi05:
                s[f"{L}{n}{sfx}/Dense_0/kernel"], s[f"{L}{n}{sfx}/Dense_0/bias"] = (18, 1024, 3072), (18, 3072)
            else:
                s[f"{L}{n}{sfx}/scale"] = (18, d)
    if pi05:
        s[llm + "final_norm_1/Dense_0/kernel"], s[llm + "final_norm_1/Dense_0/bias"] = (1024, 3072), (3072,)
        for n in ("time_mlp_in", "time_mlp_out"):
            s[n + "/kernel"], s[n + "/bias"] = (1024, 1024), (1024,)
    else:
        s[llm + "final_norm_1/scale"] = (1024,)
        s["state_proj/kernel"], s["state_proj/bias"] = (32, 1024), (1024,)
        s["action_time_mlp_in/kernel"], s["action_time_mlp_in/bias"] = (2048, 1024), (1024,)
        s["action_time_mlp_out/kernel"], s["action_time_mlp_out/bias"] = (1024, 1024), (1024,)
    return s


@pytest.mark.parametrize("name,pi05,num_keys", [("pi05", True, 811), ("pi0", False, 776)])
def test_export_covers_every_openpi_key_with_its_shape(name, pi05, num_keys):
    with torch.device("meta"):
        policy = build_policy(name)
    exported = {k: tuple(v.shape) for k, v in W.to_openpi(policy.state_dict()).items()}
    expected = openpi_pt_keys(pi05)
    assert len(expected) == num_keys  # PI0Pytorch's 813 / 778 keys, less the two LM heads
    assert exported == expected


@pytest.mark.parametrize("name,pi05", [("pi05", True), ("pi0", False)])
def test_full_size_jax_tree_maps_onto_every_key(name, pi05):
    """The JAX mapping on the real full-size layout (zero-stride stand-ins, nothing allocated)."""
    with torch.device("meta"):
        policy = build_policy(name)
    flat = {k: np.broadcast_to(np.float32(0), shape) for k, shape in jax_param_shapes(pi05).items()}
    mapped = {k: tuple(v.shape) for k, v in W.jax_to_openpi(flat, policy.cfg).items()}
    assert mapped == openpi_pt_keys(pi05)
    assert W.detect_variant(flat) == name


def _outputs(policy, batch):
    noise = torch.randn(batch["actions"].shape, generator=torch.Generator().manual_seed(7))
    return policy.compute_loss(batch, noise, torch.tensor([0.3, 0.6])), policy.sample_actions(batch, noise=noise)


@pytest.mark.parametrize("name", ["pi05_tiny", "pi0_tiny"])
@pytest.mark.parametrize("layout", ["openpi", "lerobot", "jax"])
def test_round_trip_is_bit_identical(name, layout, tmp_path):
    policy = randomized_policy(name, seed=1)
    if layout == "jax":
        W.save_jax_params(W.openpi_to_jax(W.to_openpi(policy.state_dict()), policy.cfg), tmp_path / "params")
    else:
        W.save_openpi(policy.state_dict(), tmp_path / "model.safetensors", lerobot=layout == "lerobot")
        keys = list(load_file(str(tmp_path / "model.safetensors")))
        assert all(k.startswith("model.") for k in keys) == (layout == "lerobot")
    loaded = build_policy(name).eval()
    W.load_pretrained(loaded, tmp_path)
    for key, value in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    batch = make_batch(policy.cfg)
    for a, b in zip(_outputs(policy, batch), _outputs(loaded, batch), strict=True):
        assert torch.equal(a, b)


@pytest.fixture()
def saved_tiny(tmp_path):
    policy = randomized_policy("pi05_tiny")
    state = W.to_openpi(policy.state_dict())
    return policy, state, tmp_path / "model.safetensors"


def test_missing_key_is_named(saved_tiny):
    policy, state, path = saved_tiny
    gone = f"{EXPERT}layers.1.mlp.up_proj.weight"
    save_file({k: v for k, v in state.items() if k != gone}, str(path))
    with pytest.raises(W.CheckpointError, match=rf"model.safetensors: missing keys \['{gone}'\]"):
        W.load_pretrained(build_policy("pi05_tiny"), path)


def test_unexpected_key_is_named_but_lm_heads_are_ignored(saved_tiny):
    policy, state, path = saved_tiny
    extra = dict(state, **{"paligemma_with_expert.gemma_expert.lm_head.weight": torch.zeros(3, 2)})
    save_file(extra, str(path))
    W.load_pretrained(build_policy("pi05_tiny"), path)  # the expert's unused LM head is fine
    save_file(dict(state, bogus_proj=torch.zeros(2)), str(path))
    with pytest.raises(W.CheckpointError, match=r"unexpected keys \['bogus_proj'\]"):
        W.load_pretrained(build_policy("pi05_tiny"), path)


def test_misshaped_key_is_named(saved_tiny):
    policy, state, path = saved_tiny
    state = dict(state, **{"action_out_proj.weight": torch.zeros(31, 32)})
    save_file(state, str(path))
    with pytest.raises(W.CheckpointError, match=r"shape mismatch at action_out_proj.weight: expected \(32, 32\), found \(31, 32\)"):
        W.load_pretrained(build_policy("pi05_tiny"), path)


def test_tied_embedding_saved_under_lm_head_name(saved_tiny):
    policy, state, path = saved_tiny
    embed = state.pop(f"{PALI}language_model.embed_tokens.weight")
    save_file(dict(state, **{W.PALI_LM_HEAD: embed}), str(path))
    loaded = build_policy("pi05_tiny")
    W.load_pretrained(loaded, path)
    assert torch.equal(loaded.transformer.embed_tokens.weight, embed)


def test_variant_detected_from_keys_not_path(tmp_path):
    pi0 = randomized_policy("pi0_tiny")
    target = tmp_path / "pi05_checkpoint_named_misleadingly"
    target.mkdir()
    W.save_openpi(pi0.state_dict(), target / "model.safetensors")
    with pytest.raises(W.CheckpointError, match="holds a pi0 model but the config builds pi05"):
        W.load_pretrained(build_policy("pi05_tiny"), target)


def test_truncated_file_and_empty_dir_fail_clearly(saved_tiny, tmp_path):
    policy, state, path = saved_tiny
    save_file(state, str(path))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(W.CheckpointError, match="not a readable safetensors file"):
        W.load_pretrained(build_policy("pi05_tiny"), path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(W.CheckpointError, match="no model.safetensors, params/ or Orbax checkpoint"):
        W.load_pretrained(build_policy("pi05_tiny"), empty)


def test_jax_nnx_value_suffix_is_stripped(tmp_path):
    policy = randomized_policy("pi05_tiny")
    flat = W.openpi_to_jax(W.to_openpi(policy.state_dict()), policy.cfg)
    W.save_jax_params({k + "/value": v for k, v in flat.items()}, tmp_path / "params")
    loaded = build_policy("pi05_tiny")
    W.load_pretrained(loaded, tmp_path)
    assert torch.equal(loaded.action_in_proj.weight, policy.action_in_proj.weight)


def test_openpi_keys_do_not_depend_on_transformers_nesting():
    # transformers 4.x: SiglipVisionModel.vision_model.<...>; 5.x: SiglipVisionModel.<...>. openpi's key has vision_model.
    v4 = W.openpi_key("image_encoder.tower.vision_model.encoder.layers.3.self_attn.q_proj.weight")
    v5 = W.openpi_key("image_encoder.tower.encoder.layers.3.self_attn.q_proj.weight")
    assert v4 == v5 == SIG + "encoder.layers.3.self_attn.q_proj.weight"


def test_jax_einsum_weights_map_to_linears_that_compute_the_same_einsums():
    """Each JAX einsum weight of openpi's Gemma and SigLIP, mapped to a torch Linear and used the way our layers use it
    (heads split as (N, H) by `view`, joined by `reshape`), computes openpi's einsum. Both Gemma experts have
    heads * head_dim != width, so a mapping that only holds when they are equal (openpi's PaliGemma conversion rule
    for the attention output, reshape to (N*H, D) after a transpose) cannot pass."""
    cfg = load_policy_config("pi05_tiny", vlm={"width": 48}, expert={"width": 24})
    N, K, H = cfg.vlm.num_heads, cfg.vlm.num_kv_heads, cfg.vlm.head_dim
    assert N * H not in (cfg.vlm.width, cfg.expert.width)
    policy = build_policy(cfg)
    rng = np.random.default_rng(0)
    flat = {k: rng.standard_normal(v.shape).astype(np.float32)
            for k, v in W.openpi_to_jax(W.to_openpi(policy.state_dict()), cfg).items()}
    state = {k: torch.from_numpy(v.copy()) for k, v in W.jax_to_openpi(flat, cfg).items()}
    policy.load_state_dict(W.convert_openpi_state(state, policy.state_dict(), cfg.pi05))

    def check(linear: torch.nn.Module, x: np.ndarray, expected: np.ndarray) -> None:
        out = linear(torch.from_numpy(x.reshape(*x.shape[:2], -1))).detach().numpy()
        np.testing.assert_allclose(out.reshape(expected.shape), expected, rtol=1e-5, atol=1e-4)

    B, T, L, depth = 2, 3, "PaliGemma/llm/layers/", cfg.vlm.depth
    for e, (sfx, expert) in enumerate((("", cfg.vlm), ("_1", cfg.expert))):
        width, mlp_dim = expert.width, expert.mlp_dim
        q, kv = flat[f"{L}attn/q_einsum{sfx}/w"], flat[f"{L}attn/kv_einsum{sfx}/w"]
        o = flat[f"{L}attn/attn_vec_einsum{sfx}/w"]
        gating, down = flat[f"{L}mlp{sfx}/gating_einsum"], flat[f"{L}mlp{sfx}/linear"]
        # openpi's shapes, written out (not taken from our own inverse mapping)
        assert (q.shape, kv.shape, o.shape) == ((depth, N, width, H), (depth, 2, K, width, H), (depth, N, H, width))
        assert (gating.shape, down.shape) == ((depth, 2, width, mlp_dim), (depth, mlp_dim, width))
        for i, layer in enumerate(policy.transformer.layers):
            blk = layer.experts[e]
            x = rng.standard_normal((B, T, width)).astype(np.float32)
            heads = rng.standard_normal((B, T, N, H)).astype(np.float32)
            hidden = rng.standard_normal((B, T, mlp_dim)).astype(np.float32)
            check(blk.q_proj, x, np.einsum("BTD,NDH->BTNH", x, q[i]))
            k, v = np.einsum("BSD,CKDH->CBSKH", x, kv[i])
            check(blk.k_proj, x, k)
            check(blk.v_proj, x, v)
            check(blk.o_proj, heads, np.einsum("BTNH,NHD->BTD", heads, o[i]))
            gate, up = np.einsum("BTD,CDF->CBTF", x, gating[i])
            check(blk.gate_proj, x, gate)
            check(blk.up_proj, x, up)
            check(blk.down_proj, hidden, np.einsum("BTF,FD->BTD", hidden, down[i]))

    mha, Nv = "PaliGemma/img/Transformer/encoderblock/MultiHeadDotProductAttention_0/", cfg.vision.num_heads
    kernel, bias = (lambda name, i: flat[f"{mha}{name}/kernel"][i]), (lambda name, i: flat[f"{mha}{name}/bias"][i])
    for i, layer in enumerate(policy.image_encoder.encoder_layers):
        attn = layer.self_attn
        x = rng.standard_normal((B, T, cfg.vision.width)).astype(np.float32)
        heads = rng.standard_normal((B, T, Nv, cfg.vision.width // Nv)).astype(np.float32)
        for name, linear in (("query", attn.q_proj), ("key", attn.k_proj), ("value", attn.v_proj)):
            check(linear, x, np.einsum("BTD,DNH->BTNH", x, kernel(name, i)) + bias(name, i))
        check(attn.out_proj, heads, np.einsum("BTNH,NHD->BTD", heads, kernel("out", i)) + bias("out", i))


def test_readme_loading_example_leaves_a_ready_model(tmp_path):
    """README's loading example as written (meta build, to_empty, load_pretrained), then a forward: no checkpoint
    holds SigLIP's position ids, so load_pretrained must set them, or the images are embedded at wrong positions."""
    source = randomized_policy("pi05_tiny", seed=3)
    W.save_openpi(source.state_dict(), tmp_path / "model.safetensors")  # openpi PyTorch layout

    from vla.models.weights import load_pretrained

    with torch.device("meta"):
        policy = build_policy("pi05_tiny")
    policy.to_empty(device="cpu")
    load_pretrained(policy, tmp_path)

    batch = make_batch(policy.cfg)
    noise = torch.randn(batch["actions"].shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(policy.eval().sample_actions(batch, noise=noise), source.sample_actions(batch, noise=noise))


def _training_checkpoint(path, name: str, seed: int = 2):
    """A directory laid out like one of train.py's checkpoints: EMA weights in openpi's layout + config.yaml."""
    from omegaconf import OmegaConf

    policy = randomized_policy(name, seed=seed)
    path.mkdir()
    W.save_openpi(policy.state_dict(), path / "ema.safetensors")
    (path / "config.yaml").write_text(OmegaConf.to_yaml({"model": OmegaConf.structured(policy.cfg)}))
    return policy


@pytest.mark.parametrize("layout", W.LAYOUTS)
def test_export_command_round_trips_through_the_loader(layout, tmp_path):
    source = _training_checkpoint(tmp_path / "ckpt", "pi0_tiny")
    W.main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--layout", layout, "--out", str(tmp_path / "out")])
    assert W.find_weights(tmp_path / "out")[0] == ("jax" if layout == "jax" else "torch")
    if layout != "jax":
        keys = list(load_file(str(tmp_path / "out" / "model.safetensors")))
        assert all(k.startswith("model.") for k in keys) == (layout == "lerobot")
    assert (tmp_path / "out" / "config.json").is_file() == (layout == "openpi")
    loaded = build_policy("pi0_tiny")
    W.load_pretrained(loaded, tmp_path / "out")
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "out"]  # no temp dir left behind


def test_export_without_config_needs_model_name(tmp_path):
    source = randomized_policy("pi05_tiny")
    W.save_openpi(source.state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(W.CheckpointError, match="no config.yaml with a model section.*pass --model"):
        W.checkpoint_config(tmp_path, None)
    W.main(["export", "--checkpoint", str(tmp_path / "model.safetensors"), "--model", "pi05_tiny", "--layout", "openpi",
            "--out", str(tmp_path / "out")])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config == {"action_dim": 32, "action_horizon": 10, "paligemma_variant": "custom_64",  # conf/model/pi05_tiny
                      "action_expert_variant": "custom_32", "precision": "float32", "pi05": True}
    W.load_pretrained(build_policy("pi05_tiny"), tmp_path / "out")


def test_openpi_config_names_openpi_variants():
    bf16 = {"x": torch.zeros(1, dtype=torch.bfloat16)}
    config = W.openpi_config(load_policy_config("pi0"), bf16)
    assert (config["paligemma_variant"], config["action_expert_variant"]) == ("gemma_2b", "gemma_300m")
    assert (config["precision"], config["pi05"], config["action_horizon"]) == ("bfloat16", False, 50)


@pytest.mark.slow
def test_export_errors_are_one_line_and_write_nothing(tmp_path):
    """The real command line: a checkpoint that does not fit the model, and an existing --out."""
    _training_checkpoint(tmp_path / "ckpt", "pi05_tiny")
    command = [sys.executable, "-m", "vla.models.weights", "export", "--checkpoint", str(tmp_path / "ckpt"),
               "--layout", "jax"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    wrong = subprocess.run(command + ["--model", "pi0_tiny", "--out", str(tmp_path / "out")], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 1
    assert wrong.stderr.count("\n") == 1 and "holds a pi05 model but the config builds pi0" in wrong.stderr
    (tmp_path / "taken").mkdir()
    taken = subprocess.run(command + ["--out", str(tmp_path / "taken")], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert taken.returncode == 1 and taken.stderr.count("\n") == 1 and "taken exists" in taken.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "taken"] and not any((tmp_path / "taken").iterdir())


def test_release_holds_the_ema_weights_in_bf16_and_what_evaluation_needs(tmp_path):
    """`release`: a run dir -> a policy directory with bf16 EMA weights (openpi's layout), the recorded config, norm
    stats and tokenizer; loading it gives the checkpoint's weights rounded to bf16, and nothing else is written."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    source = _training_checkpoint(tmp_path / "run" / "checkpoints" / "7", "pi05_tiny")
    (tmp_path / "run" / "checkpoints" / "7").joinpath("norm_stats.json").write_text("{}")
    (tmp_path / "run" / "checkpoints" / "7").joinpath("tokenizer.model").write_bytes(b"sp")
    W.main(["release", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "policy")])
    out = tmp_path / "policy"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "ema.safetensors", "norm_stats.json",
                                                     "tokenizer.model"]
    stored = load_file(str(out / "ema.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.bfloat16} and set(stored) == set(W.to_openpi(source.state_dict()))
    loaded = build_policy("pi05_tiny")
    W.load_pretrained(loaded, out)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.to(torch.bfloat16).float()), key
    with pytest.raises(FileExistsError, match="policy exists"):
        W.release_checkpoint(tmp_path / "run", out)
    (tmp_path / "bare").mkdir()
    with pytest.raises(W.CheckpointError, match=r"bare: no config.yaml, norm_stats.json, tokenizer.model"):
        W.release_checkpoint(tmp_path / "bare", tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare", "policy", "run"]  # no temp dir left behind
