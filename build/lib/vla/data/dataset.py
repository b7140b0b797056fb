"""Training batches from a converted LeRobot dataset: frames with H-step action chunks, as observation-schema samples
(see vla.data.transforms), optionally passed through the model transform; and the DataLoader that feeds training.

Reading goes through lerobot's own `LeRobotDataset` (one row per item: this frame's images, decoded from PNG or video,
state and task). The action chunk a_t .. a_{t+H-1} is what `LeRobotDataset(delta_timestamps={"actions": [k/fps]})`
returns — indices past the episode end clamped to its last frame and flagged in `actions_is_pad` — but it is taken
from the actions column cached once at start-up: lerobot's chunk query decodes the images of all H rows as well
(~180 ms per sample for H=50 with PNG frames, against ~3 ms for the row alone). A test pins the two to each other.

`cache_images=True` decodes every frame once at start-up (PNG through PIL, video through PyAV, which lerobot's own
pyav backend also uses) into uint8 tensors in shared memory, and serves rows from cached columns without lerobot's
per-item decode: a few hundred MB for a few hundred ManiSkill demos at 128 px, and no video decoder needed per step
(lerobot's per-row video query is its slowest path, and on hosts without torchcodec it is the only one).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from vla.data.lerobot import schema_from_row
from vla.data.schema import DATASET_IMAGE_KEYS, DATASET_MASK_KEYS


def _column(table, name: str) -> np.ndarray:
    """A numeric column of an arrow table as numpy: (N,) for scalars, (N, D) for fixed-size lists."""
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    return col.to_numpy(zero_copy_only=False)


class ChunkedDataset(torch.utils.data.Dataset):
    """Frame i of a LeRobot dataset as a schema sample with the action chunk of `action_horizon` steps:
    {images, image_masks, state, prompt, actions (H, A), actions_is_pad (H,)}, then `transform` (if given)."""

    def __init__(
        self,
        root: str | Path,
        repo_id: str,
        action_horizon: int,
        transform: Callable[[dict], dict] | None = None,
        cache_images: bool = False,
    ):
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        self.root = Path(root)
        if not (self.root / "meta" / "info.json").is_file():
            raise FileNotFoundError(f"{self.root}: not a LeRobot dataset (no meta/info.json); run convert.py first")
        self.lerobot = LeRobotDataset(repo_id, root=self.root)  # no delta_timestamps: rows are read one at a time
        self.action_horizon = action_horizon
        self.transform = transform
        table = self.lerobot.hf_dataset.data
        self.actions = _column(table, "actions").astype(np.float32)
        episode = _column(table, "episode_index")
        # [start, end) of each frame's episode; rows are stored episode by episode
        change = np.flatnonzero(np.diff(episode)) + 1
        starts, ends = np.r_[0, change], np.r_[change, len(episode)]
        lengths = ends - starts
        self.episode_end = np.repeat(ends, lengths)
        self.num_episodes = len(starts)
        self.cache: dict | None = None
        if cache_images:
            meta = self.lerobot.meta
            masks = {f: _column(table, f).astype(bool) for f in DATASET_MASK_KEYS.values() if f in meta.features}
            self.cache = {
                "state": _column(table, "state").astype(np.float32),
                "task": np.asarray(meta.tasks.index)[_column(table, "task_index")],
                **masks,
                **{f: self._cached_frames(f, masks.get(DATASET_MASK_KEYS.get(key, "")))
                   for key, f in DATASET_IMAGE_KEYS.items() if f in meta.features},
            }

    def _cached_frames(self, feature: str, mask: np.ndarray | None) -> torch.Tensor:
        if mask is not None and not mask.any():
            # a camera the task does not have (stored as zeros, mask False everywhere): one shared zero frame serves
            # every row, which halves the cache and its start-up decode for the single-camera tasks
            h, w, _ = self.lerobot.meta.features[feature]["shape"]
            return torch.zeros((1, h, w, 3), dtype=torch.uint8).share_memory_().expand(len(mask), h, w, 3)
        return decode_all_frames(self.lerobot, feature)

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def fork_safe(self) -> bool:
        """Loader workers may be forked: every frame is already decoded, so no video decoder state is inherited."""
        return self.cache is not None

    def action_chunk(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        steps = i + np.arange(self.action_horizon)
        end = self.episode_end[i]
        return self.actions[np.minimum(steps, end - 1)], steps >= end

    def row(self, i: int) -> dict:
        """Row i as `LeRobotDataset[i]` has it (images: uint8 HWC when cached, float CHW in [0, 1] otherwise)."""
        if self.cache is None:
            return self.lerobot[i]
        return {k: v[i] for k, v in self.cache.items()}

    def __getitem__(self, i: int) -> dict:
        sample = schema_from_row(self.row(i))
        sample["actions"], sample["actions_is_pad"] = self.action_chunk(i)
        return self.transform(sample) if self.transform is not None else sample


def decode_all_frames(dataset, feature: str) -> torch.Tensor:
    """Every frame of image/video `feature` of a LeRobotDataset as uint8 (N, H, W, 3) in shared memory (row order).

    Video rows are located as lerobot's own query does: the episode's `from_timestamp` in its (shared) mp4 file plus
    the row's timestamp, times fps, is the frame number in that file."""
    import io

    from PIL import Image

    meta, table = dataset.meta, dataset.hf_dataset.data
    h, w, _ = meta.features[feature]["shape"]
    out = torch.empty((table.num_rows, h, w, 3), dtype=torch.uint8).share_memory_()  # filled in place
    view = out.numpy()
    if feature not in meta.video_keys:
        for i, cell in enumerate(table.column(feature).to_pylist()):  # {"bytes": PNG, "path": ...}
            view[i] = np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))
        return out

    import av

    episode = _column(table, "episode_index")
    timestamp = _column(table, "timestamp")
    files: dict[Path, list[int]] = {}  # video file -> rows it holds
    frame_in_file = np.empty(len(episode), dtype=np.int64)
    for e in np.unique(episode):
        rows = np.flatnonzero(episode == e)
        start = meta.episodes[int(e)][f"videos/{feature}/from_timestamp"]
        frame_in_file[rows] = np.round((start + timestamp[rows]) * meta.fps).astype(np.int64)
        files.setdefault(dataset.root / meta.get_video_file_path(int(e), feature), []).extend(rows.tolist())
    for path, rows in files.items():
        rows = np.asarray(rows)
        rows = rows[np.argsort(frame_in_file[rows], kind="stable")]  # in decoding order
        j, decoded = 0, 0
        with av.open(str(path)) as container:
            container.streams.video[0].thread_type = "AUTO"  # frame + slice threads; frames still come in order
            for decoded, frame in enumerate(container.decode(video=0), start=1):
                if j < len(rows) and frame_in_file[rows[j]] == decoded - 1:
                    image = frame.to_ndarray(format="rgb24")
                    while j < len(rows) and frame_in_file[rows[j]] == decoded - 1:
                        view[rows[j]] = image
                        j += 1
        if j < len(rows):
            raise ValueError(f"{path}: {decoded} frames decoded, rows need {int(frame_in_file[rows].max()) + 1}")
    return out


