"""MEME's two regularisers of the TD errors (Kapturowski et al., 2023, "Human-level Atari 200x faster"),
each switched on from any value agent's config (`R2D2Config.trust_region`, `.normalise_td`):

Approximate trust region. The targets bootstrap from the online network (not the target network); the
target network only bounds how far an update may pull the online value. With diff = Q(x_t, a_t) -
Q_target(x_t, a_t) and td = G_t - Q(x_t, a_t), the loss term of transition t is dropped when

    |diff| > alpha * sigma   and   sign(td) = sign(diff)      (outside the region, moving further out)

Loss and priority normalisation. td is divided by max(sigma, batch std of td, floor) before the loss
and the priorities, so values of very different scales (an extrinsic and an intrinsic head) train at
the same rate.

sigma is the running standard deviation of the (raw) TD errors of one value head, a `RunningStats`
in the learner state (`td_stats`: {head: RunningStats}), over roughly the last `td_scale_window` errors.
alpha's default 3 is marked unverified in PAPERS.md; the window (100k errors) is this library's choice.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from rillet.learners.running_stats import RunningStats, init_stats, update_stats

__all__ = ["uses_td_stats", "init_td_stats", "td_scale", "trust_region_mask", "regularised_td", "update_td_stats"]


def uses_td_stats(config: Any) -> bool:
    """Whether `config` switches on a regulariser that needs the running TD-error statistics."""
    return bool(getattr(config, "trust_region", False) or getattr(config, "normalise_td", False))


def init_td_stats(config: Any, heads: tuple[str, ...] = ("q",)) -> dict | None:
    """{head: empty RunningStats} for each value head when `config` needs them, else None."""
    return {name: init_stats() for name in heads} if uses_td_stats(config) else None


def td_scale(stats: RunningStats, td: jax.Array, valid: jax.Array, floor: float) -> jax.Array:
    """max(running std, std of td over valid [B, T], floor) -> [] without gradient (the running std
    counts as 0 before any statistics)."""
    td = jax.lax.stop_gradient(jnp.asarray(td, jnp.float32))
    n = jnp.maximum(jnp.sum(valid), 1)
    mean = jnp.sum(jnp.where(valid, td, 0.0)) / n
    batch_std = jnp.sqrt(jnp.sum(jnp.where(valid, jnp.square(td - mean), 0.0)) / n)
    running_std = jnp.where(stats.count > 0, jnp.sqrt(stats.var), 0.0)
    return jnp.maximum(jnp.maximum(running_std, batch_std), floor)


def trust_region_mask(q_online: jax.Array, q_target: jax.Array, td: jax.Array, radius: jax.Array) -> jax.Array:
    """True where a loss term is kept: q_online, q_target, td [...] (Q(x, a) of the online and target
    networks and G - Q(x, a)); radius [] (alpha * sigma). A term is dropped only when the online value
    is more than `radius` from the target value and its TD error would move it further away."""
    diff = jax.lax.stop_gradient(q_online - q_target)
    outside = jnp.abs(diff) > radius
    away = jnp.sign(jax.lax.stop_gradient(td)) == jnp.sign(diff)
    return jnp.logical_not(outside & away)


def regularised_td(td: jax.Array, valid: jax.Array, q_online: jax.Array, q_target: jax.Array,
                   stats: RunningStats | None, config: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(td for the loss and priorities [B, T], loss mask [B, T], sigma []) of one value head.

    td, valid, q_online, q_target [B, T] (q_* of the taken actions). With stats None (no regulariser)
    td and valid come back as they are and sigma is 1."""
    if stats is None:
        return td, valid, jnp.ones((), jnp.float32)
    sigma = td_scale(stats, td, valid, config.td_scale_floor)
    keep = valid
    if config.trust_region:
        keep = valid & trust_region_mask(q_online, q_target, td, config.trust_region_alpha * sigma)
    if config.normalise_td:
        td = td / sigma
    return td, keep, sigma


def update_td_stats(stats: Mapping[str, RunningStats] | None, td_errors: Mapping[str, jax.Array],
                    valid: jax.Array, window: int) -> dict | None:
    """Each head's statistics merged with its raw TD errors td_errors[head] [B, T] over valid [B, T]."""
    if stats is None:
        return None
    valid = jnp.reshape(valid, (-1,))
    return {name: update_stats(s, jnp.reshape(td_errors[name], (-1,)), valid, max_count=window)
            for name, s in stats.items()}
