"""Model transforms: openpi normalization and its inverse (src/openpi/transforms.py), resize-with-pad
(packages/openpi-client/src/openpi_client/image_tools.py), padding to action_dim after normalization, the Pi0.5
discrete-state prompt, masked cameras, collate, and train-time augmentation."""

import numpy as np
import pytest
import torch
from PIL import Image

from vla.data.tokenizer import PromptTokenizer
from vla.data.transforms import (
    AugmentConfig,
    ModelTransform,
    Normalizer,
    augment,
    collate,
    num_augment_draws,
    resize_with_pad,
)
from vla.models import load_policy_config

PROMPT = "Grasp a red cube and move it to a target goal position."


def _stats(seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for key, d in (("state", 8), ("actions", 7)):
        q01 = rng.uniform(-2.0, -0.5, d)
        q99 = q01 + rng.uniform(0.5, 3.0, d)
        out[key] = {"mean": (q01 + q99) / 2 + rng.uniform(-0.1, 0.1, d), "std": rng.uniform(0.2, 1.5, d),
                    "q01": q01, "q99": q99}
    out["actions"]["q01"][6], out["actions"]["q99"][6] = -1.0, 1.0  # a gripper: exactly +-1
    return {k: {s: v.astype(np.float32) for s, v in d.items()} for k, d in out.items()}


def _raw_sample(stats, seed=1, horizon=10):
    rng = np.random.default_rng(seed)
    s, a = stats["state"], stats["actions"]
    return {
        "images": {"base_0_rgb": rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),
                   "left_wrist_0_rgb": rng.integers(1, 256, (128, 128, 3), dtype=np.uint8)},
        "image_masks": {"base_0_rgb": True, "left_wrist_0_rgb": False},
        # between q01 and q99 except one dim each way outside (no clipping)
        "state": (s["q01"] + (s["q99"] - s["q01"]) * (rng.uniform(0.05, 0.95, 8) + np.r_[2.0, -2.0, [0] * 6]))
        .astype(np.float32),
        "prompt": PROMPT,
        "actions": (a["q01"] + (a["q99"] - a["q01"]) * rng.uniform(0, 1, (horizon, 7))).astype(np.float32),
        "actions_is_pad": np.arange(horizon) >= horizon - 3,
    }


@pytest.fixture(scope="module")
def transform(tokenizer_path):
    cfg = load_policy_config("pi05_tiny")
    return ModelTransform(cfg, _stats(), PromptTokenizer(tokenizer_path, cfg.max_token_len, discrete_state=True))


# ----------------------------------------------------------------------------------------------------------------
# normalization


