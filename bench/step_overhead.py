"""Host-side overhead of one train.py step, phase by phase, for a model's layer structure at tiny widths.

With every width shrunk to 32 the arithmetic is negligible, so what is left is what the host spends per step
(Python, autograd, FSDP2 hooks, DTensor dispatch): the floor a launch-bound GPU step cannot go below. It runs on
the CPU, with train.py's own model building (FSDP2 on one rank), optimizer, clipping and EMA.

  python bench/step_overhead.py [--model pi05_small] [--steps 20] [--dtensor-optimizer]

The optimizer and clipping are train.py's (vla/train/optim.py: on the shards' local tensors). --dtensor-optimizer uses
torch's AdamW and clip_grad_norm_ on the DTensor parameters instead (what vla/train/optim.py's versions replace).
"""

from __future__ import annotations

import argparse
import time

import torch
from vla.configs import compose, to_object
from vla.data.dataset import SyntheticDataset
from vla.data.transforms import collate
from vla.train.distributed import init_distributed, init_mesh
from vla.train.ema import EMA
from vla.train.loop import build_model
from vla.train.optim import ShardedAdamW, clip_grad_norm_

TINY = {"vlm": dict(width=32, mlp_dim=32, num_heads=2, head_dim=16),
        "expert": dict(width=32, mlp_dim=32, num_heads=2, head_dim=16),
        "vision": dict(width=32, mlp_dim=32, num_heads=2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pi05_small")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--dtensor-optimizer", action="store_true")
    args = ap.parse_args()
    tiny = [f"model.{group}.{k}={v}" for group, kv in TINY.items() for k, v in kv.items()]
    cfg = to_object(compose("train", [f"model={args.model}", "task=pushcube", "hardware=cpu", "run_name=bench", *tiny]))
    torch.set_num_threads(1)
    device = init_distributed(cfg.hardware)[2]
    policy, _ = build_model(cfg, init_mesh(device, 1), device, 0)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW if args.dtensor_optimizer else ShardedAdamW)(params, lr=1e-4, foreach=True)
    ema = EMA(policy, 0.999)
    data = SyntheticDataset(cfg.model, args.batch, ["base_0_rgb"], 30, seed=0)
    batch = collate([data[i] for i in range(args.batch)])
    H, A = cfg.model.action_horizon, cfg.model.action_dim
    phases = dict.fromkeys(["forward", "backward", "clip", "optimizer", "ema"], 0.0)
    warmup = 5
    for it in range(warmup + args.steps):
        t = [time.perf_counter()]
        loss = policy(batch, noise=torch.randn(args.batch, H, A), time=torch.full((args.batch,), 0.5)).mean()
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        if args.dtensor_optimizer:
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True).full_tensor()
        else:
            clip_grad_norm_(params, 1.0)
        t.append(time.perf_counter())
        opt.step()
        opt.zero_grad(set_to_none=True)
        t.append(time.perf_counter())
        ema.update()
        t.append(time.perf_counter())
        if it >= warmup:
            for key, a, b in zip(phases, t, t[1:]):
                phases[key] += (b - a) * 1000 / args.steps
    images = torch.cat(list(batch["images"].values()))
    vision = 0.0
    for it in range(warmup + args.steps):
        t0 = time.perf_counter()
        policy.image_encoder(images).float().mean().backward()
        if it >= warmup:
            vision += (time.perf_counter() - t0) * 1000 / args.steps
    print(f"{args.model} structure at width 32, batch {args.batch}, "
          f"{'DTensor' if args.dtensor_optimizer else 'local-shard'} AdamW and clipping: "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in phases.items()) + f"; total {sum(phases.values()):.1f} ms")
    print(f"of which the vision tower (forward + backward, eager transformers SigLIP): {vision:.1f} ms")


if __name__ == "__main__":
    main()
