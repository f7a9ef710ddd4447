"""B single environments stepped in a Python loop behind `BatchedEnv`'s interface and semantics.

The base of the dm_env and gymnasium adapters: a subclass says how to reset and step env i; this
class keeps the flags, the optional step limit and EnvPool's auto-reset (the call after an
episode's last step ignores its action and returns the next episode's first observation with
first=True, reward 0, discount 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rillet.actors.env_output import (EnvOutput, check_num_envs, env_action, observation_rows, restart_output,
                                      select_observation, stack_observations, step_output)
from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError


class LoopedBatchedEnv:
    """`num_envs` single environments with `BatchedEnv`'s outputs.

    Subclasses implement `_reset_one(i) -> observation` and
    `_step_one(i, action) -> (observation, reward, discount, last)`, where discount is 0 on arriving
    at a terminal state and 1 at a truncation. max_episode_steps > 0 truncates longer episodes.
    """

    def __init__(self, spec: StepSpec, num_envs: int, bounds: tuple[np.ndarray, np.ndarray] | None,
                 observation_indices: tuple[int, ...] = (), max_episode_steps: int = 0):
        check_num_envs(num_envs)
        if max_episode_steps < 0:
            raise ConfigError(f"max_episode_steps must be >= 0 (0: no limit), got {max_episode_steps}.")
        self.env_id, self.num_envs = spec.env_id, num_envs
        self.spec = select_observation(spec, observation_indices)
        self._full_spec, self._bounds = spec, bounds
        self._indices = tuple(observation_indices)
        self._limit = max_episode_steps
        self._last = np.zeros(num_envs, bool)
        self._elapsed = np.zeros(num_envs, np.int64)

    def reset(self) -> EnvOutput:
        """Starts an episode in every env: observation [B, ...], first=True."""
        self._last = np.zeros(self.num_envs, bool)
        self._elapsed = np.zeros(self.num_envs, np.int64)
        return restart_output(self._observe([self._reset_one(i) for i in range(self.num_envs)]))

    def step(self, action: np.ndarray) -> EnvOutput:
        """action [B] (or [B, A] continuous, in [-1, 1]) -> the next EnvOutput."""
        action = env_action(action, self.spec, self._bounds)
        n = self.num_envs
        observations, reward = [], np.zeros(n, np.float32)
        discount, last = np.ones(n, np.float32), np.zeros(n, bool)
        for i in range(n):
            if self._last[i]:  # auto-reset: this call's action for env i is ignored
                observations.append(self._reset_one(i))
                self._elapsed[i] = 0
                continue
            obs, reward[i], discount[i], last[i] = self._step_one(i, self._one_action(action[i]))
            observations.append(obs)
            self._elapsed[i] += 1
            last[i] |= self._limit > 0 and self._elapsed[i] >= self._limit
        first, self._last = self._last, last
        return step_output(self._observe(observations), reward, discount, first, last)

    def _one_action(self, action: np.ndarray) -> Any:
        return int(action) if self.spec.num_actions is not None else action

    def _observe(self, observations: list) -> np.ndarray:
        obs = stack_observations(observations)
        if not isinstance(obs, dict):
            obs = obs.astype(self._full_spec.observation.np_dtype, copy=False)
        return observation_rows(obs, self._indices)

    def _reset_one(self, i: int) -> Any:
        raise NotImplementedError

    def _step_one(self, i: int, action: Any) -> tuple[Any, float, float, bool]:
        raise NotImplementedError

    def close(self) -> None:  # noqa: D102
        pass
