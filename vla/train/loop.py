"""The SFT loop of one rank: data, model (FSDP2), AdamW + schedule + EMA, logging, checkpoints, exact resume.

`_train` (setup, the loop, the stop) and `run_loop` (step / log / save until the last step or a stop request) are the
whole run in outline; the pieces follow them in that order: setup, step, log, save.

Randomness is a function of (seed, step, position in the global batch) only: the flow-matching noise and time and
the augmentation are drawn for the whole global batch from one generator shared by all ranks, each rank keeping its
own rows; the data order is a per-epoch permutation dealt round-robin to the ranks. So a run on N ranks with any
micro-batch size sees the same samples with the same noise as a run on 1 rank: only float reduction order differs.
"""

from __future__ import annotations

import logging
import resource
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from torch.distributed.device_mesh import DeviceMesh
from torch.profiler import record_function

from vla.configs import OptimConfig, TrainConfig
from vla.data.dataset import ChunkedDataset, EpochSampler, SyntheticDataset, make_dataloader
from vla.data.transforms import ModelTransform, augment, collate, move_to, num_augment_draws
from vla.models import build_policy
from vla.models.lora import apply_lora, lora_scales
from vla.models.pi0 import Pi0Policy, sample_flow_time
from vla.models.weights import read_pretrained
from vla.train.checkpoint import checkpoint_steps, has_weights, load_checkpoint, save_checkpoint
from vla.train.distributed import (
    all_reduce_max_,
    all_reduce_sum_,
    any_rank,
    destroy_distributed,
    full_tensor,
    init_distributed,
    init_mesh,
    num_nodes_started,
)
from vla.train.ema import EMA
from vla.train.metrics import MetricsLogger
from vla.train.optim import ShardedAdamW, clip_grad_norm_
from vla.train.parallel import parallelize
from vla.train.schedule import learning_rate

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    pass


class TrainingStopped(TrainingError):
    """The run was asked to stop (SIGTERM) and did so cleanly, its last step saved: `resume=true` continues it."""


class StopRequest:
    """SIGTERM, what schedulers send before preemption and what `timeout` and `kill` send, becomes a request to stop
    at the next step boundary with a checkpoint, instead of losing everything since the last periodic save. Installed
    only in the main thread (Python's rule for signal handlers); the previous handler comes back on exit."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclass(frozen=True)
class Layout:
    """This rank's share of the global batch: `world` ranks x `accum` micro-steps x `micro` rows."""

    rank: int
    world: int
    micro: int
    accum: int
    device: torch.device

    def rows(self, m: int) -> torch.Tensor:
        """Global-batch positions of this rank's rows in micro-step `m`: they pick its share of the step's draws."""
        return (m * self.micro + torch.arange(self.micro, device=self.device)) * self.world + self.rank


def batch_layout(cfg: TrainConfig, world_size: int) -> tuple[int, int]:
    """(micro batch per rank, accumulation steps) for the global batch; errors name the settings."""
    micro = cfg.hardware.micro_batch_size or cfg.batch_size // world_size
    if micro < 1 or cfg.batch_size % (micro * world_size):
        raise ValueError(
            f"batch_size={cfg.batch_size} is not a multiple of hardware.micro_batch_size={micro} x {world_size} ranks"
        )
    return micro, cfg.batch_size // (micro * world_size)


def train(cfg: TrainConfig, run_dir: str | Path) -> dict:
    """Run (or resume) training in `run_dir`; returns the last logged metrics (rank 0)."""
    rank, world, device, created = init_distributed(cfg.hardware)
    try:
        with StopRequest() as stop:
            return _train(cfg, Path(run_dir), rank, world, device, stop)
    finally:
        if created:
            destroy_distributed()


