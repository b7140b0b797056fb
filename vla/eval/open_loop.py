"""Open-loop check of a trained policy on dataset frames, without a simulator: for random frames, the policy's next
`steps` actions against the demo's, as mean absolute error per action dimension beside the actions' own mean size.

Run it on the training set and on held-out demos (new seeds, converted with the same command) to tell the two ways a
policy fails in closed loop apart: memorization (small error on training frames, large on new ones) and underfitting
(large on both). `--swap-images` gives every frame the cameras of another random frame; how much the error rises says
how much the policy reads its images at all. `--shift-state DIM=DELTA` asks whether it reads one state dimension:
the same frames and flow noise with that raw state value moved by DELTA, and the mean change of the predicted actions
(summed over `steps`). For example, a PickCube policy trained with the goal exact ignored the goal (a 5 cm shift along
x moved its predicted x by 0.009 over 8 steps), while one trained with noise on the goal followed it (0.083)
(docs/history/results_log.md, `pickwc_j` against `pickwc_sn1`).

    python -m vla.eval.open_loop --checkpoint runs/<run>/checkpoints/<step> --dataset data/<dataset> [--swap-images]
        [--shift-state 8=0.05 --shift-state 9=0.05]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import OmegaConf

from vla.data.dataset import ChunkedDataset
from vla.eval.policy import Policy
from vla.runs import resolve_checkpoint

ActFn = Callable[[list[dict], torch.Tensor], np.ndarray]  # Policy.act: observations, noise -> raw chunks (B, H, A)


def _pick_frames(dataset: ChunkedDataset, frames: int, rng: np.random.Generator) -> np.ndarray:
    """The checked rows: `frames` distinct random ones (the same for every check with the same seed)."""
    return rng.choice(len(dataset), size=min(frames, len(dataset)), replace=False)


def _observation(sample: dict) -> dict:
    """A dataset sample as the policy sees it: everything but the demo's action chunk."""
    return {k: v for k, v in sample.items() if not k.startswith("actions")}


def open_loop_errors(act: ActFn, dataset: ChunkedDataset, model_action_dim: int, frames: int = 48, steps: int = 8,
                     seed: int = 0, swap_images: bool = False, batch_size: int = 16) -> dict:
    """Per-dimension mean absolute error of `act`'s first `steps` actions against the demo's, over `frames` random
    frames (padding past an episode's end left out), with the demo actions' mean absolute value for scale. The same
    `seed` draws the same frames, donors and flow noise, so two checkpoints are compared on identical inputs."""
    rng = np.random.default_rng(seed)
    idx = _pick_frames(dataset, frames, rng)
    # a donor frame for each frame's images (another row: with thousands of rows, nearly always another episode)
    donors = (idx + rng.integers(1, len(dataset), size=len(idx))) % len(dataset)
    gen = torch.Generator().manual_seed(seed)
    err_sum = abs_sum = count = 0.0
    for start in range(0, len(idx), batch_size):
        samples = [dataset[int(i)] for i in idx[start:start + batch_size]]
        obs = [_observation(s) for s in samples]
        if swap_images:
            for o, d in zip(obs, donors[start:start + batch_size], strict=True):
                donor = dataset[int(d)]
                o["images"], o["image_masks"] = donor["images"], donor["image_masks"]
        horizon = samples[0]["actions"].shape[0]
        noise = torch.randn(len(obs), horizon, model_action_dim, generator=gen)
        pred = np.asarray(act(obs, noise))[:, :steps]
        target = np.stack([s["actions"][:steps] for s in samples])
        valid = ~np.stack([np.asarray(s["actions_is_pad"][:steps], bool) for s in samples])[..., None]
        err_sum = err_sum + (np.abs(pred - target) * valid).sum(axis=(0, 1))
        abs_sum = abs_sum + (np.abs(target) * valid).sum(axis=(0, 1))
        count += valid.sum()
    mae, action_abs = err_sum / count, abs_sum / count
    return {"frames": len(idx), "steps": steps, "swap_images": swap_images, "mae": mae.tolist(),
            "action_abs": action_abs.tolist(), "mae_mean": float(mae.mean()),
            "relative": float(mae.mean() / max(action_abs.mean(), 1e-12))}


