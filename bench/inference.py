"""Inference latency of `sample_actions` (prefix KV cache once + 10 Euler steps) on the GPU:

  python bench/inference.py --model pi05 --batch 1 32 --modes eager compile cudagraphs graphs_all [--profile DIR]

Modes: eager; compile = torch.compile of `prefix_cache` and `denoise_step` (default mode); cudagraphs = the same, with
`denoise_step` compiled with mode="reduce-overhead" (each of the 10 denoising steps replays one captured CUDA graph);
graphs_all = the policy's own `compile_for_inference` + `sample_actions` (eval.py compile=true): fused q/k/v and gate/up
weights, the prompt without its unused padding, one CUDA-graph tree per call (prefix, the step modulations, then the 10
steps, which read both in place); its denoise column is total minus prefix, so it includes the modulations.
--profile writes each mode's CUDA-kernel table (torch.profiler, 5 calls) to DIR. Weights bf16, 2 visible cameras + a
masked third, `--tokens` valid prompt tokens of the model's max_token_len. Times are medians over `--iters` runs, CUDA events, after
warm-up; the prefix/denoise split is timed separately.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from timing import cuda_median_ms

from vla.data.transforms import move_to
from vla.models import build_policy
from vla.models.pi0 import trim_prompt_padding


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


def profile_kernels(fn, path: Path, calls: int = 5) -> None:
    """CUDA kernels of `calls` calls of fn, by total GPU time, with the kernel count per call (launch-bound or not)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_ms = sum(e.device_time for e in kernels) / 1000 / calls
    path.parent.mkdir(parents=True, exist_ok=True)
    head = f"{len(kernels) / calls:.0f} kernels and {gpu_ms:.2f} ms of kernel time per call\n"
    path.write_text(head + prof.key_averages().table(sort_by="device_time_total", row_limit=40, max_name_column_width=90))
    print(path.name, head, end="", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pi05")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--modes", nargs="+", default=["eager", "compile", "cudagraphs"])
    ap.add_argument("--tokens", type=int, default=48, help="valid prompt tokens (padded to max_token_len)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--profile", type=Path, default=None, help="write a CUDA-kernel table per mode and batch here")
    args = ap.parse_args()
    device = torch.device("cuda")
    torch.manual_seed(0)
    with torch.device(device):
        policy = build_policy(args.model)
    policy = policy.to(torch.bfloat16).eval()
    cfg = policy.cfg
    rows = []
    # inputs and eager references first: graphs_all installs its compiled functions into the policy
    inputs = {B: (make_batch(cfg, B, args.tokens, device),
                  torch.randn(B, cfg.action_horizon, cfg.action_dim, device=device)) for B in args.batch}
    with torch.no_grad():
        refs = {B: policy.sample_actions(batch, noise=noise) for B, (batch, noise) in inputs.items()}
    for mode in sorted(args.modes, key=lambda m: m == "graphs_all"):  # graphs_all last: it changes sample_actions
        prefix_fn, step_fn = policy.prefix_cache, policy.denoise_step
        if mode == "graphs_all":  # the product's path: eval.py compile=true, sample_actions replaying CUDA graphs
            prefix_fn = policy.compile_for_inference()[0]  # the steps run inside sample_actions
        elif mode != "eager":  # compile: both compiled; cudagraphs: the steps replayed as CUDA graphs, prefix compiled
            prefix_fn = torch.compile(policy.prefix_cache)
            step_fn = torch.compile(policy.denoise_step, **({"mode": "reduce-overhead"} if mode == "cudagraphs" else {}))
        for B in args.batch:
            batch, noise = inputs[B]
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
                if mode == "graphs_all":
                    return policy.sample_actions(batch, noise=noise)
                return denoise(*prefix_fn(batch))

            def prefix_only():
                if mode == "graphs_all":  # the prefix sample_actions runs: the prompt without its unused padding
                    torch.compiler.cudagraph_mark_step_begin()
                    return prefix_fn(trim_prompt_padding(batch, cfg.prompt_bucket))
                return prefix_fn(batch)

            with torch.no_grad():
                total = cuda_median_ms(full, args.iters)
                prefix = cuda_median_ms(prefix_only, args.iters)
                if mode == "graphs_all":  # the steps' graphs read the prefix graph's outputs: time them only together
                    steps = total - prefix
                else:
                    kv, pmask = prefix_fn(batch)
                    steps = cuda_median_ms(lambda: denoise(kv, pmask), args.iters)
                ref = refs[B]  # the benchmarked loop must be sample_actions' eager computation
                err = ((full().float() - ref).norm() / ref.norm()).item()
                if args.profile:
                    profile_kernels(full, args.profile / f"profile_{mode}_b{B}.txt")
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
