"""Training checkpoints, written atomically (temp dir + rename) by all ranks together:

  <run>/checkpoints/<step>/
    state/              torch.distributed.checkpoint of model, optimizer and EMA (sharded; resharded on load to any
                        world size or mesh: a several-node HSDP run resumes on one node or one GPU)
                        + train_state.pt: step, data position (in global samples), RNG (the same on every rank)
    model.safetensors   consolidated weights in openpi's PyTorch layout (LoRA merged): any loader takes it
    ema.safetensors     the same for the EMA weights (when EMA is on; preferred by `model.pretrained` and eval)
    norm_stats.json  tokenizer.model  config.yaml

Every checkpoint holds `state/`, written by all ranks in parallel: it is all that `resume=true` reads. The
consolidated weights are gathered to rank 0 and written by it alone (2 x 13 GB for full Pi0.5), so only the checkpoints
the loop asks for have them (`export_interval` and the run's last step). Readers of weights skip the others: eval
resolves a run dir to its newest checkpoint that has weights (vla/runs.py), and `model.pretrained` is refused
at start-up when it names a checkpoint without them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful

from vla.models.lora import merge_lora
from vla.models.weights import save_openpi
from vla.train.distributed import barrier, full_tensor, get_rank
from vla.train.ema import EMA


class TrainingState(Stateful):
    """What DCP saves and restores in place: model, optimizer and EMA, each sharded as it lives in memory."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None):
        self.model, self.optimizer, self.ema = model, optimizer, ema

    def state_dict(self) -> dict:
        state = {"model": get_model_state_dict(self.model), "optim": get_optimizer_state_dict(self.model, self.optimizer)}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        set_model_state_dict(self.model, state["model"])
        set_optimizer_state_dict(self.model, self.optimizer, state["optim"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded fp32 weights on CPU, on rank 0 (other ranks get {}); a collective: every rank must call it."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_ema_state_dict(ema: EMA, weights: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """`weights` (rank 0's full state dict) with the trainable entries replaced by their EMA; a collective."""
    out = dict(weights)
    for name, t in ema.state_dict().items():
        full = full_tensor(t)
        if rank == 0:
            out[name] = full.detach().cpu()
    return out


WEIGHT_FILES = ("model.safetensors", "ema.safetensors")


def has_weights(ckpt_dir: str | Path) -> bool:
    """Whether a checkpoint holds consolidated weights (not only the resume state)."""
    return any((Path(ckpt_dir) / name).is_file() for name in WEIGHT_FILES)


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """Steps of the run's complete checkpoints (those `resume` can read), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / "state" / ".metadata").is_file())


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    train_state: dict,
    extra_files: dict[str, Path],
    config_yaml: str,
    lora_scales: dict[str, float],
    keep_last: int,
    keep_period: int | None,
    *,
    export_weights: bool,
) -> Path:
    """Write checkpoint `step` (a collective); with `export_weights`, also the consolidated weights."""
    rank = get_rank()
    root = run_dir / "checkpoints"
    final, tmp = root / str(step), root / f".tmp-{step}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # left over by a run killed while saving
        (tmp / "state").mkdir(parents=True)
    barrier()

    dcp.save({"train": TrainingState(model, optimizer, ema)}, checkpoint_id=str(tmp / "state"))
    if rank == 0:
        torch.save(train_state, tmp / "state" / "train_state.pt")
    if export_weights:
        export_consolidated(tmp, model, ema, lora_scales, rank)
    if rank == 0:
        for name, src in extra_files.items():
            shutil.copyfile(src, tmp / name)
        (tmp / "config.yaml").write_text(config_yaml)
    barrier()
    if rank == 0:
        tmp.rename(final)
        prune_checkpoints(run_dir, keep_last, keep_period)
    barrier()
    return final


def export_consolidated(
    ckpt_dir: Path, model: torch.nn.Module, ema: EMA | None, lora_scales: dict[str, float], rank: int
) -> None:
    """model.safetensors (+ ema.safetensors) in openpi's layout, LoRA merged: gathered by all ranks, written by
    rank 0."""
    weights = full_state_dict(model)
    ema_weights = full_ema_state_dict(ema, weights, rank) if ema is not None else None
    if rank == 0:
        merged = lambda sd: merge_lora(sd, lora_scales) if lora_scales else sd  # noqa: E731
        save_openpi(merged(weights), ckpt_dir / "model.safetensors")
        if ema_weights is not None:
            save_openpi(merged(ema_weights), ckpt_dir / "ema.safetensors")


def prune_checkpoints(run_dir: Path, keep_last: int, keep_period: int | None) -> None:
    """Keep the newest `keep_last`, every multiple of `keep_period` and the newest one with consolidated weights (so
    that a run dir always has weights to evaluate once one was exported); drop temp dirs of interrupted saves."""
    for stale in (Path(run_dir) / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    steps = checkpoint_steps(run_dir)
    keep = set(steps[-keep_last:]) if keep_last > 0 else set()
    if keep_period:
        keep |= {s for s in steps if s % keep_period == 0}
    keep |= set([s for s in steps if has_weights(Path(run_dir) / "checkpoints" / str(s))][-1:])
    for s in steps:
        if s not in keep:
            shutil.rmtree(Path(run_dir) / "checkpoints" / str(s))


def load_checkpoint(
    ckpt_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None
) -> dict:
    """Restore model, optimizer and EMA in place from `ckpt_dir/state` (any world size); return the train state."""
    state_file = ckpt_dir / "state" / "train_state.pt"
    if not state_file.is_file():
        raise FileNotFoundError(f"{state_file}: missing (not a complete training checkpoint)")
    dcp.load({"train": TrainingState(model, optimizer, ema)}, checkpoint_id=str(ckpt_dir / "state"))
    return torch.load(state_file, weights_only=False)
