"""The joint two-expert Gemma transformer of Pi0/Pi0.5 (openpi src/openpi/models/gemma.py).

Expert 0 is PaliGemma's language model (prefix: image + text tokens); expert 1 is the action expert (suffix: state and
noisy-action tokens). Every layer runs both experts with their own weights and ONE attention over the concatenated
sequence [prefix | suffix]. A `JointLayer` holds layer i of both experts and does all of that in its `forward`, so it is
the unit that FSDP shards and activation checkpointing recomputes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vla.models.config import GemmaConfig


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * (1 + w), statistics in float32, result in the input dtype (openpi's `RMSNorm`,
    src/openpi/models/gemma.py)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                modulation: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).to(x.dtype), None


class AdaRMSNorm(nn.Module):
    """Pi0.5's adaptive RMSNorm (openpi's `RMSNorm` with a condition, src/openpi/models/gemma.py). A zero-initialised
    Linear maps the time condition to [scale, shift, gate]; the gate multiplies the residual branch (raw, no
    sigmoid)."""

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * dim)

    def modulation(self, cond_BC: torch.Tensor) -> torch.Tensor:
        """[scale | shift | gate] (B, 3 * dim) for a time condition: a function of the time alone, so sampling
        computes it for all its steps at once (JointTransformer.adarms_modulations)."""
        return self.dense(cond_BC.to(self.dense.weight.dtype))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                modulation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`modulation` (B or 1, 3 * dim), when given, stands for `self.modulation(cond)`."""
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        mod = self.modulation(cond) if modulation is None else modulation
        scale_BD, shift_BD, gate_BD = mod.float()[:, None, :].chunk(3, dim=-1)
        out = normed * (1.0 + scale_BD) + shift_BD
        return out.to(x.dtype), gate_BD.to(x.dtype)


