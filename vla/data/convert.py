"""The convert job: (optionally generate demos) -> validate -> LeRobot dataset + norm_stats.json."""

from __future__ import annotations

import logging
from pathlib import Path

from vla.data.config import ConvertConfig
from vla.data.lerobot import WriteReport, write_dataset
from vla.data.maniskill import generate_demos, read_episodes

log = logging.getLogger(__name__)


def convert(cfg: ConvertConfig) -> WriteReport:
    task = cfg.task
    output = Path(cfg.output)
    if output.exists() and not cfg.overwrite:  # fail before spending minutes on demo generation
        raise FileExistsError(f"{output} exists (pass overwrite=true to replace it)")
    if cfg.input == "generate":
        gen = generate_demos(task, task.demos.out_dir)
        log.info(
            "generated %d %s demos in %.1f s: %.2f s/plan, %.1f s/replay (%d plan + %d replay failures skipped) -> %s",
            gen.num_demos, task.env_id, gen.wall_s, gen.plan_s, gen.replay_s, gen.plan_failures, gen.replay_failures,
            gen.path,
        )
        input_path = gen.path
    else:
        input_path = Path(cfg.input)
    episodes = read_episodes(input_path, task)
    report = write_dataset(episodes, output, task, cfg.model.action_horizon, cfg.use_videos, cfg.overwrite)
    log.info(
        "converted %d episodes / %d frames of %s into %s (%s): %.1f MB in %.1f s; norm stats (H=%d) in %s",
        report.episodes, report.frames, input_path, report.root, "videos" if cfg.use_videos else "images",
        report.bytes / 1e6, report.seconds, cfg.model.action_horizon, report.root / "norm_stats.json",
    )
    return report
