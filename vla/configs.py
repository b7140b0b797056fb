"""The one config path: apps, tests, tools and benchmarks all compose `conf/` through Hydra (installed as `vla.conf`).

App schemas (dataclasses registered with Hydra's ConfigStore, so a misspelt key fails at composition; values checked in
`__post_init__`, so a bad value fails with one line in every app):

  RecipeConfig   what one experiment fixes: task and data, model, optimizer, training budget, augmentation, and the
                 evaluation protocol. `conf/experiment/<name>.yaml` files are recipes (`+experiment=<name>`).
  ConvertConfig  the recipe + what convert.py reads and writes
  TrainConfig    the recipe + where and how train.py runs it (hardware, run dir, logging, checkpoints) and with which
                 algorithm (`algo`: sft, or qchunk for a chunk critic of a trained policy, vla/rl; schemas in
                 vla/algo_config.py)
  EvalConfig     the recipe + what eval.py evaluates and on what machine
  ServeConfig    the recipe + what serve.py serves, where, and how it batches

The apps compose the same recipe; each reads its part (`RecipeConfig.reads`) and refuses command-line overrides
of the other parts, so that `eval.py seed=3` cannot silently set a training seed instead of the episode seeds.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import MISSING, DictConfig, OmegaConf

from vla.algo_config import AlgoConfig
from vla.checks import ConfigError, check
from vla.data.config import AugmentConfig, DataConfig, TaskConfig
from vla.models.config import PolicyConfig
from vla.runs import resolve_checkpoint

CONFIG_MODULE = "vla.conf"  # conf/ at the repository root, installed as this package (setup.cfg package_dir)


# ---------------------------------------------------------------------------------------------------------------------
# train.py's groups (optim, hardware) and parts (lora, synthetic_data); defaults mirror openpi's
# (src/openpi/training/optimizer.py and config.py), the numbers live in conf/

@dataclass
class OptimConfig:
    """AdamW + clip-by-global-norm + warmup/decay schedule + EMA (openpi src/openpi/training/optimizer.py)."""

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

    def __post_init__(self) -> None:
        check(self.lr > 0, f"optim.lr={self.lr}: must be positive")
        check(self.schedule in ("cosine", "constant"), f"optim.schedule={self.schedule!r}: expected cosine or constant")
        check(self.warmup_steps >= 0, f"optim.warmup_steps={self.warmup_steps}: must be >= 0")
        check(self.schedule != "cosine" or self.decay_steps > self.warmup_steps,
              f"optim.decay_steps={self.decay_steps}: must exceed optim.warmup_steps={self.warmup_steps}")
        check(self.clip_grad_norm > 0, f"optim.clip_grad_norm={self.clip_grad_norm}: must be positive")
        check(self.ema_decay is None or 0 <= self.ema_decay < 1,
              f"optim.ema_decay={self.ema_decay}: must be in [0, 1), or null for no EMA")


@dataclass
class HardwareConfig:
    """Where and how one run executes: `num_nodes` hosts x `num_processes` ranks each. On one node `train.py` starts
    the ranks itself unless started by torchrun; several nodes are started by torchrun on each (tools/slurm/)."""

    name: str = "cpu"
    device: str = "cpu"  # cpu | cuda
    num_nodes: int = 1  # hosts; >1: HSDP (parameters sharded within a node, replicated across nodes)
    num_processes: int = 1  # ranks on each node (one per GPU)
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

    def __post_init__(self) -> None:
        check(self.device in ("cpu", "cuda"), f"hardware.device={self.device!r}: expected cpu or cuda")
        check(self.precision in ("fp32", "bf16"), f"hardware.precision={self.precision!r}: expected fp32 or bf16")
        check(self.num_nodes >= 1, f"hardware.num_nodes={self.num_nodes}: must be at least 1")
        check(self.num_processes >= 1, f"hardware.num_processes={self.num_processes}: must be at least 1")
        check(self.micro_batch_size is None or self.micro_batch_size >= 1,
              f"hardware.micro_batch_size={self.micro_batch_size}: must be positive, or null (batch_size / ranks)")
        check(self.num_workers >= 0, f"hardware.num_workers={self.num_workers}: must be >= 0")


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


# ---------------------------------------------------------------------------------------------------------------------
# eval.py's protocol, recorded with every training run, so that `eval.py checkpoint=<run>` measures a policy the way
# its recipe says unless the command line overrides it

@dataclass
class EvalProtocol:
    """ManiSkill's protocol: episode i resets the env with seed + i (reconfigured) and draws its policy noise from
    seed + i, runs max_episode_steps steps ignoring terminations, and counts success_once and success_at_end."""

    num_episodes: int = 50
    # the first episode seed; the default is far from the demo seeds (task.demos.seed), so no episode starts from a
    # training demo's initial state. A setting chosen by looking at these seeds is re-measured on other ones.
    seed: int = 100000
    replan_steps: int | None = None  # actions executed per predicted chunk; null: half the action horizon
    max_episode_steps: int | None = None  # null: task.max_episode_steps (about 2x the mean demo length)
    num_denoise_steps: int | None = None  # null: the model's (10)

    def __post_init__(self) -> None:
        for key in ("num_episodes", "replan_steps", "max_episode_steps", "num_denoise_steps"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"eval.{key}={value}: must be at least 1" + ("" if key == "num_episodes" else
                                                                               ", or null for the default"))

    def executed_steps(self, action_horizon: int) -> int:
        """The actions one decision executes: replan_steps, or half the action horizon."""
        return self.replan_steps or max(1, action_horizon // 2)


@dataclass
class LatencyConfig:
    """eval.py's latency mode (vla.eval.latency): the policy's inference takes `delay_steps` control steps, during
    which the env keeps executing the previous chunk; `rtc` samples each chunk with real-time chunking
    (vla.models.rtc), guided toward what remains of the previous one. delay_steps=0 with rtc=false is the plain
    evaluation."""

    delay_steps: int = 0  # d: control steps one inference takes; needs d <= eval.replan_steps <= action horizon - d
    rtc: bool = False
    # the paper's simulated-benchmark settings (Kinetix src/eval_flow.py); with 10 Euler steps a larger weight may suit
    max_guidance_weight: float = 5.0  # beta, the clip of the guidance weight
    schedule: str = "exp"  # soft prefix mask: exp | linear | ones | zeros (zeros: hard mask on the d committed actions)

    def __post_init__(self) -> None:
        from vla.models.rtc import SCHEDULES

        check(self.delay_steps >= 0, f"latency.delay_steps={self.delay_steps}: must be >= 0")
        check(self.max_guidance_weight >= 0,
              f"latency.max_guidance_weight={self.max_guidance_weight}: must be >= 0")
        check(self.schedule in SCHEDULES, f"latency.schedule={self.schedule!r}: expected one of {', '.join(SCHEDULES)}")

    def check(self, replan_steps: int, action_horizon: int) -> None:
        """The paper's d <= s <= H - d: the executed steps cover the delay, and the previous chunk lasts through it."""
        d = self.delay_steps
        check(d <= replan_steps <= action_horizon - d,
              f"latency.delay_steps={d} with eval.replan_steps={replan_steps}: needs delay_steps <= replan_steps <= "
              f"action horizon ({action_horizon}) - delay_steps; lower latency.delay_steps or change eval.replan_steps")


