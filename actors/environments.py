"""The one front door to environments: every caller that takes an env id goes through here.

Id schemes, tried in this order:

- a name given to `register_environment(name, factory, api)`: the user's own dm_env or gymnasium
  environment, by name, in this process (online runner, evaluation, `dataset generate` called from Python);
- ``bsuite/<bsuite id>``: bsuite's own sweep ids (``bsuite.sweep.SWEEP``), e.g. ``bsuite/catch/0``;
  env i is built with seed + i where the environment takes a seed. Deep Sea ``bsuite/deep_sea/k`` is
  the N x N grid with N = 10 + 2k (mapping_seed 42, bsuite's sweep), k = 0..20:

  ====  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==
  k      0   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15  16  17  18  19  20
  N     10  12  14  16  18  20  22  24  26  28  30  32  34  36  38  40  42  44  46  48  50
  ====  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==  ==

  (bsuite's mnist* experiments download MNIST on first use, so they need a network.)
- ``gymnasium/<gymnasium id>``: ``gymnasium.make(id, **env_kwargs)``, e.g. ``max_episode_steps=20``;
- anything else: an EnvPool id (`BatchedEnv`), unchanged.

Every env returned has `BatchedEnv`'s interface: .spec, .num_envs, reset(), step(action [B]), close().
EnvPool-only arguments (api, num_threads) are ignored elsewhere; ``max_episode_steps`` works everywhere.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any, Callable, Union

from rillet.actors import envpool_env
from rillet.actors.dm_env_batch import DmEnvBatch
from rillet.actors.env_output import unknown_id_error
from rillet.actors.envpool_env import BatchedEnv
from rillet.actors.gymnasium_batch import GymnasiumBatch, GymnasiumVectorBatch
from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError, EnvironmentIdError

BSUITE, GYMNASIUM = "bsuite/", "gymnasium/"
APIS = ("dm_env", "gymnasium")
AnyBatchedEnv = Union[BatchedEnv, DmEnvBatch, GymnasiumBatch, GymnasiumVectorBatch]

_registered: dict[str, tuple[Callable[..., Any], str]] = {}


def register_environment(name: str, factory: Callable[..., Any], api: str = "dm_env") -> None:
    """Makes `name` an env id everywhere in this process.

    api "dm_env": ``factory(seed, **env_kwargs) -> dm_env.Environment``; api "gymnasium":
    ``factory(**env_kwargs) -> gymnasium.Env`` (env i reset with seed + i).
    """
    if api not in APIS:
        raise ConfigError(f"api must be one of {APIS}, got {api!r}.")
    if not name or name.startswith((BSUITE, GYMNASIUM)) or name in envpool_env.known_env_ids():
        raise ConfigError(f"Cannot register {name!r}: it is empty, starts with {BSUITE!r} or {GYMNASIUM!r}, or is "
                          "an EnvPool id. Pick another name.")
    if name in _registered:
        raise ConfigError(f"{name!r} is already registered; call unregister_environment({name!r}) first.")
    _registered[name] = (factory, api)


def unregister_environment(name: str) -> None:
    """Forgets a registered name (EnvironmentIdError if it was not registered)."""
    if name not in _registered:
        raise unknown_id_error("registered environment", name, sorted(_registered),
                               f"Registered names: {sorted(_registered)}.")
    del _registered[name]


def check_env_id(env_id: str) -> None:
    """Raises EnvironmentIdError, with close matches and what to do, for an id no scheme knows."""
    if env_id in _registered:
        return
    if env_id.startswith(BSUITE):
        return _check_bsuite(env_id[len(BSUITE):])
    if env_id.startswith(GYMNASIUM):
        return _check_gymnasium(env_id[len(GYMNASIUM):])
    try:
        envpool_env.check_env_id(env_id)
    except EnvironmentIdError as error:
        mine = difflib.get_close_matches(env_id, list(_registered), n=5, cutoff=0.5) or sorted(_registered)[:10]
        raise EnvironmentIdError(
            f"{error} Or use 'bsuite/<id>' (e.g. bsuite/deep_sea/0), 'gymnasium/<id>' (e.g. gymnasium/CartPole-v1), "
            f"or rillet.actors.environments.register_environment(name, factory); registered names like it: {mine}."
        ) from None


def env_step_spec(env_id: str, observation_indices: tuple[int, ...] = ()) -> StepSpec:
    """The StepSpec of any env id (the single source of truth for shapes and dtypes)."""
    check_env_id(env_id)
    if _scheme(env_id) == "envpool":
        return envpool_env.env_step_spec(env_id, observation_indices)
    env = make_batched_env(env_id, 1, seed=0, observation_indices=observation_indices)
    env.close()
    return env.spec


def make_batched_env(env_id: str, num_envs: int, seed: int, *, api: str = "gymnasium", num_threads: int = 0,
                     observation_indices: tuple[int, ...] = (), **env_kwargs) -> AnyBatchedEnv:
    """num_envs environments of `env_id` (env i seeded seed + i) behind `BatchedEnv`'s interface.

    api, num_threads: EnvPool's (ignored for other schemes); env_kwargs: EnvPool's, gymnasium.make's,
    bsuite settings overrides, or the registered factory's; max_episode_steps is understood by all.
    """
    check_env_id(env_id)
    scheme = _scheme(env_id)
    if scheme == "envpool":
        return BatchedEnv(env_id, num_envs, seed, api=api, num_threads=num_threads,
                          observation_indices=observation_indices, **env_kwargs)
    common = dict(env_id=env_id, observation_indices=tuple(observation_indices))
    try:
        if scheme == "gymnasium":
            import gymnasium

            make = functools.partial(gymnasium.make, env_id[len(GYMNASIUM):], **env_kwargs)
            return GymnasiumBatch(make, num_envs, seed, **common)
        limit = int(env_kwargs.pop("max_episode_steps", 0) or 0)
        if scheme == "bsuite":
            return DmEnvBatch(_bsuite_factory(env_id[len(BSUITE):], env_kwargs), num_envs, seed,
                              max_episode_steps=limit, **common)
        factory, registered_api = _registered[env_id]
        if registered_api == "dm_env":
            return DmEnvBatch(lambda s: factory(s, **env_kwargs), num_envs, seed, max_episode_steps=limit, **common)
        return GymnasiumBatch(lambda: factory(**env_kwargs), num_envs, seed, max_episode_steps=limit, **common)
    except TypeError as error:
        raise ConfigError(f"{env_id} does not take the environment arguments {sorted(env_kwargs)}: {error}. "
                          "Drop or rename them.") from error


def _scheme(env_id: str) -> str:
    if env_id in _registered:
        return "registered"
    if env_id.startswith(BSUITE):
        return "bsuite"
    return "gymnasium" if env_id.startswith(GYMNASIUM) else "envpool"


def _bsuite_factory(bsuite_id: str, overrides: dict) -> Callable[[int], Any]:
    """seed -> the bsuite environment of `bsuite_id` (its sweep settings, then `overrides`, then seed)."""
    from bsuite import bsuite, sweep

    name, _ = bsuite.unpack_bsuite_id(bsuite_id)
    settings = {**sweep.SETTINGS[bsuite_id], **overrides}
    takes_seed = "seed" in inspect.signature(bsuite.EXPERIMENT_NAME_TO_ENVIRONMENT[name]).parameters
    return lambda seed: bsuite.load(name, {**settings, "seed": seed} if takes_seed else settings)


def _check_bsuite(bsuite_id: str) -> None:
    try:
        from bsuite import sweep
    except ImportError as error:
        raise EnvironmentIdError(f"bsuite/{bsuite_id} needs bsuite: pip install -c constraints.txt "
                                 "'rillet[actors]'.") from error
    if bsuite_id in sweep.SETTINGS:
        return
    counts: dict[str, int] = {}
    for known in sweep.SWEEP:
        counts[known.split("/")[0]] = counts.get(known.split("/")[0], 0) + 1
    table = ", ".join(f"{name}/0-{n - 1}" for name, n in sorted(counts.items()))
    raise unknown_id_error("bsuite id", bsuite_id, sweep.SWEEP,
                           f"Give bsuite/<experiment>/<setting> from bsuite's sweep: {table}.")


def _check_gymnasium(gym_id: str) -> None:
    import gymnasium

    if gym_id not in gymnasium.registry:
        raise unknown_id_error("gymnasium id", gym_id, sorted(gymnasium.registry),
                               "Give gymnasium/<id> with an id from gymnasium.registry (e.g. gymnasium/CartPole-v1), "
                               "or register your own with register_environment(name, factory, api='gymnasium').")
