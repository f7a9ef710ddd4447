"""Multi-step Q-learning return estimators over one time axis (vmap them over a batch).

Conventions (RLDS, T transitions t = 0..T-1 of one sequence):

    q_t        [T+1, A] float  bootstrap action values Q(x_t, .) (target network), t = 0..T
    a_t        [T+1]    int    actions taken at x_t (a_T is never used)
    r_t        [T]      float  reward after a_t
    discount_t [T]      float  gamma * environment discount after a_t (0 at terminations)
    pi_t       [T+1, A] float  target policy pi(.|x_t) (one-hot argmax of the online Q for double-Q)
    mu_t       [T]      float  behaviour probability mu(a_t|x_t) of the taken action (mu_0 unused)
    mask       [T]      bool   transition t is valid; padded tails are False. A valid transition's
                               next state x_{t+1} must be real (its q_{t+1} is used), later steps
                               are never read: they cannot leak into valid targets.

Every estimator returns G [T] float32 (0 on masked steps), the target for Q(x_t, a_t), via the
general off-policy recursion (Munos et al., 2016; Kozuno et al., 2021)

    G_t = r_t + discount_t * (E_pi Q_{t+1} - c_{t+1} Q(x_{t+1}, a_{t+1}) + c_{t+1} G_{t+1}),

with c = 0 past the last valid transition (and at t+1 = T): the sequence end bootstraps E_pi Q.
With ``value_rescaling`` all q are mapped through h^-1 first and the result through h
(R2D2's h(x) = sign(x)(sqrt(|x|+1) - 1) + eps x, eps = 1e-3).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from rillet.errors import ConfigError
from rillet.learners import value_ops

__all__ = [
    "ESTIMATORS", "h", "h_inv", "nstep_double_q_returns", "retrace_returns", "peng_q_lambda_returns",
    "watkins_q_lambda_returns", "soft_watkins_q_lambda_returns", "tree_backup_returns", "returns_for",
    "off_policy_returns",
]

RESCALING_EPS = 1e-3
ESTIMATORS = ("nstep", "retrace", "peng", "watkins", "soft_watkins", "tree_backup")


def h(x: jax.Array, eps: float = RESCALING_EPS) -> jax.Array:
    """R2D2 value rescaling h(x) = sign(x)(sqrt(|x|+1) - 1) + eps*x (any shape).

    Mathematically rlax.signed_hyperbolic (checked in the tests); written as
    sign(x)|x|/(sqrt(|x|+1) + 1) + eps*x to avoid its float32 cancellation for |x| << 1."""
    x = jnp.asarray(x, jnp.float32)
    a = jnp.abs(x)
    return jnp.sign(x) * a / (jnp.sqrt(a + 1.0) + 1.0) + eps * x


def h_inv(x: jax.Array, eps: float = RESCALING_EPS) -> jax.Array:
    """Inverse of `h` (any shape): sign(x)((u-1)^2 + 2(u-1)) with u-1 = 2|x|/(sqrt(D) + 1 + 2eps),
    D = 1 + 4eps(1 + eps + |x|). Mathematically rlax.signed_parabolic, without its float32
    cancellation near 0 (rlax: ~2e-4 relative round-trip error, this: ~1e-6)."""
    x = jnp.asarray(x, jnp.float32)
    a = jnp.abs(x)
    u_minus_1 = 2.0 * a / (jnp.sqrt(1.0 + 4.0 * eps * (1.0 + eps + a)) + 1.0 + 2.0 * eps)
    return jnp.sign(x) * u_minus_1 * (u_minus_1 + 2.0)


# --------------------------------------------------------------------------- shared plumbing


def _prepare(q_t, a_t, r_t, discount_t, pi_t, mu_t, mask, value_rescaling):
    """Casts, checks shapes and overwrites everything a valid target may not read with benign
    values (so NaNs or garbage in padded steps cannot leak). Returns the cleaned arrays plus
    `next_valid` [T]: whether the trace may continue into transition t+1."""
    q_t = jnp.asarray(q_t, jnp.float32)
    r_t = jnp.asarray(r_t, jnp.float32)
    discount_t = jnp.asarray(discount_t, jnp.float32)
    T = r_t.shape[0]
    if q_t.ndim != 2 or q_t.shape[0] != T + 1 or discount_t.shape != (T,):
        raise ValueError(f"expected q_t [T+1, A], r_t [T], discount_t [T]; got q_t {q_t.shape}, "
                         f"r_t {r_t.shape}, discount_t {discount_t.shape}.")
    mask = jnp.ones((T,), bool) if mask is None else jnp.asarray(mask, bool)
    a_t = jnp.zeros((T + 1,), jnp.int32) if a_t is None else jnp.asarray(a_t, jnp.int32)
    pi_t = jnp.asarray(pi_t, jnp.float32)
    mu_t = jnp.ones((T,), jnp.float32) if mu_t is None else jnp.asarray(mu_t, jnp.float32)
    # State x_t is real if t == 0 or transition t-1 is valid; a_t/mu_t/pi_t need valid transitions.
    state_valid = jnp.concatenate([jnp.ones((1,), bool), mask])
    q_t = jnp.where(state_valid[:, None], q_t, 0.0)
    pi_t = jnp.where(state_valid[:, None], pi_t, 0.0)
    a_t = jnp.where(jnp.concatenate([mask, jnp.zeros((1,), bool)]), a_t, 0)
    mu_t = jnp.where(mask, mu_t, 1.0)
    r_t = jnp.where(mask, r_t, 0.0)
    discount_t = jnp.where(mask, discount_t, 0.0)
    if value_rescaling:
        q_t = h_inv(q_t)
    next_valid = jnp.concatenate([mask[1:], jnp.zeros((1,), bool)])
    return q_t, a_t, r_t, discount_t, pi_t, mu_t, mask, next_valid


def _finish(g, mask, value_rescaling):
    g = h(g) if value_rescaling else g
    return jnp.where(mask, g, 0.0)


def _off_policy(q_t, a_t, r_t, discount_t, pi_t, c_next, mask, value_rescaling):
    """General off-policy returns; c_next [T] = c_{t+1} (already cut where the trace ends)."""
    g = value_ops.general_off_policy_returns_from_action_values(
        q_t[1:], a_t[1:], r_t, discount_t, c_next, pi_t[1:])
    return _finish(g, mask, value_rescaling)


def _of_taken(x_t, a_t):
    """x_t[t, a_t[t]] for x_t [T+1, A] (pi_t or q_t) -> [T+1]."""
    return jnp.take_along_axis(x_t, a_t[:, None], axis=-1)[:, 0]


# --------------------------------------------------------------------------- estimators


def nstep_double_q_returns(q_t, r_t, discount_t, pi_t, mask=None, *, n: int,
                           value_rescaling: bool = False) -> jax.Array:
    """n-step double-Q target [T]: sum_{k<m} (prod_{j<k} d_{t+j}) r_{t+k} + (prod_{j<m} d_{t+j})
    E_pi Q_{t+m}, m = min(n, steps to the end of the valid part). With pi one-hot at the online
    argmax this is R2D2's y_t (with value_rescaling). q_t, pi_t [T+1, A]; r_t, discount_t, mask [T]."""
    q_t, _, r_t, discount_t, pi_t, _, mask, next_valid = _prepare(
        q_t, None, r_t, discount_t, pi_t, None, mask, value_rescaling)
    v_next = jnp.sum(pi_t[1:] * q_t[1:], axis=-1)  # E_pi Q(x_{t+1}) [T]
    g = value_ops.n_step_bootstrapped_returns(r_t, discount_t, v_next, int(n), next_valid.astype(jnp.float32))
    return _finish(g, mask, value_rescaling)


