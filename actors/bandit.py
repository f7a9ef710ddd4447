"""Agent57's meta-controller: a sliding-window UCB bandit per environment over the N policies of the
family (Badia et al., 2020, "Agent57", section 4). Pure functions over an explicit, batched state:

    state = init_bandit(num_envs, num_arms, window, key)
    arm, state = select_arms(state, config, choose)          # at episode starts (choose [B] bool)
    state = record_returns(state, arm, episode_return, done)  # at episode ends (done [B] bool)

Each environment's bandit first pulls every arm once (arm k at its k-th episode), then with
probability epsilon a uniformly random arm, else argmax_a mu(a) + beta * sqrt(1 / n(a)), where mu(a)
and n(a) are the mean reward and the count of arm a among that bandit's last `window` pulls (an arm
absent from the window scores +inf). The reward of a pull is the undiscounted extrinsic return of the
episode played with that arm. The state is a pytree (jittable, checkpointable).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet import validation as check
from rillet.learners.optim import key_data

__all__ = ["BanditConfig", "BanditState", "init_bandit", "select_arms", "record_returns", "window_means",
           "greedy_arm"]


@dataclasses.dataclass(frozen=True)
class BanditConfig:
    """window: pulls each bandit remembers (the paper's hyper-parameter table: 90; its text: 160; 90
    here); epsilon: the actors' probability of a random arm (0.5); beta: the UCB bonus weight (1.0)."""

    window: int = 90
    epsilon: float = 0.5
    beta: float = 1.0

    def validate(self) -> "BanditConfig":
        check.integer("BanditConfig", "window", self.window, low=1, fix="window (e.g. 90)")
        check.number("BanditConfig", "epsilon", self.epsilon, 0.0, 1.0, fix="epsilon in [0, 1] (e.g. 0.5)")
        check.number("BanditConfig", "beta", self.beta, 0.0, fix="beta >= 0 (e.g. 1.0)")
        return self


class BanditState(eqx.Module):
    """B bandits over N arms, each remembering its last W pulls in a ring.

    arms [B, W] int32 and rewards [B, W] float32: the remembered pulls (slot i holds pull number
    pulls - 1 - ((next - 1 - i) mod W)); pulls [B] int32: pulls so far (the ring holds min(pulls, W));
    next [B] int32: the slot the next pull is written to; key: uint32 [2] raw PRNG key data.
    """

    arms: jax.Array
    rewards: jax.Array
    pulls: jax.Array
    next: jax.Array
    key: jax.Array
    num_arms: int = eqx.field(static=True)


def init_bandit(num_envs: int, num_arms: int, window: int, key: jax.Array) -> BanditState:
    """B = num_envs bandits with no pulls yet."""
    check.integer("init_bandit", "num_envs", num_envs, low=1)
    check.integer("init_bandit", "num_arms", num_arms, low=1, fix="num_arms (the number of policies N)")
    check.integer("init_bandit", "window", window, low=1)
    return BanditState(arms=jnp.zeros((num_envs, window), jnp.int32), rewards=jnp.zeros((num_envs, window), jnp.float32),
                       pulls=jnp.zeros(num_envs, jnp.int32), next=jnp.zeros(num_envs, jnp.int32), key=key_data(key),
                       num_arms=int(num_arms))


def window_means(state: BanditState) -> tuple[jax.Array, jax.Array]:
    """(mu [B, N] mean reward, n [B, N] count) of each arm among each bandit's remembered pulls (mu 0
    where n is 0)."""
    window = state.arms.shape[1]
    held = jnp.arange(window)[None, :] < jnp.minimum(state.pulls, window)[:, None]  # [B, W]
    onehot = jax.nn.one_hot(state.arms, state.num_arms, dtype=jnp.float32) * held[..., None]  # [B, W, N]
    n = jnp.sum(onehot, axis=1)
    mu = jnp.sum(onehot * state.rewards[..., None], axis=1) / jnp.maximum(n, 1.0)
    return mu, n


def select_arms(state: BanditState, config: BanditConfig, choose: jax.Array) -> tuple[jax.Array, BanditState]:
    """Arms [B] int32 for the bandits where choose [B] bool (an episode starts); the others get -1.
    Forced pulls first, then epsilon-greedy over the UCB scores; the state's key advances."""
    mu, n = window_means(state)
    score = jnp.where(n > 0, mu + config.beta * jnp.sqrt(1.0 / jnp.maximum(n, 1.0)), jnp.inf)
    key, k_explore, k_arm = jax.random.split(state.key, 3)
    b = state.pulls.shape[0]
    explore = jax.random.uniform(k_explore, (b,)) < config.epsilon
    random_arm = jax.random.randint(k_arm, (b,), 0, state.num_arms, jnp.int32)
    arm = jnp.where(explore, random_arm, jnp.argmax(score, axis=-1).astype(jnp.int32))
    arm = jnp.where(state.pulls < state.num_arms, state.pulls, arm)  # every arm once first
    return jnp.where(choose, arm, -1), dataclasses.replace(state, key=key)


def record_returns(state: BanditState, arm: jax.Array, episode_return: jax.Array, done: jax.Array) -> BanditState:
    """Appends the pull (arm [B], episode_return [B]) of every bandit where done [B] bool."""
    window = state.arms.shape[1]
    rows = jnp.arange(state.arms.shape[0])
    slot = state.next
    arms = state.arms.at[rows, slot].set(jnp.where(done, jnp.asarray(arm, jnp.int32), state.arms[rows, slot]))
    rewards = state.rewards.at[rows, slot].set(
        jnp.where(done, jnp.asarray(episode_return, jnp.float32), state.rewards[rows, slot]))
    return dataclasses.replace(state, arms=arms, rewards=rewards, pulls=state.pulls + done.astype(jnp.int32),
                               next=jnp.where(done, (slot + 1) % window, slot))


def greedy_arm(state: BanditState) -> jax.Array:
    """The arm [] int32 with the highest mean reward over every bandit's remembered pulls pooled (an
    evaluation's choice); arm 0 while no arm has been pulled."""
    mu, n = window_means(state)
    total = jnp.sum(n, axis=0)
    mean = jnp.sum(mu * n, axis=0) / jnp.maximum(total, 1.0)
    return jnp.argmax(jnp.where(total > 0, mean, -jnp.inf)).astype(jnp.int32) * (jnp.sum(total) > 0)
