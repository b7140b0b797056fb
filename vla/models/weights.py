"""Checkpoint import/export in three layouts, each read and written:
  * openpi PyTorch  `model.safetensors`, keys `paligemma_with_expert.…`, `action_in_proj.…` (the keys of openpi's
    `PI0Pytorch`, as its `examples/convert_jax_model_to_pytorch.py` writes them, with a `config.json` beside them)
  * LeRobot pi0/pi05 `model.safetensors`: the same keys prefixed `model.`
  * openpi JAX `params` (Orbax PyTree of `openpi.models.pi0`), mapped with that conversion script's transposes
    (the attention output projection by one rule for both experts, see `jax_to_openpi`)
Our own parameter names mirror openpi's PyTorch layout one-to-one (same shapes, nn.Linear (out, in)), so the
PyTorch mapping is a pure renaming. Pi0 vs Pi0.5 is detected from the keys, never from the path.

Command line: `python -m vla.models.weights export --checkpoint <dir> --layout openpi|lerobot|jax --out <dir>`
(`--model <name>` when the checkpoint has no config.yaml), and `python -m vla.models.weights release --checkpoint
<run or checkpoint dir> --out <dir>`: the EMA weights in bf16 with the recipe, norm stats and tokenizer, a policy
directory that eval.py and `model.pretrained` take (policies/ holds such releases).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from vla.models import build_policy, load_policy_config
from vla.models.config import DTYPES, PolicyConfig

PALI = "paligemma_with_expert.paligemma.model."
EXPERT = "paligemma_with_expert.gemma_expert.model."
# Present in openpi PyTorch checkpoints but not ours: the PaliGemma LM head is tied to the token embedding, and the
# action expert's LM head is an unused random matrix that openpi's conversion never fills
# (openpi examples/convert_jax_model_to_pytorch.py; src/openpi/models_pytorch/gemma_pytorch.py builds it).
PALI_LM_HEAD = "paligemma_with_expert.paligemma.lm_head.weight"
IGNORED_KEYS = {PALI_LM_HEAD, "paligemma_with_expert.gemma_expert.lm_head.weight"}
LEROBOT_PREFIX = "model."

_BLOCK_NAMES = {  # our ExpertBlock names -> HF Gemma layer names used by openpi
    "attn_norm": "input_layernorm",
    "mlp_norm": "post_attention_layernorm",  # the pre-FFW norm, despite HF's name
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj",
    "gate_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
}
_TOWER = "image_encoder.tower."
_LAYER_RE = re.compile(r"transformer\.layers\.(\d+)\.experts\.([01])\.(\w+)\.(.+)")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the file and the keys."""


def openpi_key(our_key: str) -> str:
    """Our state-dict key -> the openpi PyTorch key of the same tensor."""
    if m := _LAYER_RE.fullmatch(our_key):
        layer, expert, block, rest = m.groups()
        base = f"{PALI}language_model." if expert == "0" else EXPERT
        return f"{base}layers.{layer}.{_BLOCK_NAMES[block]}.{rest}"
    if our_key.startswith(_TOWER):
        # transformers 4.x nests SiglipVisionModel's weights under `vision_model.`, 5.x does not; openpi's keys have it
        rest = our_key[len(_TOWER):]
        return f"{PALI}vision_tower." + (rest if rest.startswith("vision_model.") else "vision_model." + rest)
    for ours, theirs in (
        ("image_encoder.proj.", f"{PALI}multi_modal_projector.linear."),
        ("transformer.embed_tokens.", f"{PALI}language_model.embed_tokens."),
        ("transformer.vlm_norm.", f"{PALI}language_model.norm."),
        ("transformer.expert_norm.", f"{EXPERT}norm."),
    ):
        if our_key.startswith(ours):
            return theirs + our_key[len(ours):]
    return our_key  # action_in_proj, action_out_proj, time_mlp_*, state_proj, action_time_mlp_*