# ---------------------------------------------------------------------------------------------------------------------
# the apps


@dataclass
class RecipeConfig:
    """Everything that defines one experiment, e.g. one row of the benchmark."""

    experiment: str | None = None  # the conf/experiment file this recipe is (null: composed from groups by hand)
    task: TaskConfig = MISSING  # env, cameras, state, and how demos are generated (task.demos)
    model: PolicyConfig = MISSING
    optim: OptimConfig = MISSING
    data: DataConfig = field(default_factory=DataConfig)  # how the demos become the dataset (convert.py)
    seed: int = 42  # training randomness: init, data order, noise, augmentation
    batch_size: int = 32  # global batch (all ranks, all accumulation steps), openpi's default
    num_steps: int = 30000  # optimizer steps
    use_augmentation: bool = True  # train-time image augmentation and state noise (`augment`)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    mask_padded_actions: bool = False  # chunk steps past the episode end count as zero loss (openpi keeps them)
    eval: EvalProtocol = field(default_factory=EvalProtocol)  # how eval.py measures success (recorded with the run)

    reads: ClassVar[tuple[str, ...]] = ()  # the recipe parts an app uses; overriding another part is an error

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, f"batch_size={self.batch_size}: must be positive")
        check(self.num_steps >= 1, f"num_steps={self.num_steps}: must be at least 1")


