"""Two train.py runs at the same global batch (e.g. N GPUs vs 1 GPU): per-step loss agreement, throughput per GPU,
scaling efficiency and peak memory, from their metrics.jsonl (the first `--skip` records are warm-up / compilation).

  python bench/compare_runs.py runs/fsdp2 runs/fsdp1 --gpus 2 1 [--skip 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vla.runs import read_metrics


def summary(run: Path, gpus: int, skip: int) -> dict:
    records = read_metrics(run)
    steady = records[skip:]
    if not steady:
        raise SystemExit(f"{run}: {len(records)} metrics records, none after --skip {skip}")
    samples_per_s = float(np.median([r["perf/samples_per_s"] for r in steady]))
    return {
        "run": str(run),
        "gpus": gpus,
        "records": len(records),
        "steps": records[-1]["step"],
        "samples_per_s": samples_per_s,
        "samples_per_s_per_gpu": samples_per_s / gpus,
        "step_time_s": float(np.median([r["perf/step_time_s"] for r in steady])),
        "peak_memory_gb": max(r["perf/peak_memory_gb"] for r in steady),
        "loss": {r["step"]: r["train/loss"] for r in records},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs=2, type=Path)
    ap.add_argument("--gpus", nargs=2, type=int, required=True)
    ap.add_argument("--skip", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    a, b = (summary(r, g, args.skip) for r, g in zip(args.runs, args.gpus))
    common = sorted(set(a["loss"]) & set(b["loss"]))
    rel = [abs(a["loss"][s] - b["loss"][s]) / abs(b["loss"][s]) for s in common]
    result = {
        "a": {k: v for k, v in a.items() if k != "loss"},
        "b": {k: v for k, v in b.items() if k != "loss"},
        "common_logged_steps": len(common),
        "loss_max_rel_diff": max(rel) if rel else None,
        "loss_mean_rel_diff": float(np.mean(rel)) if rel else None,
        "loss_first_last": {s: (a["loss"][s], b["loss"][s]) for s in (common[:1] + common[-1:])},
        # ideal: per-GPU throughput of the N-GPU run equals that of the 1-GPU run
        "scaling_efficiency": a["samples_per_s_per_gpu"] / b["samples_per_s_per_gpu"],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