def to_openpi(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {openpi_key(k): v for k, v in state_dict.items()}


def detect_variant(keys) -> str:
    """'pi05' or 'pi0' from the projection keys of any supported layout."""
    keys = set(keys)
    if keys & {"time_mlp_in.weight", "time_mlp_in/kernel"}:
        return "pi05"
    if keys & {"state_proj.weight", "state_proj/kernel"}:
        return "pi0"
    raise CheckpointError("cannot tell Pi0 from Pi0.5: neither time_mlp_in (Pi0.5) nor state_proj (Pi0) is present")


def convert_openpi_state(
    openpi_state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], pi05: bool, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """An openpi-PyTorch-keyed state dict -> our keys, validated strictly against `reference` (our model's state
    dict; meta tensors will do): any missing, unexpected or mis-shaped key raises CheckpointError naming it."""
    openpi_state = dict(openpi_state)
    want_variant = "pi05" if pi05 else "pi0"
    have_variant = detect_variant(openpi_state)
    if have_variant != want_variant:
        raise CheckpointError(f"{source}: holds a {have_variant} model but the config builds {want_variant}")
    embed = f"{PALI}language_model.embed_tokens.weight"
    if embed not in openpi_state and PALI_LM_HEAD in openpi_state:
        openpi_state[embed] = openpi_state[PALI_LM_HEAD]  # tied weights saved under the head's name only
    wanted = {openpi_key(k): k for k in reference}
    missing = sorted(k for k in wanted if k not in openpi_state)
    unexpected = sorted(k for k in openpi_state if k not in wanted and k not in IGNORED_KEYS)
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)} in all)")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)} in all)")
    for theirs, mine in wanted.items():
        if theirs in openpi_state and tuple(openpi_state[theirs].shape) != tuple(reference[mine].shape):
            problems.append(
                f"shape mismatch at {theirs}: expected {tuple(reference[mine].shape)}, found {tuple(openpi_state[theirs].shape)}"
            )
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    return {mine: openpi_state[theirs] for theirs, mine in wanted.items()}


# --------------------------------------------------------------------------- PyTorch files (openpi, LeRobot)
def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """openpi or LeRobot `model.safetensors` -> openpi-keyed tensors (LeRobot's `model.` prefix removed)."""
    path = Path(path)
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated/garbled headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if state and all(k.startswith(LEROBOT_PREFIX) for k in state):
        state = {k[len(LEROBOT_PREFIX):]: v for k, v in state.items()}
    return state


def save_openpi(state_dict: dict[str, torch.Tensor], path: str | Path, lerobot: bool = False) -> None:
    """Write our weights as an openpi PyTorch (or, with lerobot=True, LeRobot) `model.safetensors`, atomically."""
    path = Path(path)
    prefix = LEROBOT_PREFIX if lerobot else ""
    tensors = {prefix + k: v.detach().to("cpu").contiguous() for k, v in to_openpi(state_dict).items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)


# --------------------------------------------------------------------------- openpi JAX params (Orbax)
_IMG = "PaliGemma/img/"
_LLM = "PaliGemma/llm/"
_ENC = _IMG + "Transformer/encoderblock/"
_SIGLIP = f"{PALI}vision_tower.vision_model."