@dataclass
class ConvertConfig(RecipeConfig):
    reads: ClassVar[tuple[str, ...]] = ("experiment", "task", "model", "data")

    # a ManiSkill .h5 file, a directory of them, or "generate" (motion planning + replay of task.demos first)
    input: str = "generate"
    output: str = "${task.dataset_root}"  # dataset directory; must not exist unless overwrite
    overwrite: bool = False
    # >1: write that many shards in parallel processes and merge them (lerobot's aggregate_datasets); the same dataset
    num_workers: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.num_workers >= 1, f"num_workers={self.num_workers}: must be at least 1")


@dataclass
class TrainConfig(RecipeConfig):
    reads: ClassVar[tuple[str, ...]] = tuple(f.name for f in fields(RecipeConfig))  # all of it (eval: recorded)

    hardware: HardwareConfig = MISSING
    synthetic_data: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    run_root: str = "runs"
    run_name: str = MISSING  # run directory = run_root/run_name (multirun: Hydra's sweep dir/job subdir)
    log_interval: int = 100  # steps between TensorBoard / metrics.jsonl records (the loss is averaged over them)
    save_interval: int | None = 1000  # steps between checkpoints (the last step is always saved); null: never save
    export_interval: int | None = 1000  # steps between checkpoints that also get model/ema.safetensors; null: last only
    keep_last: int = 1  # most recent checkpoints kept ...
    keep_period: int | None = 5000  # ... plus every checkpoint whose step is a multiple of this
    resume: bool = False  # continue from the newest checkpoint of the run directory
    cache_images: bool = False  # decode every frame once into shared memory (see vla.data.dataset.ChunkedDataset)
    progress: bool = True  # progress bar on rank 0
    algo: AlgoConfig = field(default_factory=AlgoConfig)  # sft (default) | qchunk (conf/algo/)
    # algo=qchunk: the trained policy (run, checkpoint or policy dir) the critic scores; its recorded task, model and
    # evaluation protocol are used under the command line, as eval.py does. SFT starts from model.pretrained instead.
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.algo.name != "sft" or self.checkpoint is None,
              f"checkpoint={self.checkpoint}: read by algo=qchunk only; SFT starts from model.pretrained")
        check(self.algo.name != "qchunk" or self.checkpoint is not None,
              "algo=qchunk: needs checkpoint=<the trained policy: a run, checkpoint or policy dir>")
        check(self.log_interval >= 1, f"log_interval={self.log_interval}: must be at least 1")
        check(self.save_interval is None or self.save_interval >= 1,
              f"save_interval={self.save_interval}: must be at least 1, or null for no checkpoints")
        check(self.export_interval is None or self.export_interval >= 1,
              f"export_interval={self.export_interval}: must be at least 1, or null for the last step only")
        check(self.keep_last >= 1, f"keep_last={self.keep_last}: at least the newest checkpoint must be kept")
        check(self.keep_period is None or self.keep_period >= 1,
              f"keep_period={self.keep_period}: must be at least 1, or null")