def _train(cfg: TrainConfig, run_dir: Path, rank: int, world: int, device: torch.device, stop: StopRequest) -> dict:
    layout = Layout(rank, world, *batch_layout(cfg, world), device)
    check_config(cfg, run_dir)
    mesh = init_mesh(device, world, num_nodes_started(cfg.hardware, world))
    run_dir.mkdir(parents=True, exist_ok=True)
    run = setup(cfg, run_dir, layout, mesh)
    try:
        last = run_loop(cfg, run_dir, run, layout, stop)
    finally:
        run.data.close()
    if run.step < cfg.num_steps:  # left the loop on a stop request
        saved = f"saved {run_dir / 'checkpoints' / str(run.step)}; resume=true continues it" if cfg.save_interval \
            else "nothing saved (save_interval=null)"
        raise TrainingStopped(f"stopped by SIGTERM after step {run.step} of {cfg.num_steps}: {saved}")
    return last


def run_loop(cfg: TrainConfig, run_dir: Path, run: Run, layout: Layout, stop: StopRequest) -> dict:
    """Step, log, save until the last step or a stop request; returns the last logged metrics."""
    metrics = MetricsLogger(run_dir, enabled=layout.rank == 0)
    progress = progress_bar(cfg, run.step) if layout.rank == 0 and cfg.progress else None
    window = LogWindow(layout.device)
    last: dict = {}
    while run.step < cfg.num_steps:
        lr = learning_rate(run.step, cfg.optim)
        step_loss, grad_norm = train_step(run, cfg, layout, lr)
        run.step += 1
        window.add(run.step, step_loss, grad_norm)
        if progress is not None:
            progress.update(1)

        # a stop request is acted on at once by a single rank; several ranks agree on it at the next log interval
        stopping = stop.requested and layout.world == 1
        at_log = run.step % cfg.log_interval == 0 or stopping or run.step == cfg.num_steps
        at_save = save_due(cfg, run.step)
        if at_log or at_save:
            # the only host syncs: once per log interval (and before every save, so no NaN reaches disk)
            stopping = check_finite_and_agree_on_stop(window, stop, stopping, layout, run_dir)
            at_save = at_save or (stopping and cfg.save_interval is not None)
            last = window.record(run, cfg, lr, layout.world)
            metrics.log(last, run.step)
            if progress is not None:
                progress.set_postfix(loss=f"{last['train/loss']:.4f}", lr=f"{lr:.2e}")
            window.reset()
        if at_save:
            save(run, cfg, run_dir, layout, export_weights=export_due(cfg, run.step))
            window.start = time.perf_counter()  # saving is not training time
        if stopping:
            break
    if progress is not None:
        progress.close()
    metrics.close()
    return last


# ---- setup


def check_config(cfg: TrainConfig, run_dir: Path) -> None:
    """Settings that would otherwise fail mid-run, or silently destroy a previous run's checkpoints."""
    pretrained = cfg.model.pretrained
    if pretrained and (Path(pretrained) / "state").is_dir() and not has_weights(pretrained):
        raise ValueError(f"model.pretrained={pretrained}: this training checkpoint holds only the resume state "
                         "(state/), no model.safetensors (export_interval): point at one of its run's checkpoints "
                         "that has weights, or continue that run with resume=true")
    if not cfg.resume and checkpoint_steps(run_dir):
        raise ValueError(f"{run_dir} already holds checkpoints {checkpoint_steps(run_dir)}: pass resume=true to "
                         "continue that run, or choose another run_name")


@dataclass
class Run:
    """What the loop updates: model, optimizer, EMA, the generator of the global-batch draws, the data and the step."""

    policy: Pi0Policy
    trainable: list[torch.nn.Parameter]
    optimizer: ShardedAdamW
    ema: EMA | None
    lora_scales: dict[str, float]
    gen: torch.Generator
    data: TrainData
    config_yaml: str
    step: int = 0


