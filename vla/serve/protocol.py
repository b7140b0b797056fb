"""What a request carries and what it becomes. The observation is a flat dict, as openpi's clients send it for their
robots (openpi examples/libero/main.py: `observation/image`, `observation/wrist_image`, `observation/state`,
`prompt`), here for the ManiSkill Panda tasks of conf/task/:

  observation/image        uint8 (S, S, 3)  the base camera (`base_camera`) as ManiSkill renders it (S: task.image_size)
  observation/wrist_image  uint8 (S, S, 3)  the hand camera; only for tasks that have one (task.cameras)
  observation/state        float (D,)       agent/qpos[:qpos_dim], then the state_extra entries (D: task.state_dim)
  prompt                   str              optional: the task's prompt when absent

It maps onto the observation schema (vla.data.transforms; camera keys from vla.data.schema: `image` is base_0_rgb,
`wrist_image` left_wrist_0_rgb), which the same `ModelTransform` as eval.py turns into the model batch: exactly what
eval.py feeds the policy for a live env (`vla.data.maniskill.observation_from_env`). Images are checked against the
size the demos were rendered at rather than resized here: a frame of another size is usually a camera set up unlike
the training data's.

The response holds `actions`, float32 (H, action_dim): the raw `pd_ee_delta_pose` chunk (unnormalized with the
checkpoint's norm stats, not clipped: ManiSkill's controller expects [-1, 1], and eval.py clips before stepping).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vla.data.config import TaskConfig
from vla.data.schema import DATASET_IMAGE_KEYS

STATE_KEY = "observation/state"
PROMPT_KEY = "prompt"


class ObservationError(ValueError):
    """A request whose observation the policy cannot take: one line naming the key, expected vs found, and the fix."""


def image_key(schema_key: str) -> str:
    """The request key of an observation-schema camera: observation/image, observation/wrist_image."""
    return f"observation/{DATASET_IMAGE_KEYS[schema_key]}"


@dataclass(frozen=True)
class ObservationSpec:
    cameras: dict[str, str]  # request key -> observation-schema camera key
    image_size: int
    state_dim: int
    state_parts: str  # what the state holds, for error messages and the metadata
    default_prompt: str

    @classmethod
    def for_task(cls, task: TaskConfig, prompt: str | None = None) -> ObservationSpec:
        schema_keys = [k for k in DATASET_IMAGE_KEYS if k in task.cameras.values()]
        parts = " + ".join(f"{key}[:{dims}]" if key == "agent/qpos" else f"{key} ({dims})"
                           for key, dims in task.state_sources)
        return cls({image_key(k): k for k in schema_keys}, task.image_size, task.state_dim, parts,
                   prompt or task.prompt)

    @property
    def keys(self) -> list[str]:
        return [*self.cameras, STATE_KEY, PROMPT_KEY]

    def describe(self) -> dict:
        """The observation format, sent to every client in the metadata."""
        S = self.image_size
        return {
            **{key: {"dtype": "uint8", "shape": [S, S, 3]} for key in self.cameras},
            STATE_KEY: {"dtype": "float32", "shape": [self.state_dim], "holds": self.state_parts},
            PROMPT_KEY: {"dtype": "str", "optional": True, "default": self.default_prompt},
        }

    def to_schema(self, obs: Any) -> dict:
        """A decoded request -> one observation-schema sample, or an ObservationError."""
        if not isinstance(obs, dict):
            raise ObservationError(f"observation: expected a dict with keys {', '.join(self.keys)}, "
                                   f"found {type(obs).__name__}")
        unknown = [k for k in obs if k not in self.keys]
        if unknown:
            raise ObservationError(f"observation: unknown key {unknown[0]!r} (this policy takes "
                                   f"{', '.join(self.keys)}; prompt is optional)")
        missing = [k for k in self.keys[:-1] if k not in obs]
        if missing:
            raise ObservationError(f"observation: missing {missing[0]!r} (this policy takes {', '.join(self.keys)}; "
                                   "prompt is optional)")
        images = {schema_key: self._image(key, obs[key]) for key, schema_key in self.cameras.items()}
        return {
            "images": images,
            "image_masks": {k: True for k in images},
            "state": self._state(obs[STATE_KEY]),
            "prompt": self._prompt(obs.get(PROMPT_KEY)),
        }

    def _image(self, key: str, image: Any) -> np.ndarray:
        S = self.image_size
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != (S, S, 3):
            raise ObservationError(f"{key}: expected uint8 ({S}, {S}, 3), found {_describe(image)}; send the "
                                   f"camera's RGB frame (height, width, channel) at the task's image size {S}, as the "
                                   "training demos were rendered")
        return image

    def _state(self, state: Any) -> np.ndarray:
        array = np.asarray(state) if isinstance(state, (np.ndarray, list, tuple)) else None
        if array is None or array.dtype.kind not in "fiu" or array.shape != (self.state_dim,):
            raise ObservationError(f"{STATE_KEY}: expected float ({self.state_dim},) = {self.state_parts}, found "
                                   f"{_describe(state)}")
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            index = int(np.flatnonzero(~np.isfinite(array))[0])
            raise ObservationError(f"{STATE_KEY}: non-finite value at index {index}")
        return array

    def _prompt(self, prompt: Any) -> str:
        if prompt is None:
            return self.default_prompt
        if not isinstance(prompt, str) or not prompt.strip():
            raise ObservationError(f"{PROMPT_KEY}: expected a non-empty str, found {_describe(prompt)}")
        return prompt


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {value.shape}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    if isinstance(value, str):
        return f"str {value[:40]!r}"
    return type(value).__name__
