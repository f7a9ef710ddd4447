"""NGU's family of N policies (Badia et al., 2020): policy j learns r_e + beta_j * r_i with discount
gamma_j. j = 0 is the exploitative policy (beta_0 = 0, the longest horizon gamma_max); j = N - 1 the
most exploratory (beta_{N-1} = beta, gamma_min). Agent57 reuses the same tables.

    beta_j  = 0 (j = 0), beta (j = N - 1), beta * sigmoid(10 (2j - (N - 2)) / (N - 2)) otherwise
    gamma_j = 1 - exp(((N - 1 - j) log(1 - gamma_max) + j log(1 - gamma_min)) / (N - 1))
"""

from __future__ import annotations

import numpy as np

from rillet.errors import ConfigError

__all__ = ["family_betas", "family_gammas"]


def _check(num_policies: int) -> int:
    if int(num_policies) != num_policies or num_policies < 1:
        raise ConfigError(f"num_policies={num_policies}: the policy family needs an integer N >= 1 (NGU: 32).")
    return int(num_policies)


def family_betas(num_policies: int, beta: float) -> np.ndarray:
    """[N] float32 intrinsic-reward weights beta_j (formula in the module docstring)."""
    n = _check(num_policies)
    j = np.arange(n, dtype=np.float64)
    betas = np.zeros(n)
    if n > 2:
        x = 10.0 * (2.0 * j - (n - 2)) / (n - 2)
        betas = beta / (1.0 + np.exp(-x))
    betas[0] = 0.0
    if n > 1:
        betas[-1] = beta
    return betas.astype(np.float32)


def family_gammas(num_policies: int, gamma_max: float, gamma_min: float) -> np.ndarray:
    """[N] float32 discounts gamma_j, from gamma_max (j = 0) down to gamma_min (j = N - 1); [gamma_max]
    when N = 1."""
    n = _check(num_policies)
    if n == 1:
        return np.array([gamma_max], np.float32)
    j = np.arange(n, dtype=np.float64)
    log_gap = ((n - 1 - j) * np.log(1.0 - gamma_max) + j * np.log(1.0 - gamma_min)) / (n - 1)
    return (1.0 - np.exp(log_gap)).astype(np.float32)