def jax_to_openpi(params: dict[str, np.ndarray], cfg) -> dict[str, np.ndarray]:
    """Flat '/'-joined JAX param paths -> openpi PyTorch keys, with the transposes of openpi's
    examples/convert_jax_model_to_pytorch.py. Every consumed path is removed from a copy; leftovers raise (they would
    be silently dropped otherwise)."""
    p = dict(params)
    out: dict[str, np.ndarray] = {}
    vision_depth, depth = cfg.vision.depth, cfg.vlm.depth

    def take(key: str) -> np.ndarray:
        if key not in p:
            raise CheckpointError(f"JAX params: missing key {key}")
        return np.asarray(p.pop(key), dtype=np.float32)

    def linear(jax_prefix: str, pt_prefix: str) -> None:
        out[pt_prefix + "weight"] = take(jax_prefix + "kernel").T
        out[pt_prefix + "bias"] = take(jax_prefix + "bias")

    # SigLIP: conv kernel (kh, kw, in, out) -> (out, in, kh, kw), position embedding (1, P, D) -> (P, D)
    out[_SIGLIP + "embeddings.patch_embedding.weight"] = take(_IMG + "embedding/kernel").transpose(3, 2, 0, 1)
    out[_SIGLIP + "embeddings.patch_embedding.bias"] = take(_IMG + "embedding/bias")
    pos = take(_IMG + "pos_embedding")
    out[_SIGLIP + "embeddings.position_embedding.weight"] = pos.reshape(-1, pos.shape[-1])
    stacked = {k: take(_ENC + k) for k in [
        "LayerNorm_0/scale", "LayerNorm_0/bias", "LayerNorm_1/scale", "LayerNorm_1/bias",
        "MlpBlock_0/Dense_0/kernel", "MlpBlock_0/Dense_0/bias", "MlpBlock_0/Dense_1/kernel", "MlpBlock_0/Dense_1/bias",
        *[f"MultiHeadDotProductAttention_0/{n}/{w}" for n in ("query", "key", "value", "out") for w in ("kernel", "bias")],
    ]}
    for i in range(vision_depth):
        pre = f"{_SIGLIP}encoder.layers.{i}."
        out[pre + "layer_norm1.weight"] = stacked["LayerNorm_0/scale"][i]
        out[pre + "layer_norm1.bias"] = stacked["LayerNorm_0/bias"][i]
        out[pre + "layer_norm2.weight"] = stacked["LayerNorm_1/scale"][i]
        out[pre + "layer_norm2.bias"] = stacked["LayerNorm_1/bias"][i]
        out[pre + "mlp.fc1.weight"] = stacked["MlpBlock_0/Dense_0/kernel"][i].T
        out[pre + "mlp.fc1.bias"] = stacked["MlpBlock_0/Dense_0/bias"][i]
        out[pre + "mlp.fc2.weight"] = stacked["MlpBlock_0/Dense_1/kernel"][i].T
        out[pre + "mlp.fc2.bias"] = stacked["MlpBlock_0/Dense_1/bias"][i]
        for n, pt in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            k = stacked[f"MultiHeadDotProductAttention_0/{n}/kernel"][i]  # (D, heads, head_dim)
            out[pre + f"self_attn.{pt}.weight"] = k.reshape(k.shape[0], -1).T
            out[pre + f"self_attn.{pt}.bias"] = stacked[f"MultiHeadDotProductAttention_0/{n}/bias"][i].reshape(-1)
        o = stacked["MultiHeadDotProductAttention_0/out/kernel"][i]  # (heads, head_dim, D)
        out[pre + "self_attn.out_proj.weight"] = o.reshape(-1, o.shape[-1]).T
        out[pre + "self_attn.out_proj.bias"] = stacked["MultiHeadDotProductAttention_0/out/bias"][i]
    out[_SIGLIP + "post_layernorm.weight"] = take(_IMG + "Transformer/encoder_norm/scale")
    out[_SIGLIP + "post_layernorm.bias"] = take(_IMG + "Transformer/encoder_norm/bias")
    linear(_IMG + "head/", f"{PALI}multi_modal_projector.linear.")

    # Gemma experts: suffix "" = PaliGemma (expert 0), "_1" = action expert.
    out[f"{PALI}language_model.embed_tokens.weight"] = take(_LLM + "embedder/input_embedding")
    for sfx, base in (("", f"{PALI}language_model."), ("_1", EXPERT)):
        L = _LLM + "layers/"
        q, kv, o = take(f"{L}attn/q_einsum{sfx}/w"), take(f"{L}attn/kv_einsum{sfx}/w"), take(f"{L}attn/attn_vec_einsum{sfx}/w")
        gating, lin = take(f"{L}mlp{sfx}/gating_einsum"), take(f"{L}mlp{sfx}/linear")
        norms = {}
        for jname, pt in (("pre_attention_norm", "input_layernorm"), ("pre_ffw_norm", "post_attention_layernorm")):
            if f"{L}{jname}{sfx}/scale" in p:
                norms[pt] = {"weight": take(f"{L}{jname}{sfx}/scale")}
            else:  # Pi0.5 adaRMSNorm: Dense (cond, 3D)
                norms[pt] = {"dense.weight": take(f"{L}{jname}{sfx}/Dense_0/kernel").transpose(0, 2, 1),
                             "dense.bias": take(f"{L}{jname}{sfx}/Dense_0/bias")}
        for i in range(depth):
            pre = f"{base}layers.{i}."
            n, d, h = q[i].shape  # (heads, D, head_dim)
            out[pre + "self_attn.q_proj.weight"] = q[i].transpose(0, 2, 1).reshape(n * h, d)
            out[pre + "self_attn.k_proj.weight"] = kv[i, 0].transpose(0, 2, 1).reshape(-1, d)  # (K, D, H) -> (K*H, D)
            out[pre + "self_attn.v_proj.weight"] = kv[i, 1].transpose(0, 2, 1).reshape(-1, d)
            # (N, H, D) -> (D, N*H) for both experts; openpi's script transposes the VLM's another way, which is the
            # same only because N * H == D there
            out[pre + "self_attn.o_proj.weight"] = o[i].reshape(n * h, d).T
            out[pre + "mlp.gate_proj.weight"] = gating[i, 0].T
            out[pre + "mlp.up_proj.weight"] = gating[i, 1].T
            out[pre + "mlp.down_proj.weight"] = lin[i].T
            for pt, tensors in norms.items():
                for name, value in tensors.items():
                    out[f"{pre}{pt}.{name}"] = value[i]
        if f"{_LLM}final_norm{sfx}/scale" in p:
            out[f"{base}norm.weight"] = take(f"{_LLM}final_norm{sfx}/scale")
        else:
            linear(f"{_LLM}final_norm{sfx}/Dense_0/", f"{base}norm.dense.")

    for proj in ("action_in_proj", "action_out_proj", "time_mlp_in", "time_mlp_out", "state_proj",
                 "action_time_mlp_in", "action_time_mlp_out"):
        if f"{proj}/kernel" in p:
            linear(f"{proj}/", f"{proj}.")
    if p:
        leftover = sorted(p)
        raise CheckpointError(f"JAX params: unexpected keys {leftover[:5]}{' ...' if len(leftover) > 5 else ''}")
    return out  # numpy views; no copy is made until the values are loaded


