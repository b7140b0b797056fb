"""Scalars of a run: TensorBoard event file + metrics.jsonl (one JSON object per record) in the run directory.
Only rank 0 writes; other ranks get a logger that does nothing."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLogger:
    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir))
        self.jsonl = open(Path(run_dir) / "metrics.jsonl", "a")

    def log(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        self.writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
            self.jsonl.close()
