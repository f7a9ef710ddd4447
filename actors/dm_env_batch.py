"""Any `dm_env.Environment` as a batch of B environments with `BatchedEnv`'s interface and semantics.

`DmEnvBatch(factory, num_envs, seed)` makes env i with ``factory(seed + i)``. A step's discount is
the environment's (0 on arriving at a terminal state, 1 at a `dm_env.truncation`); auto-reset,
observation_indices and the [-1, 1] continuous-action convention are those of `BatchedEnv`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from rillet.actors.env_output import check_num_envs
from rillet.actors.looped_env import LoopedBatchedEnv
from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError

DmEnvFactory = Callable[[int], Any]  # seed -> dm_env.Environment


def dm_env_step_spec(env: Any, env_id: str = "") -> StepSpec:
    """The StepSpec of a dm_env.Environment (dict observations become one float32 vector)."""
    return StepSpec.from_envpool(env, env_id=env_id)


def dm_env_action_bounds(env: Any, spec: StepSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """(low [A], high [A]) float32 of a continuous action spec; None for discrete actions."""
    if spec.num_actions is not None:
        return None
    action_spec = env.action_spec()
    if not hasattr(action_spec, "minimum"):
        raise ConfigError(f"{spec.env_id or 'the environment'}'s continuous action spec has no bounds; rillet acts "
                          "in [-1, 1] and rescales, so give a dm_env.specs.BoundedArray (or a DiscreteArray).")
    shape = spec.action.shape
    return (np.broadcast_to(np.asarray(action_spec.minimum, np.float32), shape),
            np.broadcast_to(np.asarray(action_spec.maximum, np.float32), shape))


class DmEnvBatch(LoopedBatchedEnv):
    """`num_envs` dm_env environments, env i made by ``factory(seed + i)``.

    .spec, .num_envs, reset() and step(action [B]) -> EnvOutput as `BatchedEnv`; max_episode_steps > 0
    truncates (last, discount 1) episodes that run longer.
    """

    def __init__(self, factory: DmEnvFactory, num_envs: int, seed: int, env_id: str = "",
                 observation_indices: tuple[int, ...] = (), max_episode_steps: int = 0):
        check_num_envs(num_envs)
        self._envs = [factory(seed + i) for i in range(num_envs)]
        first = self._envs[0]
        spec = dm_env_step_spec(first, env_id)
        super().__init__(spec, num_envs, dm_env_action_bounds(first, spec), observation_indices, max_episode_steps)

    def _reset_one(self, i: int) -> Any:
        return self._envs[i].reset().observation

    def _step_one(self, i: int, action: Any) -> tuple[Any, float, float, bool]:
        ts = self._envs[i].step(action)
        discount = 1.0 if ts.discount is None else float(ts.discount)
        return ts.observation, float(ts.reward or 0.0), discount, bool(ts.last())

    def close(self) -> None:  # noqa: D102
        for env in self._envs:
            env.close()
