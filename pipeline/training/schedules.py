"""Keras learning-rate schedules, computed as Keras computes them, for a torch optimizer.

Keras evaluates a ``LearningRateSchedule`` at the optimizer's ``iterations`` (0 for the
first step) in float32, the dtype of ``initial_learning_rate`` after
``convert_to_tensor``.  Each function here follows its class's ``__call__`` in
``keras/src/optimizers/schedules/learning_rate_schedule.py`` (Keras 3.15) operation by
operation in NumPy float32, so the learning rate of step ``k`` is the float32 number Keras
uses.  :class:`KerasSchedule` is the torch ``LRScheduler`` that sets it: after the
``k``-th ``scheduler.step()`` every param group's ``lr`` is ``schedule(k)``, the rate of
the next optimizer step, exactly Keras's order (step ``k`` uses ``schedule(k)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

from pipeline.training.config import Schedule, TrainingConfigError

f32 = np.float32


def exponential_decay(
    step: int,
    initial_learning_rate: float,
    decay_steps: float,
    decay_rate: float,
    staircase: bool = False,
    **_: Any,
) -> np.float32:
    """``initial · decay_rate^(step / decay_steps)`` (exponent floored with ``staircase``)."""
    p = f32(step) / f32(decay_steps)
    if staircase:
        p = np.floor(p)
    return f32(initial_learning_rate) * np.power(f32(decay_rate), p)


def piecewise_constant_decay(
    step: int, boundaries: list[float], values: list[float], **_: Any
) -> np.float32:
    """``values[i]`` for ``boundaries[i-1] < step <= boundaries[i]`` (Keras's ``<=``;
    boundaries are cast to the integer step's dtype first, so 2.5 acts as 2)."""
    for boundary, value in zip(boundaries, values, strict=False):
        if step <= math.trunc(boundary):
            return f32(value)
    return f32(values[-1])


def polynomial_decay(
    step: int,
    initial_learning_rate: float,
    decay_steps: float,
    end_learning_rate: float = 0.0001,
    power: float = 1.0,
    cycle: bool = False,
    **_: Any,
) -> np.float32:
    """``(initial - end)·(1 - step/decay_steps)^power + end``, step capped or cycled."""
    global_step = f32(step)
    steps = f32(decay_steps)
    if cycle:
        multiplier = f32(1.0) if global_step == 0 else np.ceil(global_step / decay_steps)
        steps = steps * multiplier
    else:
        global_step = min(global_step, steps)
    p = global_step / steps
    initial, end = f32(initial_learning_rate), f32(end_learning_rate)
    return (initial - end) * np.power(1 - p, f32(power)) + end


def inverse_time_decay(
    step: int,
    initial_learning_rate: float,
    decay_steps: float,
    decay_rate: float,
    staircase: bool = False,
    **_: Any,
) -> np.float32:
    """``initial / (1 + decay_rate · step / decay_steps)`` (floored with ``staircase``)."""
    p = f32(step) / f32(decay_steps)
    if staircase:
        p = np.floor(p)
    return f32(initial_learning_rate) / (f32(1) + f32(decay_rate) * p)


def _cosine(
    step: np.float32, decay_steps: np.float32, start: np.float32, alpha: float
) -> np.float32:
    fraction = step / decay_steps
    cosine_decayed = 0.5 * (1.0 + np.cos(f32(math.pi) * fraction))
    return start * ((1 - alpha) * cosine_decayed + alpha)


def cosine_decay(
    step: int,
    initial_learning_rate: float,
    decay_steps: float,
    alpha: float = 0.0,
    warmup_target: float | None = None,
    warmup_steps: float = 0,
    **_: Any,
) -> np.float32:
    """Cosine decay from ``initial`` (or, with ``warmup_target``, a linear warm-up from
    ``initial`` to the target over ``warmup_steps``, then cosine decay from the target)."""
    initial, steps, global_step = f32(initial_learning_rate), f32(decay_steps), f32(step)
    if warmup_target is None:
        return _cosine(min(global_step, steps), steps, initial, alpha)
    target, warmup = f32(warmup_target), f32(warmup_steps)
    global_step = min(global_step, steps + warmup)
    if global_step < warmup:
        return (target - initial) * (global_step / warmup) + initial
    return _cosine(global_step - warmup, steps, target, alpha)


def cosine_decay_restarts(
    step: int,
    initial_learning_rate: float,
    first_decay_steps: float,
    t_mul: float = 2.0,
    m_mul: float = 1.0,
    alpha: float = 0.0,
    **_: Any,
) -> np.float32:
    """SGDR: cosine decay restarted after ``first_decay_steps·t_mul^i`` steps, scaled by
    ``m_mul^i`` at restart ``i``."""
    fraction = f32(step) / f32(first_decay_steps)
    tm, mm, a = f32(t_mul), f32(m_mul), f32(alpha)
    if tm == 1.0:
        restart = np.floor(fraction)
        fraction = fraction - restart
    else:
        restart = np.floor(np.log(f32(1.0 - fraction * (1.0 - tm))) / np.log(tm))
        sum_r = (1.0 - np.power(tm, restart)) / (1.0 - tm)
        fraction = (fraction - sum_r) / np.power(tm, restart)
    cosine_decayed = 0.5 * np.power(mm, restart) * (1.0 + np.cos(f32(math.pi) * fraction))
    return f32(initial_learning_rate) * ((1 - a) * cosine_decayed + a)


SCHEDULE_FUNCTIONS: Mapping[str, Callable[..., np.float32]] = {
    "ExponentialDecay": exponential_decay,
    "PiecewiseConstantDecay": piecewise_constant_decay,
    "PolynomialDecay": polynomial_decay,
    "InverseTimeDecay": inverse_time_decay,
    "CosineDecay": cosine_decay,
    "CosineDecayRestarts": cosine_decay_restarts,
}


def learning_rate_function(learning_rate: float | Schedule) -> Callable[[int], float]:
    """Step (0-based) → the float32 learning rate Keras uses at that step, as a float."""
    if not isinstance(learning_rate, Schedule):
        constant = float(f32(learning_rate))
        return lambda _step: constant
    function = SCHEDULE_FUNCTIONS.get(learning_rate.class_name)
    if function is None:
        raise TrainingConfigError(
            f"learning-rate schedule {learning_rate.class_name} (config key "
            "'optimizer.learning_rate') has no torch equivalent in tf2torch"
        )
    config = dict(learning_rate.config)
    return lambda step: float(f32(function(step, **config)))


class KerasSchedule(LRScheduler):
    """Sets every param group's ``lr`` to ``schedule(k)`` after the ``k``-th
    ``scheduler.step()`` (``schedule(0)`` on construction): a Keras
    ``LearningRateSchedule`` evaluated at the optimizer's iteration count.

    torch's own schedulers (``ExponentialLR``, ``CosineAnnealingLR``, ...) update the rate
    multiplicatively or on epochs and in float64, so none reproduces Keras's float32 values
    step for step; this one computes Keras's formula directly (:func:`learning_rate_function`).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Callable[[int], float],
        last_epoch: int = -1,
    ) -> None:
        self.schedule = schedule
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """The learning rate of the next optimizer step, one per param group."""
        return [self.schedule(self.last_epoch)] * len(self.optimizer.param_groups)
