"""Learning-rate schedules: the rate for a step, identical on every rank."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "step")


def learning_rate(schedule: str, base_lr: float, *, step: int, total_steps: int, epoch: int,
                  step_epochs: int = 10, gamma: float = 0.1) -> float:
    """constant; cosine decay from base_lr to 0 over total_steps; step: ×gamma every
    step_epochs epochs."""
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return base_lr * gamma ** (epoch // step_epochs)