def test_quantile_normalization_formula_no_clipping():
    stats = _stats()
    n = Normalizer.from_stats(stats, "state", use_quantiles=True)
    x = _raw_sample(stats)["state"]
    q01, q99 = stats["state"]["q01"].astype(np.float64), stats["state"]["q99"].astype(np.float64)
    expected = (x - q01) / (q99 - q01 + 1e-6) * 2 - 1
    y = n.normalize(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert y[0] > 1 and y[1] < -1 and np.all(np.abs(y[2:]) < 1)  # outside [q01, q99] stays outside [-1, 1]
    np.testing.assert_allclose(n.normalize(np.stack([q01, q99])), [[-1] * 8, [1] * 8], atol=1e-5)


def test_zscore_normalization_formula():
    stats = _stats()
    n = Normalizer.from_stats(stats, "actions", use_quantiles=False)
    x = _raw_sample(stats)["actions"]  # (H, 7): broadcast over the chunk
    a = stats["actions"]
    expected = (x - a["mean"].astype(np.float64)) / (a["std"] + 1e-6)
    np.testing.assert_allclose(n.normalize(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("use_quantiles", [True, False])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_unnormalize_is_exact_inverse_and_padded_dims_pass_through(use_quantiles, as_tensor):
    stats = _stats()
    n = Normalizer.from_stats(stats, "actions", use_quantiles)
    x = _raw_sample(stats)["actions"]
    padded = np.concatenate([n.normalize(x), np.random.default_rng(3).normal(size=(len(x), 25))], -1).astype(np.float32)
    y = n.unnormalize(torch.from_numpy(padded) if as_tensor else padded)
    assert isinstance(y, torch.Tensor) == as_tensor and y.shape == (10, 32)
    y = np.asarray(y)
    np.testing.assert_allclose(y[:, :7], x, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y[:, 7:], padded[:, 7:])


# ----------------------------------------------------------------------------------------------------------------
# resize with pad


@pytest.mark.parametrize("size_in", [128, 256])
def test_resize_with_pad_square_is_pil_bilinear(size_in):
    img = np.random.default_rng(0).integers(0, 256, (size_in, size_in, 3), dtype=np.uint8)
    out = resize_with_pad(img, 224)
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(img).resize((224, 224), Image.BILINEAR)))


@pytest.mark.parametrize("h, w", [(100, 200), (200, 100), (90, 160)])
def test_resize_with_pad_non_square_is_centred_on_black(h, w):
    img = np.random.default_rng(0).integers(1, 256, (h, w, 3), dtype=np.uint8)  # no black pixel of its own
    out = resize_with_pad(img, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    ratio = max(w / 224, h / 224)
    rh, rw = int(h / ratio), int(w / ratio)
    rows, cols = np.flatnonzero(out.any(axis=(1, 2))), np.flatnonzero(out.any(axis=(0, 2)))
    top, left = rows[0], cols[0]
    assert len(rows) == rh and len(cols) == rw and rows[-1] - top == rh - 1 and cols[-1] - left == rw - 1
    assert top == (224 - rh) // 2 and left == (224 - rw) // 2  # centred
    assert not out[:top].any() and not out[top + rh:].any() and not out[:, :left].any() and not out[:, left + rw:].any()
    expected = np.asarray(Image.fromarray(img).resize((rw, rh), Image.BILINEAR))
    np.testing.assert_array_equal(out[top:top + rh, left:left + rw], expected)
    assert min(rh, rw) < 224 == max(rh, rw)


def test_resize_with_pad_noop_at_target_size():
    img = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_with_pad(img, 224), img)


# ----------------------------------------------------------------------------------------------------------------
# ModelTransform


def test_pi05_transform(transform):
    stats = _stats()
    sample = _raw_sample(stats)
    out = transform(sample)
    cfg = transform.cfg

    norm_state = Normalizer.from_stats(stats, "state", True).normalize(sample["state"])
    assert out["state"].shape == (32,) and out["state"].dtype == torch.float32
    np.testing.assert_array_equal(out["state"][:8].numpy(), norm_state)
    assert not out["state"][8:].any()  # padded after normalization: exactly 0 (before, they would be -1)
    norm_actions = Normalizer.from_stats(stats, "actions", True).normalize(sample["actions"])
    assert out["actions"].shape == (10, 32)
    np.testing.assert_array_equal(out["actions"][:, :7].numpy(), norm_actions)
    assert not out["actions"][:, 7:].any()
    assert out["actions_is_pad"].dtype == torch.bool
    assert out["actions_is_pad"].tolist() == sample["actions_is_pad"].tolist()

    # Pi0.5 prompt: the *normalized* state, discretized, in the text
    tokens, mask = transform.tokenizer.encode(PROMPT, norm_state)
    assert out["tokens"].dtype == torch.int64 and out["tokens"].shape == (cfg.max_token_len,)
    assert out["tokens"].tolist() == tokens.tolist() and out["token_mask"].tolist() == mask.tolist()
    assert transform.tokenizer.encode(PROMPT, sample["state"])[0].tolist() != tokens.tolist()

    # images: visible -> resize-with-pad CHW uint8; masked (whatever it held) or absent -> left out, and `collate`
    # turns it into zeros + mask False next to a sample that has it
    assert set(out["images"]) == set(out["image_masks"]) == {"base_0_rgb"}
    base = out["images"]["base_0_rgb"]
    assert base.dtype == torch.uint8 and base.shape == (3, 224, 224) and out["image_masks"]["base_0_rgb"].item()
    np.testing.assert_array_equal(base.permute(1, 2, 0).numpy(), resize_with_pad(sample["images"]["base_0_rgb"], 224))
    visible_wrist = transform(dict(sample, image_masks={"base_0_rgb": True, "left_wrist_0_rgb": True}))
    batch = collate([out, visible_wrist])
    assert batch["image_masks"]["left_wrist_0_rgb"].tolist() == [False, True]
    assert not batch["images"]["left_wrist_0_rgb"][0].any() and batch["images"]["left_wrist_0_rgb"][1].any()

    # unnormalize_actions inverts the action path
    raw = transform.unnormalize_actions(out["actions"][None], 7)
    assert raw.shape == (1, 10, 7)
    np.testing.assert_allclose(raw[0].numpy(), sample["actions"], rtol=1e-5, atol=1e-5)


def test_state_noise_reaches_the_state_tokens_only_when_asked(transform, tokenizer_path):
    stats = _stats()
    sample = _raw_sample(stats)
    norm_state = Normalizer.from_stats(stats, "state", True).normalize(sample["state"])
    noisy = ModelTransform(transform.cfg, stats, transform.tokenizer, state_noise_std=0.2)
    torch.manual_seed(3)
    outs = [noisy(sample) for _ in range(200)]
    deltas = np.stack([o["state"][:8].numpy() - norm_state for o in outs])
    assert abs(deltas.mean()) < 0.03 and 0.17 < deltas.std() < 0.23  # N(0, 0.2) in normalized units
    assert not torch.stack([o["state"][8:] for o in outs]).any()  # padding stays exactly 0
    # the discretized state in the prompt is the noisy one (what Pi0.5 sees), and it changes from draw to draw
    assert outs[0]["tokens"].tolist() == transform.tokenizer.encode(PROMPT, outs[0]["state"][:8].numpy())[0].tolist()
    assert len({tuple(o["tokens"].tolist()) for o in outs[:10]}) == 10
    np.testing.assert_array_equal(outs[0]["actions"], transform(sample)["actions"])  # actions untouched
    # a process's draws follow torch's seed (DataLoader seeds each worker): reproducible within a run
    torch.manual_seed(3)
    again = ModelTransform(transform.cfg, stats, transform.tokenizer, state_noise_std=0.2)(sample)
    np.testing.assert_array_equal(again["state"], outs[0]["state"])
    # off by default: the plain transform is deterministic
    assert transform(sample)["tokens"].tolist() == transform(sample)["tokens"].tolist()


def test_state_noise_dims_noise_only_those_dims(transform):
    stats = _stats()
    sample = _raw_sample(stats)
    norm_state = Normalizer.from_stats(stats, "state", True).normalize(sample["state"])
    noisy = ModelTransform(transform.cfg, stats, transform.tokenizer, state_noise_std=0.2, state_noise_dims=[1, 5])
    torch.manual_seed(3)
    deltas = np.stack([noisy(sample)["state"][:8].numpy() - norm_state for _ in range(200)])
    assert 0.17 < deltas[:, [1, 5]].std() < 0.23  # N(0, 0.2) on the chosen dims
    assert not deltas[:, [0, 2, 3, 4, 6, 7]].any()  # the others exact
    with pytest.raises(ValueError, match=r"augment.state_noise_dims \[8\]: the state has 8 dims"):
        ModelTransform(transform.cfg, stats, transform.tokenizer, state_noise_std=0.2, state_noise_dims=[8])


def test_state_dims_keep_only_the_chosen_normalized_dims(transform):
    from dataclasses import replace

    stats = _stats()
    sample = _raw_sample(stats)
    norm_state = Normalizer.from_stats(stats, "state", True).normalize(sample["state"])
    picked = ModelTransform(replace(transform.cfg, state_dims=[5, 1]), stats, transform.tokenizer)(sample)
    np.testing.assert_array_equal(picked["state"][:2].numpy(), norm_state[[5, 1]])
    assert not picked["state"][2:].any()
    assert picked["tokens"].tolist() == transform.tokenizer.encode(PROMPT, norm_state[[5, 1]])[0].tolist()
    empty = ModelTransform(replace(transform.cfg, state_dims=[]), stats, transform.tokenizer)(sample)
    assert not empty["state"].any()
    with pytest.raises(ValueError, match=r"model.state_dims \[2, 8\]: the state has 8 dims"):
        ModelTransform(replace(transform.cfg, state_dims=[2, 8]), stats, transform.tokenizer)(sample)


def test_transform_accepts_lerobot_float_chw_images(transform):
    sample = _raw_sample(_stats())
    chw = {k: torch.from_numpy(v).permute(2, 0, 1).float() / 255 for k, v in sample["images"].items()}
    as_lerobot = dict(sample, images=chw)
    a, b = transform(sample), transform(as_lerobot)
    for k in a["images"]:
        assert torch.equal(a["images"][k], b["images"][k])


def test_pi0_transform_zscore_and_plain_prompt(tokenizer_path):
    cfg = load_policy_config("pi0_tiny")
    stats = _stats()
    tok = PromptTokenizer(tokenizer_path, cfg.max_token_len)
    out = ModelTransform(cfg, stats, tok)(_raw_sample(stats))
    s = _raw_sample(stats)["state"]
    expected = (s - stats["state"]["mean"]) / (stats["state"]["std"] + 1e-6)
    np.testing.assert_allclose(out["state"][:8].numpy(), expected, rtol=1e-6)
    assert not out["state"][8:].any()
    assert out["tokens"].tolist() == tok.encode(PROMPT)[0].tolist()


# ----------------------------------------------------------------------------------------------------------------
# collate


def _model_sample(images: dict, masks: dict, value: float):
    return {
        "images": {k: torch.full((3, 4, 4), v, dtype=torch.uint8) for k, v in images.items()},
        "image_masks": {k: torch.tensor(m) for k, m in masks.items()},
        "tokens": torch.full((5,), int(value)), "token_mask": torch.ones(5, dtype=torch.bool),
        "state": torch.full((32,), value), "actions": torch.full((10, 32), value),
    }


def test_collate_drops_camera_masked_everywhere_and_fills_missing():
    a = _model_sample({"base_0_rgb": 1, "left_wrist_0_rgb": 0}, {"base_0_rgb": True, "left_wrist_0_rgb": False}, 1.0)
    b = _model_sample({"base_0_rgb": 2, "left_wrist_0_rgb": 0}, {"base_0_rgb": True, "left_wrist_0_rgb": False}, 2.0)
    batch = collate([a, b])
    assert set(batch["images"]) == set(batch["image_masks"]) == {"base_0_rgb"}
    assert batch["images"]["base_0_rgb"].shape == (2, 3, 4, 4)
    assert batch["images"]["base_0_rgb"][:, 0, 0, 0].tolist() == [1, 2]
    assert batch["image_masks"]["base_0_rgb"].tolist() == [True, True]
    assert batch["state"].shape == (2, 32) and batch["actions"].shape == (2, 10, 32)
    assert batch["tokens"][:, 0].tolist() == [1, 2]

    # a camera only the second sample has (visible there): zeros + False for the first
    c = _model_sample({"base_0_rgb": 3, "left_wrist_0_rgb": 7}, {"base_0_rgb": True, "left_wrist_0_rgb": True}, 3.0)
    d = _model_sample({"base_0_rgb": 4}, {"base_0_rgb": True}, 4.0)
    e = _model_sample({"base_0_rgb": 5, "right_wrist_0_rgb": 9}, {"base_0_rgb": True, "right_wrist_0_rgb": True}, 5.0)
    batch = collate([d, c, e])
    assert set(batch["images"]) == {"base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"}
    assert batch["image_masks"]["left_wrist_0_rgb"].tolist() == [False, True, False]
    assert batch["images"]["left_wrist_0_rgb"].flatten(1).amax(1).tolist() == [0, 7, 0]
    assert batch["image_masks"]["right_wrist_0_rgb"].tolist() == [False, False, True]
    assert batch["images"]["right_wrist_0_rgb"].flatten(1).amax(1).tolist() == [0, 0, 9]
    assert batch["images"]["left_wrist_0_rgb"].dtype == torch.uint8


# ----------------------------------------------------------------------------------------------------------------
# augmentation


def _images(batch=2, seed=0, same=False):
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (1 if same else batch, 3, 32, 32), dtype=torch.uint8, generator=g)
    wrist = torch.randint(0, 256, (1 if same else batch, 3, 32, 32), dtype=torch.uint8, generator=g)
    if same:
        base, wrist = base.expand(batch, -1, -1, -1).clone(), wrist.expand(batch, -1, -1, -1).clone()
    return {"base_0_rgb": base, "left_wrist_0_rgb": wrist}


