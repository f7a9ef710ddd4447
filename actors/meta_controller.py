"""Agent57's meta-controller on the actors: an observe hook that, around another hook, lets each
environment's bandit (`actors.bandit`) choose the policy index j at every episode start and records,
at every episode end, the undiscounted extrinsic return the chosen arm earned.

    observe = bandit_observe(recurrent_observe, BanditConfig())
    state = {**actor_state, **bandit_actor_state(num_envs, num_arms, window, key)}

The actor state gains "bandit" (a BanditState) and "episode_return" [B]; "policy_index" [B] is the
arm being played (recorded by the policy as an extra, so the learner reads beta_j and gamma_j).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.actors.bandit import BanditConfig, BanditState, greedy_arm, init_bandit, record_returns, select_arms

__all__ = ["bandit_observe", "bandit_actor_state", "bandit_carry", "bandit_resume", "greedy_arm_of"]


@eqx.filter_jit
def _meta_step(bandit: BanditState, policy_index, episode_return, first, last, reward, config: BanditConfig):
    """Records finished episodes' returns, chooses arms where episodes start. All [B] but bandit."""
    first, last = jnp.asarray(first, bool), jnp.asarray(last, bool)
    total = episode_return + jnp.where(first, 0.0, jnp.asarray(reward, jnp.float32))
    bandit = record_returns(bandit, policy_index, total, last)
    arm, bandit = select_arms(bandit, config, first)
    return bandit, jnp.where(first, arm, policy_index), jnp.where(first | last, 0.0, total)


def bandit_observe(observe, config: BanditConfig):
    """The observe hook ``(actor_state, env_output) -> actor_state``: `observe`, then the meta-step."""

    def hook(actor_state: dict, out) -> dict:
        state = observe(actor_state, out) if observe is not None else actor_state
        bandit, j, ret = _meta_step(state["bandit"], state["policy_index"], state["episode_return"],
                                    out.first, out.last, out.reward, config)
        return {**state, "bandit": bandit, "policy_index": j, "episode_return": ret}

    return hook


def bandit_actor_state(num_envs: int, num_arms: int, window: int, key: jax.Array) -> dict:
    """The meta-controller's part of a fresh actor state (no pulls yet; arms chosen at the first tick)."""
    return {"bandit": init_bandit(num_envs, num_arms, window, key), "episode_return": jnp.zeros(num_envs, jnp.float32)}


def bandit_carry(actor_state: dict) -> dict:
    """The bandit's state as plain arrays (what a checkpoint holds)."""
    b = actor_state["bandit"]
    return {"arms": b.arms, "rewards": b.rewards, "pulls": b.pulls, "next": b.next, "key": b.key}


def bandit_resume(actor_state: dict, carried: dict) -> dict:
    """`actor_state` with the bandit's state put back from `bandit_carry`'s arrays (fresh buffers)."""
    b = actor_state["bandit"]
    bandit = dataclasses.replace(b, **{k: jnp.array(np.asarray(v), getattr(b, k).dtype) for k, v in carried.items()})
    return {**actor_state, "bandit": bandit}


def greedy_arm_of(carried: dict, num_arms: int) -> int:
    """The arm with the best mean return over every actor bandit's window (`bandit_carry`'s arrays)."""
    bandit = BanditState(arms=jnp.asarray(carried["arms"]), rewards=jnp.asarray(carried["rewards"]),
                         pulls=jnp.asarray(carried["pulls"]), next=jnp.asarray(carried["next"]),
                         key=jnp.asarray(carried["key"]), num_arms=int(num_arms))
    return int(greedy_arm(bandit))
