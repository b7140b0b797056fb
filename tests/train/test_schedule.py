"""Learning-rate schedules: optax's warmup_cosine_decay_schedule semantics (openpi's CosineDecaySchedule,
src/openpi/training/optimizer.py) and the constant variant."""

import math

import pytest

from vla.configs import OptimConfig
from vla.train.schedule import learning_rate


def test_openpi_default_cosine_schedule():
    cfg = OptimConfig()  # openpi CosineDecaySchedule: warmup 1000, peak 2.5e-5, decay_steps 30000, decay_lr 2.5e-6
    assert learning_rate(0, cfg) == pytest.approx(2.5e-5 / 1001, rel=1e-12)  # init_value = peak / (warmup + 1)
    assert learning_rate(500, cfg) == pytest.approx(2.5e-5 / 1001 + (2.5e-5 - 2.5e-5 / 1001) * 0.5, rel=1e-12)
    assert learning_rate(1000, cfg) == pytest.approx(2.5e-5, rel=1e-12)
    # half-way through the cosine (counted from the end of warmup): mean of peak and end
    assert learning_rate(1000 + 14500, cfg) == pytest.approx((2.5e-5 + 2.5e-6) / 2, rel=1e-9)
    assert learning_rate(30000, cfg) == pytest.approx(2.5e-6, rel=1e-12)
    assert learning_rate(90000, cfg) == pytest.approx(2.5e-6, rel=1e-12)  # held after decay_steps
    t = 0.3
    expected = 2.5e-5 * ((1 - 0.1) * 0.5 * (1 + math.cos(math.pi * t)) + 0.1)
    assert learning_rate(1000 + int(29000 * t), cfg) == pytest.approx(expected, rel=1e-9)


def test_constant_after_warmup_schedule_of_pi05_libero():
    cfg = OptimConfig(lr=5e-5, schedule="constant", warmup_steps=10000, decay_steps=1_000_000, decay_lr=5e-5)
    assert learning_rate(0, cfg) == pytest.approx(5e-5 / 10001)
    assert learning_rate(10000, cfg) == learning_rate(500_000, cfg) == 5e-5
    lrs = [learning_rate(s, cfg) for s in range(0, 10001, 100)]
    assert all(a < b for a, b in zip(lrs, lrs[1:]))  # strictly increasing warmup


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="optim.schedule.*'linear'"):
        learning_rate(5, OptimConfig(schedule="linear", warmup_steps=0))
