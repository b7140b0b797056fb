"""vla.eval.open_loop: the per-dimension error of a policy's chunks against the demo's, on dataset frames."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vla.data.dataset import ChunkedDataset
from vla.eval.open_loop import open_loop_errors, state_sensitivity

REPO = Path(__file__).resolve().parents[2]
HORIZON = 8
pytestmark = pytest.mark.slow  # every test reads frames of the generated ManiSkill demos


class IndexedFrames(ChunkedDataset):
    """Each sample also carries its row index, so a test policy can look up the demo's own chunk."""

    def __getitem__(self, i: int) -> dict:
        return {**super().__getitem__(i), "frame": i}


@pytest.fixture(scope="module")
def frames(datasets):
    return IndexedFrames(datasets["pickcube"], "vla/maniskill_pickcube", HORIZON)


def test_oracle_scores_zero_and_zeros_score_the_actions_own_size(frames):
    """An oracle that returns each frame's demo chunk has no error, images swapped or not; a policy of zeros has
    exactly the demo actions' mean magnitude as its error."""

    def oracle(obs, noise):
        assert noise.shape == (len(obs), HORIZON, 32)
        return np.stack([frames.action_chunk(o["frame"])[0] for o in obs])

    def zeros(obs, noise):
        return np.zeros((len(obs), HORIZON, 7), np.float32)

    for swap in (False, True):
        exact = open_loop_errors(oracle, frames, 32, frames=20, steps=4, swap_images=swap, batch_size=6)
        assert exact["frames"] == 20 and len(exact["mae"]) == 7 and exact["mae_mean"] == 0.0
    blind = open_loop_errors(zeros, frames, 32, frames=20, steps=4)
    np.testing.assert_allclose(blind["mae"], blind["action_abs"])
    assert blind["relative"] == pytest.approx(1.0) and min(blind["action_abs"]) > 0


def test_swapped_images_come_from_other_frames(frames):
    """--swap-images changes the images a policy sees and nothing else."""
    seen = {}

    def record(key):
        def act(obs, noise):
            seen[key] = obs
            return np.zeros((len(obs), HORIZON, 7), np.float32)
        return act

    open_loop_errors(record("plain"), frames, 32, frames=5, steps=4, seed=3)
    open_loop_errors(record("swap"), frames, 32, frames=5, steps=4, seed=3, swap_images=True)
    for a, b in zip(seen["plain"], seen["swap"], strict=True):
        np.testing.assert_array_equal(a["state"], b["state"])
        assert any(not np.array_equal(a["images"][k], b["images"][k]) for k in a["images"])


def test_state_shift_reports_what_a_state_dimension_moves(frames):
    """A policy whose action 0 is state[8] (every step) moves it by delta x steps when state[8] moves; a policy that
    ignores the state reports no change; the frames' own state is left as it was."""

    def reads_goal(obs, noise):
        out = np.zeros((len(obs), HORIZON, 7), np.float32)
        out[:, :, 0] = np.array([o["state"][8] for o in obs])[:, None]
        return out

    def blind(obs, noise):
        return np.zeros((len(obs), HORIZON, 7), np.float32)

    before = frames[0]["state"].copy()
    moved = state_sensitivity(reads_goal, frames, 32, dim=8, delta=0.05, frames=10, steps=4, batch_size=3)
    assert moved["frames"] == 10
    np.testing.assert_allclose(moved["change"], [0.2, 0, 0, 0, 0, 0, 0], atol=1e-6)
    assert state_sensitivity(blind, frames, 32, dim=8, delta=0.05, frames=10, steps=4)["change"] == [0.0] * 7
    np.testing.assert_array_equal(frames[0]["state"], before)


def test_open_loop_cli(trained_run, datasets, tmp_path):
    out = tmp_path / "ol.json"
    proc = subprocess.run([sys.executable, "-m", "vla.eval.open_loop", "--checkpoint", str(trained_run), "--dataset",
                           str(datasets["pickcube"]), "--frames", "4", "--steps", "4", "--shift-state", "8=0.05",
                           "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["frames"] == 4 and len(result["mae"]) == 7 and np.isfinite(result["mae"]).all()
    assert "relative error" in proc.stdout
    assert [s["dim"] for s in result["state_shifts"]] == [8] and len(result["state_shifts"][0]["change"]) == 7
    bad = subprocess.run([sys.executable, "-m", "vla.eval.open_loop", "--checkpoint", str(tmp_path / "nope"),
                          "--dataset", str(datasets["pickcube"])], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("open_loop: error: checkpoint not found")
    wrong_dim = subprocess.run([sys.executable, "-m", "vla.eval.open_loop", "--checkpoint", str(trained_run),
                                "--dataset", str(datasets["pickcube"]), "--shift-state", "40=0.1"],
                               capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert wrong_dim.returncode == 1
    assert wrong_dim.stderr.strip().splitlines()[-1].startswith("open_loop: error: --shift-state 40: ")
