"""Schemas of train.py's `algo` group: sft (the default, the loop of vla/train) or qchunk (vla/rl: a critic on action
chunks for a trained flow policy, and optionally Q-guided fine-tuning of its action expert). The numbers live in
conf/algo/; vla.configs composes them into TrainConfig."""

from __future__ import annotations

from dataclasses import dataclass, field

from vla.checks import check


@dataclass
class CriticConfig:
    """Q(observation, action chunk): an ensemble of MLP heads with LayerNorm (vla.rl.critic)."""

    # policy: the frozen policy's prefix pass (its key/value cache, which sampling needs anyway), pooled, + state;
    # encoder: a small convolutional encoder of the base camera + state, trained with the critic
    features: str = "policy"
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    num_qs: int = 2  # ensemble size
    encoder_channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # features=encoder only
    encoder_image_size: int = 64  # features=encoder: the base camera is resized to this before the encoder
    lr: float = 3e-4
    clip_grad_norm: float = 10.0
    tau: float = 0.005  # Polyak rate of the target critic

    def __post_init__(self) -> None:
        check(self.features in ("policy", "encoder"),
              f"algo.critic.features={self.features!r}: expected policy or encoder")
        check(self.num_qs >= 1, f"algo.critic.num_qs={self.num_qs}: must be at least 1")
        check(len(self.hidden_dims) >= 1 and min(self.hidden_dims) >= 1,
              f"algo.critic.hidden_dims={list(self.hidden_dims)}: expected at least one positive width")
        check(self.lr > 0, f"algo.critic.lr={self.lr}: must be positive")
        check(self.clip_grad_norm > 0, f"algo.critic.clip_grad_norm={self.clip_grad_norm}: must be positive")
        check(0 < self.tau <= 1, f"algo.critic.tau={self.tau}: must be in (0, 1]")


@dataclass
class CalQLConfig:
    """Cal-QL's regularizer (Nakamoto et al. 2023): alpha * (logsumexp over sampled chunks of Q, the policy's samples
    clipped from below by the Monte-Carlo return, - Q(s, a_data)). alpha=0 turns it off (plain TD)."""

    alpha: float = 0.1
    uniform_samples: int = 10  # chunks drawn uniformly in the normalized action box [-1, 1]
    policy_samples: int = 10  # chunks sampled from the flow policy at s
    temperature: float = 1.0
    bound_uniform: bool = False  # also clip the uniform chunks' Q by the MC return (Cal-QL: policy samples only)

    def __post_init__(self) -> None:
        check(self.alpha >= 0, f"algo.calql.alpha={self.alpha}: must be >= 0")
        check(self.uniform_samples >= 0 and self.policy_samples >= 0 and self.uniform_samples + self.policy_samples > 0,
              f"algo.calql: uniform_samples={self.uniform_samples}, policy_samples={self.policy_samples}: "
              "expected counts >= 0, not both 0")
        check(self.temperature > 0, f"algo.calql.temperature={self.temperature}: must be positive")


@dataclass
class ActorConfig:
    """Q-guided policy improvement (the VLM and vision tower stay frozen), by one of two methods:
      pathwise  fine-tune the action expert: flow-matching BC on the replay's successful episodes + alpha * (-Q) of a
                chunk sampled with gradients through `pathwise_steps` Euler steps
      distill   FQL's one-step policy (vla.rl.onestep): an MLP from (features, noise) to a chunk, distilled from the
                frozen policy's own samples + alpha * (-Q) of its output; the flow policy stays as it is"""

    enabled: bool = False
    method: str = "pathwise"  # pathwise | distill
    alpha: float = 1.0  # weight of -Q
    normalize_q: bool = True  # -Q divided by mean |Q| (no gradient through it), as FQL's normalize_q_loss
    pathwise_steps: int = 10  # Euler steps of the sample the Q gradient flows through
    hidden_dims: list[int] = field(default_factory=lambda: [512, 512, 512, 512])  # distill: the one-step MLP
    distill_samples: int = 1  # distill: bank chunks (and their noise) per state in each update
    onestep_lr: float = 3e-4  # distill: the one-step MLP's learning rate (FQL's); `lr` is the expert's (pathwise)
    lr: float = 1e-5
    clip_grad_norm: float = 1.0
    start_step: int = 0  # actor updates begin once the critic has trained this many steps
    every: int = 1  # one actor update every this many critic updates

    def __post_init__(self) -> None:
        check(self.method in ("pathwise", "distill"),
              f"algo.actor.method={self.method!r}: expected pathwise or distill")
        check(self.alpha >= 0, f"algo.actor.alpha={self.alpha}: must be >= 0")
        check(len(self.hidden_dims) >= 1 and min(self.hidden_dims) >= 1,
              f"algo.actor.hidden_dims={list(self.hidden_dims)}: expected at least one positive width")
        check(self.distill_samples >= 1, f"algo.actor.distill_samples={self.distill_samples}: must be at least 1")
        check(self.pathwise_steps >= 1, f"algo.actor.pathwise_steps={self.pathwise_steps}: must be at least 1")
        check(self.lr > 0 and self.onestep_lr > 0,
              f"algo.actor: lr={self.lr}, onestep_lr={self.onestep_lr}: must be positive")
        check(self.clip_grad_norm > 0, f"algo.actor.clip_grad_norm={self.clip_grad_norm}: must be positive")
        check(self.start_step >= 0, f"algo.actor.start_step={self.start_step}: must be >= 0")
        check(self.every >= 1, f"algo.actor.every={self.every}: must be at least 1")


