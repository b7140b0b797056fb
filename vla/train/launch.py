"""Start the ranks of one training run: in this process (one rank, or already under torchrun), or as
`hardware.num_processes` local processes through torch's elastic launcher, so `python train.py hardware=8xh100` is
the whole command."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import torch

from vla.configs import TrainConfig
from vla.train.memory import check_training_memory

log = logging.getLogger(__name__)


def _worker(cfg: TrainConfig, run_dir: str) -> dict:
    """Entry point of a launched rank (module-level so that it pickles; the typed config travels as it is)."""
    from vla.train.loop import train

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    return train(cfg, run_dir)


def launch(cfg: TrainConfig, run_dir: str | Path) -> dict:
    os.environ.update(cfg.hardware.nccl_env)
    n = cfg.hardware.num_processes
    if "RANK" not in os.environ and cfg.hardware.device == "cpu":  # CPU ranks of one process group share the RAM
        check_training_memory(cfg, torch.device("cpu"), ranks_sharing_device=n, world_size=n)
    if n <= 1 or "RANK" in os.environ:  # one rank, or started by torchrun: this process is a rank
        from vla.train.loop import train

        return train(cfg, run_dir)
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    log.info("starting %d local ranks (hardware=%s)", n, cfg.hardware.name)
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=uuid.uuid4().hex, rdzv_backend="c10d",
        rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5, start_method="spawn",
    )
    results = elastic_launch(config, _worker)(cfg, str(run_dir))
    return results[0]
