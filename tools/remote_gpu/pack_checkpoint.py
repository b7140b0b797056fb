"""Move a trained checkpoint through a size-limited channel (a remote GPU host that returns files of at most 16 MiB):

  python tools/remote_gpu/pack_checkpoint.py pack   runs/<run>/checkpoints/<step> <out_dir> [--dtype bf16] \
      [--shard-mib 15]
  python tools/remote_gpu/pack_checkpoint.py unpack <out_dir> <checkpoint_dir>

`pack` writes the EMA weights (model weights if there is no EMA) as safetensors shards in `dtype`, plus the config,
norm stats and tokenizer that eval.py needs. `unpack` joins the shards back into an fp32 `ema.safetensors` checkpoint
directory that `eval.py checkpoint=...` loads. The optimizer state (DCP `state/`) does not travel: packed
checkpoints evaluate, they do not resume.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vla.models.config import DTYPES

SIDECARS = ("config.yaml", "norm_stats.json", "tokenizer.model")


def pack(checkpoint: Path, out: Path, dtype: str, shard_mib: float) -> list[Path]:
    weights = checkpoint / "ema.safetensors"
    if not weights.is_file():
        weights = checkpoint / "model.safetensors"
    if not weights.is_file():
        raise SystemExit(f"{checkpoint}: no ema.safetensors or model.safetensors (not a checkpoint directory)")
    state = load_file(weights)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(state):
        t = state[name].to(DTYPES[dtype]) if state[name].is_floating_point() else state[name]
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > shard_mib * 2**20:
            shards.append({})
            size = 0
        shards[-1][name] = t.contiguous()
        size += nbytes
    paths = []
    for i, shard in enumerate(shards):
        path = out / f"{weights.stem}-{i + 1:02d}-of-{len(shards):02d}.safetensors"
        save_file(shard, path)
        paths.append(path)
    for name in SIDECARS:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, out / name)
    return paths


def unpack(packed: Path, checkpoint: Path) -> Path:
    shards = sorted(packed.glob("*-of-*.safetensors"))
    if not shards:
        raise SystemExit(f"{packed}: no *-of-*.safetensors shards")
    stem = shards[0].name.split("-")[0]
    expected = int(shards[0].stem.rsplit("-of-", 1)[1])
    if len(shards) != expected:
        raise SystemExit(f"{packed}: {len(shards)} shards found, expected {expected}")
    state = {}
    for shard in shards:
        state.update({k: (v.float() if v.is_floating_point() else v) for k, v in load_file(shard).items()})
    tmp = checkpoint.with_name(checkpoint.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(state, tmp / f"{stem}.safetensors")
    for name in SIDECARS:
        if (packed / name).is_file():
            shutil.copy2(packed / name, tmp / name)
    shutil.rmtree(checkpoint, ignore_errors=True)
    tmp.replace(checkpoint)
    return checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--shard-mib", type=float, default=15.0)
    u = sub.add_parser("unpack")
    u.add_argument("packed", type=Path)
    u.add_argument("checkpoint", type=Path)
    args = ap.parse_args()
    if args.cmd == "pack":
        for path in pack(args.checkpoint, args.out, args.dtype, args.shard_mib):
            print(path, f"{path.stat().st_size / 2**20:.1f} MiB")
    else:
        print(unpack(args.packed, args.checkpoint))


if __name__ == "__main__":
    main()
