"""Actor policies: ``policy(params, observation, actor_state, key) -> (action, extras, actor_state)``.

Policies are jitted over the whole batch of environments. `params` is the learner's online
network (an Equinox module); `actor_state` holds per-environment state (here the epsilons).
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp


def epsilon_greedy(q_fn: Callable) -> Callable:
    """Wraps ``q_fn(params, observation[B, ...]) -> q[B, A]`` into a jitted epsilon-greedy policy.

    actor_state: {"epsilon": [B] float32}. Returns action [B] int32 and extras {} .
    """

    @eqx.filter_jit
    def policy(params, observation, actor_state, key):
        q = q_fn(params, observation)
        greedy = jnp.argmax(q, axis=-1).astype(jnp.int32)
        k_explore, k_action = jax.random.split(key)
        eps = actor_state["epsilon"]
        explore = jax.random.uniform(k_explore, eps.shape) < eps
        random_action = jax.random.randint(k_action, greedy.shape, 0, q.shape[-1], jnp.int32)
        return jnp.where(explore, random_action, greedy), {}, actor_state

    return policy


def greedy(q_fn: Callable) -> Callable:
    """A jitted greedy policy (epsilon 0), same signature; actor_state is passed through."""

    @eqx.filter_jit
    def policy(params, observation, actor_state, key):
        del key
        return jnp.argmax(q_fn(params, observation), axis=-1).astype(jnp.int32), {}, actor_state

    return policy


def random_policy(num_actions: int) -> Callable:
    """Uniform random discrete actions, same signature (params ignored)."""

    @jax.jit
    def policy(params, observation, actor_state, key):
        del params
        b = observation.shape[0]
        return jax.random.randint(key, (b,), 0, num_actions, jnp.int32), {}, actor_state

    return policy
