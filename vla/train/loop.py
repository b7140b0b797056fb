"""The SFT loop of one rank: data, model (FSDP2), AdamW + schedule + EMA, logging, checkpoints, exact resume.

Randomness is a function of (seed, step, position in the global batch) only: the flow-matching noise and time and
the augmentation are drawn for the whole global batch from one generator shared by all ranks, each rank keeping its
own rows; the data order is a per-epoch permutation dealt round-robin to the ranks. So a run on N ranks with any
micro-batch size sees the same samples with the same noise as a run on 1 rank: only float reduction order differs.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.profiler import record_function

from vla.data.dataset import ChunkedDataset, EpochSampler, SyntheticDataset, make_dataloader
from vla.data.transforms import ModelTransform, augment, collate, move_to, num_augment_draws
from vla.models import build_policy
from vla.models.lora import apply_lora, lora_scales
from vla.models.pi0 import Pi0Policy, sample_flow_time
from vla.models.weights import read_pretrained
from vla.train.checkpoint import checkpoint_steps, load_checkpoint, save_checkpoint
from vla.configs import TrainConfig
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


def batch_layout(cfg: TrainConfig, world_size: int) -> tuple[int, int]:
    """(micro batch per rank, accumulation steps) for the global batch; errors name the settings."""
    micro = cfg.hardware.micro_batch_size or cfg.batch_size // world_size
    if micro < 1 or cfg.batch_size % (micro * world_size):
        raise ValueError(
            f"batch_size={cfg.batch_size} is not a multiple of hardware.micro_batch_size={micro} x {world_size} ranks"
        )
    return micro, cfg.batch_size // (micro * world_size)


def init_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device, bool]:
    """Join the process group started by torchrun / train.py's launcher, or form a group of one. The last value says
    whether this call created the group (and so `train` destroys it); a caller that runs several trainings in one
    process (bench/train_step.py) creates it once, since re-creating the default group under torchrun can read the
    previous group's rendezvous keys (seen as "Gloo connectFullMesh failed" / a rank exiting on the second setting)."""
    hw = cfg.hardware
    if "RANK" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
    else:
        rank, world, local_rank = 0, 1, 0
    if hw.device == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"hardware={hw.name} asks for CUDA but no GPU is visible (use hardware=cpu)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    created = not dist.is_initialized()
    if created:
        if "RANK" in os.environ:
            # 30 min: the other ranks wait at a barrier while rank 0 writes the consolidated weights (2 x 13 GB)
            dist.init_process_group(hw.backend, device_id=device if hw.device == "cuda" else None,
                                    timeout=timedelta(minutes=30))
        else:
            dist.init_process_group(hw.backend, store=dist.HashStore(), rank=0, world_size=1)
    return rank, world, device, created


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


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (process peak RSS)


def train(cfg: TrainConfig, run_dir: str | Path) -> dict:
    """Run (or resume) training in `run_dir`; returns the last logged metrics (rank 0)."""
    rank, world, device, created = init_distributed(cfg)
    try:
        with StopRequest() as stop:
            return _train(cfg, Path(run_dir), rank, world, device, stop)
    finally:
        if created:
            dist.destroy_process_group()


def check_config(cfg: TrainConfig, run_dir: Path) -> None:
    """Settings that would otherwise fail mid-run, or silently destroy a previous run's checkpoints."""
    if not cfg.resume and checkpoint_steps(run_dir):
        raise ValueError(f"{run_dir} already holds checkpoints {checkpoint_steps(run_dir)}: pass resume=true to "
                         "continue that run, or choose another run_name")


