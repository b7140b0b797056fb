"""Inference latency of `sample_actions` (prefix KV cache once + 10 Euler steps) on the GPU:

  python bench/inference.py --model pi05 --batch 1 32 --modes eager compile cudagraphs

Modes: eager; compile = torch.compile of `prefix_cache` and `denoise_step` (default mode); cudagraphs = the same, with
`denoise_step` compiled with mode="reduce-overhead" (each of the 10 denoising steps replays one captured CUDA graph). Weights bf16, 2 visible cameras +
a masked third, `--tokens` valid prompt tokens of the model's max_token_len. Times are medians over `--iters` runs,
CUDA events, after warm-up; the prefix/denoise split is timed separately.
"""

from __future__ import annotations

import argparse
import json
import torch
from timing import cuda_median_ms

from vla.data.transforms import move_to
from vla.models import build_policy


def make_batch(cfg, B: int, tokens: int, device) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    L, S = cfg.max_token_len, cfg.vision.image_size
    mask = (torch.arange(L) < tokens).expand(B, L)
    batch = {
        "images": {k: torch.randint(0, 256, (B, 3, S, S), dtype=torch.uint8, generator=g)
                   for k in ("base_0_rgb", "left_wrist_0_rgb")},
        "image_masks": {k: torch.ones(B, dtype=torch.bool) for k in ("base_0_rgb", "left_wrist_0_rgb")},
        "tokens": torch.randint(1, cfg.vocab_size, (B, L), generator=g) * mask,
        "token_mask": mask.clone(),
        "state": torch.randn(B, cfg.action_dim, generator=g),
    }
    return move_to(batch, device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pi05")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--modes", nargs="+", default=["eager", "compile", "cudagraphs"])
    ap.add_argument("--tokens", type=int, default=48, help="valid prompt tokens (padded to max_token_len)")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    device = torch.device("cuda")
    torch.manual_seed(0)
    with torch.device(device):
        policy = build_policy(args.model)
    policy = policy.to(torch.bfloat16).eval()
    cfg = policy.cfg
    rows = []
    for mode in args.modes:
        prefix_fn, step_fn = policy.prefix_cache, policy.denoise_step
        if mode != "eager":  # the prefix runs once per call: compiled, not graphed (its K/V outputs are kept)
            prefix_fn = torch.compile(policy.prefix_cache)
            step_fn = torch.compile(policy.denoise_step, **({"mode": "reduce-overhead"} if mode == "cudagraphs" else {}))
        for B in args.batch:
            batch = make_batch(cfg, B, args.tokens, device)
            noise = torch.randn(B, cfg.action_horizon, cfg.action_dim, device=device)
            dt = -1.0 / cfg.num_denoise_steps

            def denoise(kv, pmask):
                if mode == "cudagraphs":
                    torch.compiler.cudagraph_mark_step_begin()
                x, t = noise, torch.ones((), device=device)
                for _ in range(cfg.num_denoise_steps):
                    x = x + dt * step_fn(x, t.expand(B), batch["state"], kv, pmask)
                    t = t + dt
                return x

            def full():
                kv, pmask = prefix_fn(batch)
                return denoise(kv, pmask)

            with torch.no_grad():
                kv, pmask = prefix_fn(batch)
                total = cuda_median_ms(full, args.iters)
                prefix = cuda_median_ms(lambda: prefix_fn(batch), args.iters)
                steps = cuda_median_ms(lambda: denoise(kv, pmask), args.iters)
                # the benchmarked loop must be sample_actions' computation
                ref = policy.sample_actions(batch, noise=noise)
                err = ((full().float() - ref).norm() / ref.norm()).item()
            row = {"mode": mode, "batch": B, "total_ms": total, "prefix_ms": prefix, "denoise_ms": steps,
                   "rel_err_vs_eager": err, "device": torch.cuda.get_device_name()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| mode | batch | total (ms) | prefix (ms) | 10 denoise steps (ms) | rel. err vs eager |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['batch']} | {r['total_ms']:.1f} | {r['prefix_ms']:.1f} | {r['denoise_ms']:.1f} | "
              f"{r['rel_err_vs_eager']:.1e} |")


if __name__ == "__main__":
    main()