@dataclass
class EvalConfig(RecipeConfig):
    reads: ClassVar[tuple[str, ...]] = ("experiment", "task", "model", "eval")

    # A training checkpoint dir or run dir (its newest checkpoint): its recorded recipe (task, model, eval protocol),
    # norm stats and tokenizer are used, and command-line overrides apply on top. Or any weights that
    # vla.models.weights loads (openpi JAX/PyTorch, LeRobot): then `task`, `model`, `norm_stats` and model.tokenizer
    # say the rest. null evaluates the from-scratch init of `model` (a plumbing check).
    checkpoint: str | None = None
    norm_stats: str | None = None  # null: the checkpoint's norm_stats.json, else task.norm_stats
    # a task other than the one the checkpoint was trained on is refused unless this is true
    allow_other_task: bool = False
    num_envs: int = 2  # env worker processes (CPU physics); their observations go through one batched policy call
    device: str = "cpu"  # cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 (policy compute)
    compile: bool = False  # GPU: compiled prefix pass and denoising step, replayed as CUDA graphs (docs/benchmarks.md)
    prompt: str | None = None  # null: task.prompt
    videos: int = 0  # record mp4s of the first N episodes
    progress: bool = True
    latency: LatencyConfig = field(default_factory=LatencyConfig)  # simulated inference delay, real-time chunking
    # A chunk critic (an algo=qchunk run or checkpoint dir): each decision samples best_of_n chunks from the policy
    # (one prefix pass) and executes the one the critic scores highest (vla.rl.best_of_n). null: the plain policy.
    critic: str | None = None
    best_of_n: int = 1
    # A one-step actor (an algo=qchunk run with algo.actor.method=distill): one prefix pass and one MLP per decision
    # in place of the policy's denoising (vla.rl.onestep); with critic= and best_of_n, the best of its samples.
    actor: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.num_envs >= 1, f"num_envs={self.num_envs}: must be at least 1")
        check(self.actor is None or self.latency.delay_steps == 0,
              f"actor= with latency.delay_steps={self.latency.delay_steps}: a one-step actor predicts only the "
              "actions one decision executes, so nothing is left to cover an inference delay; drop one")
        check(self.best_of_n >= 1, f"best_of_n={self.best_of_n}: must be at least 1")
        check(self.best_of_n == 1 or self.critic is not None,
              f"best_of_n={self.best_of_n}: needs critic=<an algo=qchunk run or checkpoint> to choose among samples")
        check(self.critic is None or not self.latency.rtc,
              "critic= with latency.rtc=true: best-of-N sampling does not support real-time chunking; drop one")
        check(self.device in ("cpu", "cuda"), f"device={self.device!r}: expected cpu or cuda")
        check(self.precision in ("fp32", "bf16"), f"precision={self.precision!r}: expected fp32 or bf16")
        check(self.videos >= 0, f"videos={self.videos}: must be 0 or more")


@dataclass
class ServeConfig(RecipeConfig):
    """serve.py: one checkpoint behind openpi's websocket protocol (vla.serve). The policy is loaded as eval.py loads
    it: the checkpoint's recorded task, model and evaluation protocol (its denoising steps), norm stats, tokenizer."""

    reads: ClassVar[tuple[str, ...]] = ("experiment", "task", "model", "eval")

    checkpoint: str | None = None  # as eval.py's: run dir, checkpoint dir, shipped policy dir, or weights
    norm_stats: str | None = None  # null: the checkpoint's norm_stats.json, else task.norm_stats
    allow_other_task: bool = False
    device: str = "cpu"  # cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 (policy compute)
    compile: bool = False  # GPU: compiled prefix pass and denoising step as CUDA graphs (one set per batch size)
    prompt: str | None = None  # the prompt of requests that carry none; null: task.prompt
    host: str = "0.0.0.0"
    port: int = 8000  # 0: any free port (logged)
    api_key: str | None = None  # required as `Authorization: Api-Key <key>` when set (conf: $VLA_SERVE_API_KEY)
    max_batch_size: int = 16  # requests answered by one batched policy call at most
    batch_window_ms: float = 0.0  # 0: batch what is queued when the worker is free; >0: also wait this long for more
    max_message_mb: int = 64  # larger requests are refused by the websocket layer

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.device in ("cpu", "cuda"), f"device={self.device!r}: expected cpu or cuda")
        check(self.precision in ("fp32", "bf16"), f"precision={self.precision!r}: expected fp32 or bf16")
        check(0 <= self.port <= 65535, f"port={self.port}: expected 0 (any free port) to 65535")
        check(self.max_batch_size >= 1, f"max_batch_size={self.max_batch_size}: must be at least 1")
        check(self.batch_window_ms >= 0, f"batch_window_ms={self.batch_window_ms}: must be >= 0")
        check(self.max_message_mb >= 1, f"max_message_mb={self.max_message_mb}: must be at least 1")


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="task", name="task_schema", node=TaskConfig)
    cs.store(group="model", name="policy_schema", node=PolicyConfig)
    cs.store(group="optim", name="optim_schema", node=OptimConfig)
    cs.store(group="hardware", name="hardware_schema", node=HardwareConfig)
    cs.store(group="algo", name="algo_schema", node=AlgoConfig)
    cs.store(name="convert_schema", node=ConvertConfig)
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="serve_schema", node=ServeConfig)


