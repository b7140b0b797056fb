"""Rollout datasets: episodes round-trip through the writer and the reader (a LeRobot dataset with reward, success,
done and seed columns beside the usual ones), a failed write leaves nothing, a dataset without rewards is refused
in one line, and the replay data turns frames into the chunks and targets the critic trains on."""

import numpy as np
import pytest
import torch

from tests.rl.conftest import random_episode, write_demo_dataset, write_rollouts
from vla.data.norm_stats import load_norm_stats
from vla.data.transforms import Normalizer
from vla.rl.data import ReplayBuffer, RolloutData, RolloutWriter


# numpy 2.4 refuses float() of a 1-element array, which numpy 1.25-2.3 only warn about: the warning as an error
# stands for the newer numpy here
@pytest.mark.filterwarnings("error:Conversion of an array with ndim > 0 to a scalar:DeprecationWarning")
def test_rollouts_round_trip(tmp_path, pushcube):
    episodes = write_rollouts(tmp_path / "r", pushcube, [(5, 4), (7, None)], seed=11)
    data = RolloutData(tmp_path / "r")
    assert len(data) == 12 and data.episode_index.tolist() == [0] * 5 + [1] * 7
    np.testing.assert_array_equal(data.actions, np.concatenate([e.actions for e in episodes]))
    np.testing.assert_array_equal(data.rewards, np.concatenate([e.rewards for e in episodes]))
    np.testing.assert_array_equal(data.successes, np.concatenate([e.successes for e in episodes]))
    np.testing.assert_array_equal(data.dones, np.concatenate([e.dones for e in episodes]))
    assert data.episode_seed.tolist() == [11] * 5 + [12] * 7
    for i, obs in [(0, episodes[0].observations[0]), (8, episodes[1].observations[3])]:
        got = data.observation(i)
        np.testing.assert_array_equal(np.asarray(got["images"]["base_0_rgb"]), obs["images"]["base_0_rgb"])  # PNG
        np.testing.assert_array_equal(got["state"], obs["state"])
        assert got["image_masks"] == obs["image_masks"] and got["prompt"] == pushcube.prompt
    assert set(load_norm_stats(tmp_path / "r" / "norm_stats.json")) == {"state", "actions"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temp dir left


def test_a_failed_write_leaves_nothing(tmp_path, pushcube):
    with pytest.raises(RuntimeError, match="simulator died"):
        with RolloutWriter(tmp_path / "r", pushcube, 10) as writer:
            writer.add(random_episode(pushcube, 4, 0))
            raise RuntimeError("simulator died")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileExistsError, match="exists"):
        write_rollouts(tmp_path / "x", pushcube, [(3, None)])
        RolloutWriter(tmp_path / "x", pushcube, 10)


def test_a_dataset_without_rewards_is_refused_in_one_line(tmp_path, pushcube):
    write_demo_dataset(tmp_path / "demos", pushcube)
    with pytest.raises(ValueError) as e:
        RolloutData(tmp_path / "demos")
    assert str(e.value) == (f"{tmp_path / 'demos'}: no 'reward', 'success', 'done', 'episode_seed' column(s): a "
                            "dataset without rewards (converted demos?); record rollouts with "
                            "`python -m vla.rl.collect`")


def test_replay_batches_chunks_targets_and_behaviour_cloning_weights(rollouts):
    data = RolloutData(rollouts)  # 14 frames (success after 13), 12 frames cut off, 9 frames (success after 8)
    stats = {"mean": np.zeros(7), "std": np.ones(7), "q01": np.full(7, -2.0), "q99": np.full(7, 2.0)}
    norm = Normalizer.from_stats({"actions": stats}, "actions", use_quantiles=True)
    replay = ReplayBuffer(norm, chunk_len=4, action_horizon=6, model_action_dim=10, gamma=0.9, reward="sparse")
    replay.add(data)
    # valid starts: episode 0 all 14; episode 1 only t + 4 < 12 (8 of 12); episode 2 all 9
    assert replay.summary() == {"frames": 35, "episodes": 3, "episode_success": 2 / 3, "chunks": 14 + 8 + 9}
    idx = np.array([12, 14 + 7, 26 + 0])
    b = replay.batch(idx)
    raw = data.actions
    # frame 12: actions 12, 13, then the episode's last repeated; normalized (x + 2) / 4 * 2 - 1 = x / 2
    np.testing.assert_allclose(b["chunk"][0].numpy(), raw[[12, 13, 13, 13]] / 2, atol=1e-5)
    np.testing.assert_allclose(b["chunk"][1].numpy(), raw[21:25] / 2, atol=1e-5)
    assert b["bc_actions"].shape == (3, 6, 10) and b["bc_pad"][0].tolist() == [False, False, True, True, True, True]
    assert (b["bc_actions"][..., 7:] == 0).all()
    # sparse reward: the success step's 1, discounted; the cut-off episode earns nothing and bootstraps
    torch.testing.assert_close(b["chunk_return"], torch.tensor([0.9, 0.0, 0.0]))
    assert b["bootstrap"].tolist() == [0.0, 1.0, 1.0]
    torch.testing.assert_close(b["mc_return"], torch.tensor([0.9, 0.0, 0.9 ** 8]))
    assert b["bc_weight"].tolist() == [1.0, 0.0, 1.0]
    dense = ReplayBuffer(norm, 4, 6, 10, 0.9, "normalized_dense")
    dense.add(data)
    r = data.rewards
    assert dense.batch(idx)["chunk_return"][1].item() == pytest.approx(sum(0.9 ** k * r[21 + k] for k in range(4)))
    starts = replay.sample(64, torch.Generator().manual_seed(0))
    assert set(starts.tolist()) <= set(replay.starts.tolist()) and not set(range(22, 26)) & set(starts.tolist())
    # decision frames only: every 4th frame of each episode (episodes start at 0, 14, 26), with a target
    strided = ReplayBuffer(norm, 4, 6, 10, 0.9, "sparse", start_stride=4)
    strided.add(data)
    assert strided.starts.tolist() == [0, 4, 8, 12, 14, 18, 26, 30, 34]
    for key in ("chunk", "chunk_return", "bootstrap", "mc_return"):  # a start's chunk and target do not change
        torch.testing.assert_close(strided.batch(np.array([18, 30]))[key], replay.batch(np.array([18, 30]))[key])