def peng_q_lambda_returns(q_t, r_t, discount_t, pi_t, mask=None, *, lambda_, n: Optional[int] = None,
                          value_rescaling: bool = False) -> jax.Array:
    """Peng's Q(lambda) [T]: G_t = r_t + d_t [(1 - lambda) E_pi Q_{t+1} + lambda G_{t+1}], never cut
    by off-policy actions, truncated after n steps (None: at the sequence end) with the bootstrap
    E_pi Q (max_a Q for greedy pi). q_t, pi_t [T+1, A]; r_t, discount_t, mask [T]."""
    q_t, _, r_t, discount_t, pi_t, _, mask, next_valid = _prepare(
        q_t, None, r_t, discount_t, pi_t, None, mask, value_rescaling)
    v_next = jnp.sum(pi_t[1:] * q_t[1:], axis=-1)
    lam = jnp.asarray(lambda_, jnp.float32) * next_valid.astype(jnp.float32)
    if n is None:
        g = value_ops.lambda_returns(r_t, discount_t, v_next, lam)
    else:
        g = value_ops.n_step_bootstrapped_returns(r_t, discount_t, v_next, int(n), lam)
    return _finish(g, mask, value_rescaling)


def retrace_returns(q_t, a_t, r_t, discount_t, pi_t, mu_t, mask=None, *, lambda_,
                    value_rescaling: bool = False) -> jax.Array:
    """Retrace target [T] with c_t = lambda * min(1, pi(a_t|x_t) / mu_t). q_t, pi_t [T+1, A];
    a_t [T+1]; r_t, discount_t, mu_t, mask [T]."""
    q_t, a_t, r_t, discount_t, pi_t, mu_t, mask, next_valid = _prepare(
        q_t, a_t, r_t, discount_t, pi_t, mu_t, mask, value_rescaling)
    ratio = _of_taken(pi_t, a_t)[1:] / jnp.concatenate([mu_t[1:], jnp.ones((1,))])
    c_next = jnp.asarray(lambda_, jnp.float32) * jnp.minimum(1.0, ratio) * next_valid
    return _off_policy(q_t, a_t, r_t, discount_t, pi_t, c_next, mask, value_rescaling)