def _to_unit(x):
    return x.float() / 255 * 2 - 1


def test_augment_deterministic_given_generator_and_in_range():
    images = _images(4)
    a = augment(images, generator=torch.Generator().manual_seed(0))
    b = augment(images, generator=torch.Generator().manual_seed(0))
    c = augment(images, generator=torch.Generator().manual_seed(1))
    for k in images:
        assert a[k].dtype == torch.float32 and a[k].shape == images[k].shape
        assert torch.equal(a[k], b[k])
        assert not torch.equal(a[k], c[k])
        assert a[k].min() >= -1 and a[k].max() <= 1
    strong = AugmentConfig(brightness=0.9, contrast=0.9, saturation=0.9, hue=0.5, color_prob=1.0)
    for v in augment(images, strong, torch.Generator().manual_seed(2)).values():
        assert v.min() >= -1 and v.max() <= 1
    # uint8 and [-1, 1] inputs are the same images
    d = augment({k: _to_unit(v) for k, v in images.items()}, generator=torch.Generator().manual_seed(0))
    for k in images:
        torch.testing.assert_close(a[k], d[k], rtol=0, atol=1e-5)


def test_augment_differs_per_sample():
    images = _images(2, same=True)
    out = augment(images, AugmentConfig(color_prob=1.0), torch.Generator().manual_seed(0))
    for k in images:
        assert not torch.allclose(out[k][0], out[k][1], atol=1e-3), k
    geo_only = augment(images, AugmentConfig(color_prob=0.0), torch.Generator().manual_seed(0))
    assert not torch.allclose(geo_only["base_0_rgb"][0], geo_only["base_0_rgb"][1], atol=1e-3)