def state_sensitivity(act: ActFn, dataset: ChunkedDataset, model_action_dim: int, dim: int, delta: float,
                      frames: int = 48, steps: int = 8, seed: int = 0, batch_size: int = 16) -> dict:
    """Mean change of the predicted actions, summed over the first `steps`, when raw state dimension `dim` of each
    frame is moved by `delta` (same frames and flow noise as `open_loop_errors` with the same seed). Zero: the policy
    ignores that dimension."""
    idx = _pick_frames(dataset, frames, np.random.default_rng(seed))
    gen = torch.Generator().manual_seed(seed)
    change_sum, n = 0.0, 0
    for start in range(0, len(idx), batch_size):
        obs = [_observation(dataset[int(i)]) for i in idx[start:start + batch_size]]
        shifted = []
        for o in obs:
            state = np.array(o["state"], dtype=np.float32)
            state[dim] += delta
            shifted.append({**o, "state": state})
        noise = torch.randn(len(obs), dataset.action_horizon, model_action_dim, generator=gen)
        base = np.asarray(act(obs, noise))[:, :steps].sum(axis=1)
        moved = np.asarray(act(shifted, noise))[:, :steps].sum(axis=1)
        change_sum = change_sum + (moved - base).sum(axis=0)
        n += len(obs)
    return {"dim": dim, "delta": delta, "frames": n, "steps": steps, "change": (change_sum / n).tolist()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a training checkpoint dir (or run dir: its newest)")
    ap.add_argument("--dataset", required=True, help="a LeRobot dataset converted by convert.py")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--steps", type=int, default=8, help="actions compared per frame (eval executes replan_steps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--swap-images", action="store_true", help="give each frame another frame's camera images")
    ap.add_argument("--shift-state", action="append", default=[], metavar="DIM=DELTA",
                    help="also report how the predicted actions move when raw state DIM moves by DELTA (repeatable)")
    ap.add_argument("--num-denoise-steps", type=int, default=None, help="default: the model's")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="also write the result as JSON here")
    args = ap.parse_args(argv)
    try:
        shifts = [(int(d), float(v)) for d, v in (s.split("=") for s in args.shift_state)]
    except ValueError:
        ap.error(f"--shift-state takes DIM=DELTA (e.g. 8=0.05), got {args.shift_state}")
    try:
        ckpt = resolve_checkpoint(args.checkpoint)
        if not (ckpt / "config.yaml").is_file():
            raise FileNotFoundError(f"{ckpt}: no config.yaml: not a training checkpoint of this project")
        cfg = OmegaConf.load(ckpt / "config.yaml")
        # rows are decoded one at a time (no start-up decode of the whole dataset: a check reads ~100 rows)
        dataset = ChunkedDataset(args.dataset, cfg.task.repo_id, cfg.model.action_horizon)
        policy = Policy.load(ckpt, None, None, action_dim=dataset.actions.shape[1], device=args.device,
                             num_denoise_steps=args.num_denoise_steps)
    except FileNotFoundError as e:
        print(f"open_loop: error: {e}", file=sys.stderr)
        sys.exit(1)
    state_dim = len(dataset[0]["state"])
    for dim, _ in shifts:
        if not 0 <= dim < state_dim:
            print(f"open_loop: error: --shift-state {dim}: {args.dataset} has state dimensions 0..{state_dim - 1}",
                  file=sys.stderr)
            sys.exit(1)
    result = open_loop_errors(policy.act, dataset, policy.cfg.action_dim, args.frames, args.steps, args.seed,
                              args.swap_images)
    result.update(checkpoint=str(ckpt), dataset=str(args.dataset))
    print(f"{ckpt} on {args.dataset}: {result['frames']} frames x {args.steps} actions"
          f"{', images swapped' if args.swap_images else ''}")
    print("dim   " + " ".join(f"{d:>7d}" for d in range(len(result["mae"]))) + "     mean")
    for name in ("mae", "action_abs"):
        row = result[name]
        print(f"{name:<10}" + " ".join(f"{v:7.4f}" for v in row) + f"  {np.mean(row):7.4f}")
    print(f"relative error (mae / |action|): {result['relative']:.3f}")
    result["state_shifts"] = []
    for dim, delta in shifts:
        shift = state_sensitivity(policy.act, dataset, policy.cfg.action_dim, dim, delta, args.frames, args.steps,
                                  args.seed)
        result["state_shifts"].append(shift)
        print(f"state[{dim}] {delta:+g}: action change " + " ".join(f"{v:7.4f}" for v in shift["change"])
              + f"  (summed over {args.steps} steps)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
