"""Typed schemas of conf/train.yaml and its `optim` and `hardware` groups, registered with Hydra's ConfigStore so that
a typo in an override fails at composition. The numbers live in conf/; defaults here mirror openpi's (spec §5)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from vla.data.config import TaskConfig
from vla.data.transforms import AugmentConfig
from vla.models.config import PolicyConfig


@dataclass
class OptimConfig:
    """AdamW + clip-by-global-norm + warmup/decay schedule + EMA (openpi optimizer.py, spec §5.1)."""

    name: str = "adamw_cosine"
    lr: float = 2.5e-5  # peak learning rate
    schedule: str = "cosine"  # cosine: warmup then cosine decay to decay_lr at decay_steps | constant: warmup then lr
    warmup_steps: int = 1000  # linear warmup from lr / (warmup_steps + 1) to lr (optax warmup_cosine_decay_schedule)
    decay_steps: int = 30000  # cosine: step at which decay_lr is reached (counts the warmup)
    decay_lr: float = 2.5e-6
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 1e-10  # openpi: "changing this to 0 can cause out-of-memory errors" (in JAX)
    clip_grad_norm: float = 1.0
    ema_decay: float | None = 0.99  # null: no EMA. EMA starts at the initial weights and updates every step


@dataclass
class HardwareConfig:
    """Where and how one run executes. `train.py` starts `num_processes` ranks itself unless started by torchrun."""

    name: str = "cpu"
    device: str = "cpu"  # cpu | cuda
    num_processes: int = 1  # ranks on this node (one per GPU)
    backend: str = "gloo"  # gloo (CPU) | nccl (GPU)
    micro_batch_size: int | None = None  # per-rank batch of one forward/backward; null: global batch / ranks
    precision: str = "fp32"  # compute dtype of FSDP's MixedPrecisionPolicy: fp32 | bf16 (master weights stay fp32)
    reshard_after_forward: bool = True  # True: ZeRO-3 (params re-gathered in backward); False: ZeRO-2 (more memory)
    activation_checkpointing: bool = False  # recompute each transformer / vision block in backward
    compile: bool = False  # torch.compile each block
    compile_vision: bool = False  # also torch.compile each SigLIP encoder layer (on in the GPU configs)
    num_workers: int = 2  # DataLoader workers per rank
    pin_memory: bool = False
    prefetch_factor: int = 4  # batches prefetched per worker
    nccl_env: dict[str, str] = field(default_factory=dict)  # environment set before the process group starts


@dataclass
class LoraConfig:
    """openpi's gemma_2b_lora / gemma_300m_lora: adapters on attention and MLP of the Gemma experts; every other
    parameter of the two experts is frozen; SigLIP and the action/time projections stay trainable."""

    enabled: bool = False
    vlm_rank: int = 16
    vlm_alpha: float = 16.0
    expert_rank: int = 32
    expert_alpha: float = 32.0
    init_std: float = 0.01  # both factors ~ N(0, std), as openpi


@dataclass
class SyntheticDataConfig:
    """Random batches of the real shapes instead of task.dataset_root: benchmarks and multi-GPU checks."""

    enabled: bool = False
    num_samples: int = 100_000
    cameras: list[str] = field(default_factory=lambda: ["base_0_rgb", "left_wrist_0_rgb"])  # others masked (absent)
    num_tokens: int = 200  # valid prompt tokens per sample (<= model.max_token_len)


@dataclass
class TrainConfig:
    task: TaskConfig = MISSING
    model: PolicyConfig = MISSING
    optim: OptimConfig = MISSING
    hardware: HardwareConfig = MISSING
    lora: LoraConfig = field(default_factory=LoraConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synthetic_data: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    run_root: str = "runs"
    run_name: str = MISSING  # run directory = run_root/run_name (multirun: Hydra's sweep dir/job subdir)
    seed: int = 42
    batch_size: int = 32  # global batch (all ranks, all accumulation steps), openpi's default
    num_steps: int = 30000  # optimizer steps
    log_interval: int = 100  # steps between TensorBoard / metrics.jsonl records (the loss is averaged over them)
    save_interval: int | None = 1000  # steps between checkpoints (the last step is always saved); null: never save
    keep_last: int = 1  # most recent checkpoints kept ...
    keep_period: int | None = 5000  # ... plus every checkpoint whose step is a multiple of this
    resume: bool = False  # continue from the newest checkpoint of the run directory
    cache_images: bool = False  # decode every frame once into shared memory (see vla.data.dataset.ChunkedDataset)
    use_augmentation: bool = True  # train-time image augmentation (spec §4.3)
    mask_padded_actions: bool = False  # chunk steps past the episode end count as zero loss (openpi keeps them)
    progress: bool = True  # progress bar on rank 0


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="optim", name="optim_schema", node=OptimConfig)
    cs.store(group="hardware", name="hardware_schema", node=HardwareConfig)
    cs.store(name="train_schema", node=TrainConfig)
