"""LoRA adapters for the two Gemma experts, as openpi's gemma_2b_lora / gemma_300m_lora (src/openpi/models/lora.py):
y = x W^T + scale * (x A^T) B^T with A (r, in), B (out, r) both ~ N(0, init_std) and scale = alpha / r, on the
attention projections (q, k, v, o) and the GeGLU matrices (gate, up, down) of every layer.

`LoRALinear` subclasses nn.Linear and keeps its `weight` name, so checkpoints load into the base weights unchanged;
`merge_lora` folds the adapters back into plain weights for export.
"""

from __future__ import annotations

import torch
from torch import nn

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, init_std: float = 0.01, device=None):
        super().__init__(in_features, out_features, bias=False, device=device)
        self.rank, self.scale, self.init_std = rank, alpha / rank, init_std
        self.lora_a = nn.Parameter(torch.empty(rank, in_features, device=device))
        self.lora_b = nn.Parameter(torch.empty(out_features, rank, device=device))
        if not self.lora_a.is_meta:
            self.reset_lora()

    @torch.no_grad()
    def reset_lora(self) -> None:
        nn.init.normal_(self.lora_a, std=self.init_std)
        nn.init.normal_(self.lora_b, std=self.init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + (x @ self.lora_a.T.to(x.dtype)) @ (self.lora_b.T.to(x.dtype) * self.scale)


def apply_lora(policy: nn.Module, vlm_rank: int, vlm_alpha: float, expert_rank: int, expert_alpha: float,
               init_std: float = 0.01) -> list[str]:
    """Swap the targeted Linears of both experts for LoRALinear (weights carried over), freeze every other parameter
    of the Gemma stack (embedding and norms included), and return the names of the trainable LoRA parameters.
    SigLIP and the action/time projections stay trainable, as in openpi's freeze filter."""
    for layer in policy.transformer.layers:
        for e, (rank, alpha) in enumerate(((vlm_rank, vlm_alpha), (expert_rank, expert_alpha))):
            block = layer.experts[e]
            for name in LORA_TARGETS:
                old: nn.Linear = getattr(block, name)
                new = LoRALinear(old.in_features, old.out_features, rank, alpha, init_std, device=old.weight.device)
                new.weight = old.weight
                setattr(block, name, new)
    for p in policy.transformer.parameters():
        p.requires_grad_(False)
    lora_names = []
    for name, p in policy.named_parameters():
        if name.endswith(("lora_a", "lora_b")):
            p.requires_grad_(True)
            lora_names.append(name)
    return lora_names


def lora_scales(policy: nn.Module) -> dict[str, float]:
    """{module name: alpha / rank} of every LoRALinear, for `merge_lora`."""
    return {name: m.scale for name, m in policy.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(state: dict[str, torch.Tensor], scales: dict[str, float]) -> dict[str, torch.Tensor]:
    """A state dict with adapters -> plain weights W + scale * B @ A (the layout every loader expects)."""
    out = {k: v for k, v in state.items() if not k.endswith((".lora_a", ".lora_b"))}
    for module, scale in scales.items():
        a, b = state[f"{module}.lora_a"].float(), state[f"{module}.lora_b"].float()
        w = state[f"{module}.weight"]
        out[f"{module}.weight"] = (w.float() + scale * (b @ a)).to(w.dtype)
    return out
