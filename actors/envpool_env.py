"""EnvPool environments behind one batched interface, whichever API (gymnasium or dm_env) made them.

`make_env` validates the id and builds a synchronous pool (batch_size == num_envs, so env i is
always row i). `BatchedEnv.reset()/step(action)` return an `EnvOutput` with dm_env-like
semantics, including EnvPool's auto-reset: the call after an episode's last step ignores its
action and returns the first observation of the next episode with ``first=True``, reward 0.
"""

from __future__ import annotations

import functools

import numpy as np

from rillet.actors.env_output import (EnvOutput, check_num_envs, env_action, observation_rows, restart_output,
                                      select_observation, step_output, unknown_id_error)
from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError

__all__ = ["BatchedEnv", "EnvOutput", "check_env_id", "env_step_spec", "known_env_ids"]


@functools.lru_cache(maxsize=1)
def known_env_ids() -> tuple[str, ...]:
    import envpool

    return tuple(envpool.list_all_envs())


def check_env_id(env_id: str) -> None:
    """Raises EnvironmentIdError, listing close matches, for an id EnvPool does not know."""
    ids = known_env_ids()
    if env_id in ids:
        return
    raise unknown_id_error("EnvPool environment id", env_id, ids, "See envpool.list_all_envs() for the full list "
                           "(ids carry a version, e.g. CartPole-v1, Pong-v5).")


def env_step_spec(env_id: str, observation_indices: tuple[int, ...] = ()) -> StepSpec:
    """The StepSpec of an EnvPool environment (the single source of truth for shapes/dtypes).

    observation_indices: keep only these entries of a vector observation (see `BatchedEnv`).
    """
    import envpool

    check_env_id(env_id)
    spec = StepSpec.from_envpool(envpool.make_spec(env_id), env_id=env_id)
    return select_observation(spec, observation_indices)


class BatchedEnv:
    """A synchronous EnvPool pool of `num_envs` environments with dm_env-like outputs.

    observation_indices: keep only these entries of a vector observation, e.g. (0, 2) hides
    CartPole's velocities and makes it partially observable. Empty: the whole observation.
    Continuous actions follow rillet's convention: agents act in [-1, 1]^A; `step` rescales
    linearly to the environment's bounds (e.g. [-2, 2] for Pendulum-v1).
    """

    def __init__(self, env_id: str, num_envs: int, seed: int, api: str = "gymnasium",
                 num_threads: int = 0, observation_indices: tuple[int, ...] = (), **env_kwargs):
        import envpool

        check_env_id(env_id)
        check_num_envs(num_envs)
        if api not in ("gymnasium", "dm"):
            raise ConfigError(f"api must be 'gymnasium' or 'dm', got {api!r}.")
        self.env_id, self.num_envs, self.api = env_id, num_envs, api
        self._env = envpool.make(env_id, env_type=api, num_envs=num_envs, batch_size=num_envs,
                                 seed=seed, num_threads=num_threads, **env_kwargs)
        self.spec = select_observation(StepSpec.from_envpool(self._env.spec, env_id=env_id), observation_indices)
        self._indices = tuple(observation_indices)
        self._bounds = None
        if self.spec.num_actions is None:
            space = self._env.spec.action_space
            self._bounds = (np.asarray(space.low, np.float32), np.asarray(space.high, np.float32))
        self._last = np.zeros(num_envs, bool)
        self._elapsed = np.zeros(num_envs, np.int64)
        self._step_limit = int(getattr(self._env.spec.config, "max_episode_steps", 0) or 0)

    def reset(self) -> EnvOutput:
        if self.api == "gymnasium":
            obs, _ = self._env.reset()
        else:
            obs = _dm_observation(self._env.reset().observation)
        self._last = np.zeros(self.num_envs, bool)
        self._elapsed = np.zeros(self.num_envs, np.int64)
        return restart_output(observation_rows(obs, self._indices))

    def step(self, action: np.ndarray) -> EnvOutput:
        action = env_action(action, self.spec, self._bounds)
        if self.api == "gymnasium":
            obs, reward, term, trunc, _ = self._env.step(action)
            last = np.logical_or(term, trunc)
            first = self._last.copy()
            discount = np.where(term, 0.0, 1.0).astype(np.float32)
        else:
            ts = self._env.step(action)
            obs, reward = _dm_observation(ts.observation), ts.reward
            first, last = ts.step_type == 0, ts.step_type == 2
            # EnvPool's dm API reports discount 0 at its step limit too; a last step at the limit is
            # a truncation (a termination exactly at the limit cannot be told apart in this API).
            self._elapsed = np.where(first, 0, self._elapsed + 1)
            truncated = last & (self._step_limit > 0) & (self._elapsed >= self._step_limit)
            discount = np.where(truncated, 1.0, ts.discount)
        self._last = last
        return step_output(observation_rows(obs, self._indices), reward, discount, first, last)

    def close(self) -> None:  # noqa: D102
        close = getattr(self._env, "close", None)
        if close is not None:
            close()


def _dm_observation(state):
    """The observation inside EnvPool's dm_env State: its `obs` field, or a dict of the others."""
    if hasattr(state, "obs"):
        return state.obs
    return {k: v for k, v in state._asdict().items() if k not in ("env_id", "players", "elapsed_step")}
