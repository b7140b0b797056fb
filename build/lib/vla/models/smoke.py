"""`python -m vla.models.smoke`: build the tiny Pi0.5 on CPU, take one loss+backward and one sampling, print timings."""

import time

import torch

from vla.models import build_policy


def main() -> None:
    torch.manual_seed(0)
    policy = build_policy("pi05_tiny")
    cfg = policy.cfg
    B = 4
    batch = {
        "images": {k: torch.randint(0, 256, (B, 3, 224, 224), dtype=torch.uint8) for k in cfg.image_keys},
        "image_masks": {k: torch.tensor([k != "right_wrist_0_rgb"] * B) for k in cfg.image_keys},
        "tokens": torch.randint(1, cfg.vocab_size, (B, cfg.max_token_len)),
        "token_mask": torch.ones(B, cfg.max_token_len, dtype=torch.bool),
        "state": torch.randn(B, cfg.action_dim),
        "actions": torch.randn(B, cfg.action_horizon, cfg.action_dim),
    }
    t = time.perf_counter()
    loss = policy.compute_loss(batch).mean()
    loss.backward()
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    actions = policy.sample_actions(batch)
    t_sample = time.perf_counter() - t
    n = sum(p.numel() for p in policy.parameters())
    print(f"{cfg.name}: {n:,} params | loss {loss.item():.4f} | loss+backward {t_train * 1e3:.1f} ms | "
          f"sample_actions {tuple(actions.shape)} {t_sample * 1e3:.1f} ms (batch {B}, CPU)")


if __name__ == "__main__":
    main()
