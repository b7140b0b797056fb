"""Norm stats (openpi layout): written next to each converted dataset, equal to a direct numpy computation on the
HDF5 arrays, reproducible from the dataset; chunk clamping; file validation."""

import json

import numpy as np
import pytest

from tests.data.helpers import ACTION_HORIZON, expected_state, read_h5, trajectories
from vla.data.norm_stats import (
    action_chunks,
    compute_norm_stats,
    compute_norm_stats_from_dataset,
    load_norm_stats,
    save_norm_stats,
)


def _direct_stats(states, actions, horizon):
    """Reference: every frame's state; every step of every H-step chunk a[t], ..., a[t+H-1] with indices past the
    episode end clamped to its last step (what LeRobot returns), written out with plain loops."""
    chunk_rows = []
    for a in actions:
        T = len(a)
        for t in range(T):
            for k in range(horizon):
                chunk_rows.append(a[min(t + k, T - 1)])
    out = {}
    for key, x in (("state", np.concatenate(states)), ("actions", np.stack(chunk_rows))):
        x = x.astype(np.float64)
        out[key] = {"mean": x.mean(0), "std": np.sqrt(np.maximum((x**2).mean(0) - x.mean(0) ** 2, 0.0)),
                    "q01": np.percentile(x, 1, axis=0), "q99": np.percentile(x, 99, axis=0)}
    return out


def _assert_stats_close(a, b, dims, rtol=1e-6, atol=1e-7):
    for key in ("state", "actions"):
        for s in ("mean", "std", "q01", "q99"):
            np.testing.assert_allclose(np.asarray(a[key][s], np.float64), b[key][s], rtol=rtol, atol=atol,
                                       err_msg=f"{key}.{s}")
            assert len(a[key][s]) == dims[key]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pickcube", "stackcube"])
def test_norm_stats_file_matches_direct_computation(name, demo_files, datasets, tasks):
    h5 = demo_files[name]
    path = datasets[name] / "norm_stats.json"
    doc = json.loads(path.read_text())
    assert list(doc) == ["norm_stats"] and set(doc["norm_stats"]) == {"state", "actions"}
    for key in ("state", "actions"):
        assert set(doc["norm_stats"][key]) == {"mean", "std", "q01", "q99"}

    trajs = trajectories(h5)
    actions = [read_h5(h5, t, "actions") for t in trajs]
    states = [expected_state(h5, t, tasks[name], len(a)) for t, a in zip(trajs, actions, strict=True)]
    expected = _direct_stats(states, actions, ACTION_HORIZON)
    dims = {"state": tasks[name].state_dim, "actions": 7}
    _assert_stats_close(doc["norm_stats"], expected, dims)

    # recomputed from the written dataset (parquet): the file, exactly; another horizon changes only the actions
    again = compute_norm_stats_from_dataset(datasets[name], ACTION_HORIZON)
    for key in ("state", "actions"):
        for s in ("mean", "std", "q01", "q99"):
            assert again[key][s].tolist() == doc["norm_stats"][key][s], f"{key}.{s}"
    other = compute_norm_stats_from_dataset(datasets[name], 3)
    _assert_stats_close(other, _direct_stats(states, actions, 3), dims)
    h1 = compute_norm_stats_from_dataset(datasets[name], 1)
    np.testing.assert_array_equal(other["state"]["mean"], h1["state"]["mean"])
    assert not np.allclose(other["actions"]["mean"], expected["actions"]["mean"], rtol=0, atol=1e-9)

    loaded = load_norm_stats(path)
    assert loaded["state"]["q99"].dtype == np.float32
    _assert_stats_close(loaded, expected, dims, rtol=1e-6, atol=1e-6)


def test_action_chunks_clamp_to_episode_end():
    a = np.arange(4, dtype=np.float32)[:, None] * np.array([[1.0, -1.0]], np.float32)
    chunks = action_chunks(a, 3)
    assert chunks.shape == (4, 3, 2)
    assert chunks[:, :, 0].tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 3], [3, 3, 3]]
    np.testing.assert_array_equal(chunks[..., 1], -chunks[..., 0])


def test_compute_norm_stats_synthetic():
    rng = np.random.default_rng(0)
    states = [rng.normal(size=(n, 3)).astype(np.float32) for n in (5, 9)]
    actions = [rng.normal(size=(n, 2)).astype(np.float32) for n in (5, 9)]
    dims = {"state": 3, "actions": 2}
    _assert_stats_close(compute_norm_stats(states, actions, 4), _direct_stats(states, actions, 4), dims)
    with pytest.raises(ValueError, match="one state and one action array per episode"):
        compute_norm_stats(states, actions[:1], 4)


def test_save_load_roundtrip_and_validation(tmp_path):
    stats = {k: {"mean": np.array([0.5, -1.0]), "std": np.array([1.0, 2.0]), "q01": np.array([-1.0, -3.0]),
                 "q99": np.array([2.0, 1.0])} for k in ("state", "actions")}
    path = save_norm_stats(tmp_path / "norm_stats.json", stats)
    assert [p.name for p in tmp_path.iterdir()] == ["norm_stats.json"]  # written via a temp file, renamed
    loaded = load_norm_stats(path)
    for k in stats:
        for s in stats[k]:
            np.testing.assert_array_equal(loaded[k][s], stats[k][s].astype(np.float32))

    bad = {k: dict(v) for k, v in stats.items()}
    bad["actions"] = {**bad["actions"], "q99": np.array([1.0, 2.0, 3.0])}
    with pytest.raises(ValueError, match="lengths differ"):
        save_norm_stats(tmp_path / "bad.json", bad)
    with pytest.raises(ValueError, match="missing 'state'"):
        save_norm_stats(tmp_path / "bad.json", {"actions": stats["actions"]})
    nan = {"norm_stats": {k: {s: [float("nan"), 1.0] for s in stats[k]} for k in stats}}
    (tmp_path / "nan.json").write_text(json.dumps(nan))
    with pytest.raises(ValueError, match="finite"):
        load_norm_stats(tmp_path / "nan.json")
    (tmp_path / "flat.json").write_text(json.dumps({"state": {}}))
    with pytest.raises(ValueError, match="not an openpi norm_stats.json"):
        load_norm_stats(tmp_path / "flat.json")
    with pytest.raises(FileNotFoundError, match="norm stats not found"):
        load_norm_stats(tmp_path / "nope.json")
    assert not (tmp_path / "bad.json").exists()
