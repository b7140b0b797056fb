"""The convert job: (optionally generate demos) -> validate -> LeRobot dataset + norm_stats.json."""

from __future__ import annotations

import logging
from pathlib import Path

from vla.data.config import ConvertConfig
from vla.data.lerobot import WriteReport, write_dataset, write_dataset_sharded
from vla.data.maniskill import generate_demos, read_episodes

log = logging.getLogger(__name__)


def convert(cfg: ConvertConfig) -> WriteReport | None:
    """None when only motion plans were made (input=generate with task.demos.replay=false): nothing to convert yet."""
    task = cfg.task
    output = Path(cfg.output)
    plan_only = cfg.input == "generate" and not task.demos.replay
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
    if cfg.num_workers > 1 and len(episodes) > 1:
        report = write_dataset_sharded(episodes, output, task, cfg.model.action_horizon, cfg.use_videos, cfg.overwrite,
                                       cfg.num_workers)
    else:
        report = write_dataset(episodes, output, task, cfg.model.action_horizon, cfg.use_videos, cfg.overwrite)
    log.info(
        "converted %d episodes / %d frames of %s into %s (%s): %.1f MB in %.1f s; norm stats (H=%d) in %s",
        report.episodes, report.frames, input_path, report.root, "videos" if cfg.use_videos else "images",
        report.bytes / 1e6, report.seconds, cfg.model.action_horizon, report.root / "norm_stats.json",
    )
    return report
