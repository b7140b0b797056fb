"""`python train.py algo=qchunk checkpoint=<policy> algo.data=[<rollout datasets>] run_name=<name>`: a chunk critic
for a trained flow policy, trained offline on rollout datasets (vla.rl.collect), with optional Q-guided fine-tuning of
the action expert or a one-step actor beside the policy (algo.actor.enabled, .method) and online rounds
(algo.online.rounds, vla.rl.online).

The run directory is an SFT run's: metrics.jsonl and TensorBoard events, config.yaml (the recipe, with the policy's
task, model and evaluation protocol, and `algo`), checkpoints/<step>/ (vla.rl.checkpoint); `resume=true` continues
from the newest checkpoint: exactly in the offline phase (the step, the generator), from the last finished round in
the online phase (its rollouts are on disk). One process on one device: the critic is small and the policy is only
sampled (or its action expert fine-tuned), so FSDP is not needed.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from vla.configs import ConfigError, TrainConfig
from vla.eval.policy import Policy
from vla.rl import checkpoint as ckpt_io
from vla.rl.critic import ChunkCritic, CriticSpec
from vla.rl.data import ReplayBuffer, RolloutData
from vla.rl.learner import Learner
from vla.rl.onestep import OneStepActor, OneStepSpec
from vla.rl.online import run_rounds
from vla.rl.policy_cache import PolicyCache
from vla.rl.run import QChunkRun, policy_norm_stats
from vla.rl.sampling import expert_parameter_names, prefix_feature_dim
from vla.train.checkpoint import checkpoint_steps
from vla.train.loop import StopRequest, TrainingStopped

log = logging.getLogger(__name__)


def chunk_len(cfg: TrainConfig) -> int:
    """h: algo.chunk_len, else the actions one decision executes (eval.replan_steps, or half the horizon)."""
    return cfg.algo.chunk_len or cfg.eval.executed_steps(cfg.model.action_horizon)


def check_run(cfg: TrainConfig, run_dir: Path) -> None:
    hw = cfg.hardware
    if hw.num_processes != 1 or hw.num_nodes != 1:
        raise ConfigError(f"algo=qchunk runs in one process on one device, found hardware={hw.name} "
                          f"({hw.num_nodes} node(s) x {hw.num_processes} process(es)); use hardware=cpu or 1xgpu")
    if not cfg.resume and checkpoint_steps(run_dir):
        raise ValueError(f"{run_dir} already holds checkpoints {checkpoint_steps(run_dir)}: pass resume=true to "
                         "continue that run, or choose another run_name")
    for root in cfg.algo.data:
        if not (Path(root) / "meta" / "info.json").is_file():
            raise FileNotFoundError(f"algo.data: {root}: not a dataset; record rollouts with `python -m "
                                    "vla.rl.collect --out <dir> ...`")
    if not cfg.algo.data and cfg.algo.online.rounds == 0:
        raise ConfigError("algo=qchunk: no data: give algo.data=[<rollout dataset>, ...] and/or algo.online.rounds")
    replan = cfg.eval.executed_steps(cfg.model.action_horizon)
    if cfg.algo.actor.enabled and cfg.algo.actor.method == "distill" and chunk_len(cfg) < replan:
        raise ConfigError(f"algo.chunk_len={chunk_len(cfg)}: the one-step actor predicts only the chunk the critic "
                          f"scores, and a decision executes eval.replan_steps={replan} actions; set "
                          f"algo.chunk_len>={replan} or null")
    if cfg.algo.data == [] and cfg.algo.offline_steps > 0:
        raise ConfigError(f"algo.offline_steps={cfg.algo.offline_steps} without algo.data: nothing to train on "
                          "offline; set algo.offline_steps=0 or give rollout datasets")


def build_learner(cfg: TrainConfig) -> Learner:
    """The policy (fp32, frozen but for the action expert when the actor trains), a fresh critic and target, their
    optimizers, the offline replay data and the generator."""
    algo, device = cfg.algo, cfg.hardware.device
    torch.manual_seed(cfg.seed)  # the critic's init
    policy = Policy.load(cfg.checkpoint, cfg.model, policy_norm_stats(cfg), cfg.task.action_dim, device, "fp32",
                         cfg.eval.num_denoise_steps)
    model = policy.model
    pathwise = algo.actor.enabled and algo.actor.method == "pathwise"
    expert = set(expert_parameter_names(model)) if pathwise else set()
    for name, p in model.named_parameters():
        p.requires_grad_(name in expert)
    actor_params = [p for p in model.parameters() if p.requires_grad]
    mc, h = model.cfg, chunk_len(cfg)
    if h > mc.action_horizon:
        raise ConfigError(f"algo.chunk_len={h}: the policy predicts {mc.action_horizon} actions at a time")
    c = algo.critic
    spec = CriticSpec(
        task=cfg.task.name, env_id=cfg.task.env_id, model=mc.name, features=c.features,
        # the encoder's output is as wide as the first hidden layer it feeds
        feature_dim=prefix_feature_dim(mc) if c.features == "policy" else c.hidden_dims[0], state_dim=mc.action_dim,
        chunk_len=h, action_dim=cfg.task.action_dim, hidden_dims=list(c.hidden_dims), num_qs=c.num_qs,
        encoder_channels=list(c.encoder_channels), encoder_image_size=c.encoder_image_size, gamma=algo.gamma,
        reward=algo.reward, policy_checkpoint=str(policy.checkpoint) if policy.checkpoint else None,
    )
    critic = ChunkCritic(spec).to(device)
    target = copy.deepcopy(critic).requires_grad_(False)
    critic_optim = torch.optim.AdamW(critic.parameters(), lr=c.lr, weight_decay=0.0)
    onestep = None
    if algo.actor.enabled and not pathwise:
        onestep = OneStepActor(OneStepSpec(
            task=spec.task, env_id=spec.env_id, model=spec.model, feature_dim=spec.feature_dim,
            state_dim=spec.state_dim, horizon=mc.action_horizon, noise_dim=mc.action_dim, chunk_len=h,
            action_dim=spec.action_dim, hidden_dims=list(algo.actor.hidden_dims),
            policy_checkpoint=spec.policy_checkpoint)).to(device)
        actor_params = list(onestep.parameters())
    lr = algo.actor.lr if pathwise else algo.actor.onestep_lr
    actor_optim = torch.optim.AdamW(actor_params, lr=lr, weight_decay=0.0) if actor_params else None
    replay = ReplayBuffer(policy.transform.action_norm, h, mc.action_horizon, mc.action_dim, algo.gamma, algo.reward,
                          h if algo.decision_frames_only else 1)
    for root in algo.data:
        replay.add(RolloutData(root))
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = algo.num_denoise_steps or cfg.eval.num_denoise_steps or mc.num_denoise_steps
    # the policy is a constant unless the pathwise actor trains: its outputs per frame are then computed once
    # (filled by QChunkRun.train, from noise seeded by the run seed, so a resumed run rebuilds the same cache)
    cache = PolicyCache(spec, cfg.seed, algo.cache_samples, steps) if algo.uses_cache else None
    return Learner(policy, critic, target, critic_optim, actor_params, actor_optim, replay, gen, steps, cache=cache,
                   onestep=onestep)


def train_qchunk(cfg: TrainConfig, run_dir: str | Path) -> dict[str, float]:
    """Run (or resume) an algo=qchunk run in `run_dir`; returns the last logged metrics."""
    run_dir = Path(run_dir)
    check_run(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    learner = build_learner(cfg)
    if cfg.resume and (restored := ckpt_io.restore(learner, run_dir)) is not None:
        for r in range(learner.round):  # the rounds' rollouts, in the order they were added
            learner.replay.add(RolloutData(run_dir / "rollouts" / f"round_{r:03d}"))
        log.info("resumed from %s (step %d, %d online round(s) done)", restored, learner.step, learner.round)
    with StopRequest() as stop:
        run = QChunkRun(cfg, run_dir, learner, stop)
        (run_dir / "config.yaml").write_text(run.config_yaml)
        spec = learner.critic.spec
        log.info("qchunk on %s: policy %s (%s), chunks of %d steps, critic %d x %s on %s features, actor %s; "
                 "replay %s; run dir %s", cfg.task.name, cfg.checkpoint, spec.model, spec.chunk_len, spec.num_qs,
                 spec.hidden_dims, spec.features, cfg.algo.actor.method if learner.actor_optim else "off",
                 learner.replay.summary(),
                 run_dir)
        try:
            if learner.round == 0 and learner.step < cfg.algo.offline_steps:
                finished = run.train(cfg.algo.offline_steps, periodic_saves=True)
                if cfg.save_interval is not None and learner.step % cfg.save_interval:
                    run.save()  # the phase's last step (a multiple of save_interval was saved by train)
                if not finished:
                    saved = ("saved; resume=true continues it" if cfg.save_interval
                             else "nothing saved (save_interval=null)")
                    raise TrainingStopped(f"stopped by SIGTERM at step {learner.step}: {saved}")
            run_rounds(run)
        finally:
            run.metrics.close()
    return run.last