def rope(x_BTNH: torch.Tensor, positions_BT: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotate-half RoPE, timescale_i = base^(2i/H); angles and products in float32, result in x's dtype (openpi's
    `_apply_rope`, src/openpi/models/gemma.py)."""
    half = x_BTNH.shape[-1] // 2
    timescale = base ** (2.0 * torch.arange(half, device=x_BTNH.device, dtype=torch.float32) / x_BTNH.shape[-1])
    angle_BTH = positions_BT.float()[..., None] / timescale
    sin, cos = torch.sin(angle_BTH)[:, :, None, :], torch.cos(angle_BTH)[:, :, None, :]
    x1, x2 = x_BTNH.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x_BTNH.dtype)


class ExpertBlock(nn.Module):
    """Weights of one expert in one layer: pre-attention norm, q/k/v/o projections, pre-FFW norm, GeGLU MLP.
    Its computation lives in JointLayer.forward because attention spans both experts."""

    def __init__(self, cfg: GemmaConfig, adaptive_cond_dim: int | None):
        super().__init__()
        d, n, k, h = cfg.width, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        norm = (lambda: AdaRMSNorm(d, adaptive_cond_dim)) if adaptive_cond_dim else (lambda: RMSNorm(d))
        self.attn_norm = norm()
        self.q_proj = nn.Linear(d, n * h, bias=False)
        self.k_proj = nn.Linear(d, k * h, bias=False)
        self.v_proj = nn.Linear(d, k * h, bias=False)
        self.o_proj = nn.Linear(n * h, d, bias=False)
        self.mlp_norm = norm()
        self.gate_proj = nn.Linear(d, cfg.mlp_dim, bias=False)
        self.up_proj = nn.Linear(d, cfg.mlp_dim, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_dim, d, bias=False)
        self.qkv_sizes = (n * h, k * h, k * h)
        # inference only (fuse_projections): concatenated copies of the q/k/v and gate/up weights, not checkpointed
        self.register_buffer("qkv_weight", None, persistent=False)
        self.register_buffer("gate_up_weight", None, persistent=False)

    @torch.no_grad()
    def fuse_projections(self, gate_up: bool) -> None:
        """One matmul for q, k, v (and with `gate_up` one for gate and up) instead of three (two): a denoising step at
        batch 1 is a chain of small, launch-bound matmuls. Copies of the current weights, for inference: training
        never calls this. LoRA-wrapped projections are left as they are."""
        if all(type(p) is nn.Linear for p in (self.q_proj, self.k_proj, self.v_proj)):
            self.qkv_weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        if gate_up and type(self.gate_proj) is nn.Linear and type(self.up_proj) is nn.Linear:
            self.gate_up_weight = torch.cat([self.gate_proj.weight, self.up_proj.weight])

    def qkv(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.qkv_weight is not None:
            return F.linear(h, self.qkv_weight).split(self.qkv_sizes, dim=-1)
        return self.q_proj(h), self.k_proj(h), self.v_proj(h)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        # GeGLU with the tanh approximation of GELU (openpi's `FeedForward`, src/openpi/models/lora.py).
        if self.gate_up_weight is not None:
            gate, up = F.linear(x, self.gate_up_weight).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.gelu(gate, approximate="tanh") * up)


def attention_few_queries(q_BTNH: torch.Tensor, k_BSKH: torch.Tensor, v_BSKH: torch.Tensor,
                          mask_BTS: torch.Tensor) -> torch.Tensor:
    """Attention written out for a denoising step: few queries (the action tokens) against the long cached prefix.

    A fused SDPA kernel tiles over (batch, head, query block) only, so at batch 1 the 50 queries give it 8 thread
    blocks for the whole GPU (measured on an H200: 37% of `sample_actions`' kernel time). Here the query heads that share
    a KV head are folded into the rows of one batched matmul, which spreads over the GPU. It mirrors openpi's
    attention: bf16 q and k with float32 logits (on CUDA one bf16 matmul with float32 output, as JAX's
    preferred_element_type; on the CPU a float32 matmul of the same values), masked, float32 softmax, probabilities
    cast to the value dtype."""
    B, T, N, H = q_BTNH.shape
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    G = N // K  # query head n reads KV head n // G, as SDPA's enable_gqa
    q = q_BTNH.view(B, T, K, G, H).permute(0, 2, 1, 3, 4).reshape(B * K, T * G, H)
    k = k_BSKH.permute(0, 2, 3, 1).reshape(B * K, H, S)
    if q.is_cuda and not (q.requires_grad or k.requires_grad):  # bmm with out_dtype has no derivative (RTC's guidance
        logits = torch.bmm(q, k, out_dtype=torch.float32)           # differentiates through sampling)
    else:
        logits = torch.bmm(q.float(), k.float())
    logits = logits.view(B, K, T, G, S) * H**-0.5
    logits = logits.masked_fill(~mask_BTS[:, None, :, None, :], float("-inf"))
    probs = torch.softmax(logits, dim=-1).to(v_BSKH.dtype).view(B * K, T * G, S)
    out = torch.bmm(probs, v_BSKH.permute(0, 2, 1, 3).reshape(B * K, S, H))
    return out.view(B, K, T, G, H).permute(0, 2, 1, 3, 4).reshape(B, T, N, H)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return x + y if gate is None else x + y * gate


class JointLayer(nn.Module):
    """Layer i of both experts. `forward` takes the hidden states of the experts present in this pass (None for an
    absent one: the prefix-only pass at inference, or the suffix-only denoising steps that read the cached prefix)."""

    def __init__(self, vlm: GemmaConfig, expert: GemmaConfig, adaptive_cond_dim: int | None):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = vlm.num_heads, vlm.num_kv_heads, vlm.head_dim
        self.experts = nn.ModuleList([ExpertBlock(vlm, None), ExpertBlock(expert, adaptive_cond_dim)])

    def forward(
        self,
        hidden: list[torch.Tensor | None],
        positions_BT: torch.Tensor,
        mask_BTS: torch.Tensor,
        adarms_cond: torch.Tensor | None = None,
        kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        skip_prefix_output: bool = False,
        modulation: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]:
        """hidden: [prefix (B,Tp,D0) | None, suffix (B,Ts,D1) | None]; positions (B, Tp+Ts) for the present tokens;
        mask (B, T, S) with S = cached + present keys. Returns the new hidden states and this pass's (k, v) post-RoPE.
        skip_prefix_output: the caller discards the prefix output of this layer (the last layer), so only the prefix
        K/V are computed: no prefix queries, attention rows, output projection or MLP.
        modulation (B or 1, 2, 3 * D1): the expert norms' precomputed modulations, in place of adarms_cond."""
        conds = [None, adarms_cond]
        mods = [(None, None), (None, None) if modulation is None else (modulation[:, 0], modulation[:, 1])]
        skip = [skip_prefix_output, False]
        qs, ks, vs, gates, q_lengths, q_positions = [], [], [], [], [], []
        offset = 0
        for e, (blk, x, cond) in enumerate(zip(self.experts, hidden, conds, strict=True)):
            if x is None:
                gates.append(None)
                continue
            B, T, _ = x.shape
            h, gate = blk.attn_norm(x, cond, mods[e][0])
            q, k, v = blk.qkv(h) if not skip[e] else (None, blk.k_proj(h), blk.v_proj(h))
            ks.append(k.view(B, T, self.num_kv_heads, self.head_dim))
            vs.append(v.view(B, T, self.num_kv_heads, self.head_dim))
            gates.append(gate)
            if not skip[e]:  # queries only for tokens whose output is used
                qs.append(q.view(B, T, self.num_heads, self.head_dim))
                q_lengths.append(T)
                q_positions.append(positions_BT[:, offset:offset + T])
            offset += T
        # One attention over the concatenated sequence; RoPE with the positions shared by both experts.
        k = rope(torch.cat(ks, dim=1), positions_BT)
        v = torch.cat(vs, dim=1)
        new_kv = (k, v)
        if not qs:  # prefix-only pass through the last layer: only its K/V are needed
            return [None, None], new_kv
        q = rope(torch.cat(qs, dim=1), torch.cat(q_positions, dim=1))
        if kv_cache is not None:
            k = torch.cat([kv_cache[0], k], dim=1)
            v = torch.cat([kv_cache[1], v], dim=1)
        if skip_prefix_output and hidden[0] is not None:
            mask_BTS = mask_BTS[:, hidden[0].shape[1]:]
        # MQA, q scaled by head_dim^-0.5, no soft-capping, softmax in float32 inside SDPA (openpi's `Attention`).
        # A fully masked query row (padding token) would give NaN with a boolean mask; let it attend everywhere instead,
        # as openpi's finite mask value does. Such rows are never read by a valid token.
        mask_BTS = mask_BTS | ~mask_BTS.any(dim=-1, keepdim=True)
        if kv_cache is not None and hidden[0] is None:  # a denoising step: few queries, long cached prefix
            out = attention_few_queries(q, k, v, mask_BTS)
        else:
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                attn_mask=mask_BTS[:, None], enable_gqa=self.num_heads != self.num_kv_heads,
            ).transpose(1, 2)
        outs = iter(out.split(q_lengths, dim=1))

        new_hidden: list[torch.Tensor | None] = []
        for e, (blk, x, cond, gate) in enumerate(zip(self.experts, hidden, conds, gates, strict=True)):
            if x is None or skip[e]:
                new_hidden.append(None)
                continue
            attn = next(outs).reshape(x.shape[0], x.shape[1], -1)
            x = gated_residual(x, blk.o_proj(attn), gate)
            h, gate = blk.mlp_norm(x, cond, mods[e][1])
            new_hidden.append(gated_residual(x, blk.mlp(h), gate))
        return new_hidden, new_kv


