"""Typed schema of the `model` config group (conf/model/*.yaml), registered with Hydra by vla.configs so that a typo
in an override fails at composition. Sizes of the full models are openpi's (`get_config` in src/openpi/models/gemma.py,
So400m/14 in siglip.py); the small and tiny ones differ only in size."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

IMAGE_KEYS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")  # token order (openpi src/openpi/models/model.py)
# precision names used by the configs (hardware.precision, eval precision) and the weight tools
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class GemmaConfig:
    width: int = 2048  # hidden size of this expert
    mlp_dim: int = 16384  # GeGLU inner size
    depth: int = 18  # layers; both experts must agree
    num_heads: int = 8  # query heads; both experts must agree
    num_kv_heads: int = 1  # MQA
    head_dim: int = 256


@dataclass
class VisionConfig:
    """SigLIP So400m/14 by default (transformers' SiglipVisionConfig fields)."""

    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    patch_size: int = 14
    image_size: int = 224


@dataclass
class PolicyConfig:
    name: str = "pi05"
    pi05: bool = True  # Pi0.5 (adaRMSNorm time conditioning, discrete-state prompt) vs Pi0 (state token, action-time MLP)
    vlm: GemmaConfig = field(default_factory=GemmaConfig)  # PaliGemma's gemma_2b
    expert: GemmaConfig = field(default_factory=lambda: GemmaConfig(width=1024, mlp_dim=4096))  # gemma_300m
    vision: VisionConfig = field(default_factory=VisionConfig)
    vocab_size: int = 257152  # PaliGemma vocabulary
    action_dim: int = 32  # robots are zero-padded to this many action/state dims
    action_horizon: int = 50  # H, the chunk length
    max_token_len: int = 200  # prompt length (48 for Pi0)
    discrete_state_input: bool = True  # Pi0.5 only: state as discretized text tokens in the prompt
    # Which dims of the task's state the model reads, after normalization (null: all). With few demos, the robot's
    # noisy initial joint angles name the episode; keeping only what the cameras cannot show (PickCube's hidden goal,
    # dims 8-10) makes the policy find the cube in the image. Saved with the checkpoint, so eval reads the same dims.
    state_dims: list[int] | None = None
    image_keys: list[str] = field(default_factory=lambda: list(IMAGE_KEYS))
    tokenizer: str | None = None  # path to a SentencePiece model (PaliGemma's for real weights)
    pretrained: str | None = None  # any checkpoint vla.models.weights can load, or null for random init
    num_denoise_steps: int = 10  # Euler steps of sample_actions
    # sample_actions drops the prompt padding no sample uses, keeping the length a multiple of this (compiled graphs
    # exist per length: a task's prompts then share one or two)
    prompt_bucket: int = 32

    def __post_init__(self) -> None:
        for key, value in (("action_horizon", self.action_horizon), ("action_dim", self.action_dim),
                           ("max_token_len", self.max_token_len), ("num_denoise_steps", self.num_denoise_steps)):
            if value < 1:
                raise ValueError(f"model.{key}={value}: must be positive")
        if self.vlm.depth != self.expert.depth or self.vlm.num_heads != self.expert.num_heads:
            raise ValueError(f"model: vlm and expert must agree in depth and num_heads (the joint layers share "
                             f"attention), found {self.vlm.depth}/{self.expert.depth} and "
                             f"{self.vlm.num_heads}/{self.expert.num_heads}")

    @property
    def use_quantile_norm(self) -> bool:
        return self.pi05  # openpi src/openpi/training/config.py: quantile for Pi0.5, z-score for Pi0
