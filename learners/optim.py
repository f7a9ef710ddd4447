"""Optimiser steps shared by the learners: one optimiser builder, one PRNG-key normaliser, and a
gradient step over several parameter groups, each with its own optax transformation and state.

    groups = {"q": adam(1e-3, max_grad_norm=10.0)}                  # DQN, R2D2: one group
    groups = {"extrinsic": adam(1e-4), "intrinsic": adam(1e-4)}     # Agent57: two value networks
    opt_states = init_groups(groups, {"q": network})
    modules, opt_states, (loss, aux), grad_norms = group_step(loss_fn, groups, modules, opt_states, batch)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

__all__ = ["adam", "key_data", "init_groups", "group_step"]


def adam(learning_rate: optax.ScalarOrSchedule, eps: float = 1e-8,
         max_grad_norm: float | None = None) -> optax.GradientTransformation:
    """Adam, after clipping the gradients' global norm to `max_grad_norm` (None: no clipping)."""
    opt = optax.adam(learning_rate, eps=eps)
    if max_grad_norm is None:
        return opt
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), opt)


def key_data(key: jax.Array) -> jax.Array:
    """A PRNG key as raw uint32 data [2] (typed `jax.random.key` keys are unwrapped), so that a
    learner state holds only numeric arrays and checkpoints as one."""
    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def init_groups(groups: Mapping[str, optax.GradientTransformation], modules: Mapping[str, eqx.Module]) -> dict:
    """The optimiser state of each group: {name: groups[name].init(trainable arrays of modules[name])}."""
    return {name: opt.init(eqx.filter(modules[name], eqx.is_inexact_array)) for name, opt in groups.items()}


def group_step(loss_fn: Callable[..., tuple[jax.Array, Any]], groups: Mapping[str, optax.GradientTransformation],
               modules: Mapping[str, eqx.Module], opt_states: Mapping[str, Any], *args):
    """One gradient step of `loss_fn(modules, *args) -> (loss, aux)` over every group at once.

    modules: {group name: Equinox module}; the gradient of the one loss with respect to each module's
    floating-point arrays is transformed by that group's optimiser and state only.
    Returns (new modules, new optimiser states, (loss, aux), {group name: gradient norm before the
    optimiser} ).
    """
    params = {k: eqx.filter(m, eqx.is_inexact_array) for k, m in modules.items()}
    static = {k: eqx.filter(m, eqx.is_inexact_array, inverse=True) for k, m in modules.items()}

    def loss_of_params(p):
        return loss_fn({k: eqx.combine(p[k], static[k]) for k in p}, *args)

    (loss, aux), grads = jax.value_and_grad(loss_of_params, has_aux=True)(params)
    new_modules, new_states, norms = dict(modules), dict(opt_states), {}
    for name, opt in groups.items():
        updates, new_states[name] = opt.update(grads[name], opt_states[name], params[name])
        new_modules[name] = eqx.apply_updates(modules[name], updates)
        norms[name] = optax.global_norm(grads[name])
    return new_modules, new_states, (loss, aux), norms