class EpochSampler(Sampler[int]):
    """Shuffled indices for one rank: epoch e is a permutation drawn from (seed, e), dealt round-robin across ranks
    (each rank sees len // world_size samples, the same count on every rank). `set_epoch(e, start)` begins epoch e at
    this rank's sample `start`, which is how a resumed run continues from its exact data position."""

    def __init__(self, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if num_samples < world_size:
            raise ValueError(f"dataset of {num_samples} samples is smaller than world size {world_size}")
        self.num_samples, self.seed, self.rank, self.world_size, self.shuffle = num_samples, seed, rank, world_size, shuffle
        self.per_rank = num_samples // world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.per_rank - self.start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        mine = order[self.rank::self.world_size][: self.per_rank]
        return iter(mine[self.start:].tolist())


def _ignore_sigterm(worker_id: int) -> None:
    """Loader workers leave SIGTERM to the training process: `timeout` and schedulers signal the whole process
    group, and a worker dying first would make the DataLoader raise before the trainer saves its checkpoint
    (train/loop.py StopRequest). Workers still end with the trainer: the DataLoader shuts them down, or they see
    their parent gone."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_dataloader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    sampler: Sampler[int],
    num_workers: int = 2,
    collate_fn: Callable | None = None,
    pin_memory: bool = False,
    prefetch_factor: int = 4,
    seed: int = 0,
) -> DataLoader:
    """Workers are started with 'spawn' (forked workers inherit torchcodec's decoder state and crash on video datasets),
    or forked when the dataset says it is `fork_safe` (decoded into memory: 0.2 s to the first batch instead of 12 s of
    imports per spawned worker on a 2-core CPU), and kept alive across epochs. They draw no random numbers
    (augmentation runs on the batch, on the training device), so the data a step sees depends only on the sampler."""
    kwargs = {}
    if num_workers > 0:
        start = "fork" if getattr(dataset, "fork_safe", False) else "spawn"
        kwargs = dict(
            multiprocessing_context=start, persistent_workers=True, prefetch_factor=prefetch_factor,
            worker_init_fn=_ignore_sigterm,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


class SyntheticDataset(torch.utils.data.Dataset):
    """Random model samples with the real shapes (benchmarks, multi-GPU checks without a dataset): uint8 images for
    `cameras` (the others absent, i.e. masked), `num_tokens` valid prompt tokens, normalized state and actions.
    Item i is a function of (seed, i) only."""

    fork_safe = True  # numbers made from (seed, index): nothing a forked worker could inherit badly

    def __init__(self, cfg, num_samples: int, cameras: list[str], num_tokens: int, seed: int = 0):
        if num_tokens > cfg.max_token_len:
            raise ValueError(f"synthetic num_tokens={num_tokens} > model.max_token_len={cfg.max_token_len}")
        self.cfg, self.num_samples, self.cameras, self.num_tokens, self.seed = cfg, num_samples, cameras, num_tokens, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        cfg, S, L = self.cfg, self.cfg.vision.image_size, self.cfg.max_token_len
        tokens = torch.randint(1, cfg.vocab_size, (L,), generator=g)
        mask = torch.arange(L) < self.num_tokens
        return {
            "images": {k: torch.randint(0, 256, (3, S, S), dtype=torch.uint8, generator=g) for k in self.cameras},
            "image_masks": {k: torch.tensor(True) for k in self.cameras},
            "tokens": tokens * mask,
            "token_mask": mask,
            "state": torch.randn(cfg.action_dim, generator=g),
            "actions": torch.randn(cfg.action_horizon, cfg.action_dim, generator=g),
            "actions_is_pad": torch.zeros(cfg.action_horizon, dtype=torch.bool),
        }
