"""n-step return arithmetic (pure numpy; no TensorFlow/Reverb so learners may use it too).

Conventions (RLDS, one episode with steps 0..T): for t < T, ``rewards[t]`` and ``discounts[t]``
are the reward and environment discount received after action a_t (``discounts[T-1]`` is 0 when
the episode terminated, 1 when it was truncated). Only the T non-last steps enter here.
"""

from __future__ import annotations

import numpy as np

from rillet.errors import ConfigError, SpecMismatchError


def check_nstep_args(n: int, gamma: float) -> None:
    """Raises ConfigError unless n >= 1 and 0 <= gamma <= 1."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n-step length n must be an integer >= 1, got {n!r}; use n=1 for one-step TD.")
    if not np.isfinite(gamma) or not 0.0 <= float(gamma) <= 1.0:
        raise ConfigError(f"discount factor gamma must lie in [0, 1], got {gamma!r} (typical: 0.99).")


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
    check_nstep_args(n, gamma)
    r = np.asarray(rewards, np.float64)
    d = np.asarray(discounts, np.float64)
    if r.ndim != 1 or r.shape != d.shape:
        raise SpecMismatchError(
            f"nstep_targets expects 1-D rewards and discounts of equal length [T], got shapes "
            f"{r.shape} and {d.shape}; pass one episode's non-last steps."
        )
    size = r.shape[0]
    g = float(gamma) * d
    t = np.arange(size)
    returns = np.zeros(size, np.float64)
    total = np.ones(size, np.float64)
    for k in range(min(n, size)):
        idx = t + k
        valid = idx < size  # steps whose window still has a k-th reward
        returns[valid] += total[valid] * r[idx[valid]]
        total[valid] *= g[idx[valid]]
    bootstrap_index = np.minimum(t + n, size).astype(np.int64)
    return returns.astype(np.float32), total.astype(np.float32), bootstrap_index


def window_return(rewards, discounts, gamma: float) -> tuple[float, float]:
    """R and D of one window (the scalar case of `nstep_targets`, for writers in the hot path).

    rewards, discounts: the m <= n rewards r_t..r_{t+m-1} and env discounts of one start t.
    Returns (R_t, D_t) as Python floats; plain-Python arithmetic beats numpy at this size.
    """
    ret, total = 0.0, 1.0
    for r, d in zip(rewards, discounts):
        ret += total * r
        total *= gamma * d
    return ret, total
