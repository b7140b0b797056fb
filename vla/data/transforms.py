"""Observation schema -> model batch, in openpi's order (Normalize, src/openpi/training/data_loader.py; then the model
transforms ResizeImages, TokenizePrompt and PadStatesAndActions, src/openpi/training/config.py), shared by training
and evaluation.

The observation schema is what the converter stores and what a live ManiSkill env yields (which dataset feature holds
each camera: vla/data/schema.py):
  images       {schema camera key: uint8 (H, W, 3)}     cameras the robot has
  image_masks  {schema camera key: bool}                 False for a stand-in (zeros) image
  state        float (state_dim,)                        raw
  prompt       str
  actions      float (H, action_dim)                     raw, training only (+ actions_is_pad bool (H,))

`ModelTransform` turns one such sample into model tensors: normalize state/actions (quantile for Pi0.5, z-score for
Pi0, no clipping; then the optional train-time state noise and `model.state_dims` selection) -> resize-with-pad images
to the model's image size (224 for the full models) -> tokenize the prompt (with the discretized normalized state for
Pi0.5 when `discrete_state_input`) -> zero-pad state/actions to `action_dim`. `collate` stacks samples; `augment`
is the train-time image augmentation, run on a batch wherever the batch lives (the GPU in training).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vla.data.config import AugmentConfig
from vla.data.norm_stats import NormStats, load_norm_stats
from vla.data.tokenizer import PromptTokenizer, resolve_tokenizer
from vla.models.config import PolicyConfig

EPS = 1e-6  # openpi's Normalize: (x - q01) / (q99 - q01 + 1e-6) * 2 - 1, or (x - mean) / (std + 1e-6)


# ----------------------------------------------------------------------------------------------------------------
# normalization (openpi src/openpi/transforms.py: quantile or z-score, no clipping)


@dataclass
class Normalizer:
    """openpi's Normalize/Unnormalize for one key: stats cover the robot's dims; padded dims are left untouched."""

    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray
    q99: np.ndarray
    use_quantiles: bool

    @classmethod
    def from_stats(cls, stats: NormStats, key: str, use_quantiles: bool) -> Normalizer:
        s = stats[key]
        return cls(*(np.asarray(s[n], dtype=np.float32) for n in ("mean", "std", "q01", "q99")), use_quantiles)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        d = x.shape[-1]
        if self.use_quantiles:
            q01, q99 = self.q01[:d], self.q99[:d]
            return ((x - q01) / (q99 - q01 + EPS) * 2.0 - 1.0).astype(np.float32)
        return ((x - self.mean[:d]) / (self.std[:d] + EPS)).astype(np.float32)

    def unnormalize(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Inverse on the first len(stats) dims of x (which may be padded wider); other dims pass through."""
        d = len(self.q01)
        lo, hi = (self.q01, self.q99 - self.q01 + EPS) if self.use_quantiles else (self.mean, self.std + EPS)
        if isinstance(x, torch.Tensor):
            lo, hi = torch.as_tensor(lo, device=x.device), torch.as_tensor(hi, device=x.device)
            out = x.float().clone()
        else:
            out = np.array(x, dtype=np.float32)
        head = out[..., :d]
        out[..., :d] = ((head + 1.0) / 2.0 * hi + lo) if self.use_quantiles else (head * hi + lo)
        return out


# ----------------------------------------------------------------------------------------------------------------
# images


def resize_with_pad(image_HWC: np.ndarray, size: int) -> np.ndarray:
    """openpi_client's resize_with_pad (openpi packages/openpi-client/src/openpi_client/image_tools.py): PIL bilinear,
    aspect kept (int truncation), centred on black. A no-op when the image already has the target size."""
    h, w = image_HWC.shape[:2]
    if (h, w) == (size, size):
        return image_HWC
    ratio = max(w / size, h / size)
    rh, rw = int(h / ratio), int(w / ratio)
    resized = Image.fromarray(image_HWC).resize((rw, rh), resample=Image.BILINEAR)
    canvas = Image.new(resized.mode, (size, size), 0)
    canvas.paste(resized, (max(0, int((size - rw) / 2)), max(0, int((size - rh) / 2))))
    return np.asarray(canvas)


