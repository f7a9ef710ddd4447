"""Target-network updates shared by the learners: a periodic hard copy or Polyak averaging."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax


def update_target(online: eqx.Module, target: eqx.Module, steps: jax.Array, period: int,
                  polyak_tau: float | None = None) -> eqx.Module:
    """The new target network after update number `steps` (int32 [], counted from 1).

    polyak_tau None: a hard copy of `online` whenever steps % period == 0, else `target` unchanged
    (jnp.where over the array leaves: no Python branch on traced values). Otherwise:
    target <- (1 - tau) * target + tau * online, every update.
    """
    online_arrays, _ = eqx.partition(online, eqx.is_array)
    target_arrays, target_static = eqx.partition(target, eqx.is_array)
    if polyak_tau is not None:
        new_arrays = optax.incremental_update(online_arrays, target_arrays, polyak_tau)
    else:
        copy = (steps % period) == 0
        new_arrays = jax.tree.map(lambda o, t: jnp.where(copy, o, t), online_arrays, target_arrays)
    return eqx.combine(new_arrays, target_static)
