"""Tiny policies and batches for model tests."""

import torch

from vla.models import build_policy


def randomized_policy(name: str, seed: int = 0, std: float = 0.1):
    """A tiny policy whose zero-initialised parameters (adaRMS, image head, norms, biases) are randomized too,
    so that every code path contributes to the outputs."""
    torch.manual_seed(seed)
    policy = build_policy(name)
    with torch.no_grad():
        for p in policy.parameters():
            p.normal_(0.0, std)
    return policy.eval()


def make_batch(cfg, batch_size: int = 2, seed: int = 0, lengths=(7, 13), masked=("right_wrist_0_rgb",)):
    g = torch.Generator().manual_seed(seed)
    B, L = batch_size, cfg.max_token_len
    images = {k: torch.randint(0, 256, (B, 3, 224, 224), dtype=torch.uint8, generator=g) for k in cfg.image_keys}
    masks = {k: torch.full((B,), k not in masked) for k in cfg.image_keys}
    lengths = torch.tensor(lengths[:B])[:, None]
    return {
        "images": images,
        "image_masks": masks,
        "tokens": torch.randint(1, cfg.vocab_size, (B, L), generator=g) * (torch.arange(L)[None] < lengths),
        "token_mask": torch.arange(L)[None] < lengths,
        "state": torch.randn(B, cfg.action_dim, generator=g),
        "actions": torch.randn(B, cfg.action_horizon, cfg.action_dim, generator=g),
    }
