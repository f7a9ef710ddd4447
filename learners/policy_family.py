"""NGU's family of N policies (Badia et al., 2020): policy j learns r_e + beta_j * r_i with discount
gamma_j. j = 0 is the exploitative policy (beta_0 = 0, the longest horizon gamma_max); j = N - 1 the
most exploratory (beta_{N-1} = beta, gamma_min). Agent57 reuses the betas with its own discount ladder
(`agent57_gammas`).

    beta_j  = 0 (j = 0), beta (j = N - 1), beta * sigmoid(10 (2j - (N - 2)) / (N - 2)) otherwise
    gamma_j = 1 - exp(((N - 1 - j) log(1 - gamma_max) + j log(1 - gamma_min)) / (N - 1))
"""

from __future__ import annotations

import numpy as np

from rillet.errors import ConfigError

__all__ = ["family_betas", "family_gammas", "agent57_gammas"]


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


def agent57_gammas(num_policies: int, gamma0: float = 0.9999, gamma1: float = 0.997,
                   gamma2: float = 0.99) -> np.ndarray:
    """[N] float32 Agent57 discounts (Badia et al., 2020, "Agent57", appendix), N >= 10:

        gamma_0 = gamma0;  gamma_j = gamma1 + (gamma0 - gamma1) * sigmoid(10 (2j - 6) / 6)  (j = 1..6)
        gamma_7 = gamma1;  1 - gamma_j = exp(((N - 1 - j) log(1 - gamma1) + (j - 8) log(1 - gamma2)) / (N - 9))
                                                                                       (j = 8..N-1)

    The tail interpolates 1 - gamma geometrically from gamma1 at j = 8 to gamma2 at j = N - 1. The formula
    as often transcribed has (N - 9) where (N - 1 - j) stands here; that version would rise above gamma1
    instead of reaching gamma2, so the interpolation is implemented (PAPERS.md, Agent57).
    """
    n = _check(num_policies)
    if n < 10:
        raise ConfigError(f"num_policies={n}: Agent57's discount ladder has 8 fixed rungs and a tail from "
                          "j = 8 to N - 1; use N >= 10 (the paper: 32).")
    j = np.arange(n, dtype=np.float64)
    middle = gamma1 + (gamma0 - gamma1) / (1.0 + np.exp(-10.0 * (2.0 * j - 6.0) / 6.0))
    tail = 1.0 - np.exp(((n - 1 - j) * np.log(1.0 - gamma1) + (j - 8) * np.log(1.0 - gamma2)) / (n - 9))
    gammas = np.where(j >= 8, tail, middle)
    gammas[0], gammas[7] = gamma0, gamma1
    return gammas.astype(np.float32)