def openpi_to_jax(state: dict[str, torch.Tensor], cfg) -> dict[str, np.ndarray]:
    """Inverse of `jax_to_openpi` (flat '/'-joined JAX paths), for exporting to openpi's JAX layout."""
    vision_depth, depth, num_heads = cfg.vision.depth, cfg.vlm.depth, cfg.vision.num_heads
    s = {k: v.detach().float().cpu().numpy() for k, v in state.items() if k not in IGNORED_KEYS}
    out: dict[str, np.ndarray] = {}
    out[_IMG + "embedding/kernel"] = s[_SIGLIP + "embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0)
    out[_IMG + "embedding/bias"] = s[_SIGLIP + "embeddings.patch_embedding.bias"]
    pos = s[_SIGLIP + "embeddings.position_embedding.weight"]
    out[_IMG + "pos_embedding"] = pos[None]
    vl = [f"{_SIGLIP}encoder.layers.{i}." for i in range(vision_depth)]
    stack = lambda name, f=lambda x: x: np.stack([f(s[pre + name]) for pre in vl])  # noqa: E731
    width = pos.shape[-1]
    out[_ENC + "LayerNorm_0/scale"], out[_ENC + "LayerNorm_0/bias"] = stack("layer_norm1.weight"), stack("layer_norm1.bias")
    out[_ENC + "LayerNorm_1/scale"], out[_ENC + "LayerNorm_1/bias"] = stack("layer_norm2.weight"), stack("layer_norm2.bias")
    out[_ENC + "MlpBlock_0/Dense_0/kernel"], out[_ENC + "MlpBlock_0/Dense_0/bias"] = stack("mlp.fc1.weight", np.transpose), stack("mlp.fc1.bias")
    out[_ENC + "MlpBlock_0/Dense_1/kernel"], out[_ENC + "MlpBlock_0/Dense_1/bias"] = stack("mlp.fc2.weight", np.transpose), stack("mlp.fc2.bias")
    hd = width // num_heads
    for n, pt in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        out[_ENC + f"MultiHeadDotProductAttention_0/{n}/kernel"] = stack(f"self_attn.{pt}.weight", lambda w: w.T.reshape(width, num_heads, hd))
        out[_ENC + f"MultiHeadDotProductAttention_0/{n}/bias"] = stack(f"self_attn.{pt}.bias", lambda b: b.reshape(num_heads, hd))
    out[_ENC + "MultiHeadDotProductAttention_0/out/kernel"] = stack("self_attn.out_proj.weight", lambda w: w.T.reshape(num_heads, hd, width))
    out[_ENC + "MultiHeadDotProductAttention_0/out/bias"] = stack("self_attn.out_proj.bias")
    out[_IMG + "Transformer/encoder_norm/scale"] = s[_SIGLIP + "post_layernorm.weight"]
    out[_IMG + "Transformer/encoder_norm/bias"] = s[_SIGLIP + "post_layernorm.bias"]
    out[_IMG + "head/kernel"] = s[f"{PALI}multi_modal_projector.linear.weight"].T
    out[_IMG + "head/bias"] = s[f"{PALI}multi_modal_projector.linear.bias"]
    out[_LLM + "embedder/input_embedding"] = s[f"{PALI}language_model.embed_tokens.weight"]
    for sfx, base in (("", f"{PALI}language_model."), ("_1", EXPERT)):
        L = _LLM + "layers/"
        ls = [f"{base}layers.{i}." for i in range(depth)]
        d = s[ls[0] + "self_attn.q_proj.weight"].shape[1]
        hd_llm = cfg.vlm.head_dim
        q = [s[pre + "self_attn.q_proj.weight"] for pre in ls]  # (N*H, D)
        out[f"{L}attn/q_einsum{sfx}/w"] = np.stack([w.reshape(-1, hd_llm, d).transpose(0, 2, 1) for w in q])
        kv = [np.stack([s[pre + f"self_attn.{x}_proj.weight"].reshape(-1, hd_llm, d).transpose(0, 2, 1) for x in "kv"]) for pre in ls]
        out[f"{L}attn/kv_einsum{sfx}/w"] = np.stack(kv)
        out[f"{L}attn/attn_vec_einsum{sfx}/w"] = np.stack([s[pre + "self_attn.o_proj.weight"].T.reshape(-1, hd_llm, d) for pre in ls])
        out[f"{L}mlp{sfx}/gating_einsum"] = np.stack([np.stack([s[pre + "mlp.gate_proj.weight"].T, s[pre + "mlp.up_proj.weight"].T]) for pre in ls])
        out[f"{L}mlp{sfx}/linear"] = np.stack([s[pre + "mlp.down_proj.weight"].T for pre in ls])
        for jname, pt in (("pre_attention_norm", "input_layernorm"), ("pre_ffw_norm", "post_attention_layernorm")):
            if ls[0] + f"{pt}.weight" in s:
                out[f"{L}{jname}{sfx}/scale"] = np.stack([s[pre + f"{pt}.weight"] for pre in ls])
            else:
                out[f"{L}{jname}{sfx}/Dense_0/kernel"] = np.stack([s[pre + f"{pt}.dense.weight"].T for pre in ls])
                out[f"{L}{jname}{sfx}/Dense_0/bias"] = np.stack([s[pre + f"{pt}.dense.bias"] for pre in ls])
        if f"{base}norm.weight" in s:
            out[f"{_LLM}final_norm{sfx}/scale"] = s[f"{base}norm.weight"]
        else:
            out[f"{_LLM}final_norm{sfx}/Dense_0/kernel"] = s[f"{base}norm.dense.weight"].T
            out[f"{_LLM}final_norm{sfx}/Dense_0/bias"] = s[f"{base}norm.dense.bias"]
    for proj in ("action_in_proj", "action_out_proj", "time_mlp_in", "time_mlp_out", "state_proj",
                 "action_time_mlp_in", "action_time_mlp_out"):
        if f"{proj}.weight" in s:
            out[f"{proj}/kernel"], out[f"{proj}/bias"] = s[f"{proj}.weight"].T, s[f"{proj}.bias"]
    return out


def read_jax_params(path: str | Path) -> dict[str, np.ndarray]:
    """An openpi `params` Orbax checkpoint -> flat '/'-joined numpy arrays (trailing nnx 'value' removed)."""
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:
        raise CheckpointError(f"{path}: reading openpi JAX params needs the optional extra: pip install -e '.[jax]'") from e
    path = Path(path).resolve()
    with ocp.PyTreeCheckpointer() as ckptr:
        tree = ckptr.restore(path)
    if "params" not in tree:
        raise CheckpointError(f"{path}: Orbax tree has no 'params' item (found {sorted(tree)})")
    flat = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}/")
        else:
            flat[prefix[:-1]] = np.asarray(node)

    walk(tree["params"], "")
    if flat and all(k.endswith("/value") for k in flat):
        flat = {k[: -len("/value")]: v for k, v in flat.items()}
    return flat