def watkins_q_lambda_returns(q_t, a_t, r_t, discount_t, pi_t, mask=None, *, lambda_,
                             value_rescaling: bool = False) -> jax.Array:
    """Watkins Q(lambda) [T]: c_t = lambda * [a_t == argmax pi(.|x_t)], so the trace is cut at the
    first non-greedy action. q_t, pi_t [T+1, A]; a_t [T+1]; r_t, discount_t, mask [T]."""
    q_t, a_t, r_t, discount_t, pi_t, _, mask, next_valid = _prepare(
        q_t, a_t, r_t, discount_t, pi_t, None, mask, value_rescaling)
    greedy = (a_t == jnp.argmax(pi_t, axis=-1))[1:]
    c_next = jnp.asarray(lambda_, jnp.float32) * (greedy & next_valid)
    return _off_policy(q_t, a_t, r_t, discount_t, pi_t, c_next, mask, value_rescaling)


def soft_watkins_q_lambda_returns(q_t, a_t, r_t, discount_t, pi_t, mask=None, *, lambda_, kappa: float = 0.01,
                                  value_rescaling: bool = False) -> jax.Array:
    """Soft Watkins Q(lambda) [T] (MEME, Kapturowski et al., 2023): the general recursion with

        c_t = lambda * 1[q_t[a_t] >= max_a q_t[a] - kappa * |max_a q_t[a]|],

    so the trace is cut only where the taken action's value is more than kappa*|max| below the
    greedy one. The test reads q_t as passed in (with value_rescaling: the rescaled values, before
    h^-1); pi_t only enters through E_pi Q. kappa -> 0 gives Watkins Q(lambda) for pi greedy in q_t
    (ties aside); kappa -> inf never cuts (c = lambda: Q^pi(lambda)). kappa = 0.01 is the value in
    the papers notes (shared/PAPERS.md, MEME), marked unverified there.
    q_t, pi_t [T+1, A]; a_t [T+1]; r_t, discount_t, mask [T]; kappa >= 0 (a Python number)."""
    kappa = check_kappa(kappa)
    q_t, a_t, r_t, discount_t, pi_t, _, mask, next_valid = _prepare(
        q_t, a_t, r_t, discount_t, pi_t, None, mask, False)  # h^-1 below, after the test
    q_max = jnp.max(q_t, axis=-1)
    near_greedy = (_of_taken(q_t, a_t) >= q_max - kappa * jnp.abs(q_max))[1:]
    c_next = jnp.asarray(lambda_, jnp.float32) * (near_greedy & next_valid)
    if value_rescaling:
        q_t = h_inv(q_t)
    return _off_policy(q_t, a_t, r_t, discount_t, pi_t, c_next, mask, value_rescaling)


