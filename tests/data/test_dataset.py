"""ChunkedDataset against lerobot's own delta_timestamps chunks, the epoch sampler, and the training DataLoader."""

import numpy as np
import pytest
import torch

from tests.data.helpers import ACTION_HORIZON
from vla.data.dataset import ChunkedDataset, EpochSampler, make_dataloader


# ----------------------------------------------------------------------------------------------------------------
# EpochSampler


def test_ranks_partition_an_epoch():
    n, world = 103, 4
    samplers = [EpochSampler(n, seed=7, rank=r, world_size=world) for r in range(world)]
    parts = [list(s) for s in samplers]
    assert all(len(p) == len(s) == n // world for p, s in zip(parts, samplers, strict=True))
    flat = [i for p in parts for i in p]
    assert len(set(flat)) == len(flat) == world * (n // world)  # no overlap, every rank the same count
    assert set(flat) <= set(range(n))
    assert flat != sorted(flat)  # shuffled
    unshuffled = [list(EpochSampler(8, rank=r, world_size=2, shuffle=False)) for r in range(2)]
    assert unshuffled == [[0, 2, 4, 6], [1, 3, 5, 7]]
    with pytest.raises(ValueError, match="smaller than world size"):
        EpochSampler(3, world_size=4)


def test_epochs_reshuffle_deterministically():
    s = EpochSampler(50, seed=3)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert sorted(e0) == sorted(e1) == list(range(50)) and e0 != e1
    s.set_epoch(0)
    assert list(s) == e0  # an epoch's order depends only on (seed, epoch)
    assert list(EpochSampler(50, seed=3)) == e0 and list(EpochSampler(50, seed=4)) != e0


@pytest.mark.parametrize("rank", [0, 1])
def test_set_epoch_start_resumes_exactly(rank):
    s = EpochSampler(41, seed=1, rank=rank, world_size=2)
    s.set_epoch(5)
    full = list(s)
    for k in (0, 1, 7, len(full) - 1, len(full)):
        s.set_epoch(5, start=k)
        assert list(s) == full[k:] and len(s) == len(full) - k
    s.set_epoch(6)  # the next epoch starts from its beginning again
    assert len(list(s)) == len(full)


# ----------------------------------------------------------------------------------------------------------------
# ChunkedDataset == lerobot's delta_timestamps chunks


def _chunk_timestamps(task, horizon):
    return {"actions": [k / task.control_freq for k in range(horizon)]}


@pytest.mark.slow
@pytest.mark.parametrize("horizon", [ACTION_HORIZON, 80])  # 80: longer than the episodes, every chunk is padded
def test_action_chunks_equal_lerobot_delta_timestamps(horizon, datasets, tasks):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    task = tasks["pickcube"]
    root = datasets["pickcube"]
    ds = ChunkedDataset(root, task.repo_id, horizon)
    ref = LeRobotDataset(task.repo_id, root=root, delta_timestamps=_chunk_timestamps(task, horizon))
    assert len(ds) == len(ref) and ds.num_episodes == ref.num_episodes == 2
    # lerobot's chunk query decodes the images of all `horizon` rows (~0.2 s a frame); without the image columns
    # its item logic (episode bounds, clamping, pad flags) is unchanged and every frame can be checked
    ref.hf_dataset = ref.hf_dataset.remove_columns(["image", "wrist_image"])
    padded = 0
    for i in range(len(ds)):
        r = ref[i]
        actions, is_pad = ds.action_chunk(i)
        assert actions.shape == (horizon, task.action_dim) and actions.dtype == np.float32
        np.testing.assert_array_equal(actions, r["actions"].numpy(), err_msg=f"frame {i}")
        np.testing.assert_array_equal(is_pad, r["actions_is_pad"].numpy(), err_msg=f"frame {i}")
        padded += int(is_pad.any())
    # every episode's last horizon-1 frames reach past its end
    assert padded == sum(min(n, horizon - 1) for n in ref.meta.episodes["length"])


@pytest.mark.slow
def test_items_equal_lerobot_rows(datasets, tasks):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    task = tasks["stackcube"]
    H = ACTION_HORIZON
    ds = ChunkedDataset(datasets["stackcube"], task.repo_id, H)
    ref = LeRobotDataset(task.repo_id, root=datasets["stackcube"], delta_timestamps=_chunk_timestamps(task, H))
    n = len(ds)
    for i in (0, 1, n // 2, n - H, n - 2, n - 1):
        item, r = ds[i], ref[i]
        assert set(item) == {"images", "image_masks", "state", "prompt", "actions", "actions_is_pad"}
        assert item["prompt"] == r["task"] == task.prompt
        assert torch.equal(item["images"]["base_0_rgb"], r["image"])
        assert torch.equal(item["images"]["left_wrist_0_rgb"], r["wrist_image"])
        assert item["image_masks"] == {"base_0_rgb": True, "left_wrist_0_rgb": True}
        np.testing.assert_array_equal(item["state"], r["state"].numpy())
        np.testing.assert_array_equal(item["actions"], r["actions"].numpy())
        np.testing.assert_array_equal(item["actions_is_pad"], r["actions_is_pad"].numpy())
    assert ds[n - 1]["actions_is_pad"].tolist() == [False] + [True] * (H - 1)


@pytest.mark.slow
def test_cached_items_equal_lerobot_rows(datasets, tasks):
    """cache_images=True serves every row from start-up caches: the same sample as lerobot's per-row read."""
    task = tasks["stackcube"]
    ds = ChunkedDataset(datasets["stackcube"], task.repo_id, ACTION_HORIZON)
    cached = ChunkedDataset(datasets["stackcube"], task.repo_id, ACTION_HORIZON, cache_images=True)
    assert cached.cache["image"].is_shared()  # spawned DataLoader workers map it instead of copying it
    for i in range(len(ds)):
        a, b = cached[i], ds[i]
        assert set(a) == set(b) and a["prompt"] == b["prompt"] and a["image_masks"] == b["image_masks"]
        for key, image in b["images"].items():
            assert torch.equal(a["images"][key], (image * 255).round().to(torch.uint8).permute(1, 2, 0)), (i, key)
        np.testing.assert_array_equal(a["state"], b["state"])
        np.testing.assert_array_equal(a["actions"], b["actions"])
        np.testing.assert_array_equal(a["actions_is_pad"], b["actions_is_pad"])


def test_chunked_dataset_needs_a_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a LeRobot dataset"):
        ChunkedDataset(tmp_path, "vla/none", 10)


# ----------------------------------------------------------------------------------------------------------------
# DataLoader


@pytest.mark.slow
def test_dataloader_batches(datasets, tasks, tokenizer_path):
    from vla.data.norm_stats import load_norm_stats
    from vla.data.tokenizer import PromptTokenizer
    from vla.data.transforms import ModelTransform, collate
    from vla.models import load_policy_config

    cfg = load_policy_config("pi05_tiny")
    root = datasets["pickcube"]
    transform = ModelTransform(cfg, load_norm_stats(root / "norm_stats.json"),
                               PromptTokenizer(tokenizer_path, cfg.max_token_len, discrete_state=True))
    ds = ChunkedDataset(root, tasks["pickcube"].repo_id, cfg.action_horizon, transform=transform)
    B = 8
    sampler = EpochSampler(len(ds), seed=0, rank=1, world_size=2)
    sampler.set_epoch(2, start=5)
    loader = make_dataloader(ds, B, sampler, num_workers=2, collate_fn=collate)
    expected_order = list(sampler)
    batches = list(loader)
    assert len(batches) == len(loader) == len(expected_order) // B  # drop_last

    first = batches[0]
    assert set(first["images"]) == set(first["image_masks"]) == {"base_0_rgb"}  # PickCube's stand-in wrist is dropped
    base = first["images"]["base_0_rgb"]
    assert base.shape == (B, 3, 224, 224) and base.dtype == torch.uint8
    assert first["image_masks"]["base_0_rgb"].all()
    assert first["tokens"].shape == first["token_mask"].shape == (B, cfg.max_token_len)
    assert first["state"].shape == (B, cfg.action_dim)
    assert first["actions"].shape == (B, cfg.action_horizon, cfg.action_dim)
    assert first["actions_is_pad"].shape == (B, cfg.action_horizon) and first["actions_is_pad"].dtype == torch.bool

    # the workers produced exactly the samples the sampler dealt, in order
    for b in (0, len(batches) - 1):
        direct = collate([ds[i] for i in expected_order[b * B:(b + 1) * B]])
        got = batches[b]
        for k in ("tokens", "token_mask", "state", "actions", "actions_is_pad"):
            assert torch.equal(got[k], direct[k]), k
        assert torch.equal(got["images"]["base_0_rgb"], direct["images"]["base_0_rgb"])

    # a decoded (cached) dataset forks its workers, which start in a blink and deal the very same batches
    cached = ChunkedDataset(root, tasks["pickcube"].repo_id, cfg.action_horizon, transform=transform, cache_images=True)
    forked = make_dataloader(cached, B, sampler, num_workers=2, collate_fn=collate)
    assert loader.multiprocessing_context.get_start_method() == "spawn"
    assert forked.multiprocessing_context.get_start_method() == "fork"
    for got, want in zip(forked, batches, strict=True):
        for k in ("tokens", "token_mask", "state", "actions", "actions_is_pad"):
            assert torch.equal(got[k], want[k]), k
        assert torch.equal(got["images"]["base_0_rgb"], want["images"]["base_0_rgb"])