def save_jax_params(flat: dict[str, np.ndarray], path: str | Path) -> None:
    """Write flat JAX params as an Orbax PyTree `{"params": tree}` (openpi's `params` layout)."""
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:
        raise CheckpointError(f"{path}: writing openpi JAX params needs the optional extra: "
                              "pip install -e '.[jax]'") from e

    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(Path(path).resolve(), {"params": tree})


# --------------------------------------------------------------------------- entry points
def find_weights(path: str | Path) -> tuple[str, Path]:
    """Resolve a user path to (layout, file/dir): a safetensors file, a directory holding `model.safetensors`
    (openpi PT, LeRobot, or one of our checkpoint dirs, whose `ema.safetensors` is preferred when present, as openpi's
    checkpoints hold the EMA params), or an openpi dir holding `params/` (JAX)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return "torch", path
    if (path / "ema.safetensors").is_file():  # our training checkpoints: the EMA weights are the ones to use
        return "torch", path / "ema.safetensors"
    if (path / "model.safetensors").is_file():
        return "torch", path / "model.safetensors"
    if (path / "params").is_dir():
        return "jax", path / "params"
    if path.is_dir() and ((path / "_METADATA").exists() or (path / "_CHECKPOINT_METADATA").exists()):
        return "jax", path
    raise CheckpointError(f"{path}: no model.safetensors, params/ or Orbax checkpoint found")


def openpi_norm_stats(checkpoint: str | Path, asset_id: str | None) -> Path | None:
    """The norm stats an openpi checkpoint was trained with on dataset `asset_id`: openpi saves them with the
    checkpoint as <checkpoint>/assets/<asset_id>/norm_stats.json (src/openpi/training/checkpoints.py; the asset id
    defaults to the dataset's repo id, e.g. physical-intelligence/libero) and its policies load them from there. None
    when the checkpoint holds none for that id (a base checkpoint's assets are other datasets')."""
    if not asset_id:
        return None
    path = Path(checkpoint) / "assets" / asset_id / "norm_stats.json"
    return path if path.is_file() else None


def read_pretrained(path: str | Path, cfg, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported checkpoint -> our-keyed state dict (CPU tensors as stored), validated against `reference` (the
    state dict of a model built from `cfg`; meta tensors will do)."""
    layout, where = find_weights(path)
    if layout == "torch":
        state = read_safetensors(where)
    else:
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in jax_to_openpi(read_jax_params(where), cfg).items()}
    return convert_openpi_state(state, reference, cfg.pi05, source=str(where))