def setup(cfg: TrainConfig, run_dir: Path, layout: Layout, mesh: DeviceMesh) -> Run:
    """Data, model, optimizer, EMA and generator, restored from the newest checkpoint with resume=true; config.yaml."""
    data = build_data(cfg, layout)
    policy, scales = build_model(cfg, mesh, layout.device, layout.rank)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, cfg.optim, layout.device)
    ema = EMA(policy, cfg.optim.ema_decay) if cfg.optim.ema_decay is not None else None
    gen = torch.Generator(device=layout.device).manual_seed(cfg.seed)  # same on every rank: global-batch draws
    config_yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    run = Run(policy, trainable, optimizer, ema, scales, gen, data, config_yaml)
    if cfg.resume:
        resume(run, run_dir, layout)
    if layout.rank == 0:
        (run_dir / "config.yaml").write_text(config_yaml)
        log_summary(cfg, run, layout, run_dir)
    return run


def build_dataset(cfg: TrainConfig) -> tuple[torch.utils.data.Dataset, dict[str, Path], int]:
    """(dataset, files copied into every checkpoint, number of episodes) of the task, or synthetic batches."""
    task, mcfg = cfg.task, cfg.model
    if cfg.synthetic_data.enabled:
        sd = cfg.synthetic_data
        return SyntheticDataset(mcfg, sd.num_samples, sd.cameras, sd.num_tokens, seed=cfg.seed), {}, 0
    if not (Path(task.dataset_root) / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"dataset {task.dataset_root} not found: run `python convert.py task={task.name}` "
                                "first, or point task.dataset_root at a converted dataset")
    state_noise = cfg.augment.state_noise_std if cfg.use_augmentation else 0.0
    transform = ModelTransform.load(mcfg, task.norm_stats, state_noise_std=state_noise,
                                    state_noise_dims=cfg.augment.state_noise_dims)
    dataset = ChunkedDataset(task.dataset_root, task.repo_id, mcfg.action_horizon, transform, cfg.cache_images)
    for key, dims in (("state", task.state_dim), ("actions", task.action_dim)):
        found = tuple(dataset.lerobot.meta.features[key]["shape"])
        if found != (dims,):
            raise ValueError(f"{task.dataset_root}: feature {key!r} has shape {found}, task {task.name} expects "
                             f"({dims},); re-run `python convert.py task={task.name}`")
    extra_files = {"norm_stats.json": Path(task.norm_stats), "tokenizer.model": transform.tokenizer.model_path}
    return dataset, extra_files, dataset.num_episodes


class TrainData:
    """This rank's batches in order, and the position in the epoch that a checkpoint stores. An optimizer step never
    mixes two epochs, whatever the micro-batch / rank layout: an epoch is a whole number of steps."""

    def __init__(self, dataset: torch.utils.data.Dataset, extra_files: dict[str, Path], num_episodes: int,
                 sampler: EpochSampler, loader: torch.utils.data.DataLoader, layout: Layout):
        self.dataset, self.extra_files, self.num_episodes = dataset, extra_files, num_episodes
        self.sampler, self.loader, self.micro, self.world = sampler, loader, layout.micro, layout.world
        self.batches_per_epoch = sampler.per_rank // (layout.micro * layout.accum) * layout.accum
        self.epoch, self.batch_in_epoch = 0, 0
        self._batches = self._iterate()  # starts at the first next(): after a resume has moved the position

    def _iterate(self) -> Iterator[dict]:
        while True:
            self.sampler.set_epoch(self.epoch, start=self.batch_in_epoch * self.micro)
            for batch in self.loader:
                self.batch_in_epoch += 1
                yield batch
                if self.batch_in_epoch == self.batches_per_epoch:
                    break
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def next_batch(self) -> dict:
        return next(self._batches)

    def samples_in_epoch(self) -> int:
        """The position in global samples (a multiple of the global batch): any layout resumes it."""
        return self.batch_in_epoch * self.micro * self.world

    def seek(self, epoch: int, samples_in_epoch: int) -> None:
        self.epoch, self.batch_in_epoch = epoch, samples_in_epoch // (self.micro * self.world)

    def epochs_done(self) -> float:
        return self.epoch + self.batch_in_epoch / self.batches_per_epoch

    def close(self) -> None:
        """Shut the loader's workers down now. The batch generator and this object refer to each other, so without
        this they would wait for the garbage collector; at interpreter exit that comes after multiprocessing has
        asked the workers to terminate with SIGTERM, which they ignore (vla/data/dataset.py), and the exit hangs."""
        self._batches.close()
        self._batches = self.loader = None


