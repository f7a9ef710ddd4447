"""gymnasium environments with `BatchedEnv`'s interface and semantics.

`GymnasiumBatch(factory, num_envs, seed)`: B environments made by ``factory()``, env i first reset
with ``seed + i``. `GymnasiumVectorBatch(vector_env, seed)`: a user's gymnasium vector env in
NEXT_STEP autoreset mode (gymnasium's default, the same as EnvPool's). Either way termination gives
discount 0, truncation discount 1, and the call after a last step returns the next episode's first
observation (first=True, reward 0, discount 1), ignoring its action.
"""

from __future__ import annotations

import types
from typing import Any, Callable

import numpy as np

from rillet.actors.env_output import (EnvOutput, check_num_envs, env_action, observation_rows, restart_output,
                                      select_observation, step_output)
from rillet.actors.looped_env import LoopedBatchedEnv
from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError


def gymnasium_step_spec(observation_space: Any, action_space: Any, env_id: str = "") -> StepSpec:
    """The StepSpec of one environment's spaces (dict observations become one float32 vector)."""
    spaces = types.SimpleNamespace(observation_space=observation_space, action_space=action_space)
    return StepSpec.from_envpool(spaces, env_id=env_id)


def box_bounds(action_space: Any, spec: StepSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """(low [A], high [A]) float32 of a Box action space; None for discrete actions."""
    if spec.num_actions is not None:
        return None
    return np.asarray(action_space.low, np.float32), np.asarray(action_space.high, np.float32)


class GymnasiumBatch(LoopedBatchedEnv):
    """`num_envs` gymnasium environments made by ``factory()``; env i is first reset with seed + i.

    .spec, .num_envs, reset() and step(action [B]) -> EnvOutput as `BatchedEnv`; max_episode_steps > 0
    truncates (last, discount 1) episodes that run longer.
    """

    def __init__(self, factory: Callable[[], Any], num_envs: int, seed: int, env_id: str = "",
                 observation_indices: tuple[int, ...] = (), max_episode_steps: int = 0):
        check_num_envs(num_envs)
        self._envs = [factory() for _ in range(num_envs)]
        self._seeds: list[int | None] = [seed + i for i in range(num_envs)]
        env = self._envs[0]
        spec = gymnasium_step_spec(env.observation_space, env.action_space, env_id)
        super().__init__(spec, num_envs, box_bounds(env.action_space, spec), observation_indices, max_episode_steps)

    def _reset_one(self, i: int) -> Any:
        obs, _ = self._envs[i].reset(seed=self._seeds[i])
        self._seeds[i] = None  # seeded once; later episodes continue the env's own RNG
        return obs

    def _step_one(self, i: int, action: Any) -> tuple[Any, float, float, bool]:
        obs, reward, terminated, truncated, _ = self._envs[i].step(action)
        return obs, float(reward), 0.0 if terminated else 1.0, bool(terminated or truncated)

    def close(self) -> None:  # noqa: D102
        for env in self._envs:
            env.close()


class GymnasiumVectorBatch:
    """A gymnasium vector env (NEXT_STEP autoreset) with `BatchedEnv`'s interface; reset seeds env i with seed + i."""

    def __init__(self, vector_env: Any, seed: int, env_id: str = "", observation_indices: tuple[int, ...] = ()):
        import gymnasium

        mode = vector_env.metadata.get("autoreset_mode", gymnasium.vector.AutoresetMode.NEXT_STEP)
        if mode != gymnasium.vector.AutoresetMode.NEXT_STEP:
            raise ConfigError(
                f"The vector env's autoreset mode is {mode}; rillet needs NEXT_STEP (EnvPool's semantics). Make it "
                "with gymnasium.make_vec(..., vector_kwargs={'autoreset_mode': AutoresetMode.NEXT_STEP}), AutoresetMode"
                " from gymnasium.vector."
            )
        check_num_envs(vector_env.num_envs)
        self._env, self._seed, self.num_envs = vector_env, seed, vector_env.num_envs
        spec = gymnasium_step_spec(vector_env.single_observation_space, vector_env.single_action_space,
                                   env_id or getattr(vector_env.spec, "id", "") or "")
        self.env_id, self.spec = spec.env_id, select_observation(spec, observation_indices)
        self._bounds = box_bounds(vector_env.single_action_space, spec)
        self._indices = tuple(observation_indices)
        self._last = np.zeros(self.num_envs, bool)

    def reset(self) -> EnvOutput:
        """Starts an episode in every env (seeded on the first call): observation [B, ...]."""
        obs, _ = self._env.reset(seed=self._seed)
        self._seed, self._last = None, np.zeros(self.num_envs, bool)
        return restart_output(observation_rows(obs, self._indices))

    def step(self, action: np.ndarray) -> EnvOutput:
        """action [B] (or [B, A] continuous, in [-1, 1]) -> the next EnvOutput."""
        obs, reward, terminated, truncated, _ = self._env.step(env_action(action, self.spec, self._bounds))
        first, self._last = self._last, np.logical_or(terminated, truncated)
        discount = np.where(terminated, 0.0, 1.0)
        return step_output(observation_rows(obs, self._indices), reward, discount, first, self._last)

    def close(self) -> None:  # noqa: D102
        self._env.close()
