"""Q-networks built from a `StepSpec`: obs [B, ...] -> Q-values [B, num_actions]."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError
from rillet.learners.networks.mlp import MLP, batch_apply
from rillet.learners.networks.nature_dqn import FEATURES, NatureDQN

__all__ = ["MLP", "NatureDQN", "LinearHead", "DuelingHead", "QNetwork", "q_network"]


class LinearHead(eqx.Module):
    """features [..., F] -> Q [..., A]."""

    linear: eqx.nn.Linear

    def __init__(self, in_size: int, num_actions: int, key: jax.Array):
        self.linear = eqx.nn.Linear(in_size, num_actions, key=key)

    def __call__(self, features: jax.Array) -> jax.Array:
        return batch_apply(self.linear, features, event_ndim=1)


class DuelingHead(eqx.Module):
    """Dueling head (Wang et al., 2016): Q = V + A - mean_a(A); features [..., F] -> [..., A]."""

    value: eqx.nn.Linear
    advantage: eqx.nn.Linear

    def __init__(self, in_size: int, num_actions: int, key: jax.Array):
        kv, ka = jax.random.split(key)
        self.value = eqx.nn.Linear(in_size, 1, key=kv)
        self.advantage = eqx.nn.Linear(in_size, num_actions, key=ka)

    def _single(self, f: jax.Array) -> jax.Array:
        adv = self.advantage(f)
        return self.value(f) + adv - jnp.mean(adv)

    def __call__(self, features: jax.Array) -> jax.Array:
        return batch_apply(self._single, features, event_ndim=1)


class QNetwork(eqx.Module):
    """torso then head: obs [..., *obs_shape] -> Q [..., A]."""

    torso: eqx.Module
    head: eqx.Module

    def __call__(self, observation: jax.Array) -> jax.Array:
        return self.head(self.torso(observation))


def q_network(spec: StepSpec, config: Any, key: jax.Array) -> eqx.Module:
    """Builds the Q-network for `spec`.

    Rank-1 observations [D] -> `MLP(D, config.hidden_sizes, A)` (or an MLP torso + dueling head).
    Rank-3 uint8 observations [C, H, W] -> `NatureDQN` torso + linear (or dueling) head.
    The result maps obs [B, ...] -> q [B, A] (any number of leading axes).
    Raises ConfigError for continuous actions or unsupported observation specs.
    """
    num_actions = spec.num_actions
    if num_actions is None:
        raise ConfigError(
            f"DQN needs a discrete action space, but the spec of '{spec.env_id or 'unnamed env'}' has "
            f"continuous actions {spec.action.shape} {spec.action.dtype} (num_actions=None). "
            "Use an environment with discrete actions or a continuous-control learner."
        )
    if int(num_actions) < 1:
        raise ConfigError(f"spec.num_actions must be >= 1, got {num_actions}.")
    if spec.action.shape != () or not np.issubdtype(spec.action.np_dtype, np.integer):
        raise ConfigError(
            f"DQN needs scalar integer actions, got action spec {spec.action.shape} {spec.action.dtype}."
        )
    hidden = tuple(int(h) for h in getattr(config, "hidden_sizes", (256, 256)))
    dueling = bool(getattr(config, "dueling", False))
    obs = spec.observation
    torso_key, head_key = jax.random.split(key)
    if len(obs.shape) == 1:
        if not dueling:
            return MLP(obs.shape[0], hidden, num_actions, key)
        if not hidden:
            raise ConfigError(
                "dueling=True with vector observations needs at least one hidden layer; "
                f"got hidden_sizes={hidden}. Set hidden_sizes, e.g. (256, 256)."
            )
        torso = MLP(obs.shape[0], hidden[:-1], hidden[-1], torso_key, activate_final=True)
        return QNetwork(torso, DuelingHead(hidden[-1], num_actions, head_key))
    if len(obs.shape) == 3:
        if obs.np_dtype != np.uint8:
            raise ConfigError(
                f"Image observations must be uint8 [C, H, W] (scaled by 1/255 in the torso), got "
                f"{obs.shape} {obs.dtype}. Convert frames to uint8 or flatten them to a vector."
            )
        torso = NatureDQN(*obs.shape, key=torso_key)
        head_cls = DuelingHead if dueling else LinearHead
        return QNetwork(torso, head_cls(FEATURES, num_actions, head_key))
    raise ConfigError(
        f"Unsupported observation spec {obs.shape} {obs.dtype}: DQN networks support rank-1 vectors "
        "[D] (MLP) and rank-3 uint8 images [C, H, W] (Nature-DQN). Flatten or stack the observation."
    )
