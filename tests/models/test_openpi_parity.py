"""Parity with openpi's own JAX model: loss and sampled actions of Pi0.5 and Pi0 at tiny sizes, float32 on CPU, against
outputs that `openpi.models.pi0.Pi0` computed from the same weights and inputs (tests/data/openpi_parity/README.md).

Every combination is checked: both variants, both weight layouts openpi ships (PyTorch `model.safetensors`, Orbax
`params/`) read by the product loader, and sampling both with the prefix KV cache and with the whole prefix + suffix
sequence run through the transformer at every step (`use_kv_cache=False`)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vla.models import build_policy, load_policy_config
from vla.models.weights import load_pretrained, read_pretrained

DATA = Path(__file__).resolve().parents[1] / "data" / "openpi_parity"
TOLERANCE = 1e-5  # float32 max |d|; the data's README says why
VARIANTS = ("pi05", "pi0")
LAYOUTS = {"safetensors": "model.safetensors", "orbax": "params"}  # file or folder inside DATA/<variant>


def parity_config(variant: str) -> dict:
    return json.loads((DATA / variant / "config.json").read_text())


def parity_batch(image_keys) -> dict:
    """inputs.npz as a model batch: uint8 HWC images -> uint8 CHW (the model maps them to [-1, 1] as openpi does)."""
    raw = np.load(DATA / "inputs.npz")
    tensor = lambda key: torch.from_numpy(raw[key])  # noqa: E731
    return {
        "images": {k: tensor(f"image_{k}").permute(0, 3, 1, 2) for k in image_keys},
        "image_masks": {k: tensor(f"image_mask_{k}") for k in image_keys},
        "tokens": tensor("tokens"),
        "token_mask": tensor("token_mask"),
        "state": tensor("state"),
        "actions": tensor("actions"),
    }


def noise_inputs() -> dict[str, torch.Tensor]:
    raw = np.load(DATA / "noise.npz")
    return {k: torch.from_numpy(raw[k]) for k in ("noise", "time", "sample_noise")}


def expected(variant: str) -> dict[str, np.ndarray]:
    raw = np.load(DATA / variant / "expected.npz")
    return {k: raw[k] for k in ("loss", "actions")}


@pytest.fixture(scope="module", params=[(v, layout) for v in VARIANTS for layout in LAYOUTS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def parity_case(request):
    """(variant, policy loaded from that layout by the product loader, batch), built once per combination."""
    variant, layout = request.param
    config = parity_config(variant)
    cfg = load_policy_config(config["model"])
    assert cfg.image_keys == config["data"]["image_keys"]  # token order of the cameras
    policy = build_policy(cfg).eval()
    load_pretrained(policy, DATA / variant / LAYOUTS[layout])
    return variant, policy, parity_batch(cfg.image_keys)


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_builds_openpis_parameter_count(variant):
    config = parity_config(variant)
    with torch.device("meta"):
        policy = build_policy(load_policy_config(config["model"]))
    assert sum(p.numel() for p in policy.parameters()) == config["derived"]["num_params"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_orbax_params_map_onto_the_safetensors_weights_exactly(variant):
    """openpi wrote the same float32 weights in both layouts: the JAX -> PyTorch mapping must reproduce every tensor."""
    cfg = load_policy_config(parity_config(variant)["model"])
    with torch.device("meta"):
        reference = build_policy(cfg).state_dict()
    from_safetensors = read_pretrained(DATA / variant / LAYOUTS["safetensors"], cfg, reference)
    from_orbax = read_pretrained(DATA / variant / LAYOUTS["orbax"], cfg, reference)
    assert from_safetensors.keys() == from_orbax.keys() == reference.keys()
    for key, value in from_safetensors.items():
        assert torch.equal(from_orbax[key], value), key


def assert_within_tolerance(ours: torch.Tensor, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape and ours.dtype == torch.float32
    max_diff = np.abs(ours.numpy() - theirs).max()
    assert max_diff <= TOLERANCE, f"max |ours - openpi| = {max_diff:.3g} > {TOLERANCE}"


def test_compute_loss_matches_openpi(parity_case):
    variant, policy, batch = parity_case
    noise = noise_inputs()
    with torch.no_grad():
        loss = policy.compute_loss(batch, noise=noise["noise"], time=noise["time"])
    assert_within_tolerance(loss, expected(variant)["loss"])


@pytest.mark.parametrize("use_kv_cache", [True, False], ids=["kv_cache", "full_recompute"])
def test_sample_actions_matches_openpi(parity_case, use_kv_cache):
    variant, policy, batch = parity_case
    noise = noise_inputs()["sample_noise"]
    actions = policy.sample_actions(batch, noise=noise, num_steps=10, use_kv_cache=use_kv_cache)
    assert_within_tolerance(actions, expected(variant)["actions"])
