"""Acting cost of a one-step actor (vla/rl/onestep.py: one prefix pass + one MLP) against the policy's own denoising
(one prefix pass + num_denoise_steps Euler steps), on the same observations, device and precision. The actor has
FQL's size (4 x 512) with random weights: its cost does not depend on what it learned.

  python -m bench.onestep_act --checkpoint policies/pushcube_pi05 --state-dim 8 [--batch 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench.policy_device import observations
from vla.eval.policy import Policy
from vla.rl.onestep import OneStepActor, OneStepPolicy, OneStepSpec
from vla.rl.sampling import prefix_feature_dim


def time_act(policy: Policy, obs: list[dict], noise: torch.Tensor, repeats: int, device: str) -> list[float]:
    policy.act(obs, noise)  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        policy.act(obs, noise)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--state-dim", type=int, default=8, help="the task's state size (PickCube 11, PushCube 8)")
    ap.add_argument("--prompt", default="Push and move a cube to a goal region in front of it.")
    ap.add_argument("--chunk-len", type=int, default=8, help="actions per decision the actor predicts")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    policy = Policy.load(args.checkpoint, None, None, action_dim=7, device=args.device, precision=args.precision)
    cfg = policy.cfg
    spec = OneStepSpec(task="bench", env_id="bench", model=cfg.name,
                       feature_dim=prefix_feature_dim(cfg), state_dim=cfg.action_dim,
                       horizon=cfg.action_horizon, noise_dim=cfg.action_dim, chunk_len=args.chunk_len, action_dim=7)
    onestep = OneStepPolicy(policy, OneStepActor(spec).to(args.device).eval())
    obs = observations(args.batch, args.prompt, args.state_dim)
    noise = torch.randn(args.batch, cfg.action_horizon, cfg.action_dim)
    result = {"checkpoint": args.checkpoint, "model": cfg.name, "batch": args.batch, "device": args.device,
              "precision": args.precision, "num_denoise_steps": policy.num_denoise_steps or cfg.num_denoise_steps}
    for name, acting in (("flow", policy), ("onestep", onestep)):
        times = time_act(acting, obs, noise, args.repeats, args.device)
        result[f"{name}_ms_median"] = statistics.median(times)
        result[f"{name}_ms_min"] = min(times)
    result["speedup"] = result["flow_ms_median"] / result["onestep_ms_median"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
