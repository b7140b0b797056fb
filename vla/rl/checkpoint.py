"""Checkpoints of an algo=qchunk run, in the layout of SFT's (vla/train/checkpoint.py), written atomically (temp dir
+ rename) and pruned by the same rule:

  <run>/checkpoints/<step>/
    state/              torch.distributed.checkpoint of the critic, its target and optimizer, and (when the actor
                        trains) the action expert's parameters or the one-step actor, and their optimizer; +
                        train_state.pt: step, online rounds done, generator
    critic.safetensors  critic.json      the critic, as eval.py's critic= and vla.rl.best_of_n load it
    model.safetensors   (pathwise actor) the whole fine-tuned policy in openpi's layout: eval.py checkpoint=
    actor.safetensors   actor.json       (distill actor) the one-step actor, as eval.py's actor= loads it
    config.yaml  norm_stats.json  tokenizer.model
"""

from __future__ import annotations

import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.checkpoint.stateful import Stateful

from vla.models.weights import save_openpi
from vla.rl.critic import save_critic
from vla.rl.learner import Learner
from vla.rl.onestep import save_actor
from vla.train.checkpoint import checkpoint_steps, prune_checkpoints

TRAINABLE_ONLY = StateDictOptions(ignore_frozen_params=True)


@contextmanager
def single_process():
    """DCP warns on every save and load that no process group exists: here that is the design, not a slip."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        yield


class LearnerState(Stateful):
    """What DCP saves and restores in place."""

    def __init__(self, learner: Learner):
        self.learner = learner

    def state_dict(self) -> dict:
        lr = self.learner
        state = {"critic": get_model_state_dict(lr.critic), "target": get_model_state_dict(lr.target),
                 "critic_optim": get_optimizer_state_dict(lr.critic, lr.critic_optim)}
        if lr.onestep is not None:
            state |= {"onestep": get_model_state_dict(lr.onestep),
                      "onestep_optim": get_optimizer_state_dict(lr.onestep, lr.actor_optim)}
        elif lr.actor_optim is not None:
            model = lr.policy.model
            state |= {"actor": get_model_state_dict(model, options=TRAINABLE_ONLY),
                      "actor_optim": get_optimizer_state_dict(model, lr.actor_optim)}
        return state

    def load_state_dict(self, state: dict) -> None:
        lr = self.learner
        set_model_state_dict(lr.critic, state["critic"])
        set_model_state_dict(lr.target, state["target"])
        set_optimizer_state_dict(lr.critic, lr.critic_optim, state["critic_optim"])
        if lr.onestep is not None:
            set_model_state_dict(lr.onestep, state["onestep"])
            set_optimizer_state_dict(lr.onestep, lr.actor_optim, state["onestep_optim"])
        elif lr.actor_optim is not None:
            model = lr.policy.model
            set_model_state_dict(model, state["actor"], options=StateDictOptions(ignore_frozen_params=True,
                                                                                 strict=False))
            set_optimizer_state_dict(model, lr.actor_optim, state["actor_optim"])


def save(learner: Learner, run_dir: Path, extra_files: dict[str, Path], config_yaml: str, keep_last: int,
         keep_period: int | None) -> Path:
    root = run_dir / "checkpoints"
    final, tmp = root / str(learner.step), root / f".tmp-{learner.step}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "state").mkdir(parents=True)
    try:
        with single_process():
            dcp.save({"learner": LearnerState(learner)}, checkpoint_id=str(tmp / "state"))
        torch.save({"step": learner.step, "round": learner.round, "generator": learner.gen.get_state()},
                   tmp / "state" / "train_state.pt")
        save_critic(learner.critic, tmp)
        if learner.onestep is not None:
            save_actor(learner.onestep, tmp)
        elif learner.actor_optim is not None:
            weights = {k: v.detach().cpu() for k, v in learner.policy.model.state_dict().items()}
            save_openpi(weights, tmp / "model.safetensors")
        for name, src in extra_files.items():
            shutil.copyfile(src, tmp / name)
        (tmp / "config.yaml").write_text(config_yaml)
        if final.exists():  # the same step saved again (a round that ended on a periodic save's step)
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prune_checkpoints(run_dir, keep_last, keep_period)
    return final


def restore(learner: Learner, run_dir: Path) -> Path | None:
    """The newest checkpoint of `run_dir` loaded into `learner` in place (None: there is none)."""
    steps = checkpoint_steps(run_dir)
    if not steps:
        return None
    ckpt = run_dir / "checkpoints" / str(steps[-1])
    state_file = ckpt / "state" / "train_state.pt"
    if not state_file.is_file():
        raise FileNotFoundError(f"{state_file}: missing (not a complete algo=qchunk checkpoint)")
    with single_process():
        dcp.load({"learner": LearnerState(learner)}, checkpoint_id=str(ckpt / "state"))
    st = torch.load(state_file, weights_only=False)
    learner.step, learner.round = st["step"], st["round"]
    learner.gen.set_state(st["generator"])
    return ckpt
