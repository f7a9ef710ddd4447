"""Running count, mean and variance of values arriving in batches (RND's error statistics, observation
whitening, the TD-error scale of MEME's normalisation), as a pytree updated by pure functions."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["RunningStats", "init_stats", "update_stats"]


class RunningStats(eqx.Module):
    """Running count [], mean and (population) variance (of err: []; of observations: per entry), float32.

    A float32 count is exact up to 2^24 valid values; beyond that it is rounded, which only
    shifts the weights of new batches by < 1e-7 relative.
    """

    count: jax.Array
    mean: jax.Array
    var: jax.Array


def init_stats(shape: tuple[int, ...] = ()) -> RunningStats:
    """Empty statistics of values of `shape` (() for err; an observation's shape for per-dimension
    observation statistics): count 0 [], mean 0 and var 0 of `shape`."""
    zero = jnp.zeros(shape, jnp.float32)
    return RunningStats(count=jnp.zeros((), jnp.float32), mean=zero, var=zero)


def _masked_rows_mean(values: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean over the valid rows of values [N, *shape] (valid [N]) -> [*shape]; 0 when none is."""
    mask = jnp.reshape(valid, valid.shape + (1,) * (values.ndim - 1))
    return jnp.sum(jnp.where(mask, values, 0.0), axis=0) / jnp.maximum(jnp.sum(valid), 1).astype(values.dtype)


def update_stats(stats: RunningStats, values: jax.Array, valid: jax.Array,
                 max_count: float | None = None) -> RunningStats:
    """Merges the valid rows of values [N, *shape] (valid [N] bool) into `stats`, per entry of shape
    (Chan, Golub & LeVeque's parallel algorithm): with n = n_a + n_b and δ = mean_b - mean_a,
        mean = mean_a + δ n_b / n,   var = var_a n_a / n + var_b n_b / n + δ² (n_a / n)(n_b / n).
    A batch with no valid row leaves `stats` unchanged. max_count: the old statistics weigh as at most
    this many values (n_a = min(count, max_count)), so that they follow a drifting quantity (a TD
    error's scale) over roughly the last max_count values; None: all values weigh the same.
    """
    values = jnp.asarray(values, jnp.float32)
    valid = jnp.asarray(valid, bool)
    n_b = jnp.sum(valid).astype(jnp.float32)
    mean_b = _masked_rows_mean(values, valid)
    var_b = _masked_rows_mean(jnp.square(values - mean_b), valid)
    n_a = stats.count if max_count is None else jnp.minimum(stats.count, float(max_count))
    n = n_a + n_b
    share_a = n_a / jnp.maximum(n, 1.0)
    share_b = n_b / jnp.maximum(n, 1.0)
    delta = mean_b - stats.mean
    mean = stats.mean + delta * share_b
    var = stats.var * share_a + var_b * share_b + jnp.square(delta) * share_a * share_b
    empty = n_b == 0
    return RunningStats(count=n, mean=jnp.where(empty, stats.mean, mean), var=jnp.where(empty, stats.var, var))
