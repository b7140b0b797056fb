"""Real-time chunking (RTC): Black, Galliker, Levine 2025, "Real-Time Execution of Action Chunking Flow Policies"
(arXiv 2506.07339; reference code Physical-Intelligence/real-time-chunking-kinetix, `src/model.py`).

While the next chunk is computed, the robot keeps executing the previous one: the first `inference_delay` (d) actions
of the new chunk are already committed to the previous chunk's, and the following ones, up to H - s (s: the execution
horizon, actions executed per chunk), should stay close to it. RTC samples the new chunk as inpainting of the
previous one: at every Euler step the velocity is corrected with a Pseudoinverse-guided (PiGDM) term,

    v' = v - w(tau) * J^T [W * (Y - x0_hat)],     x0_hat = x_tau - tau * v(x_tau),   J = d x0_hat / d x_tau,

where Y is the previous chunk aligned with the new one, W the soft prefix mask (`prefix_weights`) and w the clipped
guidance weight (`guidance_weight`). Flow time here is openpi's: tau runs from 1 (noise) to 0 (actions) and
v = d x / d tau, so the paper's time is 1 - tau, its clean estimate x_t + (1 - t) v_paper is x_tau - tau v, and its
`v + w g` becomes `v - w g` (the Euler step has the opposite sign).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

SCHEDULES = ("exp", "linear", "ones", "zeros")  # the paper's soft masks; "zeros" is the hard mask (prefix only)
# The paper's simulated-benchmark settings (Kinetix `eval_flow.py`: RealtimeMethodConfig), the defaults when none are
# given; conf/ states the ones eval.py uses.
RTC_SCHEDULE = "exp"
RTC_MAX_GUIDANCE_WEIGHT = 5.0


def prefix_weights(start: int, end: int, total: int, schedule: str) -> torch.Tensor:
    """The soft mask W over a chunk's `total` positions (the paper's eq. 5): 1 for i < start (the committed actions),
    then decaying to 0 at `end`, 0 from `end` on. With c_i = (end - i) / (end - start + 1) clipped to [0, 1],
    "linear" is c_i and "exp" is c_i (e^c_i - 1) / (e - 1); "ones" is 1 before `end`, "zeros" 1 before `start` only.
    `end` wins over `start`: start > end is taken as start = end (Kinetix's `get_prefix_weights`)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"RTC schedule {schedule!r}: expected one of {', '.join(SCHEDULES)}")
    start = min(start, end)
    i = torch.arange(total, dtype=torch.float64)
    if schedule == "ones":
        w = torch.ones(total, dtype=torch.float64)
    elif schedule == "zeros":
        w = (i < start).double()
    else:
        w = ((start - 1 - i) / (end - start + 1) + 1).clamp(0.0, 1.0)
        if schedule == "exp":
            w = w * torch.expm1(w) / (math.e - 1)
    return torch.where(i >= end, 0.0, w).float()


def guidance_weight(tau: float, max_weight: float) -> float:
    """The paper's clipped PiGDM weight min(beta, (1 - t) / (t r_t^2)), r_t^2 = (1 - t)^2 / (t^2 + (1 - t)^2), at
    paper time t = 1 - tau. It is symmetric in t and 1 - t: (tau^2 + (1 - tau)^2) / (tau (1 - tau)). At pure noise
    (tau = 1) the unclipped weight is infinite, hence beta (Kinetix: nan_to_num(posinf=beta))."""
    if max_weight < 0:
        raise ValueError(f"RTC max_guidance_weight={max_weight}: must be >= 0")
    if tau >= 1.0 or tau <= 0.0:
        return max_weight if tau >= 1.0 else 0.0
    return min(max_weight, (tau**2 + (1.0 - tau) ** 2) / (tau * (1.0 - tau)))


def _per_sample(value: int | Sequence[int], batch_size: int, name: str) -> list[int]:
    values = [int(value)] * batch_size if isinstance(value, int) else [int(v) for v in value]
    if len(values) != batch_size:
        raise ValueError(f"RTC {name}: expected one value per sample ({batch_size}), found {len(values)}")
    return values


def guidance_target(
    prev_chunk: torch.Tensor, horizon: int, action_dim: int, inference_delay: int | Sequence[int],
    execution_horizon: int | Sequence[int] | None, schedule: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Y, W), both (B, horizon, action_dim) float32: the previous chunk zero-padded to the new chunk's shape, and the
    mask that weighs it. `prev_chunk` (B, H', A') holds, aligned with the new chunk (position i = the same control
    step), what remains of the previous chunk; H' <= horizon, A' <= action_dim (dims beyond A', e.g. the model's zero
    padding, are not guided). The mask ends at min(H', horizon - execution_horizon); `inference_delay` and
    `execution_horizon` are one int or one per sample (execution_horizon = horizon: that sample is not guided)."""
    B, Hp, Ap = prev_chunk.shape
    if Hp > horizon or Ap > action_dim:
        raise ValueError(f"RTC prev_chunk: expected at most ({horizon}, {action_dim}) per sample (the model's chunk), "
                         f"found {tuple(prev_chunk.shape[1:])}")
    delays = _per_sample(inference_delay, B, "inference_delay")
    horizons = ([horizon - Hp] * B if execution_horizon is None
                else _per_sample(execution_horizon, B, "execution_horizon"))
    for d, s in zip(delays, horizons):
        if not (0 <= d <= horizon and 0 <= s <= horizon):
            raise ValueError(f"RTC inference_delay={d}, execution_horizon={s}: both must be in [0, {horizon}]")
    weights = torch.stack([prefix_weights(d, min(Hp, horizon - s), horizon, schedule)
                           for d, s in zip(delays, horizons)])
    W = torch.zeros(B, horizon, action_dim)
    W[:, :, :Ap] = weights[:, :, None]
    Y = torch.zeros(B, horizon, action_dim)
    Y[:, :Hp, :Ap] = prev_chunk.float().cpu()
    return Y, W


def guided_velocity(
    velocity: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tau: torch.Tensor, target: torch.Tensor,
    weights: torch.Tensor, weight: float,
) -> torch.Tensor:
    """v - weight * J^T [weights * (target - x0_hat)]: one vector-Jacobian product through `velocity` (the model's
    denoising step at this tau) per Euler step, with respect to x only."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        v = velocity(x_in)
        x0_hat = x_in - tau * v
        (correction,) = torch.autograd.grad(x0_hat, x_in, grad_outputs=(target - x0_hat.detach()) * weights)
    return v.detach() - weight * correction
