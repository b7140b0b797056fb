"""Several nodes on this machine: torchrun processes, one per "node", joined by one c10d rendezvous on localhost,
train pi05_tiny on synthetic batches with HSDP (gloo, CPU). They reproduce one node and one rank; rank 0 alone
writes the run directory; a 2-node checkpoint resumes on one node and on one rank (DCP resharding); the command
line and hardware settings that cannot work are refused in one line."""

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.helpers import compose_train
from vla.configs import ConfigError, HardwareConfig
from vla.models import build_policy
from vla.models.weights import load_pretrained, openpi_key
from vla.runs import read_metrics
from vla.train.checkpoint import checkpoint_steps
from vla.train.distributed import num_nodes_started
from vla.train.launch import launch, rank_argv
from vla.train.loop import train

REPO = Path(__file__).resolve().parents[2]
# a learning rate that moves the weights, and a clipping threshold below the gradient norms (~0.8-6) so that the
# clipping acts; a norm summed over the wrong ranks shows in train/grad_norm (AdamW's update hardly changes when every
# gradient is scaled alike, so the losses would not show it)
SETTINGS = ["synthetic_data.enabled=true", "synthetic_data.num_tokens=32", "hardware.num_workers=0", "progress=false",
            "optim.lr=1e-3", "optim.warmup_steps=1", "optim.clip_grad_norm=0.1", "optim.ema_decay=0.9",
            "batch_size=8", "log_interval=1", "save_interval=2", "keep_last=2", "keep_period=null"]