def to_uint8_hwc(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 HWC from uint8 HWC, or from float [0, 1] CHW as lerobot's reader returns images (exact: it divided by 255)."""
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            image = (image.float() * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
        image = image.numpy()
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image: expected uint8 (H, W, 3) or float (3, H, W), found {image.dtype} {image.shape}")
    return image


def pad_last(x: np.ndarray, dim: int) -> np.ndarray:
    """Zero-pad the last axis to `dim` (after normalization, so padded dims are exactly 0)."""
    if x.shape[-1] > dim:
        raise ValueError(f"cannot pad {x.shape[-1]} dims to model action_dim={dim}")
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, dim - x.shape[-1])])


# ----------------------------------------------------------------------------------------------------------------
# schema sample -> model sample


class ModelTransform:
    """One schema sample -> one model sample (torch tensors, unbatched). Picklable: runs in DataLoader workers."""

    def __init__(self, cfg: PolicyConfig, norm_stats: NormStats, tokenizer: PromptTokenizer,
                 state_noise_std: float = 0.0, state_noise_dims: list[int] | None = None):
        self.cfg = cfg
        # Train-time only (AugmentConfig.state_noise_std / state_noise_dims): see `_noisy`.
        self.state_noise_std = state_noise_std
        self._rng: tuple[int, np.random.Generator] | None = None
        self.state_norm = Normalizer.from_stats(norm_stats, "state", cfg.use_quantile_norm)
        state_size = len(self.state_norm.q01)
        self.noise_mask = None  # 1 on the noised dims of the full state, 0 elsewhere; None: every dim
        if state_noise_dims is not None:
            if not all(0 <= d < state_size for d in state_noise_dims):
                raise ValueError(f"augment.state_noise_dims {list(state_noise_dims)}: the state has {state_size} dims "
                                 "(norm stats)")
            self.noise_mask = np.zeros(state_size, np.float32)
            self.noise_mask[list(state_noise_dims)] = 1.0
        # checked once here (the norm stats know the state's size), not per sample in the loader workers
        self.state_dims = None if cfg.state_dims is None else list(cfg.state_dims)
        if self.state_dims is not None and max(self.state_dims, default=-1) >= state_size:
            raise ValueError(f"model.state_dims {self.state_dims}: the state has {state_size} dims (norm stats)")
        self.action_norm = Normalizer.from_stats(norm_stats, "actions", cfg.use_quantile_norm)
        self.tokenizer = tokenizer
        self.image_size = cfg.vision.image_size
        self.discrete_state = cfg.pi05 and cfg.discrete_state_input

    def _noisy(self, state: np.ndarray) -> np.ndarray:
        """Gaussian noise on the normalized state. ManiSkill adds noise to each episode's initial joint angles, so with
        few demos the (discretized) state alone names the episode and a policy can replay it without looking at the
        image; this noise removes that key. Drawn from a generator per process, seeded from torch's seed, which
        DataLoader sets per worker (a resumed run draws other noise; everything else resumes exactly). With
        `noise_mask` only some dims are noised: e.g. PickCube's joints, not its goal, which no image shows."""
        if self._rng is None or self._rng[0] != os.getpid():
            self._rng = (os.getpid(), np.random.default_rng(torch.initial_seed()))
        noise = self._rng[1].normal(0.0, self.state_noise_std, state.shape)
        if self.noise_mask is not None:
            noise = noise * self.noise_mask
        return (state + noise).astype(state.dtype)

    def __call__(self, sample: dict) -> dict:
        state = self.state_norm.normalize(sample["state"])
        if self.state_noise_std > 0:  # on the full state: state_noise_dims index it as the norm stats do
            state = self._noisy(state)
        if self.state_dims is not None:
            state = state[self.state_dims]
        tokens, token_mask = self.tokenizer.encode(sample["prompt"], state if self.discrete_state else None)
        out = {
            "images": {},
            "image_masks": {},
            "tokens": torch.from_numpy(tokens.astype(np.int64)),
            "token_mask": torch.from_numpy(token_mask),
            "state": torch.from_numpy(pad_last(state, self.cfg.action_dim)),
        }
        for key in self.cfg.image_keys:
            # A masked (stand-in) or missing camera is left out: `collate` gives it zeros + mask False where other
            # samples of the batch have it, and drops it where none has (the model treats both alike).
            if key not in sample["images"] or not sample["image_masks"].get(key, True):
                continue
            img = resize_with_pad(to_uint8_hwc(sample["images"][key]), self.image_size)
            out["images"][key] = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
            out["image_masks"][key] = torch.tensor(True)
        if "actions" in sample:
            actions = self.action_norm.normalize(sample["actions"])
            out["actions"] = torch.from_numpy(pad_last(actions, self.cfg.action_dim))
            if "actions_is_pad" in sample:
                out["actions_is_pad"] = torch.as_tensor(sample["actions_is_pad"], dtype=torch.bool)
        return out

    @classmethod
    def load(cls, cfg: PolicyConfig, norm_stats_path: str | Path, tokenizer_path: str | Path | None = None,
             state_noise_std: float = 0.0, state_noise_dims: list[int] | None = None) -> ModelTransform:
        """From files: norm_stats.json and the SentencePiece model (default: `cfg.tokenizer`, else the tiny one)."""
        tokenizer = PromptTokenizer(
            resolve_tokenizer(tokenizer_path or cfg.tokenizer), cfg.max_token_len,
            discrete_state=cfg.pi05 and cfg.discrete_state_input,
        )
        return cls(cfg, load_norm_stats(norm_stats_path), tokenizer, state_noise_std, state_noise_dims)

    def unnormalize_actions(self, actions_BHA: torch.Tensor, action_dim: int) -> torch.Tensor:
        """Model output (normalized, padded) -> raw robot actions (..., action_dim)."""
        return self.action_norm.unnormalize(actions_BHA[..., :action_dim])


