"""Weight alpha of the pseudo-label loss as a function of the epoch within a round."""

from __future__ import annotations

import math


def alpha_linear(epoch: int, alpha_max: float, ramp_epochs: int) -> float:
    """0 in the first epoch (epoch 0), rising linearly to ``alpha_max`` at ``ramp_epochs``."""
    if ramp_epochs <= 0:
        return alpha_max
    return alpha_max * min(1.0, epoch / ramp_epochs)


def alpha_lee(epoch: int, alpha_f: float, t1: int, t2: int) -> float:
    """Lee (2013): 0 before T1, alpha_f * (t - T1) / (T2 - T1) between, alpha_f from T2 on."""
    if epoch < t1:
        return 0.0
    if epoch < t2:
        return alpha_f * (epoch - t1) / (t2 - t1)
    return alpha_f


def alpha_at(epoch: int, schedule: str, alpha_max: float, ramp_epochs: int = 5, t1: int = 1, t2: int = 6) -> float:
    """Alpha for ``epoch`` (0-based, within the round) under the named schedule."""
    if schedule == "linear":
        return alpha_linear(epoch, alpha_max, ramp_epochs)
    if schedule == "lee":
        return alpha_lee(epoch, alpha_max, t1, t2)
    if schedule == "constant":
        return alpha_max
    raise ValueError(f"unknown alpha schedule {schedule!r}")


def lr_at(step: int, total_steps: int, base_lr: float, schedule: str) -> float:
    """Learning rate at ``step`` of a round of ``total_steps``: cosine decay to 0, or constant."""
    if schedule == "constant" or total_steps <= 1:
        return base_lr
    if schedule == "cosine":
        return 0.5 * base_lr * (1.0 + math.cos(math.pi * step / total_steps))
    raise ValueError(f"unknown lr schedule {schedule!r}")