def eval_name(checkpoint: str | None, task: str) -> str:
    """An evaluation directory's name: the run a checkpoint belongs to (`runs/<run>` -> <run>,
    `runs/<run>/checkpoints/<step>` -> <run>_<step>, `<dir>` -> its name), or the task without a checkpoint."""
    if not checkpoint:
        return task
    path = Path(checkpoint)
    if path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}_{path.name}"
    return path.name


def run_name(experiment: str | None, fallback: str) -> str:
    """A training run's default name: the experiment's (one run dir per recipe), else `fallback` (task-model-time)."""
    return experiment or fallback


register()
OmegaConf.register_new_resolver("vla.eval_name", eval_name, replace=True)
OmegaConf.register_new_resolver("vla.run_name", run_name, replace=True)


_COMPOSE_LOCK = threading.Lock()  # Hydra's state is global: one composition at a time, whichever thread asks


def compose(config_name: str | None, overrides: Sequence[str] = ()) -> DictConfig:
    """Hydra composition of conf/ (`config_name` = train | convert | eval | serve, or None for groups alone). Inside a
    running Hydra app the app's own search path is used: it is the same conf/."""
    with _COMPOSE_LOCK:
        if GlobalHydra.instance().is_initialized():
            return hydra_compose(config_name, overrides=list(overrides))
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(config_name, overrides=list(overrides))


def to_object(cfg: DictConfig, what: str = "config") -> object:
    """The typed dataclasses of a composed config. A value check (`__post_init__`) or a type error is raised as one
    ConfigError line."""
    try:
        return OmegaConf.to_object(cfg)
    except Exception as e:  # OmegaConf wraps what the dataclasses raise; the innermost message is the useful one
        inner = e
        while (inner.__cause__ or inner.__context__) is not None:
            inner = inner.__cause__ or inner.__context__
        message = str(inner).splitlines()[0]
        ours = isinstance(inner, ValueError) and not type(inner).__module__.startswith("omegaconf")
        raise ConfigError(message if ours else f"{what}: {message}") from None


def group_options(group: str) -> list[str]:
    """The config names of a group (conf/<group>/*.yaml), e.g. every task."""
    from importlib.resources import files

    return sorted(p.name[:-5] for p in files(CONFIG_MODULE).joinpath(group).iterdir() if p.name.endswith(".yaml"))


def load_group(group: str, name: str, overrides: Sequence[str] = ()):
    """One group file composed into its schema, e.g. `load_group("task", "pickcube", ["task.image_size=128"])`."""
    if name not in group_options(group):
        raise ConfigError(f"unknown {group} config {name!r} (known: {', '.join(group_options(group))})")
    return to_object(compose(None, [f"+{group}={name}", *overrides])[group], f"{group}={name}")


def load_recipe(experiment: str, app: str = "train", overrides: Sequence[str] = ()) -> RecipeConfig:
    """An experiment as an app composes it, e.g. `load_recipe("pushcube_pi05").batch_size`."""
    if experiment not in group_options("experiment"):
        raise ConfigError(f"unknown experiment {experiment!r} (known: {', '.join(group_options('experiment'))})")
    return to_object(compose(app, [f"+experiment={experiment}", *overrides]), f"experiment={experiment}")


def check_overrides(schema: type[RecipeConfig], overrides: Sequence[str], app: str) -> None:
    """Refuse command-line overrides of recipe parts `app` does not read (e.g. eval.py batch_size=8)."""
    recipe_keys = {f.name for f in fields(RecipeConfig)}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group.lstrip("+~").split(".")[0].split("@")[0]
        if key in recipe_keys and key not in schema.reads:
            raise ConfigError(f"{override.input_line}: {key} is not read by {app} (it reads "
                              f"{', '.join(schema.reads)} of the recipe)")


SECTION_SCHEMAS = {"task": TaskConfig, "model": PolicyConfig, "optim": OptimConfig, "data": DataConfig,
                   "augment": AugmentConfig, "lora": LoraConfig, "eval": EvalProtocol}


