"""Exploration families for actors: per-actor parameters handed to the actors in place of a bare
array. A family has ``parameters(num_actors) -> {name: [num_actors]}``; the policy reads each name
from its actor state (EpsilonLadder: {"epsilon"}; the (beta_j, gamma_j) family and a bandit's choice
add theirs).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rillet.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class EpsilonLadder:
    """Ape-X's ladder: actor i of N acts epsilon_i-greedily, epsilon_i = base ** (1 + alpha * i / (N - 1))."""

    base: float = 0.4
    alpha: float = 7.0

    def __post_init__(self):
        if not 0.0 <= self.base <= 1.0 or self.alpha < 0:
            raise ConfigError(f"EpsilonLadder(base={self.base}, alpha={self.alpha}): base must be in [0, 1] "
                              "and alpha >= 0.")

    def parameters(self, num_actors: int) -> dict[str, np.ndarray]:
        """{"epsilon": [num_actors] float32}."""
        return {"epsilon": apex_epsilons(num_actors, self.base, self.alpha)}


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


@dataclasses.dataclass(frozen=True)
class PolicyFamily:
    """NGU's family: environment i acts as policy j_i = i mod num_policies (fixed per environment, as
    in the paper) and epsilon_i-greedily on Ape-X's ladder. The learner reads beta_j and gamma_j from j."""

    num_policies: int = 32
    epsilons: EpsilonLadder = EpsilonLadder()

    def __post_init__(self):
        if int(self.num_policies) != self.num_policies or self.num_policies < 1:
            raise ConfigError(f"PolicyFamily(num_policies={self.num_policies}): use an integer >= 1.")

    def parameters(self, num_actors: int) -> dict[str, np.ndarray]:
        """{"epsilon": [num_actors] float32, "policy_index": [num_actors] int32}."""
        return {**self.epsilons.parameters(num_actors),
                "policy_index": (np.arange(num_actors) % self.num_policies).astype(np.int32)}


@dataclasses.dataclass(frozen=True)
class GaussianNoise:
    """Continuous-action exploration (TD3): every actor adds N(0, scale^2 I) to its deterministic
    action; the same scale for all actors."""

    scale: float = 0.1

    def __post_init__(self):
        if not self.scale > 0:
            raise ConfigError(f"GaussianNoise(scale={self.scale}): the noise scale must be > 0 (e.g. 0.1).")

    def parameters(self, num_actors: int) -> dict[str, np.ndarray]:
        """{"noise_scale": [num_actors] float32}."""
        return {"noise_scale": np.full(num_actors, self.scale, np.float32)}
