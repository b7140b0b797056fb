"""Where the observation schema's cameras come from and go to, shared by the ManiSkill side (`maniskill.py`: live
observations and demos) and the LeRobot side (`lerobot.py`, `dataset.py`: the converted datasets).

The schema itself (images / image_masks / state / prompt) is described in `transforms.py`, which consumes it.
"""

from __future__ import annotations

from vla.data.config import TaskConfig

# observation-schema image key -> dataset feature (and its mask feature)
DATASET_IMAGE_KEYS = {"base_0_rgb": "image", "left_wrist_0_rgb": "wrist_image"}
DATASET_MASK_KEYS = {"left_wrist_0_rgb": "wrist_mask"}  # the base camera is always present


def camera_for(task: TaskConfig, schema_key: str) -> str | None:
    """ManiSkill camera feeding a schema image key, or None if the task has no such camera."""
    return next((cam for cam, key in task.cameras.items() if key == schema_key), None)
