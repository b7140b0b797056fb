"""DataLoader throughput of the training pipeline (LeRobot frames + action chunks + ModelTransform + collate):
python bench/data_loader.py --dataset data/maniskill_pickcube [--model pi05] [--batch 32] [--workers 0 2 8]

Prints samples/s per worker count, measured after one warm-up epoch pass (workers started and warm)."""

from __future__ import annotations

import argparse
import time

from vla.data.dataset import ChunkedDataset, EpochSampler, make_dataloader
from vla.data.transforms import ModelTransform, collate
from vla.models import load_policy_config


def measure(dataset, batch: int, workers: int, num_batches: int) -> float:
    sampler = EpochSampler(len(dataset), seed=0)
    loader = make_dataloader(dataset, batch, sampler, workers, collate)
    it = iter(loader)
    next(it)  # start-up (spawned workers import torch, lerobot, ...) is not throughput
    start, n = time.perf_counter(), 0
    for epoch in range(1, 1000):
        for _ in it:
            n += 1
            if n == num_batches:
                return n * batch / (time.perf_counter() - start)
        sampler.set_epoch(epoch)
        it = iter(loader)
    return n * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--repo-id", default="vla/bench")
    ap.add_argument("--model", default="pi05_tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    cfg = load_policy_config(args.model)
    transform = ModelTransform.load(cfg, f"{args.dataset}/norm_stats.json")
    dataset = ChunkedDataset(args.dataset, args.repo_id, cfg.action_horizon, transform)
    print(f"{args.dataset}: {len(dataset)} frames, model {cfg.name} (H={cfg.action_horizon}), batch {args.batch}")
    for w in args.workers:
        print(f"workers={w}: {measure(dataset, args.batch, w, args.batches):.1f} samples/s", flush=True)


if __name__ == "__main__":
    main()