def _train(cfg: TrainConfig, run_dir: Path, rank: int, world: int, device: torch.device, stop: StopRequest) -> dict:
    micro, accum = batch_layout(cfg, world)
    check_config(cfg, run_dir)
    mesh = init_device_mesh(device.type, (world,))
    run_dir.mkdir(parents=True, exist_ok=True)
    task, mcfg = cfg.task, cfg.model

    # ---- data
    if cfg.synthetic_data.enabled:
        sd = cfg.synthetic_data
        dataset = SyntheticDataset(mcfg, sd.num_samples, sd.cameras, sd.num_tokens, seed=cfg.seed)
        extra_files, num_episodes = {}, 0
    else:
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
        num_episodes = dataset.num_episodes
    sampler = EpochSampler(len(dataset), seed=cfg.seed, rank=rank, world_size=world)
    # whole optimizer steps per epoch: a step never mixes two epochs, whatever the micro-batch / rank layout
    batches_per_epoch = sampler.per_rank // (micro * accum) * accum
    if batches_per_epoch < 1:
        raise ValueError(f"{task.dataset_root}: {len(dataset)} frames give no batch of {micro} per rank")
    if rank == 0 and cfg.synthetic_data.enabled:
        log.info("synthetic data: random batches, cameras %s, %d prompt tokens", cfg.synthetic_data.cameras,
                 cfg.synthetic_data.num_tokens)
    loader = make_dataloader(
        dataset, micro, sampler, cfg.hardware.num_workers, collate, cfg.hardware.pin_memory,
        cfg.hardware.prefetch_factor, seed=cfg.seed,
    )

    # ---- model, optimizer, EMA
    policy, scales = build_model(cfg, mesh, device, rank)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    oc = cfg.optim
    # fused on GPU: one kernel, no full-size temporaries (foreach's sqrt/div lists would add ~1x the params)
    fused = device.type == "cuda"
    optimizer = ShardedAdamW(
        trainable, lr=learning_rate(0, oc), betas=tuple(oc.betas), eps=oc.eps, weight_decay=oc.weight_decay,
        fused=fused, foreach=not fused,
    )
    ema = EMA(policy, oc.ema_decay) if oc.ema_decay is not None else None
    gen = torch.Generator(device=device).manual_seed(cfg.seed)  # same on every rank: global-batch draws

    step, epoch, batch_in_epoch = 0, 0, 0
    if cfg.resume and (steps := checkpoint_steps(run_dir)):
        ckpt = run_dir / "checkpoints" / str(steps[-1])
        st = load_checkpoint(ckpt, policy, optimizer, ema)
        # the data position is stored in global samples (a multiple of the global batch): any layout resumes it
        step, epoch, batch_in_epoch = st["step"], st["epoch"], st["samples_in_epoch"] // (micro * world)
        gen.set_state(st["generator"].to(gen.get_state().device))
        if rank == 0:
            log.info("resumed from %s (step %d, epoch %d, batch %d)", ckpt, step, epoch, batch_in_epoch)
    elif cfg.resume and rank == 0:
        log.info("resume=true but %s has no checkpoint: starting from step 0", run_dir)

    config_yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    if rank == 0:
        (run_dir / "config.yaml").write_text(config_yaml)
        n_params = sum(p.numel() for p in policy.parameters())
        n_train = sum(p.numel() for p in trainable)
        log.info(
            "%s on %s: %d rank(s) x micro-batch %d x %d accumulation = batch %d; %s params (%s trainable); "
            "%d frames, %d episodes; run dir %s",
            mcfg.name, task.name, world, micro, accum, cfg.batch_size, f"{n_params:,}", f"{n_train:,}",
            len(dataset), num_episodes, run_dir,
        )
    metrics = MetricsLogger(run_dir, enabled=rank == 0)
    progress = None
    if rank == 0 and cfg.progress:
        from tqdm import tqdm

        progress = tqdm(total=cfg.num_steps, initial=step, desc=f"train {task.name}", unit="step", dynamic_ncols=True)

    def batches():
        nonlocal epoch, batch_in_epoch
        while True:
            sampler.set_epoch(epoch, start=batch_in_epoch * micro)
            for batch in loader:
                batch_in_epoch += 1
                yield batch
                if batch_in_epoch == batches_per_epoch:
                    break
            epoch, batch_in_epoch = epoch + 1, 0

    data = batches()
    H, A = mcfg.action_horizon, mcfg.action_dim
    n_aug_draws = num_augment_draws(mcfg.image_keys)
    loss_sum = torch.zeros((), device=device)
    grad_norm_sum = torch.zeros((), device=device)
    first_bad_step = torch.full((), -1, device=device, dtype=torch.long)
    window_steps, window_start = 0, time.perf_counter()
    last: dict = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    while step < cfg.num_steps:
        policy.train()
        lr = learning_rate(step, oc)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # global-batch draws for this step; this rank's rows of micro-step m are (m * micro + i) * world + rank
        noise_all = torch.randn(cfg.batch_size, H, A, generator=gen, device=device)
        time_all = sample_flow_time(cfg.batch_size, device, gen)
        aug_uniforms = torch.rand(n_aug_draws, cfg.batch_size, generator=gen, device=device)
        step_loss = torch.zeros((), device=device)
        for m in range(accum):  # the record_function ranges name the phases bench/trace_summary.py reports
            with record_function("data"):
                batch = move_to(next(data), device)
            rows = (m * micro + torch.arange(micro, device=device)) * world + rank
            if cfg.use_augmentation:
                with record_function("augment"):
                    batch["images"] = augment(batch["images"], cfg.augment, keys=mcfg.image_keys,
                                              uniforms=aug_uniforms, select=rows)
            policy.set_requires_gradient_sync(m == accum - 1)
            with record_function("forward"):
                loss_BH = policy(batch, noise=noise_all[rows], time=time_all[rows])
                if cfg.mask_padded_actions:  # padded chunk steps count as zero (a fixed denominator: layout-invariant)
                    loss = (loss_BH * (~batch["actions_is_pad"]).float()).mean()
                else:
                    loss = loss_BH.mean()
            with record_function("backward"):
                (loss / accum).backward()
            step_loss += loss.detach() / accum
        with record_function("clip_grad_norm"):
            grad_norm = clip_grad_norm_(trainable, oc.clip_grad_norm)
        with record_function("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            with record_function("ema"):
                ema.update()
        step += 1
        window_steps += 1
        bad = ~torch.isfinite(step_loss) | ~torch.isfinite(grad_norm)
        first_bad_step = torch.where(bad & (first_bad_step < 0), torch.full_like(first_bad_step, step), first_bad_step)
        loss_sum += step_loss
        grad_norm_sum += grad_norm
        if progress is not None:
            progress.update(1)

        # a stop request is acted on at once by a single rank; several ranks agree on it at the next log interval
        stopping = stop.requested and world == 1
        at_log = step % cfg.log_interval == 0 or stopping or step == cfg.num_steps
        at_save = cfg.save_interval is not None and (step % cfg.save_interval == 0 or step == cfg.num_steps)
        if at_log or at_save:
            # the only host syncs: once per log interval (and before every save, so no NaN reaches disk)
            dist.all_reduce(first_bad_step, op=dist.ReduceOp.MAX)  # every rank stops together
            if world > 1:
                stop_flag = torch.tensor(int(stop.requested), device=device)
                dist.all_reduce(stop_flag, op=dist.ReduceOp.MAX)
                stopping = bool(stop_flag.item())
            at_save = at_save or (stopping and cfg.save_interval is not None)
            bad_step = int(first_bad_step.item())
            if bad_step >= 0:
                raise TrainingError(
                    f"non-finite loss or gradient at step {bad_step} (run dir {run_dir}); stopped without saving it"
                )
            loss_mean = loss_sum.clone()
            dist.all_reduce(loss_mean)
            elapsed = time.perf_counter() - window_start
            params = [p for p in policy.parameters()]
            param_norm = torch.nn.utils.get_total_norm(params, foreach=True)
            param_norm = param_norm.full_tensor() if hasattr(param_norm, "full_tensor") else param_norm
            last = {
                "train/loss": loss_mean.item() / (world * window_steps),
                "train/grad_norm": grad_norm_sum.item() / window_steps,
                "train/param_norm": param_norm.item(),
                "train/lr": lr,
                "perf/samples_per_s": window_steps * cfg.batch_size / elapsed,
                "perf/step_time_s": elapsed / window_steps,
                "perf/peak_memory_gb": peak_memory_gb(device),
                "train/epoch": epoch + batch_in_epoch / batches_per_epoch,
            }
            metrics.log(last, step)
            if progress is not None:
                progress.set_postfix(loss=f"{last['train/loss']:.4f}", lr=f"{lr:.2e}")
            loss_sum.zero_()
            grad_norm_sum.zero_()
            window_steps, window_start = 0, time.perf_counter()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
        if at_save:
            train_state = {
                "step": step, "epoch": epoch, "samples_in_epoch": batch_in_epoch * micro * world,
                "generator": gen.get_state().cpu(),
            }
            path = save_checkpoint(
                run_dir, step, policy, optimizer, ema, train_state, extra_files, config_yaml, scales,
                cfg.keep_last, cfg.keep_period,
            )
            if rank == 0:
                log.info("step %d: saved %s", step, path)
            window_start = time.perf_counter()  # saving is not training time
        if stopping:
            break
    if progress is not None:
        progress.close()
    metrics.close()
    if step < cfg.num_steps:  # left the loop on a stop request
        saved = f"saved {run_dir / 'checkpoints' / str(step)}; resume=true continues it" if cfg.save_interval else \
            "nothing saved (save_interval=null)"
        raise TrainingStopped(f"stopped by SIGTERM after step {step} of {cfg.num_steps}: {saved}")
    return last