def load_pretrained(model: torch.nn.Module, path: str | Path) -> None:
    """Load any supported checkpoint into `model` in place (strict; errors name the offending keys) and leave it ready
    to run: the non-persistent buffers, which no checkpoint holds (SigLIP's position ids), are set too, so that a model
    built on the meta device and allocated with `to_empty` needs nothing else."""
    ours = model.state_dict()
    with torch.no_grad():
        for name, value in read_pretrained(path, model.cfg, ours).items():
            ours[name].copy_(value.to(ours[name].dtype))
    model.init_buffers()


def openpi_config(cfg: PolicyConfig, state: dict[str, torch.Tensor]) -> dict:
    """The `config.json` openpi's conversion writes next to model.safetensors (action_dim, action_horizon, the two
    Gemma variants, precision), plus `pi05`. Sizes that are not openpi's are named `custom_<width>`."""
    dtypes = {str(v.dtype).removeprefix("torch.") for v in state.values()}
    return {
        "action_dim": cfg.action_dim, "action_horizon": cfg.action_horizon,
        "paligemma_variant": "gemma_2b" if cfg.vlm == PolicyConfig().vlm else f"custom_{cfg.vlm.width}",
        "action_expert_variant": "gemma_300m" if cfg.expert == PolicyConfig().expert else f"custom_{cfg.expert.width}",
        "precision": dtypes.pop() if len(dtypes) == 1 else "mixed", "pi05": cfg.pi05,
    }


LAYOUTS = ("openpi", "lerobot", "jax")


