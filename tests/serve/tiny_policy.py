"""A tiny policy directory for tests that need a checkpoint but no training: `pi05_tiny` with every parameter drawn
at random (so that its actions depend on the images, state and noise), a recorded recipe (task, model, evaluation
protocol) as train.py writes it, norm stats, and the tiny tokenizer."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from vla.configs import compose
from vla.data.norm_stats import save_norm_stats
from vla.data.tokenizer import resolve_tokenizer
from vla.models import build_policy
from vla.models.weights import save_openpi


def write_tiny_policy(out: Path, task: str = "pushcube", overrides: tuple[str, ...] = (), seed: int = 0,
                      model: str = "pi05_tiny") -> Path:
    """`model`: another conf/model config at its own size (bench/serve_load.py --random pi05: full-size Pi0.5)."""
    cfg = compose("eval", [f"task={task}", f"model={model}", *overrides])
    out.mkdir(parents=True)
    recipe = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("task", "model", "eval")}
    OmegaConf.save(OmegaConf.create({"experiment": None, **recipe}), out / "config.yaml")
    torch.manual_seed(seed)
    policy = build_policy(recipe["model"])
    with torch.no_grad():
        for p in policy.parameters():
            p.normal_(0.0, 0.1)
    save_openpi(policy.state_dict(), out / "model.safetensors")
    state_dim, action_dim = cfg.task.state_dim, cfg.task.action_dim

    def stats(dim: int, low: float, high: float) -> dict:
        return {"mean": np.full(dim, (low + high) / 2), "std": np.full(dim, (high - low) / 2),
                "q01": np.full(dim, low), "q99": np.full(dim, high)}

    # not centred on 0: normalizing and unnormalizing actions are not the identity
    save_norm_stats(out / "norm_stats.json", {"state": stats(state_dim, -2.0, 2.0),
                                              "actions": stats(action_dim, -0.5, 1.5)})
    shutil.copyfile(resolve_tokenizer(None, cache_dir=out.parent / "tokenizer_cache"), out / "tokenizer.model")
    return out
