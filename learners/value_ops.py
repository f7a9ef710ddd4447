"""Temporal-difference errors, multi-step returns and the categorical projection, in plain JAX.

These follow rlax's definitions and argument order (the tests check each against rlax on the
pinned stack), but rlax cannot be imported on a current-JAX host: it imports distrax, whose
tensorflow_probability JAX backend (0.25, its last release) reads `jax.interpreters.xla.
pytype_aval_mappings`, which current JAX (0.10+) no longer has. `rillet.learners` must run there,
so the handful of rlax functions it used live here. Nothing here stops gradients: callers do.

Time conventions as rlax: r_t, discount_t [T] follow the action at step t, v_t [T] is the value of
the state after it (the bootstrap), q_t [T, A] the action values of that state.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "q_learning", "double_q_learning", "categorical_l2_project", "lambda_returns",
    "n_step_bootstrapped_returns", "general_off_policy_returns_from_action_values",
]


def q_learning(q_tm1: jax.Array, a_tm1: jax.Array, r_t: jax.Array, discount_t: jax.Array,
               q_t: jax.Array) -> jax.Array:
    """Q-learning TD error [] for one transition: r + discount * max_a q_t[a] - q_tm1[a_tm1].
    q_tm1, q_t [A]; a_tm1, r_t, discount_t []."""
    return r_t + discount_t * jnp.max(q_t) - q_tm1[a_tm1]


def double_q_learning(q_tm1: jax.Array, a_tm1: jax.Array, r_t: jax.Array, discount_t: jax.Array,
                      q_t_value: jax.Array, q_t_selector: jax.Array) -> jax.Array:
    """Double Q-learning TD error []: the next action is chosen by q_t_selector (online network)
    and valued by q_t_value (target network). q_tm1, q_t_value, q_t_selector [A]; the rest []."""
    return r_t + discount_t * q_t_value[jnp.argmax(q_t_selector)] - q_tm1[a_tm1]


def categorical_l2_project(z_p: jax.Array, probs: jax.Array, z_q: jax.Array) -> jax.Array:
    """Projects the categorical distribution with atoms z_p [N] and probabilities probs [N] onto the
    increasing support z_q [M] -> probabilities [M]. Each atom (clipped into [z_q[0], z_q[-1]])
    splits its mass between its two neighbouring support points in proportion to closeness."""
    z = jnp.clip(z_p, z_q[0], z_q[-1])[:, None]  # [N, 1]
    gaps = z_q[1:] - z_q[:-1]  # [M-1]
    below = jnp.concatenate([gaps[:1], gaps])  # distance to the support point below each z_q[j]
    above = jnp.concatenate([gaps, gaps[-1:]])  # ... and above it (the ends reuse their one gap)
    offset = z - z_q[None, :]  # [N, M]
    width = jnp.where(offset < 0, below[None, :], above[None, :])
    weights = jnp.clip(1.0 - jnp.abs(offset) / width, 0.0, 1.0)  # [N, M]
    return probs @ weights


def lambda_returns(r_t: jax.Array, discount_t: jax.Array, v_t: jax.Array,
                   lambda_: jax.Array | float = 1.0) -> jax.Array:
    """lambda-returns [T]: G_t = r_t + discount_t ((1 - lambda_t) v_t + lambda_t G_{t+1}), with
    G_T = v_{T-1} (the last bootstrap). r_t, discount_t, v_t [T]; lambda_ [] or [T]."""
    lam = jnp.broadcast_to(jnp.asarray(lambda_, v_t.dtype), v_t.shape)

    def step(g_next, xs):
        r, d, v, l = xs
        g = r + d * ((1.0 - l) * v + l * g_next)
        return g, g

    _, g = jax.lax.scan(step, v_t[-1], (r_t, discount_t, v_t, lam), reverse=True)
    return g


def n_step_bootstrapped_returns(r_t: jax.Array, discount_t: jax.Array, v_t: jax.Array, n: int,
                                lambda_t: jax.Array | float = 1.0) -> jax.Array:
    """n-step (lambda-)returns [T]: the lambda-return of `lambda_returns` cut after n steps, where it
    bootstraps on v_{t+n-1}; near the end the window shrinks and bootstraps on v_{T-1}.
    r_t, discount_t, v_t [T]; n >= 1 static; lambda_t [] or [T]."""
    T = r_t.shape[0]
    lam = jnp.broadcast_to(jnp.asarray(lambda_t, v_t.dtype), v_t.shape)

    def ahead(x, k, fill):  # x[t + k] for t < T, `fill` past the end
        return jnp.concatenate([x[k:], jnp.full((min(k, T),), fill, x.dtype)])[:T]

    g = ahead(v_t, n - 1, v_t[-1])
    for k in reversed(range(n)):  # steps past the end leave g unchanged (r 0, discount 1, lambda 1)
        r, d, l, v = ahead(r_t, k, 0.0), ahead(discount_t, k, 1.0), ahead(lam, k, 1.0), ahead(v_t, k, v_t[-1])
        g = r + d * ((1.0 - l) * v + l * g)
    return g


def general_off_policy_returns_from_action_values(q_t: jax.Array, a_t: jax.Array, r_t: jax.Array,
                                                  discount_t: jax.Array, c_t: jax.Array,
                                                  pi_t: jax.Array) -> jax.Array:
    """Off-policy returns [T] with trace coefficients c_t (Munos et al., 2016):
    G_t = r_t + discount_t (E_pi q_t - c_t q_t[a_t] + c_t G_{t+1}), G_{T-1} = r + discount E_pi q_{T-1}.
    q_t, pi_t [T, A] (the state after step t); a_t, r_t, discount_t, c_t [T] (c_{T-1} unused)."""
    expected = jnp.sum(pi_t * q_t, axis=-1)  # [T]
    q_taken = jnp.take_along_axis(q_t, a_t[:, None], axis=-1)[:, 0]
    last = r_t[-1] + discount_t[-1] * expected[-1]

    def step(g_next, xs):
        r, d, v, c, q = xs
        g = r + d * (v - c * q + c * g_next)
        return g, g

    _, head = jax.lax.scan(step, last, (r_t[:-1], discount_t[:-1], expected[:-1], c_t[:-1], q_taken[:-1]),
                           reverse=True)
    return jnp.concatenate([head, last[None]])
