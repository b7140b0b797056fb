"""Start the ranks of one training run: in this process (one rank, or already under torchrun), or as
`hardware.num_processes` local processes through torch's elastic launcher, so `python train.py hardware=8xh100` is
the whole command on one node. Several nodes are started by torchrun on each (`rank_argv` prepares train.py's
command line for that)."""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Mapping
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


# command-line overrides that fix the run directory on every rank: the default name holds the start time
FIXED_RUN_DIR = re.compile(r"\+{0,2}(run_name|experiment|hydra\.run\.dir)=")


def rank_argv(argv: list[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    """train.py's command line (`sys.argv[1:]`) as this rank runs it. Under torchrun every rank is a Hydra app that
    names the run directory itself, so with several ranks the directory must not derive from the start time
    (`${now:}` in the default run_name), which differs between nodes started seconds apart: a ValueError unless
    run_name, +experiment or hydra.run.dir is given (the same on every rank, as torchrun passes it). Ranks other
    than 0 leave the directory to rank 0: no .hydra/ copy of the config, and their log lines go to the console only
    (train.log is rank 0's, as are TensorBoard, metrics.jsonl and the consolidated weights)."""
    if int(environ.get("WORLD_SIZE", 1)) <= 1:
        return argv
    if any(a in ("-m", "--multirun") for a in argv):
        raise ValueError("-m (a sweep) under torchrun with several ranks: start one torchrun per setting instead")
    if not any(FIXED_RUN_DIR.match(a) for a in argv):
        raise ValueError(f"under torchrun with {environ['WORLD_SIZE']} ranks the default run_name holds each "
                         "rank's start time, which can differ between ranks: pass run_name=<name>")
    if int(environ.get("RANK", 0)) > 0:
        return [*argv, "hydra.output_subdir=null", "hydra/job_logging=stdout"]
    return argv


def launch(cfg: TrainConfig, run_dir: str | Path) -> dict:
    os.environ.update(cfg.hardware.nccl_env)
    n = cfg.hardware.num_processes
    if cfg.hardware.num_nodes > 1 and "RANK" not in os.environ:
        raise ValueError(f"hardware.num_nodes={cfg.hardware.num_nodes}: start train.py with torchrun on every node "
                         "(tools/slurm/train.sbatch under SLURM; docs/guide.md, 'Several nodes')")
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
