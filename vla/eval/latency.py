"""eval.py's latency mode: what a robot executes when the policy's inference takes `delay` control steps, as the
real-time chunking paper simulates it (Black et al. 2025, arXiv 2506.07339; Kinetix `src/eval_flow.py`).

The observation is taken when inference starts; while the next chunk is computed, the env keeps executing the
previous chunk, so of each new chunk only the actions from index `delay` on are executed, up to the execution
horizon s (eval.replan_steps): a round executes previous[s:s + delay] ++ new[delay:s]. The first chunk of an episode
is waited for (nothing to execute yet). Without real-time chunking the new chunk ignores what is being executed
(naive: a jump at the boundary); with it, the chunk is sampled to continue the previous one.

The step-to-step change of the executed actions, at the step where a new chunk takes over (the chunk boundary) and
at every other step, is recorded per episode: the discontinuity real-time chunking removes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def execute_round(chunk: np.ndarray, leftover: np.ndarray | None, delay: int, horizon: int
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """One round: (the actions to execute, what remains of `chunk` for the next round, the index in the executed
    actions where `chunk` takes over). `leftover`: what remained of the previous chunk, aligned with this one (None
    at the start of an episode: the robot waited for this chunk)."""
    if leftover is None:
        return chunk[:horizon], chunk[horizon:], 0
    if len(leftover) < delay:
        raise ValueError(f"{len(leftover)} actions left of the previous chunk cannot cover an inference delay of "
                         f"{delay} steps (execution horizon + delay must not exceed the action horizon)")
    return np.concatenate([leftover[:delay], chunk[delay:horizon]]), chunk[horizon:], delay


@dataclass
class ActionChanges:
    """The L2 norm of a_t - a_(t-1) over the executed actions of one episode, split into the steps where a new chunk
    takes over and the others."""

    last: np.ndarray | None = None
    boundary: list[float] = field(default_factory=list)
    interior: list[float] = field(default_factory=list)

    def add(self, actions: np.ndarray, takeover: int) -> None:
        """`actions` executed in order; `actions[takeover]` is the first of a new chunk."""
        for i, action in enumerate(actions):
            if self.last is not None:
                change = float(np.linalg.norm(action - self.last))
                (self.boundary if i == takeover else self.interior).append(change)
            self.last = action

    def means(self) -> tuple[float | None, float | None]:
        return (float(np.mean(self.boundary)) if self.boundary else None,
                float(np.mean(self.interior)) if self.interior else None)


def action_change_means(episodes: list) -> dict[str, float | None]:
    """The episodes' (Episode records) mean action change at chunk boundaries and elsewhere."""
    out = {}
    for key in ("boundary", "interior"):
        values = [v for e in episodes if (v := getattr(e, f"{key}_action_change")) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out
