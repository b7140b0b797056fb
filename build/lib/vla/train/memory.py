"""Refuse a training run whose state cannot fit, before minutes of initialisation end in the kernel's OOM killer."""

from __future__ import annotations

import torch

from vla.models import build_policy
from vla.models.lora import apply_lora

# fp32 master weight, its gradient, AdamW's two moments and the EMA; a frozen parameter keeps only its weight
BYTES_PER_TRAINABLE = 4 + 4 + 2 * 4 + 4
BYTES_PER_FROZEN = 4


def training_state_bytes(cfg) -> tuple[int, int]:
    """(bytes of the fp32 training state, parameters) of `cfg.model` (with `cfg.lora`), counted on the meta device."""
    with torch.device("meta"):
        policy = build_policy(cfg.model)
        if cfg.lora.enabled:
            lc = cfg.lora
            apply_lora(policy, lc.vlm_rank, lc.vlm_alpha, lc.expert_rank, lc.expert_alpha, lc.init_std)
    unused = set(policy.unused_parameter_names())
    total, trainable = 0, 0
    for name, p in policy.named_parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad and name not in unused else 0
    return trainable * BYTES_PER_TRAINABLE + (total - trainable) * BYTES_PER_FROZEN, total


def available_bytes(device: torch.device) -> int | None:
    """Free memory where the state will live: the GPU's, or the machine's MemAvailable (Linux); None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_training_memory(cfg, device: torch.device, ranks_sharing_device: int, world_size: int) -> None:
    """Raise ValueError naming the figures when the sharded training state alone exceeds the free memory.
    Activations come on top, so passing this is necessary, not sufficient."""
    need_total, params = training_state_bytes(cfg)
    need = need_total * ranks_sharing_device // world_size
    free = available_bytes(device)
    if free is not None and need > free:
        hint = ("use a smaller model (model=pi05_small, model=pi05_tiny), LoRA (lora.enabled=true) or a GPU "
                "(hardware=1xgpu)" if device.type == "cpu" else "use more GPUs, LoRA (lora.enabled=true) or a smaller model")
        raise ValueError(
            f"model={cfg.model.name} ({params:,} parameters) needs at least {need / 1e9:.1f} GB on {device.type} for "
            f"its fp32 weights, gradients, AdamW moments and EMA ({world_size} rank(s)), but {free / 1e9:.1f} GB are "
            f"free: {hint}")
