"""The convert job: (optionally generate demos) -> validate -> LeRobot dataset + norm_stats.json."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vla.data.lerobot import WriteReport, write_dataset
from vla.data.maniskill import DataError, Episode, generate_demos, read_episodes
from vla.data.norm_stats import compute_norm_stats
from vla.data.transforms import Normalizer

if TYPE_CHECKING:
    from vla.configs import ConvertConfig

log = logging.getLogger(__name__)


def convert(cfg: ConvertConfig) -> WriteReport | None:
    """None when only motion plans were made (input=generate with task.demos.replay=false): nothing to convert yet."""
    task = cfg.task
    output = Path(cfg.output)
    plan_only = cfg.input == "generate" and not task.demos.replay
    if cfg.input != "generate" and not Path(cfg.input).exists():  # the input's problem first: it is the cause
        raise DataError(f"{cfg.input}: no such file or directory")
    if output.exists() and not cfg.overwrite and not plan_only:  # fail before spending minutes on demo generation
        raise FileExistsError(f"{output} exists (pass overwrite=true to replace it)")
    if cfg.input == "generate":
        gen = generate_demos(task, task.demos.out_dir)
        log.info(
            "generated %d %s demos in %.1f s: %.2f s/plan, %.1f s/replay (%d plan + %d replay failures skipped) -> %s",
            gen.num_demos, task.env_id, gen.wall_s, gen.plan_s, gen.replay_s, gen.plan_failures, gen.replay_failures,
            gen.path,
        )
        if plan_only:
            log.info("planned only (task.demos.replay=false): replay %s with ManiSkill's replay_trajectory "
                     "(-o rgb -c %s -b %s --save-traj), then convert with input=<its output>",
                     gen.path, task.control_mode, task.sim_backend)
            return None
        input_path = gen.path
    else:
        input_path = Path(cfg.input)
    episodes = read_episodes(input_path, task)
    if cfg.data.idle_action_max is not None:
        episodes = drop_idle_frames(episodes, cfg.data.idle_action_max)
    episodes = check_normalizable(episodes, cfg)
    report = write_dataset(episodes, output, task, cfg.model.action_horizon, cfg.data.use_videos, cfg.overwrite,
                           cfg.num_workers)
    log.info(
        "converted %d episodes / %d frames of %s into %s (%s): %.1f MB in %.1f s; norm stats (H=%d) in %s",
        report.episodes, report.frames, input_path, report.root, "videos" if cfg.data.use_videos else "images",
        report.bytes / 1e6, report.seconds, cfg.model.action_horizon, report.root / "norm_stats.json",
    )
    return report


def idle_frames(actions: np.ndarray, idle_action_max: float) -> np.ndarray:
    """bool [T]: the frames in which the demo holds still: every arm dimension of the action (all but the last, the
    gripper: pd_ee_delta_pose is 6 arm + 1 gripper) within +-idle_action_max and the gripper command unchanged from the
    frame before (frame 0 counts as unchanged)."""
    arm_still = (np.abs(actions[:, :-1]) <= idle_action_max).all(axis=1)
    gripper = actions[:, -1]
    gripper_same = np.concatenate([[True], gripper[1:] == gripper[:-1]])
    return arm_still & gripper_same


def drop_idle_frames(episodes: list[Episode], idle_action_max: float) -> list[Episode]:
    """Leave out the frames in which the demo holds still (`idle_frames`); images follow through Episode.steps.

    ManiSkill's PickCube motion planner holds the arm still for 8-9 steps after closing the gripper, and nothing in the
    state counts the wait. From such a still state the demos' next chunk is "the rest of a wait of unknown length,
    then the lift"; a policy that executes only part of the chunk it samples can end up still again, and repeat. A
    PickCube policy executing 8 of its 16 predicted actions succeeded in 2 of 20 episodes, executing all 16 in 10
    (same checkpoint and seeds, docs/results.md). OpenVLA left the no-op actions out of its LIBERO demos for this
    reason."""
    out, dropped, total = [], 0, 0
    for ep in episodes:
        steps = np.flatnonzero(~idle_frames(ep.actions, idle_action_max))
        total += len(ep)
        if len(steps) == 0:
            raise DataError(f"{ep.path}: {ep.traj}: actions: expected a frame that moves the arm or the gripper, "
                            f"found every one of {len(ep)} within idle_action_max={idle_action_max:g}")
        dropped += len(ep) - len(steps)
        old_steps = ep.steps if ep.steps is not None else np.arange(len(ep))
        out.append(dataclasses.replace(ep, state=ep.state[steps], actions=ep.actions[steps], steps=old_steps[steps]))
    log.info("left out %d of %d frames (%.1f%%) in which the demo holds still (arm action within +-%g, gripper "
             "unchanged)", dropped, total, 100 * dropped / max(total, 1), idle_action_max)
    return out


def check_normalizable(episodes: list[Episode], cfg: ConvertConfig) -> list[Episode]:
    """Refuse (or, with drop_outliers, leave out) episodes with a frame that normalizes beyond cfg.data.max_normalized.

    openpi's Normalize does not clip (src/openpi/transforms.py), so a dimension that is constant but for a few frames
    (q01 = q99) turns those frames into huge targets: ManiSkill's replay of 798 PushCube plans gave two episodes a
    gripper action that normalizes to about 2e6, and a policy trained on them had a loss between 1e3 and 5e6 for its
    whole run (docs/history/results_log.md, `push800_sn2`). Checked before anything is written, with the model's own
    Normalizer (quantile for Pi0.5, z-score for Pi0)."""
    kept = list(episodes)
    while True:
        stats = compute_norm_stats([e.state for e in kept], [e.actions for e in kept], cfg.model.action_horizon)
        bad = {}  # episode index -> (key, |normalized|, frame, dim)
        for key in ("state", "actions"):
            norm = Normalizer.from_stats(stats, key, cfg.model.use_quantile_norm)
            for i, ep in enumerate(kept):
                z = np.abs(norm.normalize(getattr(ep, key)))
                t, d = np.unravel_index(np.argmax(z), z.shape)
                if z[t, d] > cfg.data.max_normalized and i not in bad:
                    bad[i] = (key, float(z[t, d]), int(t), int(d))
        if not bad:
            break
        i, (key, z, t, d) = next(iter(bad.items()))
        ep, s = kept[i], stats[key]
        if not cfg.data.drop_outliers:
            raise DataError(
                f"{ep.path}: {ep.traj}: {key}[{t}, {d}] = {getattr(ep, key)[t, d]:.4g} normalizes to {z:.3g} "
                f"(max_normalized={cfg.data.max_normalized:g}; over all episodes q01={s['q01'][d]:.4g}, "
                f"q99={s['q99'][d]:.4g}, std={s['std'][d]:.3g}); {len(bad)} of {len(kept)} episodes have such frames: "
                "pass data.drop_outliers=true to leave them out")
        log.warning("left out %d of %d episodes with frames normalizing beyond %g: %s", len(bad), len(kept),
                    cfg.data.max_normalized, ", ".join(f"{kept[j].path.name}:{kept[j].traj} {k}[{tt}, {dd}]"
                                                  for j, (k, _, tt, dd) in bad.items()))
        kept = [e for j, e in enumerate(kept) if j not in bad]
        if not kept:
            raise DataError("no episode left after leaving out those with frames beyond max_normalized")
    return kept
