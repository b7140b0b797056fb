"""SigLIP So400m/14 image encoder (transformers' SiglipVisionModel, unpatched) + the PaliGemma projection, as openpi
builds them (src/openpi/models/siglip.py, pool_type="none")."""

from __future__ import annotations

import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from vla.models.config import VisionConfig


def siglip_config(cfg: VisionConfig) -> SiglipVisionConfig:
    return SiglipVisionConfig(
        hidden_size=cfg.width,
        intermediate_size=cfg.mlp_dim,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        num_channels=3,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_act="gelu_pytorch_tanh",  # openpi's siglip.py uses flax nn.gelu, the tanh approximation
        layer_norm_eps=1e-6,  # flax LayerNorm default
        vision_use_head=False,  # pool_type="none": all patch tokens are kept
        attn_implementation="sdpa",
    )


class ImageEncoder(nn.Module):
    """uint8 or [-1, 1] float images (B, 3, H, W) -> (B, num_patches, out_dim) tokens. No scaling after the
    projection: openpi's `Module` (src/openpi/models/siglip.py) has no 1/sqrt(d) after its head, unlike HF PaliGemma."""

    def __init__(self, cfg: VisionConfig, out_dim: int):
        super().__init__()
        self.tower = SiglipVisionModel(siglip_config(cfg))
        self.proj = nn.Linear(cfg.width, out_dim)
        self.num_patches = (cfg.image_size // cfg.patch_size) ** 2

    @property
    def encoder_layers(self) -> nn.ModuleList:
        """SigLIP's transformer layers, wherever this transformers version keeps them (4.x nests the model under
        `vision_model.`, 5.x does not)."""
        model = getattr(self.tower, "vision_model", self.tower)
        return model.encoder.layers

    def forward(self, images_BCHW: torch.Tensor) -> torch.Tensor:
        if images_BCHW.dtype == torch.uint8:
            images_BCHW = images_BCHW.float() / 255.0 * 2.0 - 1.0  # openpi's [-1, 1] (src/openpi/models/model.py)
        # The embeddings cast pixels to the patch-conv dtype themselves.
        features = self.tower(pixel_values=images_BCHW).last_hidden_state
        return self.proj(features.to(self.proj.weight.dtype))
