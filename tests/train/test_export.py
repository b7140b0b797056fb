"""export_interval: which checkpoints hold the consolidated weights, and that everything reading checkpoints copes with
one that holds only the resume state (resume, eval's run-dir resolution, model.pretrained)."""

import os
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook

from tests.train.helpers import FAST, compose_train, losses
from vla.runs import resolve_checkpoint
from vla.train.checkpoint import checkpoint_steps
from vla.train.loop import TrainingStopped, train
from vla.runs import read_metrics

pytestmark = pytest.mark.slow
SYNTHETIC = FAST + ["synthetic_data.enabled=true", "synthetic_data.num_tokens=32"]
WEIGHTS = ("model.safetensors", "ema.safetensors")


def with_weights(run_dir: Path) -> list[int]:
    return [s for s in checkpoint_steps(run_dir)
            if all((run_dir / "checkpoints" / str(s) / name).is_file() for name in WEIGHTS)]


@contextmanager
def sigterm_after_step(step: int):
    """SIGTERM to this process right after optimizer step `step`, as a scheduler would send it mid-run (a global
    optimizer-step hook: torch's public API, the loop runs unchanged)."""
    calls = 0

    def hook(*args):
        nonlocal calls
        calls += 1
        if calls == step:
            os.kill(os.getpid(), signal.SIGTERM)

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def test_default_export_interval_follows_save_interval():
    assert compose_train(SYNTHETIC + ["save_interval=5"]).export_interval == 5
    assert compose_train(SYNTHETIC + ["save_interval=5", "export_interval=null"]).export_interval is None


def test_weights_at_multiples_of_export_interval_and_the_last_step(tmp_path):
    """A checkpoint at every multiple of save_interval or export_interval and at the last step; the consolidated
    weights only at multiples of export_interval and the last step (null: the last step only)."""
    train(compose_train(SYNTHETIC + ["num_steps=7", "save_interval=2", "export_interval=3", "keep_last=100",
                                     "keep_period=null"]), tmp_path / "every3")
    assert checkpoint_steps(tmp_path / "every3") == [2, 3, 4, 6, 7]
    assert with_weights(tmp_path / "every3") == [3, 6, 7]
    for step in (2, 4):  # resume state only: not a single weights file
        assert not any((tmp_path / "every3" / "checkpoints" / str(step) / n).exists() for n in WEIGHTS)

    train(compose_train(SYNTHETIC + ["num_steps=4", "save_interval=2", "export_interval=null", "keep_last=100",
                                     "keep_period=null"]), tmp_path / "last")
    assert checkpoint_steps(tmp_path / "last") == [2, 4]
    assert with_weights(tmp_path / "last") == [4]


def test_checkpoint_without_weights_resumes_and_is_skipped_by_weight_readers(tmp_path):
    """A run stopped by SIGTERM after step 4 saves that step without weights (export_interval=3 is not due); pruning
    keeps the newest checkpoint with weights (3) next to it. Eval resolves the run dir to 3, model.pretrained=<4> is
    refused in one line, and resume=true continues from 4's state/ exactly as an uninterrupted run."""
    args = SYNTHETIC + ["save_interval=1", "export_interval=3", "keep_last=1", "keep_period=null", "num_steps=6"]
    train(compose_train(args), tmp_path / "ref")

    run_dir = tmp_path / "run"
    with sigterm_after_step(4), pytest.raises(TrainingStopped, match="after step 4 of 6"):
        train(compose_train(args), run_dir)
    assert checkpoint_steps(run_dir) == [3, 4] and with_weights(run_dir) == [3]
    assert resolve_checkpoint(run_dir) == run_dir / "checkpoints" / "3"
    weightless = run_dir / "checkpoints" / "4"
    with pytest.raises(ValueError, match=r"model.pretrained=.*/4: this training checkpoint holds only the resume"):
        train(compose_train(SYNTHETIC + ["num_steps=1", f"model.pretrained={weightless}"]), tmp_path / "other")

    train(compose_train(args + ["resume=true"]), run_dir)
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3, 4, 5, 6]
    assert losses(run_dir) == losses(tmp_path / "ref")  # bitwise: CPU, one rank
    for name in WEIGHTS:
        ours = load_file(run_dir / "checkpoints" / "6" / name)
        ref = load_file(tmp_path / "ref" / "checkpoints" / "6" / name)
        assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref), name