def checkpoint_config(checkpoint: str | Path, model: str | None) -> PolicyConfig:
    """The model config of `checkpoint`: conf/model/<model>.yaml when named, else the `model` section of the
    config.yaml our training writes into each checkpoint."""
    if model is not None:
        return load_policy_config(model)
    checkpoint = Path(checkpoint)
    config = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "config.yaml"
    model_section = OmegaConf.load(config).get("model") if config.is_file() else None
    if model_section is None:
        raise CheckpointError(f"{checkpoint}: no config.yaml with a model section (not one of our training "
                              "checkpoints): pass --model <name>, the conf/model config it was built with")
    return load_policy_config(model_section)


def export_checkpoint(checkpoint: str | Path, layout: str, out: str | Path, cfg: PolicyConfig) -> Path:
    """Any checkpoint `load_pretrained` reads -> a new directory `out` in `layout`: `model.safetensors` (+ openpi's
    `config.json` for "openpi") or `params/` (Orbax) for "jax". Weights keep their stored dtype (JAX: float32).
    Written into a temp dir renamed at the end: a failure leaves nothing."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    out = Path(out).absolute()
    if out.exists():
        raise FileExistsError(f"{out} exists: choose another --out or remove it")
    with torch.device("meta"):
        reference = build_policy(cfg).state_dict()
    state = read_pretrained(checkpoint, cfg, reference)  # validated before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if layout == "jax":
            save_jax_params(openpi_to_jax(to_openpi(state), cfg), tmp / "params")
        else:
            save_openpi(state, tmp / "model.safetensors", lerobot=layout == "lerobot")
        if layout == "openpi":
            (tmp / "config.json").write_text(json.dumps(openpi_config(cfg, state), indent=2))
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


RELEASE_FILES = ("config.yaml", "norm_stats.json", "tokenizer.model")  # what evaluation needs beside the weights


def release_checkpoint(checkpoint: str | Path, out: str | Path, dtype: str = "bf16") -> Path:
    """One of our training checkpoints (or a run dir: its newest checkpoint with weights) -> a new directory `out`
    holding its EMA weights as `ema.safetensors` in `dtype` (openpi's PyTorch layout, as in the checkpoints) and the
    recorded recipe, norm stats and tokenizer: what evaluating the policy needs, nothing to resume training. Written
    into a temp dir renamed at the end: a failure leaves nothing."""
    from vla.runs import resolve_checkpoint  # the run-dir layout lives above the models

    checkpoint = resolve_checkpoint(checkpoint)
    missing = [name for name in RELEASE_FILES if not (checkpoint / name).is_file()]
    if missing:
        raise CheckpointError(f"{checkpoint}: no {', '.join(missing)} (expected one of our training checkpoints)")
    out = Path(out).absolute()
    if out.exists():
        raise FileExistsError(f"{out} exists: choose another --out or remove it")
    cfg = checkpoint_config(checkpoint, None)
    with torch.device("meta"):
        reference = build_policy(cfg).state_dict()
    state = read_pretrained(checkpoint, cfg, reference)  # the EMA weights when present, validated
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_openpi({k: v.to(DTYPES[dtype]) for k, v in state.items()}, tmp / "ema.safetensors")
        for name in RELEASE_FILES:
            shutil.copyfile(checkpoint / name, tmp / name)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vla.models.weights", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = ap.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write a checkpoint in another layout")
    export.add_argument("--checkpoint", required=True,
                        help="one of our checkpoint dirs (its EMA weights), an openpi / LeRobot model.safetensors or "
                             "its dir, or an openpi JAX checkpoint dir")
    export.add_argument("--layout", required=True, choices=LAYOUTS)
    export.add_argument("--out", required=True, help="the directory to create")
    export.add_argument("--model", default=None,
                        help="model config name (conf/model/<name>.yaml); default: the checkpoint's config.yaml")
    release = commands.add_parser("release", help="an evaluation-ready policy directory of a training checkpoint")
    release.add_argument("--checkpoint", required=True, help="a run dir (its newest checkpoint) or a checkpoint dir")
    release.add_argument("--out", required=True, help="the directory to create")
    release.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    args = ap.parse_args(argv)
    try:
        if args.command == "release":
            out = release_checkpoint(args.checkpoint, args.out, args.dtype)
        else:
            cfg = checkpoint_config(args.checkpoint, args.model)
            out = export_checkpoint(args.checkpoint, args.layout, args.out, cfg)
    except (CheckpointError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"vla.models.weights: error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {out}" + (f" ({args.layout} layout)" if args.command == "export" else ""))


if __name__ == "__main__":
    main()