@dataclass
class OnlineConfig:
    """Online rounds after the offline phase: roll out the current policy in env workers, add the episodes to the
    replay data, update, evaluate on held-out seeds (eval.seed onwards, the recipe's protocol)."""

    rounds: int = 0  # 0: offline only
    episodes_per_round: int = 16
    steps_per_round: int = 1000  # critic (and actor) updates per round
    seed: int = 200000  # first env seed of the training episodes (round r: seed + r * episodes_per_round)
    eval_episodes: int = 50  # held-out episodes after each round (0: none)
    num_envs: int = 8  # env worker processes
    best_of_n: int = 16  # chunks sampled per decision, the highest-Q one executed (1: the policy's own sample)
    stop_on_success: bool = True  # an episode ends at its first success (the terminal of the sparse reward)

    def __post_init__(self) -> None:
        for key in ("rounds", "eval_episodes"):
            check(getattr(self, key) >= 0, f"algo.online.{key}={getattr(self, key)}: must be >= 0")
        for key in ("episodes_per_round", "steps_per_round", "num_envs", "best_of_n"):
            check(getattr(self, key) >= 1, f"algo.online.{key}={getattr(self, key)}: must be at least 1")


@dataclass
class AlgoConfig:
    """How train.py trains: `sft` (flow matching on the task's demos, vla/train) or `qchunk` (vla/rl): a chunk-level
    critic trained offline on rollout datasets of a trained policy (`checkpoint`), with optional expert fine-tuning
    and online rounds."""

    name: str = "sft"
    data: list[str] = field(default_factory=list)  # rollout datasets (python -m vla.rl.collect) for the offline phase
    reward: str = "sparse"  # sparse: ManiSkill's success (1 at the terminal step) | normalized_dense
    gamma: float = 0.99  # per control step; a chunk of h steps is discounted by gamma^h
    chunk_len: int | None = None  # h, the actions the critic scores and the backup spans; null: eval.replan_steps
    batch_size: int = 256
    offline_steps: int = 10000
    target_best_of_n: int = 4  # the backup's next chunk: the best of this many policy samples under the target Q
    target_agg: str = "min"  # min | mean over the ensemble, for the backup
    num_denoise_steps: int | None = None  # Euler steps of every policy sample; null: eval.num_denoise_steps / model's
    cache_samples: int = 16  # actor disabled: policy chunks cached per replay frame (vla/rl/policy_cache.py)
    cache_batch_size: int = 64  # frames per policy pass while the cache is built
    # chunks start only at every h-th frame of an episode (the decision frames of a policy replanning every h steps:
    # its own chunks), 1/h of the frames to cache; false: at every frame (h times the chunks, mostly overlapping)
    decision_frames_only: bool = False
    critic: CriticConfig = field(default_factory=CriticConfig)
    calql: CalQLConfig = field(default_factory=CalQLConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)

    def __post_init__(self) -> None:
        check(self.name in ("sft", "qchunk"), f"algo.name={self.name!r}: expected sft or qchunk")
        check(self.reward in ("sparse", "normalized_dense"),
              f"algo.reward={self.reward!r}: expected sparse or normalized_dense")
        check(0 < self.gamma <= 1, f"algo.gamma={self.gamma}: must be in (0, 1]")
        check(self.chunk_len is None or self.chunk_len >= 1,
              f"algo.chunk_len={self.chunk_len}: must be at least 1, or null for eval.replan_steps")
        check(self.batch_size >= 1, f"algo.batch_size={self.batch_size}: must be positive")
        check(self.offline_steps >= 0, f"algo.offline_steps={self.offline_steps}: must be >= 0")
        check(self.target_best_of_n >= 1, f"algo.target_best_of_n={self.target_best_of_n}: must be at least 1")
        check(self.target_agg in ("min", "mean"), f"algo.target_agg={self.target_agg!r}: expected min or mean")
        check(self.num_denoise_steps is None or self.num_denoise_steps >= 1,
              f"algo.num_denoise_steps={self.num_denoise_steps}: must be at least 1, or null")
        check(self.cache_batch_size >= 1, f"algo.cache_batch_size={self.cache_batch_size}: must be positive")
        drawn = max(self.target_best_of_n, self.calql.policy_samples, self.actor.distill_samples)
        check(not self.uses_cache or self.cache_samples >= drawn,
              f"algo.cache_samples={self.cache_samples}: an update draws {drawn} distinct cached chunks per state "
              f"(max of target_best_of_n, calql.policy_samples, actor.distill_samples); set "
              f"algo.cache_samples>={drawn}")
        check(not (self.actor.enabled and self.actor.method == "distill") or self.critic.features == "policy",
              "algo.actor.method=distill reads the policy's prefix features: it needs algo.critic.features=policy")

    @property
    def uses_cache(self) -> bool:
        """The flow policy stays frozen (no actor, or the one-step actor beside it): its samples are cached."""
        return not self.actor.enabled or self.actor.method == "distill"
