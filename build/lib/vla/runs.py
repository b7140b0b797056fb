"""What a training run directory holds, read the same way by training, evaluation, benchmarks and tools:

  <run>/metrics.jsonl              one JSON record per log interval (vla.train.metrics writes it)
  <run>/checkpoints/<step>/        model.safetensors / ema.safetensors (when exported), state/ (resume), config.yaml
"""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of <run_dir>/metrics.jsonl (a path to the file itself works too). A last line still being written
    by a live run (not yet valid JSON) is skipped."""
    path = Path(run_dir)
    path = path / "metrics.jsonl" if path.is_dir() else path
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def resolve_checkpoint(path: str | Path) -> Path:
    """A run dir -> its newest checkpoint with weights: a training checkpoint that holds model.safetensors (those
    between two exports hold only the resume state and are skipped) or a weights-only one (ema.safetensors + config,
    no optimizer state, e.g. a shipped policy); anything else as given."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    root = path / "checkpoints"
    if root.is_dir():
        steps = [int(p.name) for p in root.iterdir() if p.name.isdigit()
                 and ((p / "ema.safetensors").is_file() or (p / "model.safetensors").is_file())]
        if steps:
            return root / str(max(steps))
    return path
