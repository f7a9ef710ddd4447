"""Array-level targets, TD losses and priorities over batches of sequences, on top of `returns.py`.

Every function takes plain arrays, batch-major ([B, T] per transition), so an agent plugs in its own
reward mix (r_e + beta_j * r_i), its own discount per sequence (gamma_j) and its own target policy
without touching the estimators:

    reward = mix_rewards({"extrinsic": r_e, "intrinsic": r_i}, {"extrinsic": 1.0, "intrinsic": beta_j})
    discount = sequence_discounts(env_discount, gamma_j)                         # [B, T]
    g = sequence_targets("retrace", q_target, target_policy(q_online, 0.0), actions, reward, discount,
                         behaviour_prob, valid, lambda_=0.95, n=5, value_rescaling=True)
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from rillet.learners import returns

__all__ = ["mix_rewards", "sequence_discounts", "target_policy", "sequence_targets", "td_loss",
           "sequence_priorities", "sequence_mean"]


def mix_rewards(streams: Mapping[str, jax.Array], weights: Mapping[str, jax.Array | float]) -> jax.Array:
    """sum_k weights[k] * streams[k]: streams {name: [B, T]}, weights {name: [] or [B] (one per
    sequence, e.g. beta_j)} -> [B, T] float32. Every stream needs a weight and every weight a stream."""
    if set(streams) != set(weights):
        raise ValueError(f"mix_rewards: streams {sorted(streams)} and weights {sorted(weights)} must name the "
                         "same reward streams.")
    total = 0.0
    for name in sorted(streams):
        w = jnp.asarray(weights[name], jnp.float32)
        total = total + jnp.reshape(w, w.shape + (1,) * (2 - w.ndim)) * jnp.asarray(streams[name], jnp.float32)
    return total


def sequence_discounts(env_discount: jax.Array, gamma: jax.Array | float) -> jax.Array:
    """gamma * env discount: env_discount [B, T] (0 after a termination), gamma [] or [B] (a discount
    per sequence, e.g. the gamma_j of its policy) -> [B, T] float32."""
    g = jnp.asarray(gamma, jnp.float32)
    return jnp.reshape(g, g.shape + (1,) * (2 - g.ndim)) * jnp.asarray(env_discount, jnp.float32)


def target_policy(q: jax.Array, epsilon: float = 0.0) -> jax.Array:
    """(1 - epsilon) * one_hot(argmax_a q) + epsilon / A: q [..., A] -> pi [..., A] float32 (no gradient)."""
    num_actions = q.shape[-1]
    greedy = jnp.argmax(jax.lax.stop_gradient(q), axis=-1)
    return (1.0 - epsilon) * jax.nn.one_hot(greedy, num_actions, dtype=jnp.float32) + epsilon / num_actions


def sequence_targets(estimator: str, q_target: jax.Array, pi: jax.Array, actions: jax.Array, reward: jax.Array,
                     discount: jax.Array, behaviour_prob: jax.Array, valid: jax.Array, *, lambda_: float = 1.0,
                     n: int = 1, kappa: float = 0.01, value_rescaling: bool = False) -> jax.Array:
    """The targets G [B, T] of one estimator of `returns.ESTIMATORS`, for B sequences of T transitions.

    q_target [B, T+1, A] bootstrap values; pi [B, T+1, A] target policy; actions [B, T+1] int;
    reward, discount [B, T] (discount includes gamma); behaviour_prob [B, T] mu(a_t|x_t);
    valid [B, T] bool. kappa is soft Watkins' cut tolerance (only "soft_watkins" reads it).
    No gradient flows through the result.
    """
    def one(q, a, r, d, p, mu, m):
        return returns.returns_for(estimator, q, a, r, d, p, mu, m, lambda_=lambda_, n=n, kappa=kappa,
                                   value_rescaling=value_rescaling)

    return jax.lax.stop_gradient(jax.vmap(one)(q_target, actions, reward, discount, pi, behaviour_prob, valid))


def td_loss(td: jax.Array, valid: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Importance-weighted mean over sequences of each sequence's mean 0.5 * td^2 over its valid steps:
    td, valid [B, T] (td on invalid steps is ignored); weights [B] or None (all 1) -> []."""
    return sequence_mean(0.5 * jnp.square(td), valid, weights)


def sequence_mean(values: jax.Array, valid: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Importance-weighted mean over sequences of each sequence's mean of values over its valid steps:
    values, valid [B, T] (invalid steps ignored); weights [B] or None (all 1) -> []."""
    per_sequence = jnp.sum(jnp.where(valid, values, 0.0), axis=-1) / jnp.maximum(jnp.sum(valid, axis=-1), 1)
    w = jnp.ones_like(per_sequence) if weights is None else jnp.asarray(weights, jnp.float32)
    return jnp.mean(w * per_sequence)


def sequence_priorities(td: jax.Array, valid: jax.Array, eta: float) -> jax.Array:
    """p = eta * max|td| + (1 - eta) * mean|td| over valid steps; td, valid [B, T] -> [B] (0 if none)."""
    abs_td = jnp.where(valid, jnp.abs(td), 0.0)
    count = jnp.sum(valid, axis=-1)
    mean = jnp.sum(abs_td, axis=-1) / jnp.maximum(count, 1)
    return eta * jnp.max(abs_td, axis=-1) + (1.0 - eta) * mean
