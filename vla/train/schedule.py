"""Learning-rate schedules with optax's exact semantics (openpi src/openpi/training/optimizer.py)."""

from __future__ import annotations

import math

from vla.configs import OptimConfig


def learning_rate(step: int, cfg: OptimConfig) -> float:
    """LR of the update with index `step` (0 for the first), as `optax.warmup_cosine_decay_schedule(
    init_value=lr / (warmup + 1), peak_value=lr, warmup_steps, decay_steps, end_value=decay_lr)` gives it; the
    `constant` schedule holds `lr` after the same warmup (what pi05_libero's decay_lr == lr amounts to)."""
    warmup = cfg.warmup_steps
    if step < warmup:
        init = cfg.lr / (warmup + 1)
        return init + (cfg.lr - init) * step / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule != "cosine":
        raise ValueError(f"optim.schedule: expected 'cosine' or 'constant', found {cfg.schedule!r}")
    span = max(cfg.decay_steps - warmup, 1)
    progress = min(step - warmup, span) / span
    alpha = cfg.decay_lr / cfg.lr
    return cfg.lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * progress)) + alpha)
