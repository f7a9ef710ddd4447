"""The learner state of the value agents (DQN, R2D2 and those built on them): an online network, its
target copy, the optimiser state of each parameter group, an update count and a PRNG key."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet.learners import optim

__all__ = ["ValueState", "init_value_state"]


class ValueState(eqx.Module):
    """online/target: the Q-networks; opt_state: {group: optax state}; steps: int32 [] updates done;
    key: uint32 [2] raw PRNG key data; td_stats: {head: RunningStats} of the TD errors when a regulariser
    needs them (`learners.td_regularisers`), else None. `eqx.filter(state, eqx.is_array)` is the checkpoint."""

    online: eqx.Module
    target: eqx.Module
    opt_state: dict
    steps: jax.Array
    key: jax.Array
    td_stats: dict | None = None


def init_value_state(key: jax.Array, build: Callable[[jax.Array], eqx.Module], optimizers: dict,
                     td_stats: dict | None = None) -> ValueState:
    """online = target = build(network key); one optimiser state per group of `optimizers` (the
    online network is the group "q"); steps = 0; td_stats as given."""
    net_key, state_key = jax.random.split(optim.key_data(key))
    online = build(net_key)
    return ValueState(online=online, target=online, opt_state=optim.init_groups(optimizers, {"q": online}),
                      steps=jnp.zeros((), jnp.int32), key=state_key, td_stats=td_stats)
