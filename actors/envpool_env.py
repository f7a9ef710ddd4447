"""EnvPool environments behind one batched interface, whichever API (gymnasium or dm_env) made them.

`make_env` validates the id and builds a synchronous pool (batch_size == num_envs, so env i is
always row i). `BatchedEnv.reset()/step(action)` return an `EnvOutput` with dm_env-like
semantics, including EnvPool's auto-reset: the call after an episode's last step ignores its
action and returns the first observation of the next episode with ``first=True``, reward 0.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import NamedTuple

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


@functools.lru_cache(maxsize=1)
def known_env_ids() -> tuple[str, ...]:
    import envpool

    return tuple(envpool.list_all_envs())


def check_env_id(env_id: str) -> None:
    """Raises EnvironmentIdError, listing close matches, for an id EnvPool does not know."""
    ids = known_env_ids()
    if env_id in ids:
        return
    close = difflib.get_close_matches(env_id, ids, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise EnvironmentIdError(
        f"Unknown EnvPool environment id {env_id!r}.{hint} "
        "See envpool.list_all_envs() for the full list (ids carry a version, e.g. CartPole-v1, Pong-v5)."
    )


def env_step_spec(env_id: str, observation_indices: tuple[int, ...] = ()) -> StepSpec:
    """The StepSpec of an EnvPool environment (the single source of truth for shapes/dtypes).

    observation_indices: keep only these entries of a vector observation (see `BatchedEnv`).
    """
    import envpool

    check_env_id(env_id)
    spec = StepSpec.from_envpool(envpool.make_spec(env_id), env_id=env_id)
    return _select_observation(spec, observation_indices)


def _select_observation(spec: StepSpec, indices: tuple[int, ...]) -> StepSpec:
    if not indices:
        return spec
    shape = spec.observation.shape
    if len(shape) != 1 or not all(0 <= i < shape[0] for i in indices) or len(set(indices)) != len(indices):
        raise ConfigError(
            f"observation_indices={tuple(indices)} does not select entries of {spec.env_id}'s observation "
            f"of shape {shape}: give distinct indices in [0, {shape[0] if shape else 0}) of a vector observation."
        )
    return dataclasses.replace(spec, observation=ArraySpec((len(indices),), spec.observation.dtype))


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
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}.")
        if api not in ("gymnasium", "dm"):
            raise ConfigError(f"api must be 'gymnasium' or 'dm', got {api!r}.")
        self.env_id, self.num_envs, self.api = env_id, num_envs, api
        self._env = envpool.make(env_id, env_type=api, num_envs=num_envs, batch_size=num_envs,
                                 seed=seed, num_threads=num_threads, **env_kwargs)
        self.spec = _select_observation(StepSpec.from_envpool(self._env.spec, env_id=env_id), observation_indices)
        self._indices = np.asarray(observation_indices, np.int64) if observation_indices else None
        self._action_low = self._action_high = None
        if self.spec.num_actions is None:
            space = self._env.spec.action_space
            self._action_low = np.asarray(space.low, np.float32)
            self._action_high = np.asarray(space.high, np.float32)
        self._last = np.zeros(num_envs, bool)
        self._elapsed = np.zeros(num_envs, np.int64)
        self._step_limit = int(getattr(self._env.spec.config, "max_episode_steps", 0) or 0)

    def reset(self) -> EnvOutput:
        n = self.num_envs
        if self.api == "gymnasium":
            obs, _ = self._env.reset()
        else:
            obs = _dm_observation(self._env.reset().observation)
        self._last = np.zeros(n, bool)
        self._elapsed = np.zeros(n, np.int64)
        return EnvOutput(self._select(obs), np.zeros(n, np.float32), np.ones(n, np.float32),
                         np.ones(n, bool), np.zeros(n, bool), np.zeros(n, bool))

    def step(self, action: np.ndarray) -> EnvOutput:
        action = np.asarray(action, self.spec.action.np_dtype)
        if self._action_low is not None:  # [-1, 1] -> [low, high]
            unit = np.clip(action, -1.0, 1.0)
            action = self._action_low + (unit + 1.0) * 0.5 * (self._action_high - self._action_low)
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
            discount = np.where(first | truncated, 1.0, ts.discount).astype(np.float32)
        terminal = np.logical_and(last, discount == 0.0)
        self._last = last
        return EnvOutput(self._select(obs), np.asarray(reward, np.float32), discount, first, last, terminal)

    def _select(self, obs) -> np.ndarray:
        obs = flatten_observation(obs)
        return obs if self._indices is None else obs[:, self._indices]

    def close(self) -> None:  # noqa: D102
        close = getattr(self._env, "close", None)
        if close is not None:
            close()


def _dm_observation(state):
    """The observation inside EnvPool's dm_env State: its `obs` field, or a dict of the others."""
    if hasattr(state, "obs"):
        return state.obs
    return {k: v for k, v in state._asdict().items() if k not in ("env_id", "players", "elapsed_step")}
