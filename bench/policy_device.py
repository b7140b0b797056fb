"""eval.py's policy path on a GPU: the same checkpoint loaded on the CPU and on CUDA gives the same raw action chunks
for a batch of observation-schema samples (random images/state, the task prompt), and the CUDA call's latency.

  python bench/policy_device.py --checkpoint runs/quickstart --state-dim 11 [--batch 8] [--prompt "..."]

Also on CUDA with eval.py's `compile=true` (fused projections, CUDA graphs, unused prompt padding dropped): the same
actions as the CPU's, and its latency."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vla.eval.policy import Policy


def observations(n: int, prompt: str, state_dim: int, size: int = 256):
    rng = np.random.default_rng(0)
    return [{
        "images": {"base_0_rgb": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                   "left_wrist_0_rgb": np.zeros((size, size, 3), np.uint8)},
        "image_masks": {"base_0_rgb": True, "left_wrist_0_rgb": False},
        "state": rng.normal(size=state_dim).astype(np.float32),
        "prompt": prompt,
    } for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--state-dim", type=int, default=8, help="the task's state size (PickCube 11, PushCube 8)")
    ap.add_argument("--prompt", default="Grasp a red cube and move it to a target goal position.")
    args = ap.parse_args()
    cpu = Policy.load(args.checkpoint, None, None, action_dim=7, device="cpu")
    obs = observations(args.batch, prompt=args.prompt, state_dim=args.state_dim)
    noise = torch.randn(args.batch, cpu.cfg.action_horizon, cpu.cfg.action_dim, generator=torch.Generator().manual_seed(0))
    a_cpu = cpu.act(obs, noise)
    for compiled in (False, True):
        gpu = Policy.load(args.checkpoint, None, None, action_dim=7, device="cuda", compile=compiled)
        a_gpu = gpu.act(obs, noise)
        for _ in range(3):
            gpu.act(obs, noise)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(10):
            gpu.act(obs, noise)
        ms = (time.perf_counter() - t) / 10 * 1e3
        err = np.abs(a_cpu - a_gpu).max()
        print(f"{cpu.cfg.name}{' compile=true' if compiled else ''}: CPU vs CUDA max |diff| {err:.2e} over actions of "
              f"scale {np.abs(a_cpu).max():.3f}; CUDA act() batch {args.batch}: {ms:.1f} ms "
              "(transform + sample_actions + unnormalize)", flush=True)


if __name__ == "__main__":
    main()
