"""The batched-environment contract every adapter meets (EnvPool, dm_env, gymnasium).

`EnvOutput` is what `reset()` and `step(action)` return for B environments; the helpers here turn
one adapter's raw arrays into it, so the flag, discount and observation rules live in one place.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from rillet.datasets.specs import ArraySpec, StepSpec, flatten_observation
from rillet.errors import ConfigError, EnvironmentIdError


class EnvOutput(NamedTuple):
    """What the pool returned for each of B environments.

    observation [B, ...]; reward [B] float32 (received on arriving here); discount [B] float32
    (0 on arriving at a terminal state); first/last/terminal [B] bool.
    """

    observation: np.ndarray
    reward: np.ndarray
    discount: np.ndarray
    first: np.ndarray
    last: np.ndarray
    terminal: np.ndarray


def unknown_id_error(kind: str, env_id: str, known: Sequence[str], advice: str) -> EnvironmentIdError:
    """The error for an id not in `known`: what it is, up to 5 close matches, and `advice`."""
    close = difflib.get_close_matches(env_id, list(known), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return EnvironmentIdError(f"Unknown {kind} {env_id!r}.{hint} {advice}")


def check_num_envs(num_envs: int) -> None:
    """Raises ConfigError unless num_envs >= 1."""
    if num_envs < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs}.")


def select_observation(spec: StepSpec, indices: Sequence[int]) -> StepSpec:
    """The spec with only `indices` of a vector observation kept (empty: unchanged)."""
    if not indices:
        return spec
    shape = spec.observation.shape
    if len(shape) != 1 or not all(0 <= i < shape[0] for i in indices) or len(set(indices)) != len(indices):
        raise ConfigError(
            f"observation_indices={tuple(indices)} does not select entries of {spec.env_id}'s observation "
            f"of shape {shape}: give distinct indices in [0, {shape[0] if shape else 0}) of a vector observation."
        )
    return dataclasses.replace(spec, observation=ArraySpec((len(indices),), spec.observation.dtype))


def observation_rows(obs: Any, indices: Sequence[int]) -> np.ndarray:
    """[B, ...] (or a dict of them) -> [B, ...] with dicts flattened and only `indices` kept."""
    obs = flatten_observation(obs)
    return obs[:, np.asarray(indices, np.int64)] if len(indices) else obs


def stack_observations(observations: Sequence[Any]) -> Any:
    """B per-env observations (arrays, or dicts of arrays) -> [B, ...] (or a dict of [B, ...])."""
    if observations and isinstance(observations[0], Mapping):
        return {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    return np.stack([np.asarray(o) for o in observations])


def env_action(action: np.ndarray, spec: StepSpec, bounds: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """action [B, ...] in the spec's dtype; continuous actions in [-1, 1] rescaled to bounds (low, high)."""
    action = np.asarray(action, spec.action.np_dtype)
    if bounds is None:
        return action
    low, high = bounds
    return low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (high - low)


def restart_output(observation: np.ndarray) -> EnvOutput:
    """The output of `reset()`: observation [B, ...], reward 0, discount 1, first=True."""
    n = len(observation)
    return EnvOutput(observation, np.zeros(n, np.float32), np.ones(n, np.float32),
                     np.ones(n, bool), np.zeros(n, bool), np.zeros(n, bool))


def step_output(observation: np.ndarray, reward: Any, discount: Any, first: Any, last: Any) -> EnvOutput:
    """One step's output: a first step has discount 1; terminal = last with discount 0 (all [B])."""
    first, last = np.asarray(first, bool), np.asarray(last, bool)
    discount = np.where(first, 1.0, discount).astype(np.float32)
    terminal = np.logical_and(last, discount == 0.0)
    return EnvOutput(observation, np.asarray(reward, np.float32), discount, first, last, terminal)
