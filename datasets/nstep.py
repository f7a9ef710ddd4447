"""n-step return arithmetic (pure numpy; no TensorFlow/Reverb so learners may use it too).

Conventions (RLDS, one episode with steps 0..T): for t < T, ``rewards[t]`` and ``discounts[t]``
are the reward and environment discount received after action a_t (``discounts[T-1]`` is 0 when
the episode terminated, 1 when it was truncated). Only the T non-last steps enter here.

One arithmetic, `discounted_sum`, over a window of m <= n steps with factors g_j = gamma * d_j:

    R = sum_{k<m} (prod_{j<k} g_j) r_k        D = prod_{j<m} g_j   (0 after a termination)

The Reverb n-step writer calls it on plain floats (its hot path); `window_targets` calls it on
columns of many windows at once (the RLDS transforms), and `nstep_targets` on one whole episode.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from rillet import validation
from rillet.errors import SpecMismatchError


def check_nstep_args(n: int, gamma: float, owner: str = "nstep") -> None:
    """Raises ConfigError (naming `owner`.n or `owner`.gamma) unless n >= 1 and 0 <= gamma <= 1."""
    validation.integer(owner, "n", n, low=1, fix="n, the n-step length (n=1: one-step TD)")
    validation.number(owner, "gamma", gamma, 0.0, 1.0, fix="gamma, the discount factor (typical: 0.99)")


def discounted_sum(rewards: Iterable, factors: Iterable) -> tuple:
    """(R, D) of one window: rewards r_0..r_{m-1} and factors g_0..g_{m-1} (g_j = gamma * d_j).

    The entries may be floats (one window; fastest for the writer's m <= n Python floats) or
    arrays [r] (the k-th step of r windows at once); an empty window gives (0.0, 1.0).
    """
    ret, total = 0.0, 1.0
    for r, g in zip(rewards, factors):
        ret = ret + total * r
        total = total * g
    return ret, total


def window_targets(rewards: np.ndarray, discounts: np.ndarray, gamma: float, starts: np.ndarray,
                   lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R [r], D [r]) float64 of r windows over the columns rewards, discounts [N]: window i covers
    rows starts[i] .. starts[i] + lengths[i] - 1 (lengths >= 0). Only those rows are read."""
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)

    def step(column: np.ndarray, k: int, scale: float, pad: float) -> np.ndarray:
        live = k < lengths  # windows that still have a k-th step; the others get the neutral pad
        rows = np.where(live, starts + k, starts)
        return np.where(live, scale * column[rows].astype(np.float64), pad)

    width = range(int(lengths.max(initial=0)))
    ret, total = discounted_sum((step(rewards, k, 1.0, 0.0) for k in width),
                                (step(discounts, k, float(gamma), 1.0) for k in width))
    return np.full(starts.shape, ret, np.float64), np.full(starts.shape, total, np.float64)


def nstep_targets(
    rewards: np.ndarray, discounts: np.ndarray, n: int, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n-step returns for every non-last step of one episode (truncated at the episode's end).

    rewards, discounts: [T] rewards r_t and env discounts d_t of steps t = 0..T-1.
    Returns, with m_t = min(n, T - t) and g_j = gamma * d_j:
      returns [T] float32:      R_t = sum_{k<m_t} (prod_{j<k} g_{t+j}) r_{t+k}
      bootstrap_discounts [T] float32: D_t = prod_{j<m_t} g_{t+j}  (0 after a termination)
      bootstrap_index [T] int64: t + m_t, the step whose observation bootstraps R_t.
    """
    check_nstep_args(n, gamma, "nstep_targets")
    r, d = np.asarray(rewards), np.asarray(discounts)
    if r.ndim != 1 or r.shape != d.shape:
        raise SpecMismatchError(
            f"nstep_targets expects 1-D rewards and discounts of equal length [T], got shapes "
            f"{r.shape} and {d.shape}; pass one episode's non-last steps."
        )
    t = np.arange(r.shape[0])
    bootstrap_index = np.minimum(t + n, r.shape[0]).astype(np.int64)
    returns, totals = window_targets(r, d, gamma, t, bootstrap_index - t)
    return returns.astype(np.float32), totals.astype(np.float32), bootstrap_index