NODES, PER_NODE, STEPS = 2, 2, 4
HSDP = [f"hardware.num_nodes={NODES}", f"hardware.num_processes={PER_NODE}"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def torchrun_nodes(nodes: int, per_node: int, args: list[str], cwd: Path, timeout: float = 600) -> list[str]:
    """`nodes` torchrun processes as on `nodes` machines (one rendezvous endpoint, --node-rank each); their outputs."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    procs = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--node-rank", str(n),
                          "--nproc-per-node", str(per_node), "--rdzv-backend", "c10d",
                          "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "test", str(REPO / "train.py"), *args],
                         cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for n in range(nodes)
    ]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    return outs


def curve(run_dir: Path, key: str = "train/loss") -> dict[int, float]:
    return {m["step"]: m[key] for m in read_metrics(run_dir)}  # a resumed run's records replace the earlier ones


def assert_curves_close(run: Path, ref: Path, steps: list[int]) -> None:
    """Losses, gradient and parameter norms step by step (each a reduction over the mesh); float reduction order
    differs between layouts (~1e-6 relative)."""
    for key in ("train/loss", "train/grad_norm", "train/param_norm"):
        got, want = curve(run, key), curve(ref, key)
        torch.testing.assert_close(torch.tensor([got[s] for s in steps]), torch.tensor([want[s] for s in steps]),
                                   rtol=2e-5, atol=0, msg=f"{key}: {got} vs {want}")


def assert_weights_close(run: Path, ref: Path, step: int) -> None:
    for name in ("model.safetensors", "ema.safetensors"):
        got, want = (load_file(r / "checkpoints" / str(step) / name) for r in (run, ref))
        assert got.keys() == want.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6, msg=f"{name} {k}")


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> Path:
    """A 4-step run on 2 nodes x 2 ranks (a 2 x 2 HSDP mesh), checkpoints at steps 2 and 4."""
    cwd = tmp_path_factory.mktemp("two_nodes")
    outs = torchrun_nodes(NODES, PER_NODE, SETTINGS + HSDP + [f"num_steps={STEPS}", "run_name=hsdp"], cwd)
    assert any("HSDP (mesh replicate 2 x shard 2)" in out for out in outs), outs  # as FSDP2 sharded the parameters
    return cwd / "runs" / "hsdp"


@pytest.mark.slow
def test_two_nodes_train_as_one_node_and_one_rank(two_nodes, tmp_path):
    """The same global batch of 8 on 2 nodes x 2 ranks (HSDP), on 1 node x 4 ranks (FSDP, train.py's own launcher)
    and on 1 rank: the same losses, gradient norms and weights (raw and EMA) at float tolerance. Rank 0 alone wrote
    the run directory: one TensorBoard file, one record per step, one train.log."""
    launch(compose_train(SETTINGS + [f"num_steps={STEPS}", f"hardware.num_processes={NODES * PER_NODE}"]),
           tmp_path / "one_node")
    train(compose_train(SETTINGS + [f"num_steps={STEPS}"]), tmp_path / "one_rank")
    steps = list(range(1, STEPS + 1))
    assert len(set(curve(two_nodes).values())) == STEPS  # distinct losses: each step's batch and weights differ
    assert max(curve(two_nodes, "train/grad_norm").values()) > 0.1 * 5  # the clipping acted
    for ref in (tmp_path / "one_node", tmp_path / "one_rank"):
        assert_curves_close(two_nodes, ref, steps)
        assert_weights_close(two_nodes, ref, STEPS)

    assert len(list(two_nodes.glob("events.out.tfevents.*"))) == 1
    assert [m["step"] for m in read_metrics(two_nodes)] == steps
    log = (two_nodes / "train.log").read_text()
    assert log.count("done: train/loss=") == 1  # every rank logs it; ranks other than 0 to their console only
    assert (two_nodes / ".hydra" / "config.yaml").is_file()


def resumable_copy(run: Path, dest: Path, step: int) -> Path:
    """`run` as it was right after its checkpoint `step`: later checkpoints and records removed."""
    shutil.copytree(run, dest)
    for s in checkpoint_steps(dest):
        if s > step:
            shutil.rmtree(dest / "checkpoints" / str(s))
    records = (dest / "metrics.jsonl").read_text().splitlines()[:step]
    (dest / "metrics.jsonl").write_text("".join(line + "\n" for line in records))
    return dest


@pytest.mark.slow
def test_two_node_checkpoint_resumes_on_one_node_and_one_rank(two_nodes, tmp_path):
    """The 2-node checkpoint of step 2 (a 2 x 2 mesh) resumed with resume=true on 1 node x 2 ranks and on 1 rank
    (DCP reshards model, optimizer and EMA): steps 3 and 4 as the uninterrupted 2-node run; its consolidated weights
    load on one process, as eval.py loads them."""
    assert checkpoint_steps(two_nodes) == [2, STEPS]
    resume = SETTINGS + [f"num_steps={STEPS}", "resume=true"]
    one_node = resumable_copy(two_nodes, tmp_path / "one_node", 2)
    launch(compose_train(resume + ["hardware.num_processes=2"]), one_node)
    one_rank = resumable_copy(two_nodes, tmp_path / "one_rank", 2)
    train(compose_train(resume), one_rank)
    for run in (one_node, one_rank):
        assert checkpoint_steps(run) == [2, STEPS]
        assert_curves_close(run, two_nodes, [3, 4])
        assert_weights_close(run, two_nodes, STEPS)

    policy = build_policy(compose_train(SETTINGS).model)
    load_pretrained(policy, two_nodes / "checkpoints" / str(STEPS))  # eval's loader: the EMA weights, whole
    ema = load_file(two_nodes / "checkpoints" / str(STEPS) / "ema.safetensors")
    state = policy.state_dict()
    assert {openpi_key(k) for k in state} == set(ema)
    assert all(torch.equal(v, ema[openpi_key(k)]) for k, v in state.items())


@pytest.mark.slow
def test_torchrun_without_a_fixed_run_name_is_refused(tmp_path):
    """Nodes started seconds apart would name different run directories after their start times: refused on every
    rank before anything is written."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(n),
                               "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                               f"localhost:{port}", str(REPO / "train.py"), *SETTINGS, *HSDP[:1]],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for n in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode != 0 for p in procs), outs
    # the first node to fail closes the rendezvous, which can stop the other one before its rank has printed
    message = "train.py: error: under torchrun with 2 ranks the default run_name holds each rank's start time"
    assert any(message in out for out in outs), outs
    assert not (tmp_path / "runs").exists() and not (tmp_path / "outputs").exists()


FAKE_SRUN = """#!/bin/bash
# srun's stand-in: its command once per node of the allocation, all on this machine
while [[ $1 == -* ]]; do shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do SLURM_NODEID=$node SLURM_PROCID=$node "$@" & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""
FAKE_SCONTROL = """#!/bin/bash
[[ "$1 $2 $3" == "show hostnames $SLURM_JOB_NODELIST" ]] || { echo "unexpected: scontrol $*" >&2; exit 2; }
printf 'localhost\\nlocalhost\\n'
"""


@pytest.mark.slow
def test_slurm_script_starts_one_torchrun_per_node(tmp_path):
    """tools/slurm/train.sbatch with stand-ins for srun and scontrol: its torchrun command line, once per node of a
    2-node allocation, trains one run with HSDP. (SLURM itself is not exercised.)"""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1",
               PYTHON=sys.executable, RDZV_PORT=str(free_port()), NPROC_PER_NODE="1",
               SLURM_NNODES="2", SLURM_JOB_NODELIST="node[1-2]", SLURM_JOB_ID="7")
    args = SETTINGS + ["hardware.num_nodes=2", "num_steps=2", "run_name=slurm", f"run_root={tmp_path / 'runs'}"]
    proc = subprocess.run(["bash", str(REPO / "tools" / "slurm" / "train.sbatch"), *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout
    assert "HSDP (mesh replicate 2 x shard 1)" in proc.stdout
    assert [m["step"] for m in read_metrics(tmp_path / "runs" / "slurm")] == [1, 2]


def test_rank_argv():
    args = ["hardware=2x8xh100", "run_name=big"]
    assert rank_argv(["hardware=cpu"], {}) == ["hardware=cpu"]  # one process: nothing to agree on
    assert rank_argv(args, {"WORLD_SIZE": "16", "RANK": "0"}) == args
    assert rank_argv(args, {"WORLD_SIZE": "16", "RANK": "3"}) == args + ["hydra.output_subdir=null",
                                                                          "hydra/job_logging=stdout"]
    for fixed in ("+experiment=pushcube_pi05", "hydra.run.dir=/shared/runs/big"):
        assert rank_argv([fixed], {"WORLD_SIZE": "2", "RANK": "0"}) == [fixed]
    with pytest.raises(ValueError, match="pass run_name=<name>"):
        rank_argv(["hardware=2x8xh100", "num_steps=10"], {"WORLD_SIZE": "16", "RANK": "0"})
    with pytest.raises(ValueError, match="start one torchrun per setting"):
        rank_argv(["-m", "run_name=a"], {"WORLD_SIZE": "16", "RANK": "0"})


@pytest.mark.parametrize("world,local,nodes,per_node,error", [
    (16, 8, 2, 8, None),
    (8, 8, 1, 8, None),
    (2, 2, 1, 1, None),  # one node: the ranks torchrun started, whatever hardware.num_processes says (as before)
    (16, 8, 1, 8, "describes 1 node(s) (hardware.num_nodes) but the run has 16 rank(s), 8 on each node: pass "
                  "hardware.num_nodes=2, or start torchrun with --nnodes 1"),
    (8, 8, 2, 8, "describes 2 node(s) (hardware.num_nodes) but the run has 8 rank(s), 8 on each node: pass "
                 "hardware.num_nodes=1"),
    (8, 4, 2, 8, "describes 8 rank(s) per node (hardware.num_processes) but the run has 8 rank(s), 4 on each node: "
                 "pass hardware.num_processes=4"),
])
def test_hardware_must_describe_the_nodes_torchrun_started(monkeypatch, world, local, nodes, per_node, error):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    hw = HardwareConfig(name="test", num_nodes=nodes, num_processes=per_node)
    if error is None:
        assert num_nodes_started(hw, world) == nodes
    else:
        with pytest.raises(ValueError, match=re.escape(error)):
            num_nodes_started(hw, world)


def test_several_nodes_need_torchrun_and_a_positive_count(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="hardware.num_nodes=2: start train.py with torchrun on every node"):
        launch(compose_train(SETTINGS + ["hardware.num_nodes=2"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="hardware.num_nodes=0: must be at least 1"):
        compose_train(["hardware.num_nodes=0"])
