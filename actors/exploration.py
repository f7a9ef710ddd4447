"""Exploration schedules for actors."""

from __future__ import annotations

import numpy as np


def apex_epsilons(num_envs: int, base: float = 0.4, alpha: float = 7.0) -> np.ndarray:
    """Ape-X per-actor epsilons: eps_i = base ** (1 + alpha * i / (N - 1)), i = 0..N-1.

    Returns [N] float32. With one env, returns [base].
    """
    if num_envs == 1:
        return np.array([base], np.float32)
    i = np.arange(num_envs, dtype=np.float64)
    return (base ** (1.0 + alpha * i / (num_envs - 1))).astype(np.float32)


def linear_decay(step: int, start: float, end: float, duration: int) -> float:
    """Linear interpolation from `start` to `end` over `duration` steps, then constant `end`."""
    if duration <= 0:
        return end
    frac = min(max(step / duration, 0.0), 1.0)
    return start + frac * (end - start)
