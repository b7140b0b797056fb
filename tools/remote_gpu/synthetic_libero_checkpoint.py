"""Write a pi05_libero-protocol checkpoint with random weights in openpi's layout, small enough to copy to the remote
GPU host, to time a LIBERO suite's evaluation there (eval.sh LIBERO=1) without trained weights or the PaliGemma
tokenizer: Pi0.5 with 10-action chunks and no state in the prompt (openpi's pi05_libero) at a model config's size,
in openpi's PyTorch layout (model.safetensors + config.json: the host has no JAX to read openpi's params/) with
assets/physical-intelligence/libero/norm_stats.json holding random LIBERO statistics (8-D state, 7-D actions), as
tests/eval/test_libero.py builds it (there in the JAX layout).
    python3 -m tools.remote_gpu.synthetic_libero_checkpoint runs/pi05_libero_tiny [--model pi05_tiny]
Evaluate it with `model=<that model> model.discrete_state_input=false` (its tokenizer is the model config's).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch

ASSET_ID = "physical-intelligence/libero"  # openpi's pi05_libero: assets/<repo_id>/norm_stats.json


def _stats(dims: int, rng: np.random.Generator) -> dict:
    q01 = rng.uniform(-1, 0, dims)
    return {"mean": rng.normal(size=dims).tolist(), "std": rng.uniform(0.1, 1, dims).tolist(), "q01": q01.tolist(),
            "q99": (q01 + rng.uniform(0.2, 2, dims)).tolist()}


def write(out: Path, model: str, seed: int = 0) -> Path:
    from vla.models import build_policy, load_policy_config
    from vla.models.weights import export_checkpoint, save_openpi

    if out.exists():
        raise SystemExit(f"{out} exists: remove it or name another folder")
    cfg = load_policy_config(model, discrete_state_input=False)
    torch.manual_seed(seed)
    policy = build_policy(cfg)
    with torch.no_grad():
        for p in policy.parameters():
            p.normal_(0.0, 0.1)  # random, but not the zero-init heads: actions vary with the observation
    source = out.with_name(f".{out.name}.source")
    source.mkdir(parents=True)
    try:
        save_openpi(policy.state_dict(), source / "model.safetensors")
        checkpoint = export_checkpoint(source, "openpi", out, cfg)
    finally:
        shutil.rmtree(source)
    stats = checkpoint / "assets" / ASSET_ID / "norm_stats.json"
    stats.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stats.write_text(json.dumps({"norm_stats": {"state": _stats(8, rng), "actions": _stats(7, rng)}}))
    return checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the checkpoint folder to write (must not exist)")
    parser.add_argument("--model", default="pi05_tiny", help="the model config whose size is used (conf/model)")
    args = parser.parse_args()
    checkpoint = write(args.out, args.model)
    size = sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()) / 2**20
    print(f"wrote {checkpoint} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()