def test_augment_wrist_not_moved():
    images = _images(3)
    out = augment(images, AugmentConfig(color_prob=0.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["left_wrist_0_rgb"], _to_unit(images["left_wrist_0_rgb"]), rtol=0, atol=1e-6)
    assert (out["base_0_rgb"] - _to_unit(images["base_0_rgb"])).abs().max() > 0.1  # the base camera is moved
    # a key with "wrist" anywhere in it counts as a wrist camera
    other = augment({"cam_wrist_right": images["base_0_rgb"]}, AugmentConfig(color_prob=0.0))
    torch.testing.assert_close(other["cam_wrist_right"], _to_unit(images["base_0_rgb"]), rtol=0, atol=1e-6)


def test_augment_geometry():
    images = _images(3)
    # no crop, no rotation, no colour: the identity (sampling at the pixel centres)
    ident = AugmentConfig(crop_scale=1.0, max_rotation_deg=0.0, color_prob=0.0)
    out = augment(images, ident, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["base_0_rgb"], _to_unit(images["base_0_rgb"]), rtol=0, atol=1e-5)

    # crop + rotation move pixels but do not change colours: a flat image stays flat away from the borders
    flat = {"base_0_rgb": torch.full((4, 3, 64, 64), 200, dtype=torch.uint8)}
    out = augment(flat, AugmentConfig(color_prob=0.0), torch.Generator().manual_seed(0))["base_0_rgb"]
    centre = out[..., 8:-8, 8:-8]
    torch.testing.assert_close(centre, torch.full_like(centre, 200 / 255 * 2 - 1), rtol=0, atol=1e-5)

    # a pure crop is a zoom in: a horizontal ramp keeps its direction, its slope per pixel scaled by crop_scale
    ramp = torch.linspace(0, 255, 64).round().to(torch.uint8).expand(2, 3, 64, 64).clone()
    zoom = augment({"base_0_rgb": ramp}, AugmentConfig(crop_scale=0.5, max_rotation_deg=0.0, color_prob=0.0),
                   torch.Generator().manual_seed(0))["base_0_rgb"]
    slope_in = (_to_unit(ramp)[..., 40] - _to_unit(ramp)[..., 24]).mean()
    slope_out = (zoom[..., 40] - zoom[..., 24]).mean()
    assert slope_out > 0
    torch.testing.assert_close(slope_out / slope_in, torch.tensor(0.5), rtol=0.05, atol=0)


def test_augment_sample_independent_of_batch():
    """Draws made for a whole (global) batch: any subset of samples augmented with `select` gets exactly what it
    gets in the full batch, and a camera absent from the batch still consumes its draws."""
    keys = ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]
    images = _images(6)
    images["right_wrist_0_rgb"] = images["left_wrist_0_rgb"].flip(-1)
    cfg = AugmentConfig(color_prob=1.0)
    uniforms = torch.rand(num_augment_draws(keys), 6, generator=torch.Generator().manual_seed(0))
    assert num_augment_draws(keys) == 8 + 5 + 5
    full = augment(images, cfg, keys=keys, uniforms=uniforms)
    select = torch.tensor([4, 1])
    part = augment({k: v[select] for k, v in images.items()}, cfg, keys=keys, uniforms=uniforms, select=select)
    for k in keys:
        torch.testing.assert_close(part[k], full[k][select], rtol=0, atol=1e-6)
    # without the left wrist camera, the right wrist one is augmented as before (draws are skipped, not shifted)
    no_left = augment({k: v for k, v in images.items() if k != "left_wrist_0_rgb"}, cfg, keys=keys, uniforms=uniforms)
    assert set(no_left) == {"base_0_rgb", "right_wrist_0_rgb"}
    torch.testing.assert_close(no_left["right_wrist_0_rgb"], full["right_wrist_0_rgb"], rtol=0, atol=1e-6)
