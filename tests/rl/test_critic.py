"""The chunk critic: it learns the known optimal values of a toy chain MDP through the chunked backup (tabular
features, every chunk enumerated: Q-learning over chunks); its checkpoint refuses a task or policy it was not
trained for; the Polyak update."""

import itertools

import numpy as np
import pytest
import torch

from vla.rl.critic import ChunkCritic, CriticError, CriticSpec, load_critic, polyak_update, save_critic
from vla.rl.losses import chunk_backup, td_loss

GAMMA, H, N_STATES, GOAL = 0.9, 2, 6, 5  # states 0..5, 5 is the terminal goal; a step moves by -1 or +1
CHUNKS = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=H)))[:, :, None]  # (4, h, action_dim 1)


def step(s: int, a: float) -> tuple[int, float, bool]:
    s2 = min(max(s + int(a), 0), GOAL)
    return s2, float(s2 == GOAL), s2 == GOAL


def primitive_values(iterations: int = 200) -> np.ndarray:
    """V* of the one-step MDP by value iteration (independent of chunks and of the critic's code)."""
    v = np.zeros(N_STATES)
    for _ in range(iterations):
        for s in range(GOAL):
            v[s] = max(r + (0.0 if done else GAMMA * v[s2]) for s2, r, done in (step(s, a) for a in (-1.0, 1.0)))
    return v


def chunk_transition(s: int, chunk: torch.Tensor) -> tuple[float, bool, int]:
    """(discounted return within the chunk, terminal, state after it)."""
    ret = 0.0
    for k, a in enumerate(chunk[:, 0].tolist()):
        s, r, done = step(s, a)
        ret += GAMMA ** k * r
        if done:
            return ret, True, s
    return ret, False, s


def test_critic_recovers_the_chain_values():
    v = primitive_values()
    transitions = [(s, c, *chunk_transition(s, CHUNKS[c])) for s in range(GOAL) for c in range(len(CHUNKS))]
    expected = torch.tensor([ret + (0.0 if term else GAMMA ** H * v[s2]) for s, _, ret, term, s2 in transitions])
    onehot = torch.eye(N_STATES)
    states = torch.tensor([t[0] for t in transitions])
    chunks = CHUNKS[torch.tensor([t[1] for t in transitions])]
    returns = torch.tensor([t[2] for t in transitions])
    bootstrap = torch.tensor([0.0 if t[3] else 1.0 for t in transitions])
    next_states = torch.tensor([t[4] for t in transitions])

    torch.manual_seed(0)
    spec = CriticSpec(task="chain", env_id="chain", model="tabular", features="policy", feature_dim=N_STATES,
                      state_dim=0, chunk_len=H, action_dim=1, hidden_dims=[64, 64], num_qs=2)
    critic = ChunkCritic(spec)
    target = ChunkCritic(spec)
    target.load_state_dict(critic.state_dict())
    optim = torch.optim.Adam(critic.parameters(), lr=3e-3)
    obs = lambda s: {"features": onehot[s], "state": torch.zeros(len(s), 0)}  # noqa: E731
    for _ in range(800):
        with torch.no_grad():  # the best of every chunk under the target critic: the backup of Q-learning
            next_q = target(obs(next_states), CHUNKS[None].expand(len(next_states), -1, -1, -1)).min(0).values
            y = chunk_backup(returns, bootstrap, next_q.max(dim=1).values, GAMMA, H)
        loss = td_loss(critic(obs(states), chunks), y)
        optim.zero_grad()
        loss.backward()
        optim.step()
        polyak_update(target, critic, 0.05)
    q = critic(obs(states), chunks).mean(0).detach()
    assert (q - expected).abs().max().item() < 0.03, (q, expected)
    # the values differ enough that a wrong discount or backup could not pass: from 0.9^5 to 1
    assert expected.max() - expected.min() > 0.4


def _spec(**fields) -> CriticSpec:
    base = dict(task="pushcube", env_id="PushCube-v1", model="pi05_tiny", features="policy", feature_dim=8,
                state_dim=4, chunk_len=3, action_dim=2, hidden_dims=[16], num_qs=2)
    return CriticSpec(**(base | fields))


def test_critic_round_trips_and_refuses_another_task_or_model(tmp_path):
    critic = ChunkCritic(_spec())
    save_critic(critic, tmp_path)
    loaded = load_critic(tmp_path, "pushcube", "pi05_tiny")
    obs, chunks = {"features": torch.randn(5, 8), "state": torch.randn(5, 4)}, torch.randn(5, 7, 3, 2)
    torch.testing.assert_close(loaded(obs, chunks), critic(obs, chunks))
    assert loaded(obs, chunks).shape == (2, 5, 7) and loaded(obs, chunks[:, 0]).shape == (2, 5)
    with pytest.raises(CriticError,
                       match=r"critic.json: trained for task pushcube, asked to score chunks of task pickcube; "
                             r"train one for pickcube") as e:
        load_critic(tmp_path, "pickcube", "pi05_tiny")
    assert "\n" not in str(e.value)
    with pytest.raises(CriticError,
                       match=r"features of a pi05_tiny policy, asked to score chunks of a pi05_small policy"):
        load_critic(tmp_path, "pushcube", "pi05_small")
    with pytest.raises(FileNotFoundError, match=r"no critic.json in it or in its checkpoints/<step>/"):
        load_critic(tmp_path / "elsewhere", "pushcube", "pi05_tiny")


def test_run_dir_resolves_to_its_newest_critic(tmp_path):
    for step, num_qs in ((3, 1), (12, 2)):
        (tmp_path / "checkpoints" / str(step)).mkdir(parents=True)
        save_critic(ChunkCritic(_spec(num_qs=num_qs)), tmp_path / "checkpoints" / str(step))
    (tmp_path / "checkpoints" / "20").mkdir()  # no critic in it
    assert len(load_critic(tmp_path, "pushcube", "pi05_tiny").heads) == 2  # step 12's


def test_encoder_critic_scores_images():
    critic = ChunkCritic(_spec(features="encoder", feature_dim=16, encoder_channels=[4, 8]))
    obs = {"image": torch.rand(3, 3, 64, 64) * 2 - 1, "state": torch.randn(3, 4)}
    q = critic(obs, torch.randn(3, 2, 3, 2))
    q.sum().backward()
    assert q.shape == (2, 3, 2) and critic.encoder.proj.weight.grad.abs().sum() > 0


def test_polyak_update_by_hand():
    target, online = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        target.weight.fill_(1.0)
        online.weight.fill_(3.0)
    polyak_update(target, online, 0.25)
    assert target.weight.item() == pytest.approx(1.5)


def test_each_head_is_its_mlp_on_the_observation_and_chunk_side_by_side():
    critic = ChunkCritic(_spec())
    obs, chunks = {"features": torch.randn(5, 8), "state": torch.randn(5, 4)}, torch.randn(5, 7, 3, 2)
    o = critic.observation(obs)
    x = torch.cat([o[:, None].expand(5, 7, o.shape[-1]), chunks.flatten(2)], dim=-1)
    expected = torch.stack([head(x).squeeze(-1) for head in critic.heads])
    torch.testing.assert_close(critic(obs, chunks), expected, atol=1e-5, rtol=1e-5)