def app_config(cfg: DictConfig, schema: type[RecipeConfig], app: str, overrides: Sequence[str]) -> RecipeConfig:
    """An app's typed config from its composed `cfg`: command-line `overrides` of recipe parts it does not read are
    refused, and when `cfg.checkpoint` is one of our training checkpoints (or its run dir) the recorded recipe is used
    underneath the command line (`with_recorded_recipe`)."""
    check_overrides(schema, overrides, app)
    checkpoint = cfg.get("checkpoint")
    if checkpoint is not None and (resolve_checkpoint(checkpoint) / "config.yaml").is_file():
        cfg = with_recorded_recipe(cfg, resolve_checkpoint(checkpoint) / "config.yaml", overrides, cfg.allow_other_task)
    return to_object(cfg)  # typed dataclasses from here on; bad values fail here


def train_config(cfg: DictConfig, overrides: Sequence[str]) -> TrainConfig:
    """train.py's typed config. algo=qchunk starts from a trained policy (`checkpoint`): when it is one of our runs or
    policy dirs, its recorded task, model and evaluation protocol are used under the command line, as eval.py does
    (the rest of the recorded recipe, the policy's own optimizer and budget, is not what qchunk trains with)."""
    checkpoint = cfg.get("checkpoint")
    if cfg.algo.name != "sft" and checkpoint is not None and (resolve_checkpoint(checkpoint) / "config.yaml").is_file():
        cfg = with_recorded_recipe(cfg, resolve_checkpoint(checkpoint) / "config.yaml", overrides,
                                   sections=("task", "model", "eval"))
    return to_object(cfg)


def with_recorded_recipe(cfg: DictConfig, checkpoint_config: Path, overrides: Sequence[str],
                         allow_other_task: bool = False, sections: Sequence[str] | None = None) -> DictConfig:
    """`cfg` (an app's composed config) with the recipe parts it reads (or `sections` of them) taken from a training
    run's recorded config.yaml, then the command-line `overrides` of those parts applied again on top: the run's task,
    model and evaluation protocol unless the command line says otherwise.

    A group choice on the command line must agree with the recording (`model=pi05` cannot evaluate a pi05_small
    checkpoint); `task=<other>` is refused unless `allow_other_task`, and then the composed task is used. With
    `sections` (a recipe of its own built on the run, train.py algo=qchunk's) an experiment names itself, not the
    run's recipe, and must be a recipe for the run's task."""
    recorded = OmegaConf.load(checkpoint_config)
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    keep_composed = set()
    for o in parsed:
        key = o.key_or_group.lstrip("+")
        if key not in ("task", "model", "experiment") or not isinstance(o.value(), str):
            continue
        if key == "experiment" and sections is not None:
            rec = recorded.get("task", {}).get("name")
            if rec is not None and rec != cfg.task.name:
                raise ConfigError(f"experiment={o.value()} is a recipe for task {cfg.task.name}, and checkpoint "
                                  f"{cfg.checkpoint} was trained on task {rec} ({checkpoint_config}); give a {rec} "
                                  "policy, or no experiment")
            continue
        rec = recorded.get(key) if key == "experiment" else recorded.get(key, {}).get("name")
        if rec is None or o.value() == rec:
            continue
        if key == "task" and allow_other_task:
            keep_composed.add("task")
            continue
        hint = " (pass allow_other_task=true to evaluate it there anyway)" if key == "task" else ""
        raise ConfigError(f"{key}={o.value()}: {checkpoint_config} was trained with {key} {rec}{hint}")
    out = cfg.copy()
    schema = OmegaConf.get_type(cfg)
    taken = tuple(getattr(schema, "reads", ())) if sections is None else tuple(sections)
    for section in taken:
        if section in keep_composed or section not in recorded:
            continue
        if section in SECTION_SCHEMAS:  # replaced, not merged: a dict field (cameras, state_extra) must not mix
            node = OmegaConf.merge(OmegaConf.structured(SECTION_SCHEMAS[section]), recorded[section])
        else:
            node = recorded[section]
        try:
            out[section] = node
        except Exception as e:
            raise ConfigError(f"{checkpoint_config}: {section}: {str(e).splitlines()[0]}") from None
    for o in parsed:
        key = o.key_or_group.lstrip("+")
        if "." in key and key.split(".")[0] in taken and key.split(".")[0] not in keep_composed:
            OmegaConf.update(out, key, o.value(), merge=False)
    return out