def collate(samples: list[dict]) -> dict:
    """Stack model samples into a batch. A camera some samples lack becomes zeros + mask False for them; a camera
    masked in every sample is dropped from the batch, which the model treats exactly like zeros + mask False
    (its tokens are never attended and do not advance positions) while skipping its SigLIP pass."""
    batch: dict = {"images": {}, "image_masks": {}}
    keys = [k for k in samples[0]["images"]] + [k for s in samples[1:] for k in s["images"] if k not in samples[0]["images"]]
    for key in keys:
        masks = torch.stack([s["image_masks"].get(key, torch.tensor(False)) for s in samples])
        if not masks.any():
            continue
        ref = next(s["images"][key] for s in samples if key in s["images"])
        batch["images"][key] = torch.stack([s["images"].get(key, torch.zeros_like(ref)) for s in samples])
        batch["image_masks"][key] = masks
    for key in samples[0]:
        if key not in ("images", "image_masks"):
            batch[key] = torch.stack([s[key] for s in samples])
    return batch


def move_to(batch: dict, device: torch.device | str, non_blocking: bool = True) -> dict:
    return {
        k: ({kk: vv.to(device, non_blocking=non_blocking) for kk, vv in v.items()} if isinstance(v, dict)
            else v.to(device, non_blocking=non_blocking))
        for k, v in batch.items()
    }


# ----------------------------------------------------------------------------------------------------------------
# train-time augmentation (openpi src/openpi/models/model.py `preprocess_observation`), per sample, on a batch


