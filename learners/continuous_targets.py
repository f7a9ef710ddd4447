"""Multi-step critic targets for continuous actions (TD3-style actor-critics) over sequences from replay:
n-step, Peng's Q(lambda), Retrace and tree-backup, through `returns.py`'s recursions (no second copy).

Batch-major arrays, B sequences of T transitions (t = 0..T-1) and their T+1 states:

    q_taken   [B, T+1] float  target critic's Q(x_t, a_t) at the taken actions (min over the twins)
    v         [B, T+1] float  target policy's value E_pi Q(x_t, .) = min_k Q'_k(x_t, pi'(x_t) + eps),
                              eps the clipped smoothing noise (one sample, as TD3's target)
    action    [B, T+1, A]     taken actions in [-1, 1]^A; target_action [B, T+1, A] the target actor pi'(x_t)
    behaviour_log_prob [B, T+1]  log mu(a_t|x_t) recorded by the actor (`actors.policies.gaussian_exploration`)
    reward, discount [B, T]   r_t and gamma * env discount after a_t; valid [B, T] bool

A continuous action is put into `returns.py`'s discrete form as a two-column table per state:
column 0 holds Q(x_t, a_t), column 1 E_pi Q(x_t); the taken action is column 0 and the target policy
puts all its mass on column 1, so E_pi Q and Q(x_t, a_t) enter the general recursion

    G_t = r_t + d_t (E_pi Q_{t+1} - c_{t+1} Q(x_{t+1}, a_{t+1}) + c_{t+1} G_{t+1})

exactly as they do for discrete actions, with the trace coefficients c computed here:

- n-step: G_t = sum_{k<m} (prod_{j<k} d_{t+j}) r_{t+k} + (prod_{j<m} d_{t+j}) E_pi Q_{t+m}, m = min(n,
  steps to the sequence end): the trace is never cut, then cut entirely (no c).
- Peng's Q(lambda): its own recursion G_t = r_t + d_t [(1 - lambda) E_pi Q_{t+1} + lambda G_{t+1}],
  truncated after n steps with the bootstrap E_pi Q (not the general form: it never subtracts
  Q(x, a)). lambda = 0 is TD3's one-step target r_t + d_t min_k Q'_k(x_{t+1}, pi'(x_{t+1}) + eps);
  lambda = 1 (n >= T) the Monte-Carlo return plus the final bootstrap.
- Retrace: c_t = lambda * min(1, rho_t), rho_t = pi_s(a_t|x_t) / mu(a_t|x_t), with pi_s = N(pi'(x_t),
  sigma_s^2 I) the *smoothed* target policy (a deterministic target has no density) and mu the
  behaviour density the actor recorded: N(mu_b(x_t), sigma_b^2 I) for Gaussian exploration (uniform
  2^-A during the warm-up). Approximated: both Gaussians are taken as untruncated, i.e. the
  clipping of the smoothing noise to +-noise_clip and of the actions to [-1, 1] is ignored, and both
  densities are evaluated at the stored (clipped) action. Computed in log space:
  c = lambda * exp(min(0, log pi_s(a|x) - log mu(a|x))).
- Tree-backup: c_t = lambda * exp(-||a_t - pi'(x_t)||^2 / (2 sigma_s^2)), the smoothed target
  policy's density at a_t divided by its maximum (its density at pi'(x_t)). Tree-backup's c =
  lambda * pi(a|x) needs a weight in [0, 1] that is 1 where the target policy puts all its mass on
  the taken action; a density is unbounded (and has units), so it is normalised by its peak: 1 when
  the taken action is the target action, decaying with the distance in units of sigma_s, and it
  never reads the behaviour policy (as tree-backup does not).

With the behaviour mean on pi' and sigma_s = 2 sigma_b (TD3's 0.2 and 0.1), rho = 2^-A exp(3/8 ||z||^2)
for a = pi' + sigma_b z: below 1 near the mean (the wider target is the lower density there), above 1
in the tails; for A = 6 min(1, rho) has median 0.12 (mean 0.25), so Retrace cuts traces hard even on-policy.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rillet.errors import ConfigError
from rillet.learners import returns

__all__ = ["CONTINUOUS_ESTIMATORS", "check_continuous_estimator", "gaussian_log_density", "retrace_traces",
           "tree_backup_traces", "trace_coefficients", "continuous_targets"]

CONTINUOUS_ESTIMATORS = ("nstep", "peng", "retrace", "tree_backup")


def check_continuous_estimator(name: str) -> str:
    """Returns `name` if it is one of CONTINUOUS_ESTIMATORS, else raises ConfigError listing them."""
    if name not in CONTINUOUS_ESTIMATORS:
        raise ConfigError(f"unknown continuous-action return estimator {name!r}; choose one of "
                          f"{list(CONTINUOUS_ESTIMATORS)} (e.g. --td3.estimator peng).")
    return name


def gaussian_log_density(x: jax.Array, mean: jax.Array, std: jax.Array | float) -> jax.Array:
    """log N(x; mean, std^2 I) summed over the action axis: x, mean [..., A]; std [] or [...] (one
    isotropic scale per row, > 0) -> [...] float32."""
    x, mean = jnp.asarray(x, jnp.float32), jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    z = (x - mean) / std[..., None]
    dims = x.shape[-1]
    return -0.5 * jnp.sum(jnp.square(z), axis=-1) - dims * jnp.log(std) - 0.5 * dims * math.log(2.0 * math.pi)


def retrace_traces(action: jax.Array, target_action: jax.Array, behaviour_log_prob: jax.Array,
                   smoothing_std: float, lambda_: float) -> jax.Array:
    """Retrace's c = lambda * min(1, N(a; pi'(x), sigma_s^2 I) / mu(a|x)) (module docstring):
    action, target_action [..., A]; behaviour_log_prob [...] log mu(a|x) -> [...] in [0, lambda]."""
    log_rho = gaussian_log_density(action, target_action, smoothing_std) - jnp.asarray(behaviour_log_prob, jnp.float32)
    return lambda_ * jnp.exp(jnp.minimum(log_rho, 0.0))


def tree_backup_traces(action: jax.Array, target_action: jax.Array, smoothing_std: float,
                       lambda_: float) -> jax.Array:
    """Tree-backup's c = lambda * exp(-||a - pi'(x)||^2 / (2 sigma_s^2)) (module docstring): action,
    target_action [..., A] -> [...] in [0, lambda]."""
    sq = jnp.sum(jnp.square(jnp.asarray(action, jnp.float32) - jnp.asarray(target_action, jnp.float32)), axis=-1)
    return lambda_ * jnp.exp(-0.5 * sq / smoothing_std ** 2)


def trace_coefficients(estimator: str, action: jax.Array, target_action: jax.Array,
                       behaviour_log_prob: jax.Array, *, lambda_: float, smoothing_std: float) -> jax.Array:
    """The c_t [B, T+1] of `estimator` (action, target_action [B, T+1, A]; behaviour_log_prob [B, T+1]).
    Peng's Q(lambda) never cuts (lambda everywhere) and n-step not within its n steps (1 everywhere);
    `continuous_targets` reads c only for "retrace" and "tree_backup"."""
    check_continuous_estimator(estimator)
    if estimator == "retrace":
        return retrace_traces(action, target_action, behaviour_log_prob, smoothing_std, lambda_)
    if estimator == "tree_backup":
        return tree_backup_traces(action, target_action, smoothing_std, lambda_)
    fill = lambda_ if estimator == "peng" else 1.0
    return jnp.full(jnp.shape(behaviour_log_prob), fill, jnp.float32)


def continuous_targets(estimator: str, q_taken: jax.Array, v: jax.Array, reward: jax.Array, discount: jax.Array,
                       valid: jax.Array, traces: jax.Array, *, lambda_: float, n: int | None) -> jax.Array:
    """The critic targets G [B, T] (0 on invalid steps, no gradient) of `estimator`.

    q_taken, v, traces [B, T+1] (module docstring); reward, discount [B, T]; valid [B, T] bool;
    n truncates "nstep" and "peng" (None: at the sequence end); the trace estimators run to the
    sequence end and read traces (c_0 unused)."""
    check_continuous_estimator(estimator)

    def one(q, vv, r, d, c, m):
        column = vv[:, None]  # [T+1, 1]: a one-action table whose value is E_pi Q
        ones = jnp.ones_like(column)
        if estimator == "nstep":
            return returns.nstep_double_q_returns(column, r, d, ones, m, n=int(n if n is not None else r.shape[0]))
        if estimator == "peng":
            return returns.peng_q_lambda_returns(column, r, d, ones, m, lambda_=lambda_, n=n)
        table = jnp.stack([q, vv], axis=-1)  # [T+1, 2]: column 0 Q(x, a_t), column 1 E_pi Q(x)
        pi = jnp.broadcast_to(jnp.array([0.0, 1.0], jnp.float32), table.shape)
        taken = jnp.zeros(q.shape, jnp.int32)
        return returns.off_policy_returns(table, taken, r, d, pi, c, m)

    return jax.lax.stop_gradient(jax.vmap(one)(q_taken, v, reward, discount, traces, valid))
