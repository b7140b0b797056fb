"""The critic's arithmetic against values worked out by hand: the chunked n-step backup of every frame (returns,
bootstrap masks, next indices, validity, Monte-Carlo returns) and Cal-QL's regularizer."""

import math

import numpy as np
import pytest
import torch

from vla.rl.data import chunk_backup_targets, episode_bounds
from vla.rl.losses import calql_regularizer, chunk_backup, td_loss


def test_episode_bounds_cut_at_the_first_done():
    # episode 0: 5 frames, terminates after frame 2 (frames 3, 4 recorded past it); episode 1: 3 frames, cut off
    episode = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    dones = np.array([0, 0, 1, 0, 1, 0, 0, 0], bool)
    end, terminal = episode_bounds(episode, dones)
    assert end.tolist() == [3, 3, 3, 3, 3, 8, 8, 8]
    assert terminal.tolist() == [True] * 5 + [False] * 3


def test_chunk_backup_targets_by_hand():
    # h = 2, gamma = 0.5. Episode 0: frames 0-2, rewards 1, 2, 4, terminal after frame 2 (frames 3-4 past the done).
    # Episode 1: frames 5-7, rewards 8, 16, 32, cut off without a terminal.
    rewards = np.array([1, 2, 4, 100, 100, 8, 16, 32], np.float64)
    end = np.array([3, 3, 3, 3, 3, 8, 8, 8])
    terminal = np.array([True] * 5 + [False] * 3)
    t = chunk_backup_targets(rewards, end, terminal, h=2, gamma=0.5)
    # R_t = r_t + 0.5 r_{t+1} within the used episode part
    np.testing.assert_allclose(t["chunk_return"], [1 + 1, 2 + 2, 4, 0, 0, 8 + 8, 16 + 16, 32])
    # frame 0: s_2 recorded, bootstrap; frame 1: the terminal comes within the chunk; frame 2: likewise;
    # frames 3, 4: past the done; frames 5: s_7 recorded; 6, 7: s_8 / s_9 never recorded and no terminal
    assert t["bootstrap"].tolist() == [1, 0, 0, 0, 0, 1, 0, 0]
    assert t["next_index"].tolist() == [2, 1, 2, 3, 4, 7, 6, 7]
    assert t["valid"].tolist() == [True, True, True, False, False, True, False, False]
    # G_t = r_t + 0.5 G_{t+1} to the end of the used part
    np.testing.assert_allclose(t["mc_return"][:3], [1 + 0.5 * (2 + 0.5 * 4), 2 + 0.5 * 4, 4])
    np.testing.assert_allclose(t["mc_return"][5:], [8 + 0.5 * (16 + 0.5 * 32), 16 + 0.5 * 32, 32])


def test_chunk_backup_and_td_loss_by_hand():
    target = chunk_backup(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0]), torch.tensor([10.0, 10.0]),
                          gamma=0.5, chunk_len=3)
    torch.testing.assert_close(target, torch.tensor([1.0 + 0.125 * 10.0, 2.0]))
    q = torch.tensor([[2.0, 0.0], [3.0, 4.0]])  # two ensemble members
    # member 0: ((2 - 2.25)^2 + (0 - 2)^2) / 2 = 2.03125; member 1: ((3 - 2.25)^2 + (4 - 2)^2) / 2 = 2.28125
    torch.testing.assert_close(td_loss(q, target), torch.tensor(2.03125 + 2.28125))


def test_calql_regularizer_by_hand():
    q_data = torch.tensor([[1.0]])  # (E=1, B=1)
    q_uniform = torch.tensor([[[0.0]]])
    q_policy = torch.tensor([[[-1.0, 2.0]]])
    mc = torch.tensor([0.5])
    reg, lifted = calql_regularizer(q_data, q_uniform, q_policy, mc, temperature=1.0)
    # the policy's -1 is lifted to the MC return 0.5, the uniform 0 is not: logsumexp(0, 0.5, 2, 1) - log 4 - 1
    expected = math.log(math.exp(0) + math.exp(0.5) + math.exp(2) + math.exp(1)) - math.log(4) - 1.0
    torch.testing.assert_close(reg, torch.tensor([[expected]]))
    assert lifted.item() == pytest.approx(0.5)  # one of the two policy values
    reg_t, _ = calql_regularizer(q_data, q_uniform, q_policy, mc, temperature=2.0)
    expected_t = 2 * math.log(math.exp(0) + math.exp(0.25) + math.exp(1) + math.exp(0.5)) - 2 * math.log(4) - 1.0
    torch.testing.assert_close(reg_t, torch.tensor([[expected_t]]))
    reg_u, lifted_u = calql_regularizer(q_data, q_uniform, q_policy, mc, bound_uniform=True)
    expected_u = math.log(2 * math.exp(0.5) + math.exp(2) + math.exp(1)) - math.log(4) - 1.0
    torch.testing.assert_close(reg_u, torch.tensor([[expected_u]]))
    assert lifted_u.item() == pytest.approx(2 / 3)


def test_calql_regularizer_vanishes_when_every_chunk_scores_alike():
    q = torch.full((2, 3), 0.7)
    reg, _ = calql_regularizer(q, torch.full((2, 3, 4), 0.7), torch.full((2, 3, 5), 0.7), torch.zeros(3))
    torch.testing.assert_close(reg, torch.zeros(2, 3))