class JointTransformer(nn.Module):
    """Token embedding (expert 0 only), `depth` joint layers, and one final norm per expert."""

    def __init__(self, vlm: GemmaConfig, expert: GemmaConfig, vocab_size: int, adaptive: bool):
        super().__init__()
        for name in ("depth", "num_heads", "num_kv_heads", "head_dim"):  # one attention needs these equal
            if getattr(vlm, name) != getattr(expert, name):
                raise ValueError(f"model config: vlm.{name}={getattr(vlm, name)} != expert.{name}={getattr(expert, name)}")
        cond_dim = expert.width if adaptive else None
        self.vlm_width = vlm.width
        self.embed_tokens = nn.Embedding(vocab_size, vlm.width)
        self.layers = nn.ModuleList([JointLayer(vlm, expert, cond_dim) for _ in range(vlm.depth)])
        self.vlm_norm = RMSNorm(vlm.width)  # exists in the checkpoints; the prefix output it would norm is discarded
        self.expert_norm = AdaRMSNorm(expert.width, cond_dim) if adaptive else RMSNorm(expert.width)

    def fuse_projections(self) -> None:
        """Inference: fused q/k/v in both experts and fused gate/up in the action expert (the VLM's gate/up would
        copy 2.4 GB of a full-size model for a prefix pass that is not launch-bound). See ExpertBlock."""
        for layer in self.layers:
            layer.experts[0].fuse_projections(gate_up=False)
            layer.experts[1].fuse_projections(gate_up=True)

    def adarms_modulations(self, cond_SC: torch.Tensor) -> torch.Tensor:
        """Every expert norm's modulation for each row of `cond_SC`: (S, 2 * depth + 1, 3 * D1), ordered layer 0
        attention, layer 0 MLP, ..., final norm. Sampling computes it once for all its steps; each step then reads
        its row instead of running 2 * depth + 1 small matmuls."""
        norms = [n for layer in self.layers for n in (layer.experts[1].attn_norm, layer.experts[1].mlp_norm)]
        return torch.stack([n.modulation(cond_SC) for n in [*norms, self.expert_norm]], dim=1)

    def embed(self, tokens_BL: torch.Tensor) -> torch.Tensor:
        # Only language tokens are scaled by sqrt(width) (openpi's `Embedder.encode`); image and action tokens are not.
        return self.embed_tokens(tokens_BL) * math.sqrt(self.vlm_width)

    def forward(
        self,
        prefix: torch.Tensor | None,
        suffix: torch.Tensor | None,
        positions_BT: torch.Tensor,
        mask_BTS: torch.Tensor,
        adarms_cond: torch.Tensor | None = None,
        kv_cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        return_kv: bool = False,
        modulations: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """Returns the normed suffix output (None in a prefix-only pass) and, if asked, the per-layer (k, v).
        `modulations` (B or 1, 2 * depth + 1, 3 * D1) from `adarms_modulations` stand for `adarms_cond`."""
        hidden: list[torch.Tensor | None] = [prefix, suffix]
        cache_out = [] if return_kv else None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            hidden, kv = layer(
                hidden, positions_BT, mask_BTS, adarms_cond,
                kv_cache=None if kv_cache is None else kv_cache[i],
                skip_prefix_output=i == last,
                modulation=None if modulations is None else modulations[:, 2 * i:2 * i + 2],
            )
            if cache_out is not None:
                cache_out.append(kv)
        final_mod = None if modulations is None else modulations[:, -1]
        out = None if hidden[1] is None else self.expert_norm(hidden[1], adarms_cond, final_mod)[0]
        return out, cache_out
