"""tools/remote_gpu/wait.sh: follows detached training runs by their run_name, reports their newest metrics and, with
STOP=1, stops the ones still going once the wait is over."""

import json
import os
import subprocess
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "remote_gpu" / "wait.sh"


def fake_run(name: str) -> subprocess.Popen:
    """A process whose command line names the run as train.py's does (`run_name=<name>`)."""
    return subprocess.Popen(["bash", "-c", f'exec -a "python3 train.py task=x run_name={name} seed=0" sleep 60'],
                            start_new_session=True)


def test_reports_and_stops_running_runs(tmp_path):
    run = f"a{os.getpid()}"  # unique: STOP=1 ends every process on the host whose command line holds run_name=<run>
    (tmp_path / "runs" / run).mkdir(parents=True)
    (tmp_path / "runs" / run / "metrics.jsonl").write_text(json.dumps({"step": 50, "train/loss": 0.25}) + "\n")
    a, other = fake_run(run), fake_run(f"{run}_other")  # a run whose name only starts with the run's is not the run
    try:
        t0 = time.time()
        out = subprocess.run(["bash", str(SCRIPT), run], cwd=tmp_path, env=dict(os.environ, WAIT="2", STOP="1"),
                             capture_output=True, text=True, timeout=60).stdout
        assert time.time() - t0 < 30
        assert f"{run} running {{'step': 50, 'train/loss': 0.25}}" in out
        assert out.strip().endswith(f"{run} exited {{'step': 50, 'train/loss': 0.25}}")
        assert a.wait(timeout=10) is not None
        assert other.poll() is None
    finally:
        for p in (a, other):
            p.kill()


def test_returns_as_soon_as_the_runs_have_exited(tmp_path):
    t0 = time.time()
    subprocess.run(["bash", str(SCRIPT), "gone"], cwd=tmp_path, env=dict(os.environ, WAIT="120"), check=True,
                   timeout=60)
    assert time.time() - t0 < 10


def test_pack_brings_back_the_newest_checkpoint_of_the_named_run(tmp_path):
    import tarfile

    import torch
    from safetensors.torch import load_file, save_file

    from vla.models import load_policy_config
    from vla.models.pi0 import Pi0Policy

    state = {k: v.contiguous() for k, v in Pi0Policy(load_policy_config("pi05_tiny")).state_dict().items()}
    for step in (500, 1000, 1000 - 1):  # 1000 is the newest by number, not by name order
        ckpt = tmp_path / "runs" / "a" / "checkpoints" / str(step)
        ckpt.mkdir(parents=True)
        save_file({k: v + step for k, v in state.items()}, ckpt / "ema.safetensors")
        (ckpt / "norm_stats.json").write_text("{}")
    (tmp_path / "runs" / "a.train.log").write_text("done\n")
    out = tmp_path / "out"
    subprocess.run(["bash", str(SCRIPT), "a"], cwd=tmp_path, env=dict(os.environ, WAIT="1", PACK="a", OUT=str(out)),
                   check=True, capture_output=True, timeout=120)

    shards = sorted(out.glob("*-of-*.safetensors"))
    assert shards and all(p.stat().st_size <= 15 * 2**20 + 4096 for p in shards)
    with tarfile.open(out / "a.tar") as tar:
        assert tar.extractfile("a/STEP").read().decode().strip() == "1000"
    name, packed = next(iter(state)), {}
    for p in shards:
        packed.update(load_file(p))
    assert set(packed) == set(state)
    torch.testing.assert_close(packed[name].float(), (state[name] + 1000).to(torch.bfloat16).float(), rtol=0, atol=0)