def tree_backup_returns(q_t, a_t, r_t, discount_t, pi_t, mask=None, *, lambda_,
                        value_rescaling: bool = False) -> jax.Array:
    """Tree-backup(lambda) [T]: c_t = lambda * pi(a_t|x_t). q_t, pi_t [T+1, A]; a_t [T+1];
    r_t, discount_t, mask [T]."""
    q_t, a_t, r_t, discount_t, pi_t, _, mask, next_valid = _prepare(
        q_t, a_t, r_t, discount_t, pi_t, None, mask, value_rescaling)
    c_next = jnp.asarray(lambda_, jnp.float32) * _of_taken(pi_t, a_t)[1:] * next_valid
    return _off_policy(q_t, a_t, r_t, discount_t, pi_t, c_next, mask, value_rescaling)


def off_policy_returns(q_t, a_t, r_t, discount_t, pi_t, c_t, mask=None, *,
                       value_rescaling: bool = False) -> jax.Array:
    """The general off-policy recursion [T] with the trace coefficients given: c_t [T+1] (c_0 unused;
    c_{t+1} is cut past the last valid transition, and non-finite values there cannot leak), for
    estimators whose c this module cannot compute from pi and mu (e.g. continuous actions,
    `learners.continuous_targets`). q_t, pi_t [T+1, A]; a_t [T+1]; r_t, discount_t, mask [T]."""
    q_t, a_t, r_t, discount_t, pi_t, _, mask, next_valid = _prepare(
        q_t, a_t, r_t, discount_t, pi_t, None, mask, value_rescaling)
    c_next = jnp.where(next_valid, jnp.asarray(c_t, jnp.float32)[1:], 0.0)
    return _off_policy(q_t, a_t, r_t, discount_t, pi_t, c_next, mask, value_rescaling)


def check_estimator(name: str) -> str:
    """Returns `name` if it is a known estimator, else raises ConfigError listing them."""
    if name not in ESTIMATORS:
        raise ConfigError(f"unknown return estimator {name!r}; choose one of {list(ESTIMATORS)}.")
    return name


def check_kappa(kappa) -> float:
    """Returns soft Watkins' tolerance `kappa` if it is a number >= 0, else raises ConfigError."""
    try:
        ok = not isinstance(kappa, (str, bytes)) and float(kappa) >= 0.0
    except (TypeError, ValueError):  # also a traced value: kappa is static
        ok = False
    if not ok:
        raise ConfigError(f"soft_watkins needs kappa >= 0 (a Python number; 0 is Watkins' cut, large "
                          f"never cuts), got {kappa!r}; pass e.g. kappa=0.01.")
    return float(kappa)


def returns_for(name: str, q_t, a_t, r_t, discount_t, pi_t, mu_t=None, mask=None, *,
                lambda_=0.95, n: Optional[int] = 5, kappa: float = 0.01,
                value_rescaling: bool = False) -> jax.Array:
    """Dispatches to the estimator `name` (one of ESTIMATORS); arguments it does not use are
    ignored ("nstep" ignores lambda_; "peng" truncates after n steps, n=None: never; the trace
    estimators ignore n; only "retrace" reads mu_t; only "soft_watkins" reads kappa). Shapes as in
    the module docstring; G [T]."""
    check_estimator(name)
    if name == "nstep":
        if n is None:
            n = int(jnp.shape(r_t)[0])
        return nstep_double_q_returns(q_t, r_t, discount_t, pi_t, mask, n=n, value_rescaling=value_rescaling)
    if name == "peng":
        return peng_q_lambda_returns(q_t, r_t, discount_t, pi_t, mask, lambda_=lambda_, n=n,
                                     value_rescaling=value_rescaling)
    if name == "retrace":
        if mu_t is None:
            raise ValueError("retrace needs mu_t, the behaviour probabilities of the taken actions [T].")
        return retrace_returns(q_t, a_t, r_t, discount_t, pi_t, mu_t, mask, lambda_=lambda_,
                               value_rescaling=value_rescaling)
    if name == "soft_watkins":
        return soft_watkins_q_lambda_returns(q_t, a_t, r_t, discount_t, pi_t, mask, lambda_=lambda_, kappa=kappa,
                                             value_rescaling=value_rescaling)
    fn = watkins_q_lambda_returns if name == "watkins" else tree_backup_returns
    return fn(q_t, a_t, r_t, discount_t, pi_t, mask, lambda_=lambda_, value_rescaling=value_rescaling)
