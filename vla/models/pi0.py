"""Pi0 / Pi0.5 flow-matching policy (openpi src/openpi/models/pi0.py): prefix = images + language through the VLM
expert, suffix = (state +) noisy actions through the action expert, one joint transformer; loss and Euler sampling
with a prefix KV cache.

Model batch (produced by vla.data.transforms, identical in training and evaluation):
  images       {camera: uint8 (B,3,224,224) or float in [-1,1]}  cameras absent from the dict are skipped (see below)
  image_masks  {camera: bool (B,)}
  tokens       int (B,L);  token_mask bool (B,L)
  state        float (B,32) normalized, zero-padded  (read by Pi0 only; Pi0.5 sees state as prompt tokens, if at all)
  actions      float (B,H,32) normalized, zero-padded  (compute_loss only)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vla.models.config import PolicyConfig
from vla.models.gemma import AdaRMSNorm, JointTransformer, RMSNorm
from vla.models.rtc import (RTC_MAX_GUIDANCE_WEIGHT, RTC_SCHEDULE, guidance_target, guidance_weight,
                            guided_velocity)
from vla.models.siglip import ImageEncoder


def make_attn_mask(input_mask_BN: torch.Tensor, ar_mask_BN: torch.Tensor) -> torch.Tensor:
    """Token i may attend token j iff block(j) <= block(i) (block = cumsum of ar) and both are valid (openpi's
    `make_attn_mask`, src/openpi/models/pi0.py)."""
    block = torch.cumsum(ar_mask_BN.long(), dim=1)
    causal = block[:, None, :] <= block[:, :, None]
    valid = input_mask_BN[:, None, :] & input_mask_BN[:, :, None]
    return causal & valid


def jax_linspace(num: int, device: torch.device | None = None) -> torch.Tensor:
    """`jnp.linspace(0.0, 1.0, num)` (float32) bit for bit. JAX computes i / (num - 1) for i < num - 1 and appends the
    endpoint (jax/_src/numpy/lax_numpy.py, `_linspace`); XLA compiles that division by a constant into a multiplication
    by its float32 reciprocal, and so does this. `torch.linspace` rounds differently (a few elements 1 ulp apart)."""
    if num == 1:
        return torch.zeros(1, dtype=torch.float32, device=device)
    reciprocal = torch.ones((), dtype=torch.float32, device=device) / (num - 1)  # float32, made on the device
    steps = torch.arange(num - 1, dtype=torch.float32, device=device) * reciprocal
    return torch.cat([steps, torch.ones(1, dtype=torch.float32, device=device)])


def sincos_time_embedding(t_B: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """[sin | cos] of t * 2pi / period, periods log-spaced from min to max, in float32 in the order of openpi's
    JAX reference (`posemb_sincos` in src/openpi/models/pi0.py: t * (1/period * 2pi)). The fractions equal
    jnp.linspace's bit for bit; pow, sin and cos are torch's, each within 1 ulp of XLA's but not always equal: at
    width 1024 (2pi/period up to 1571, whose ulp is 1.2e-4) the values differ from JAX's by up to 6.1e-5 for t in
    [0, 1]. openpi's PyTorch port computes in float64 and differs from JAX by up to 2e-4."""
    fraction = jax_linspace(dim // 2, device=t_B.device)
    period = min_period * (max_period / min_period) ** fraction
    arg = t_B.float()[:, None] * (1.0 / period * 2.0 * math.pi)[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


def sample_flow_time(batch_size: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """t = 0.999 * Beta(1.5, 1) + 0.001, t=1 is noise (openpi's `compute_loss`, src/openpi/models/pi0.py).
    Beta(a, 1) has CDF t^a, so t = U^(1/a) samples it exactly with a plain uniform draw (reproducible through a
    torch.Generator, unlike torch.distributions.Beta)."""
    u = torch.rand(batch_size, device=device, generator=generator)
    return u.pow(1.0 / 1.5) * 0.999 + 0.001


def trim_prompt_padding(batch: dict, bucket: int) -> dict:
    """The batch without the prompt columns that no sample uses (the tokenizer pads on the right), its length kept
    a multiple of `bucket` (each length compiles its own graphs). Exact: padded tokens are never attended and do not
    advance positions. Reads the mask on the host: one sync per call, before any of the call's GPU work."""
    if bucket < 1:
        raise ValueError(f"model.prompt_bucket: expected a length >= 1, found {bucket}")
    mask = batch["token_mask"]
    used = mask.any(dim=0).nonzero()
    keep = int(used.max()) + 1 if len(used) else 1
    keep = min(mask.shape[1], -(-keep // bucket) * bucket)
    if keep == mask.shape[1]:
        return batch
    return {**batch, "tokens": batch["tokens"][:, :keep], "token_mask": mask[:, :keep]}


def _linear(proj: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    # Inputs made here (noise, time embeddings) are float32; under bf16 compute the weights are bf16.
    return proj(x.to(proj.weight.dtype))


class Pi0Policy(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        self._inference_fns = None  # (prefix_cache, denoise_step, step_modulations) compiled by compile_for_inference
        width = cfg.expert.width
        self.image_encoder = ImageEncoder(cfg.vision, cfg.vlm.width)
        self.transformer = JointTransformer(cfg.vlm, cfg.expert, cfg.vocab_size, adaptive=cfg.pi05)
        self.action_in_proj = nn.Linear(cfg.action_dim, width)
        self.action_out_proj = nn.Linear(width, cfg.action_dim)
        if cfg.pi05:
            self.time_mlp_in = nn.Linear(width, width)
            self.time_mlp_out = nn.Linear(width, width)
        else:
            self.state_proj = nn.Linear(cfg.action_dim, width)
            self.action_time_mlp_in = nn.Linear(2 * width, width)
            self.action_time_mlp_out = nn.Linear(width, width)

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self) -> None:
        """From-scratch init (flax defaults as in openpi): lecun-normal kernels, zero biases, zero norm scales,
        zero adaRMS modulation (so the expert's residual branches start switched off) and a zero image head."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                fan_in = module.weight[0].numel()
                nn.init.trunc_normal_(module.weight, std=1.0 / math.sqrt(fan_in), a=-2.0 / math.sqrt(fan_in), b=2.0 / math.sqrt(fan_in))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=1.0 / math.sqrt(module.weight.shape[1]))
        for module in self.modules():  # a second pass: AdaRMSNorm's `dense` is a Linear visited after its parent
            if isinstance(module, RMSNorm):
                nn.init.zeros_(module.weight)
            elif isinstance(module, AdaRMSNorm):
                nn.init.zeros_(module.dense.weight)
                nn.init.zeros_(module.dense.bias)
        nn.init.zeros_(self.image_encoder.proj.weight)  # openpi head_zeroinit=True
        self.init_buffers()

    @torch.no_grad()
    def init_buffers(self) -> None:
        """Non-persistent buffers (not in any checkpoint) hold garbage after `to_empty`: set them."""
        for name, buf in self.named_buffers():
            if name.endswith("position_ids"):  # SigLIP's arange buffer
                buf.copy_(torch.arange(buf.shape[-1], device=buf.device).expand_as(buf))

    # ------------------------------------------------------------------ embedding
    def embed_prefix(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image tokens of each camera in cfg.image_keys order, then language tokens; all one bidirectional block.

        A camera missing from batch["images"] contributes no tokens. That is exactly equivalent to encoding zeros with
        mask False (masked tokens are never attended and do not advance positions) and saves its SigLIP pass."""
        cams = [k for k in self.cfg.image_keys if k in batch["images"]]
        images = torch.cat([batch["images"][k] for k in cams], dim=0)  # one SigLIP call for all cameras
        img_tokens = self.image_encoder(images).chunk(len(cams), dim=0)
        lang = self.transformer.embed(batch["tokens"].long())
        B, P = img_tokens[0].shape[:2]
        tokens = torch.cat([t.to(lang.dtype) for t in img_tokens] + [lang], dim=1)
        masks = [batch["image_masks"][k].bool()[:, None].expand(B, P) for k in cams] + [batch["token_mask"].bool()]
        mask = torch.cat(masks, dim=1)
        ar = torch.zeros_like(mask)
        return tokens, mask, ar

    def time_condition(self, t_B: torch.Tensor) -> torch.Tensor:
        """Pi0.5: the time condition (B, width) that drives every adaRMSNorm of the expert,
        silu(time_mlp_out(silu(time_mlp_in(sincos(t))))) as openpi's `embed_suffix` (src/openpi/models/pi0.py)."""
        time_emb = sincos_time_embedding(t_B, self.cfg.expert.width)
        return F.silu(self.time_mlp_out(F.silu(_linear(self.time_mlp_in, time_emb))))

    def embed_suffix(
        self, state_BA: torch.Tensor | None, x_t_BHA: torch.Tensor, t_B: torch.Tensor, with_cond: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """with_cond=False (Pi0.5 sampling with precomputed modulations): the time condition is not computed."""
        B, H, _ = x_t_BHA.shape
        width = self.cfg.expert.width
        actions = _linear(self.action_in_proj, x_t_BHA)
        if self.cfg.pi05:
            # The time condition drives every adaRMSNorm of the expert; action tokens carry no time.
            cond = self.time_condition(t_B) if with_cond else None
            tokens = actions
            num_blocks = 1  # the action tokens start one block
        else:
            # Pi0: state token, then action tokens mixed with time by an MLP (action first, time second, as openpi).
            cond = None
            time_BHD = sincos_time_embedding(t_B, width)[:, None, :].expand(B, H, width).to(actions.dtype)
            mixed = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([actions, time_BHD], dim=-1))))
            state = _linear(self.state_proj, state_BA)[:, None, :]
            tokens = torch.cat([state.to(mixed.dtype), mixed], dim=1)
            num_blocks = 2  # the state token is a block, the action tokens the next
        mask = torch.ones(B, tokens.shape[1], dtype=torch.bool, device=tokens.device)
        # ar = [True] * num_blocks + [False] * ...; built on the device (a host list would be a blocking copy per step)
        ar_BN = (torch.arange(tokens.shape[1], device=tokens.device) < num_blocks)[None].expand(B, -1)
        return tokens, mask, ar_BN, cond

    # ------------------------------------------------------------------ training
    def compute_loss(
        self, batch: dict, noise: torch.Tensor | None = None, time: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-step flow-matching loss (B, H): mean over action dims of (v_t - (noise - actions))^2, with
        x_t = t * noise + (1 - t) * actions (openpi's `compute_loss`, src/openpi/models/pi0.py)."""
        actions = batch["actions"].float()
        B, H, _ = actions.shape
        if noise is None:
            noise = torch.randn_like(actions)
        if time is None:
            time = sample_flow_time(B, actions.device)
        t = time.float()[:, None, None]
        x_t = t * noise + (1.0 - t) * actions
        target = noise - actions

        prefix, prefix_mask, prefix_ar = self.embed_prefix(batch)
        suffix, suffix_mask, suffix_ar, cond = self.embed_suffix(batch.get("state"), x_t, time)
        mask = torch.cat([prefix_mask, suffix_mask], dim=1)
        attn = make_attn_mask(mask, torch.cat([prefix_ar, suffix_ar], dim=1))
        positions = torch.cumsum(mask.long(), dim=1) - 1  # padding does not advance the position, as in openpi
        out, _ = self.transformer(prefix, suffix.to(prefix.dtype), positions, attn, cond)
        v_t = _linear(self.action_out_proj, out[:, -H:]).float()
        return (v_t - target).pow(2).mean(dim=-1)

    def forward(self, batch: dict, noise: torch.Tensor | None = None, time: torch.Tensor | None = None) -> torch.Tensor:
        return self.compute_loss(batch, noise, time)

    def unused_parameter_names(self) -> list[str]:
        """Parameters that never influence an output: the prefix output of the last layer is discarded, so the VLM's
        last-layer queries, output projection, MLP and the final VLM norm feed nothing (openpi computes them and
        their gradient is exactly zero). Training freezes them; checkpoints still carry them."""
        last = len(self.transformer.layers) - 1
        unused = [f"transformer.layers.{last}.experts.0.{n}" for n in ("q_proj", "o_proj", "mlp_norm", "gate_proj", "up_proj", "down_proj")]
        unused.append("transformer.vlm_norm")
        return [n for n, _ in self.named_parameters() if any(n.startswith(u + ".") for u in unused)]

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def prefix_cache(self, batch: dict) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """One pass of the prefix (images + prompt) through the VLM expert: per-layer (k, v) post-RoPE and the
        prefix validity mask (B, Tp). Computed once per `sample_actions` and never extended by suffix tokens (as in
        openpi's `sample_actions`, src/openpi/models/pi0.py)."""
        prefix, prefix_mask, prefix_ar = self.embed_prefix(batch)
        positions = torch.cumsum(prefix_mask.long(), dim=1) - 1
        _, kv_cache = self.transformer(prefix, None, positions, make_attn_mask(prefix_mask, prefix_ar), return_kv=True)
        return kv_cache, prefix_mask

    @torch.no_grad()
    def step_modulations(self, times_S: torch.Tensor) -> torch.Tensor:
        """Pi0.5: the expert norms' modulations for every sampling time at once, (S, 2 * depth + 1, 3 * width).
        They depend on the time alone, so a step reads its row instead of recomputing the time MLP and 2 * depth + 1
        small matmuls (at batch 1 those were a large share of a step's launches)."""
        return self.transformer.adarms_modulations(self.time_condition(times_S))

    def denoise_step(
        self, x_t: torch.Tensor, t_B: torch.Tensor, state: torch.Tensor | None,
        kv_cache: list[tuple[torch.Tensor, torch.Tensor]], prefix_mask: torch.Tensor,
        modulations: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity v(x_t, t) (B, H, action_dim) in float32: the suffix through the action expert, attending to the
        cached prefix. Shapes are fixed for a given batch size, so it compiles (and CUDA-graphs) as one unit.
        `modulations` (1, 2 * depth + 1, 3 * width): this step's row of `step_modulations` (Pi0.5), replacing t.
        Runs in the caller's grad mode: `sample_actions` runs it without gradients, real-time chunking takes a
        vector-Jacobian product through it."""
        B, H = x_t.shape[:2]
        suffix, suffix_mask, suffix_ar, cond = self.embed_suffix(state, x_t, t_B, with_cond=modulations is None)
        suffix = suffix.to(kv_cache[0][0].dtype)
        Ts = suffix.shape[1]
        attn = torch.cat([prefix_mask[:, None, :].expand(B, Ts, -1), make_attn_mask(suffix_mask, suffix_ar)], dim=2)
        # the suffix continues after the valid prefix tokens: the same positions as the joint training pass
        positions = prefix_mask.long().sum(dim=1, keepdim=True) + torch.cumsum(suffix_mask.long(), dim=1) - 1
        out, _ = self.transformer(None, suffix, positions, attn, cond, kv_cache=kv_cache, modulations=modulations)
        return _linear(self.action_out_proj, out[:, -H:]).float()

    def compile_for_inference(self) -> tuple:
        """sample_actions then runs a compiled prefix pass, modulation pass and denoising step, each replayed as a
        CUDA graph on the GPU (torch.compile mode="reduce-overhead"), with fused q/k/v and gate/up weights
        (JointTransformer.fuse_projections: copies of the current weights, so call this after loading them). One call
        is one graph tree: the prefix and the modulations, then the steps, which read both in place. Returns the
        compiled (prefix_cache, denoise_step, step_modulations) (the bench times the prefix alone with the first).
        `bench/inference.py --modes graphs_all` times it; eval.py's `compile=true` uses it."""
        self.transformer.fuse_projections()
        self._inference_fns = tuple(  # static shapes: each batch size and prompt bucket gets its own graphs
            torch.compile(fn, mode="reduce-overhead", dynamic=False)
            for fn in (self.prefix_cache, self.denoise_step, self.step_modulations)
        )
        return self._inference_fns

    @staticmethod
    def euler_times(num_steps: int) -> torch.Tensor:
        """The flow times of the Euler steps, float32 on the host: openpi's `while t >= -dt/2` runs exactly num_steps
        times, t accumulated in float32 from 1 by dt = -1/steps."""
        dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32)
        times = torch.ones(num_steps, dtype=torch.float32)
        for k in range(1, num_steps):
            times[k] = times[k - 1] + dt
        return times

    @torch.no_grad()
    def sample_actions(
        self, batch: dict, noise: torch.Tensor | None = None, num_steps: int | None = None, use_kv_cache: bool = True,
        prev_chunk: torch.Tensor | None = None, inference_delay: int | Sequence[int] = 0,
        execution_horizon: int | Sequence[int] | None = None, max_guidance_weight: float = RTC_MAX_GUIDANCE_WEIGHT,
        schedule: str = RTC_SCHEDULE,
    ) -> torch.Tensor:
        """Euler integration of the learned velocity from t=1 (noise) to t=0 (openpi's `sample_actions`,
        src/openpi/models/pi0.py). Returns (B, H, action_dim), normalized. Prompt padding that no sample uses is
        dropped first (`trim_prompt_padding`). The prefix K/V are computed once and reused for every step, never
        extended; `use_kv_cache=False` recomputes the whole sequence at every step (the reference the cache is tested
        against).

        Real-time chunking (`vla.models.rtc`), off unless `prev_chunk` is given: `prev_chunk` (B, H', A'), normalized
        like the output and aligned with the new chunk, is what remains of the previous chunk; its first
        `inference_delay` actions are executed while this chunk is computed, and `execution_horizon` actions of each
        chunk are executed. Every Euler step then takes the paper's guided velocity (PiGDM, soft prefix mask
        `schedule`, weight clipped at `max_guidance_weight`); it runs the eager step, with one vector-Jacobian
        product per step (`compile_for_inference`'s CUDA graphs serve plain sampling only)."""
        num_steps = num_steps or self.cfg.num_denoise_steps
        batch = trim_prompt_padding(batch, self.cfg.prompt_bucket)
        tokens = batch["tokens"]
        B, H, A = tokens.shape[0], self.cfg.action_horizon, self.cfg.action_dim
        if noise is None:
            noise = torch.randn(B, H, A, device=tokens.device)
        state = batch.get("state")
        if prev_chunk is not None:  # checked before any model work
            target, weights = (z.to(noise.device) for z in guidance_target(
                prev_chunk, H, A, inference_delay, execution_horizon, schedule))
            guidance = [guidance_weight(tau, max_guidance_weight) for tau in self.euler_times(num_steps).tolist()]
        compiled = self._inference_fns is not None and prev_chunk is None
        prefix_fn, step_fn, mod_fn = (self._inference_fns if compiled
                                      else (self.prefix_cache, self.denoise_step, self.step_modulations))
        if compiled:  # a new graph tree: the last call's graph outputs are dead
            torch.compiler.cudagraph_mark_step_begin()
        dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32)
        times = self.euler_times(num_steps)
        x = noise.float()
        times, dt = times.to(x.device), dt.to(x.device)
        modulations = None
        if use_kv_cache:
            kv_cache, prefix_mask = prefix_fn(batch)
            if self.cfg.pi05:
                modulations = mod_fn(times)
        else:
            prefix, prefix_mask, prefix_ar = self.embed_prefix(batch)

        def velocity(x: torch.Tensor, k: int) -> torch.Tensor:
            t = times[k]
            if use_kv_cache:
                mods = None if modulations is None else modulations[k:k + 1]
                return step_fn(x, t.expand(B), state, kv_cache, prefix_mask, mods)
            suffix, suffix_mask, suffix_ar, cond = self.embed_suffix(state, x, t.expand(B))
            mask = torch.cat([prefix_mask, suffix_mask], dim=1)
            attn = make_attn_mask(mask, torch.cat([prefix_ar, suffix_ar], dim=1))
            positions = torch.cumsum(mask.long(), dim=1) - 1
            out, _ = self.transformer(prefix, suffix.to(prefix.dtype), positions, attn, cond)
            return _linear(self.action_out_proj, out[:, -H:]).float()

        if prev_chunk is None:
            for k in range(num_steps):
                x = x + dt * velocity(x, k)
            return x
        for k in range(num_steps):
            v_t = guided_velocity(lambda x_k, k=k: velocity(x_k, k), x, times[k], target, weights, guidance[k])
            x = x + dt * v_t
        return x
