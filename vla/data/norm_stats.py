"""Per-task normalization statistics in openpi's json layout (src/openpi/shared/normalize.py):

    {"norm_stats": {"state":   {"mean": [...], "std": [...], "q01": [...], "q99": [...]},
                    "actions": {"mean": [...], "std": [...], "q01": [...], "q99": [...]}}}

`state` runs over every frame; `actions` over every step of every H-step chunk, where chunks running past the
episode end repeat the last action (LeRobot clamps out-of-episode indices, openpi does not mask them). std is the
population std (openpi: sqrt(E[x^2] - E[x]^2)); q01/q99 are exact numpy quantiles (openpi approximates them with
histograms; lerobot 0.4.4's meta/stats.json quantiles are averages of per-episode quantiles and are not used).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

KEYS = ("state", "actions")
STATS = ("mean", "std", "q01", "q99")

NormStats = dict[str, dict[str, np.ndarray]]  # {"state": {"mean": [D], ...}, "actions": {...}}


def action_chunks(actions: np.ndarray, horizon: int) -> np.ndarray:
    """[T, D] -> [T, H, D]: chunk t = actions[t : t+H], indices past the end clamped to the last step."""
    T = len(actions)
    idx = np.minimum(np.arange(T)[:, None] + np.arange(horizon)[None, :], T - 1)
    return actions[idx]


def _stats(x: np.ndarray) -> dict[str, np.ndarray]:
    x = x.astype(np.float64)  # float64 sums: the mean of ~1e6 float32 values drifts otherwise
    return {
        "mean": x.mean(0),
        "std": x.std(0),
        "q01": np.quantile(x, 0.01, axis=0),
        "q99": np.quantile(x, 0.99, axis=0),
    }


def compute_norm_stats(states: list[np.ndarray], actions: list[np.ndarray], action_horizon: int) -> NormStats:
    """`states`/`actions`: one [T, D] array per episode (raw, unpadded robot dims)."""
    if not states or len(states) != len(actions):
        raise ValueError(f"need one state and one action array per episode, got {len(states)} and {len(actions)}")
    chunks = [action_chunks(a, action_horizon).reshape(-1, a.shape[-1]) for a in actions]
    return {"state": _stats(np.concatenate(states)), "actions": _stats(np.concatenate(chunks))}


def compute_norm_stats_from_dataset(root: str | Path, action_horizon: int) -> NormStats:
    """Same statistics from a written LeRobot dataset (e.g. to recompute them for another action horizon)."""
    import pyarrow.parquet as pq

    table = pq.read_table(Path(root) / "data", columns=["episode_index", "index", "state", "actions"]).sort_by("index")
    ep = table["episode_index"].to_numpy()
    state = np.stack(table["state"].to_numpy(zero_copy_only=False))
    act = np.stack(table["actions"].to_numpy(zero_copy_only=False))
    bounds = np.flatnonzero(np.diff(ep)) + 1
    return compute_norm_stats(np.split(state, bounds), np.split(act, bounds), action_horizon)


def validate_norm_stats(stats: NormStats, where: str = "norm stats") -> NormStats:
    for key in KEYS:
        if key not in stats:
            raise ValueError(f"{where}: missing '{key}' (expected keys {KEYS})")
        dims = set()
        for s in STATS:
            if s not in stats[key]:
                raise ValueError(f"{where}: {key}: missing '{s}' (expected {STATS})")
            v = np.asarray(stats[key][s], dtype=np.float64)
            if v.ndim != 1 or not np.all(np.isfinite(v)):
                raise ValueError(f"{where}: {key}.{s}: expected a finite 1-D list, found shape {v.shape}")
            dims.add(v.shape[0])
        if len(dims) != 1:
            raise ValueError(f"{where}: {key}: mean/std/q01/q99 lengths differ: {sorted(dims)}")
        if np.any(np.asarray(stats[key]["std"]) < 0):
            raise ValueError(f"{where}: {key}.std: negative values")
    return stats


def save_norm_stats(path: str | Path, stats: NormStats) -> Path:
    path = Path(path)
    validate_norm_stats(stats, str(path))
    doc = {"norm_stats": {k: {s: np.asarray(stats[k][s], dtype=np.float64).tolist() for s in STATS} for k in KEYS}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)
    return path


def load_norm_stats(path: str | Path) -> NormStats:
    """-> {"state": {"mean": float32 [D], ...}, "actions": {...}} (float32, validated)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"norm stats not found: {path} (written by convert.py next to the dataset)")
    try:
        doc = json.loads(path.read_text())["norm_stats"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not an openpi norm_stats.json ({type(e).__name__}: {e})") from None
    validate_norm_stats(doc, str(path))
    return {k: {s: np.asarray(doc[k][s], dtype=np.float32) for s in STATS} for k in KEYS}