def build_data(cfg: TrainConfig, layout: Layout) -> TrainData:
    dataset, extra_files, num_episodes = build_dataset(cfg)
    sampler = EpochSampler(len(dataset), seed=cfg.seed, rank=layout.rank, world_size=layout.world)
    loader = make_dataloader(
        dataset, layout.micro, sampler, cfg.hardware.num_workers, collate, cfg.hardware.pin_memory,
        cfg.hardware.prefetch_factor, seed=cfg.seed,
    )
    data = TrainData(dataset, extra_files, num_episodes, sampler, loader, layout)
    if data.batches_per_epoch < 1:
        raise ValueError(f"{cfg.task.dataset_root}: {len(dataset)} frames give no batch of {layout.micro} per rank")
    if layout.rank == 0 and cfg.synthetic_data.enabled:
        log.info("synthetic data: random batches, cameras %s, %d prompt tokens", cfg.synthetic_data.cameras,
                 cfg.synthetic_data.num_tokens)
    return data


def initial_weights(cfg: TrainConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """Rank 0's full starting state dict: the pretrained checkpoint, or the from-scratch init drawn from `cfg.seed`
    (identical for every world size), plus LoRA adapters when enabled. Built on `device` (a GPU initialises the 3B
    model in seconds; the CPU takes minutes)."""
    torch.manual_seed(cfg.seed)
    with torch.device(device):
        policy = build_policy(cfg.model)
    if cfg.model.pretrained:
        state = read_pretrained(cfg.model.pretrained, cfg.model, policy.state_dict())
        policy.load_state_dict(state, strict=True)
        log.info("loaded pretrained weights from %s", cfg.model.pretrained)
    if cfg.lora.enabled:
        lc = cfg.lora
        apply_lora(policy, lc.vlm_rank, lc.vlm_alpha, lc.expert_rank, lc.expert_alpha, lc.init_std)
    return policy.state_dict()


def build_model(cfg: TrainConfig, mesh, device: torch.device, rank: int) -> tuple[Pi0Policy, dict[str, float]]:
    """Meta-device model -> LoRA -> parallelize -> allocate -> rank 0's weights broadcast into the shards."""
    with torch.device("meta"):
        policy = build_policy(cfg.model)
        scales = {}
        if cfg.lora.enabled:
            lc = cfg.lora
            apply_lora(policy, lc.vlm_rank, lc.vlm_alpha, lc.expert_rank, lc.expert_alpha, lc.init_std)
            scales = lora_scales(policy)
    unused = set(policy.unused_parameter_names())
    for name, p in policy.named_parameters():  # they get no gradient: no optimizer state, no EMA
        if name in unused:
            p.requires_grad_(False)
    parallelize(policy, cfg.hardware, mesh)
    policy.to_empty(device=device)
    policy.init_buffers()
    state = initial_weights(cfg, device) if rank == 0 else {}
    set_model_state_dict(policy, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return policy, scales


def build_optimizer(trainable: list[torch.nn.Parameter], oc: OptimConfig, device: torch.device) -> ShardedAdamW:
    # fused on GPU: one kernel, no full-size temporaries (foreach's sqrt/div lists would add ~1x the params)
    fused = device.type == "cuda"
    return ShardedAdamW(
        trainable, lr=learning_rate(0, oc), betas=tuple(oc.betas), eps=oc.eps, weight_decay=oc.weight_decay,
        fused=fused, foreach=not fused,
    )


def resume(run: Run, run_dir: Path, layout: Layout) -> None:
    """Continue from the run's newest checkpoint: model, optimizer and EMA from its `state/` (consolidated weights
    are not needed), the step, the data position and the generator."""
    steps = checkpoint_steps(run_dir)
    if not steps:
        if layout.rank == 0:
            log.info("resume=true but %s has no checkpoint: starting from step 0", run_dir)
        return
    ckpt = run_dir / "checkpoints" / str(steps[-1])
    st = load_checkpoint(ckpt, run.policy, run.optimizer, run.ema)
    run.step = st["step"]
    run.data.seek(st["epoch"], st["samples_in_epoch"])
    run.gen.set_state(st["generator"].to(run.gen.get_state().device))
    if layout.rank == 0:
        log.info("resumed from %s (step %d, epoch %d, batch %d)", ckpt, run.step, run.data.epoch,
                 run.data.batch_in_epoch)


def log_summary(cfg: TrainConfig, run: Run, layout: Layout, run_dir: Path) -> None:
    n_params = sum(p.numel() for p in run.policy.parameters())
    n_train = sum(p.numel() for p in run.trainable)
    mesh = next(run.policy.parameters()).device_mesh  # the mesh FSDP2 sharded the parameters over
    names = mesh.mesh_dim_names or [f"dim{i}" for i in range(mesh.ndim)]
    sharding = " x ".join(f"{name} {size}" for name, size in zip(names, mesh.shape))
    log.info(
        "%s on %s: %d rank(s) x micro-batch %d x %d accumulation = batch %d; %s (mesh %s); %s params (%s trainable); "
        "%d frames, %d episodes; run dir %s",
        cfg.model.name, cfg.task.name, layout.world, layout.micro, layout.accum, cfg.batch_size,
        "HSDP" if mesh.ndim > 1 else "FSDP", sharding, f"{n_params:,}", f"{n_train:,}", len(run.data.dataset),
        run.data.num_episodes, run_dir,
    )


def progress_bar(cfg: TrainConfig, step: int):
    from tqdm import tqdm

    return tqdm(total=cfg.num_steps, initial=step, desc=f"train {cfg.task.name}", unit="step", dynamic_ncols=True)


# ---- step


def train_step(run: Run, cfg: TrainConfig, layout: Layout, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the global batch: `accum` micro-steps of forward + backward (the gradients are reduced
    across ranks in the last one only), clipping, AdamW, EMA. Returns the step's loss and gradient norm, left on the
    device (no host sync)."""
    mcfg, device = cfg.model, layout.device
    run.policy.train()
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    # global-batch draws for this step; this rank keeps its rows of each micro-step (layout.rows)
    noise_all = torch.randn(cfg.batch_size, mcfg.action_horizon, mcfg.action_dim, generator=run.gen, device=device)
    time_all = sample_flow_time(cfg.batch_size, device, run.gen)
    aug_uniforms = torch.rand(num_augment_draws(mcfg.image_keys), cfg.batch_size, generator=run.gen, device=device)
    step_loss = torch.zeros((), device=device)
    for m in range(layout.accum):  # the record_function ranges name the phases bench/trace_summary.py reports
        with record_function("data"):
            batch = move_to(run.data.next_batch(), device)
        rows = layout.rows(m)
        if cfg.use_augmentation:
            with record_function("augment"):
                batch["images"] = augment(batch["images"], cfg.augment, keys=mcfg.image_keys,
                                          uniforms=aug_uniforms, select=rows)
        run.policy.set_requires_gradient_sync(m == layout.accum - 1)
        with record_function("forward"):
            loss_BH = run.policy(batch, noise=noise_all[rows], time=time_all[rows])
            if cfg.mask_padded_actions:  # padded chunk steps count as zero (a fixed denominator: layout-invariant)
                loss = (loss_BH * (~batch["actions_is_pad"]).float()).mean()
            else:
                loss = loss_BH.mean()
        with record_function("backward"):
            (loss / layout.accum).backward()
        step_loss += loss.detach() / layout.accum
    with record_function("clip_grad_norm"):
        grad_norm = clip_grad_norm_(run.trainable, cfg.optim.clip_grad_norm)
    with record_function("optimizer"):
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        with record_function("ema"):
            run.ema.update()
    return step_loss, grad_norm


# ---- log


class LogWindow:
    """Sums over the steps since the last record, kept on the device so that a step never waits for the host, and
    the first step whose loss or gradient norm was not finite."""

    def __init__(self, device: torch.device):
        self.device = device
        self.loss_sum = torch.zeros((), device=device)
        self.grad_norm_sum = torch.zeros((), device=device)
        self.first_bad_step = torch.full((), -1, device=device, dtype=torch.long)
        self.reset()

    def add(self, step: int, step_loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.steps += 1
        bad = ~torch.isfinite(step_loss) | ~torch.isfinite(grad_norm)
        self.first_bad_step = torch.where(bad & (self.first_bad_step < 0), torch.full_like(self.first_bad_step, step),
                                          self.first_bad_step)
        self.loss_sum += step_loss
        self.grad_norm_sum += grad_norm

    def record(self, run: Run, cfg: TrainConfig, lr: float, world: int) -> dict[str, float]:
        """The window's metrics; a collective (the loss is averaged over the ranks, the parameter norm gathered)."""
        loss_mean = all_reduce_sum_(self.loss_sum.clone())
        elapsed = time.perf_counter() - self.start
        param_norm = full_tensor(torch.nn.utils.get_total_norm(list(run.policy.parameters()), foreach=True))
        return {
            "train/loss": loss_mean.item() / (world * self.steps),
            "train/grad_norm": self.grad_norm_sum.item() / self.steps,
            "train/param_norm": param_norm.item(),
            "train/lr": lr,
            "perf/samples_per_s": self.steps * cfg.batch_size / elapsed,
            "perf/step_time_s": elapsed / self.steps,
            "perf/peak_memory_gb": peak_memory_gb(self.device),
            "train/epoch": run.data.epochs_done(),
        }

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.grad_norm_sum.zero_()
        self.steps, self.start = 0, time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)


def check_finite_and_agree_on_stop(window: LogWindow, stop: StopRequest, stopping: bool, layout: Layout,
                                   run_dir: Path) -> bool:
    """Every rank stops together, without saving, if any saw a non-finite loss or gradient; with several ranks, they
    also agree on whether any was asked to stop (the returned `stopping`; one rank decided alone already)."""
    all_reduce_max_(window.first_bad_step)
    if layout.world > 1:
        stopping = any_rank(stop.requested, layout.device)
    bad_step = int(window.first_bad_step.item())
    if bad_step >= 0:
        raise TrainingError(
            f"non-finite loss or gradient at step {bad_step} (run dir {run_dir}); stopped without saving it"
        )
    return stopping


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (process peak RSS)


# ---- save


def export_due(cfg: TrainConfig, step: int) -> bool:
    """Consolidated weights every `export_interval` steps and at the last step (a stop request's checkpoint, written
    within a scheduler's grace period, holds only what resume needs unless it falls on one of these)."""
    return step == cfg.num_steps or (cfg.export_interval is not None and step % cfg.export_interval == 0)


def save_due(cfg: TrainConfig, step: int) -> bool:
    """A checkpoint every `save_interval` steps and at every export; none at all with save_interval=null."""
    return cfg.save_interval is not None and (step % cfg.save_interval == 0 or export_due(cfg, step))


def save(run: Run, cfg: TrainConfig, run_dir: Path, layout: Layout, *, export_weights: bool) -> None:
    train_state = {
        "step": run.step, "epoch": run.data.epoch, "samples_in_epoch": run.data.samples_in_epoch(),
        "generator": run.gen.get_state().cpu(),
    }
    path = save_checkpoint(
        run_dir, run.step, run.policy, run.optimizer, run.ema, train_state, run.data.extra_files, run.config_yaml,
        run.lora_scales, cfg.keep_last, cfg.keep_period, export_weights=export_weights,
    )
    if layout.rank == 0:
        log.info("step %d: saved %s%s", run.step, path, "" if export_weights else " (resume state only)")
