"""NGU's acting: the intrinsic reward of each new observation (episodic novelty times the lifelong
multiplier) computed by the actors with the novelty networks they last received, then R2D2's
recurrent epsilon-greedy policy with the previous intrinsic reward and the policy index j as inputs.

At tick t each environment's observation x_t is embedded, scored against its episodic memory (emptied
where x_t starts an episode; EnvPool auto-resets), and added to it:

    r_i(x_t) = episodic_reward(f(x_t)) * min(max(1 + (err(x_t) - mu) / sigma, 1), L)     (0 at is_first)

r_i(x_t) is the intrinsic reward of the transition that arrived at x_t; the policy reads it as the
core input "prev_intrinsic_reward" and the step records it as an extra of the same name, beside its
episodic factor ("prev_episodic_reward", for the metrics: r_i / episodic is the lifelong multiplier).
"""

from __future__ import annotations

import functools
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet.actors.episodic_novelty import EpisodicConfig, episodic_reward, init_memory, reset_where
from rillet.actors.policies import recurrent_actor_state, recurrent_epsilon_greedy
from rillet.learners.inverse_dynamics import embed
from rillet.learners.rnd import lifelong_multiplier, rnd_error

__all__ = ["intrinsic_reward", "ngu_score", "novelty_policy", "novelty_actor_state"]


def intrinsic_reward(params, observation: jax.Array, memory, first: jax.Array, episodic: EpisodicConfig,
                     max_multiplier: float):
    """(r_i [B] float32, episodic factor [B] float32, memory): params has .embedding, .rnd, .rnd_stats and
    .rnd_obs_stats; observation [B, *obs]; first [B] bool (those memories are emptied first; both
    rewards are 0 there)."""
    memory = reset_where(memory, first)
    novelty, memory = episodic_reward(memory, embed(params.embedding, observation), episodic)
    error = rnd_error(params.rnd, observation, params.rnd_obs_stats)
    multiplier = lifelong_multiplier(error, params.rnd_stats, max_multiplier)
    novelty = jnp.where(first, 0.0, novelty).astype(jnp.float32)
    return (novelty * multiplier).astype(jnp.float32), novelty, memory


def ngu_score(episodic: EpisodicConfig, max_multiplier: float) -> Callable:
    """NGU's scoring for `novelty_policy`: `intrinsic_reward` with these constants."""
    return functools.partial(intrinsic_reward, episodic=episodic, max_multiplier=max_multiplier)


def novelty_policy(score: Callable, sync_period: int = 1, head: str = "q", sample: bool = False):
    """An NGU-family policy ``(params, observation [B, ...], actor_state, key) -> (action [B], extras,
    actor_state)``.

    score(params, observation, memory, first [B]) -> (r_i [B], factor [B], memory): the intrinsic reward
    of each new observation and what the agent's novelty keeps between ticks (NGU: `ngu_score`, the
    episodic memories; RECODE: `actors.recode_novelty.recode_score`, the cluster memory); factor is
    recorded as the extra prev_episodic_reward. params: `learners.ngu.ActingParams`. actor_state: that
    of `recurrent_epsilon_greedy` plus "memory" (donated: use only the returned state) and
    "prev_intrinsic_reward". The Q-network is the newest every tick; the novelty networks
    are taken from params every `sync_period` ticks only, so that an episode's memory holds embeddings
    of few versions of f (embeddings of one observation under two versions are not neighbours).
    head, sample: what the agent acts from (`recurrent_epsilon_greedy`; "q", or a distillation head).
    Extras: R2D2's (core state, behaviour probability, every core input, policy_index) and
    prev_episodic_reward.
    """
    act = recurrent_epsilon_greedy(head, sample)

    @eqx.filter_jit(donate="all-except-first")  # the memory's buffers are reused, not copied each tick
    def scored(inputs, memory):
        params, observation, first = inputs
        return score(params, observation, memory, first)

    def policy(params, observation, actor_state, key):
        state = dict(actor_state)
        memory = state.pop("memory")
        novelty, age = state.pop("novelty", None), state.pop("novelty_age", sync_period)
        if age >= sync_period:
            novelty, age = params, 0
        r_i, episodic, memory = scored((novelty, observation, state["is_first"]), memory)
        action, extras, state = act(params.q, observation, {**state, "prev_intrinsic_reward": r_i}, key)
        extras = {**extras, "prev_episodic_reward": episodic}
        return action, extras, {**state, "memory": memory, "novelty": novelty, "novelty_age": age + 1}

    return policy


def novelty_actor_state(epsilon, policy_index, lstm_size: int, embedding_size: int, capacity: int,
                        action_dtype: str = "int32") -> dict:
    """The initial actor state of `novelty_policy` for len(epsilon) environments: epsilon [B],
    policy_index [B] (j of each environment), empty memories of `capacity` embeddings."""
    b = len(epsilon)
    return {**recurrent_actor_state(epsilon, lstm_size, action_dtype),
            "policy_index": jnp.asarray(policy_index, jnp.int32), "prev_intrinsic_reward": jnp.zeros(b, jnp.float32),
            "memory": init_memory(b, capacity, embedding_size)}
