"""Evaluation stage: greedy-policy episode returns in any environment (see actors/environments.py)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from rillet.actors.actor_loop import executed_action
from rillet.actors.environments import make_batched_env


def episode_returns(env_id: str, policy: Callable, params: Any, num_episodes: int = 20,
                    seed: int = 10_000, actor_state: Any = None, max_ticks: int = 100_000,
                    observe: Callable[[Any, Any], Any] | None = None, **env_kwargs) -> np.ndarray:
    """Runs `num_episodes` environments in one pool until each finishes its first episode.

    policy: ``policy(params, observation[B, ...], actor_state, key) -> (action[B], extras, state)``;
    observe: the actor loop's optional ``(actor_state, env_output) -> actor_state`` hook.
    Returns [num_episodes] float64 undiscounted returns.
    """
    env = make_batched_env(env_id, num_episodes, seed, **env_kwargs)
    out = env.reset()
    returns = np.zeros(num_episodes)
    done = np.zeros(num_episodes, bool)
    key = jax.random.PRNGKey(seed)
    for _ in range(max_ticks):
        key, sub = jax.random.split(key)
        if observe is not None:
            actor_state = observe(actor_state, out)
        action, extras, actor_state = policy(params, out.observation, actor_state, sub)
        out = env.step(executed_action(action, extras))
        returns += np.where(done, 0.0, out.reward)
        done |= out.last
        if done.all():
            break
    env.close()
    return returns


def greedy_return_stage(env_id: str, policy: Callable, num_episodes: int = 20, seed: int = 10_000,
                        actor_state_fn: Callable[[int], Any] = lambda n: None,
                        observe: Callable[[Any, Any], Any] | None = None, **env_kwargs) -> Callable[[Any], dict]:
    """An eval stage ``params -> metrics``: mean/std/min/max greedy return over num_episodes.

    actor_state_fn(num_envs) gives the policy's initial actor state (recurrent policies)."""

    def stage(params: Any) -> dict:
        r = episode_returns(env_id, policy, params, num_episodes, seed, actor_state=actor_state_fn(num_episodes),
                            observe=observe, **env_kwargs)
        return {"return_mean": float(r.mean()), "return_std": float(r.std()),
                "return_min": float(r.min()), "return_max": float(r.max()), "episodes": int(r.size)}

    return stage
