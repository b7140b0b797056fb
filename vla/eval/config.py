"""Typed schema of the recipe's evaluation protocol (`eval`): recorded with every training run, so that
`eval.py checkpoint=<run>` measures a policy the way its recipe says unless the command line overrides it."""

from __future__ import annotations

from dataclasses import dataclass


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
                raise ValueError(f"eval.{key}={value}: must be at least 1" + ("" if key == "num_episodes" else
                                                                               ", or null for the default"))