class _Draws:
    """Serves rows of pre-drawn uniforms U (num_draws, batch_size) in order, keeping the columns `select`: drawing for
    the whole global batch and keeping this process's samples gives every sample the same augmentation whatever the
    number of ranks or accumulation steps."""

    def __init__(self, uniforms: torch.Tensor, select: torch.Tensor | None):
        self.uniforms, self.select, self.next = uniforms, select, 0

    def __call__(self, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        u = self.uniforms[self.next]
        self.next += 1
        return lo + (hi - lo) * (u if self.select is None else u[self.select])


def num_augment_draws(keys: list[str]) -> int:
    """Uniforms per sample that `augment` consumes for these cameras: 3 geometric (non-wrist) + 5 colour each."""
    return sum(8 if "wrist" not in k else 5 for k in keys)


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


def _geometric(x: torch.Tensor, cfg: AugmentConfig, draw: _Draws) -> torch.Tensor:
    """Random crop + resize + rotation fused into one bilinear resampling (as augmax fuses the chain): output pixel
    u (normalized coords) samples the input at offset + scale * R(angle) u. Outside the image is black."""
    s = cfg.crop_scale
    off_x, off_y = draw(-(1 - s), 1 - s), draw(-(1 - s), 1 - s)  # crop centre: the crop stays inside the image
    angle = draw(-1.0, 1.0) * math.radians(cfg.max_rotation_deg)
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    theta = torch.stack([torch.stack([cos, -sin, off_x], -1), torch.stack([sin, cos, off_y], -1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
_FROM_YIQ = torch.linalg.inv(_TO_YIQ)


@functools.lru_cache(maxsize=None)
def _yiq_matrices(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB<->YIQ on `device`, copied once (a per-step host->device copy would block the training step)."""
    return _TO_YIQ.float().to(device), _FROM_YIQ.float().to(device)


def _color(x: torch.Tensor, cfg: AugmentConfig, draw: _Draws) -> torch.Tensor:
    B = x.shape[0]
    view = lambda t: t.view(B, 1, 1, 1)  # noqa: E731
    apply = view(draw() < cfg.color_prob)
    y = x * view(draw(1 - cfg.brightness, 1 + cfg.brightness))
    mean = _grey(y).mean(dim=(2, 3), keepdim=True)
    y = (y - mean) * view(draw(1 - cfg.contrast, 1 + cfg.contrast)) + mean
    grey = _grey(y)
    y = grey + (y - grey) * view(draw(1 - cfg.saturation, 1 + cfg.saturation))
    # Hue: rotate the chroma plane of YIQ by 2*pi*h (a per-sample linear map, no HSV round trip).
    a = draw(-cfg.hue, cfg.hue) * 2 * math.pi
    to_yiq, from_yiq = _yiq_matrices(x.device)
    rot = torch.zeros(B, 3, 3, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = a.cos(), -a.sin(), a.sin(), a.cos()
    m = from_yiq @ rot @ to_yiq  # (B, 3, 3)
    y = torch.einsum("bij,bjhw->bihw", m, y)
    return torch.where(apply, y, x).clamp(0.0, 1.0)


def augment(
    images: dict[str, torch.Tensor],
    cfg: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
    keys: list[str] | None = None,
    uniforms: torch.Tensor | None = None,
    select: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Train-time augmentation of a batch, independently per sample (openpi's JAX recipe, `preprocess_observation` in
    src/openpi/models/model.py): cameras whose key does not contain "wrist" are cropped, resized and rotated; every
    camera is colour-jittered. uint8 or [-1, 1] images (B, 3, H, W) in, float [-1, 1] out (what the model takes).

    The random numbers are `uniforms` (num_augment_draws(keys), N) if given, of which these samples are the columns
    `select`; else they are drawn from `generator` for this batch. Cameras are visited in `keys` order, and a camera
    absent from `images` still consumes its draws, so a sample's augmentation never depends on the other samples."""
    cfg = cfg or AugmentConfig()
    keys = list(images) if keys is None else keys
    ref = next(iter(images.values()))
    if uniforms is None:
        uniforms = torch.rand(num_augment_draws(keys), ref.shape[0], generator=generator, device=ref.device)
    draw = _Draws(uniforms, select)
    out = {}
    for key in keys:
        if key not in images:
            draw.next += 8 if "wrist" not in key else 5
            continue
        img = images[key]
        x = img.float() / 255.0 if img.dtype == torch.uint8 else (img.float() + 1.0) / 2.0
        if "wrist" not in key:
            x = _geometric(x, cfg, draw)
        out[key] = _color(x, cfg, draw) * 2.0 - 1.0
    return out
