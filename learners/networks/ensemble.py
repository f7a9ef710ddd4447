"""An ensemble of K networks with stacked parameters, evaluated in one vmapped call.

Each member may carry a fixed random prior network (Osband et al., 2018, "Randomized prior functions"):
member k outputs f_k(x) + prior_scale * stop_gradient(p_k(x)), where p_k is initialised like f_k and
never trained (its gradient is zero, so Adam leaves it where it started).

`Ensemble.members(x) -> [K, ...]` gives every member's output; calling the ensemble gives their mean,
so acting and evaluation code that calls a network works unchanged on an ensemble.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet import validation as check

__all__ = ["Ensemble", "MemberHeads", "ensemble", "member_heads", "member_outputs"]


def _stack(build: Callable[[jax.Array], eqx.Module], keys: jax.Array) -> eqx.Module:
    """K modules from K keys [K, ...] as one module whose arrays have a leading [K] axis."""
    return eqx.filter_vmap(build)(keys)


def _apply_stacked(stacked: eqx.Module, x: jax.Array) -> jax.Array:
    """Each of the K stacked modules on the same input: x [...] -> [K, ...out]."""
    return eqx.filter_vmap(lambda module: module(x))(stacked)


class Ensemble(eqx.Module):
    """K members (stacked parameters) and optional fixed priors; input [..., *obs] -> mean [..., A]."""

    networks: eqx.Module
    priors: eqx.Module | None
    prior_scale: float = eqx.field(static=True)
    size: int = eqx.field(static=True)

    def members(self, x: jax.Array) -> jax.Array:
        """Every member's output: x [..., *obs] -> [K, ..., A]."""
        out = _apply_stacked(self.networks, x)
        if self.priors is not None:
            out = out + self.prior_scale * jax.lax.stop_gradient(_apply_stacked(self.priors, x))
        return out

    def __call__(self, x: jax.Array) -> jax.Array:
        """The members' mean: x [..., *obs] -> [..., A]."""
        return jnp.mean(self.members(x), axis=0)


def ensemble(build: Callable[[jax.Array], eqx.Module], key: jax.Array, size: int,
             prior_scale: float = 0.0) -> Ensemble:
    """`size` members built by `build(key)` from independent keys; with prior_scale > 0 each member also
    gets a prior built the same way from its own key. Raises ConfigError for size < 1 or prior_scale < 0."""
    check.integer("ensemble", "ensemble_size", size, low=1, fix="ensemble_size (1: one network; e.g. 5)")
    check.number("ensemble", "prior_scale", prior_scale, 0.0, fix="prior_scale (0: no priors; e.g. 3.0)")
    member_key, prior_key = jax.random.split(key)
    networks = _stack(build, jax.random.split(member_key, int(size)))
    priors = _stack(build, jax.random.split(prior_key, int(size))) if prior_scale > 0 else None
    return Ensemble(networks, priors, float(prior_scale), int(size))


class MemberHeads(Ensemble):
    """K heads on a shared core (bootstrapped DQN's layout): calling it gives every member, on the
    second-last axis: features [..., F] -> [..., K, A], so a recurrent core's head output [T, B, K, A]
    keeps its time and batch axes first."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.moveaxis(self.members(x), 0, -2)


def member_heads(build: Callable[[jax.Array], eqx.Module], key: jax.Array, size: int,
                 prior_scale: float = 0.0) -> MemberHeads:
    """`ensemble(build, key, size, prior_scale)` as MemberHeads (calling it gives the members)."""
    e = ensemble(build, key, size, prior_scale)
    return MemberHeads(e.networks, e.priors, e.prior_scale, e.size)


def member_outputs(network: eqx.Module, x: jax.Array) -> jax.Array:
    """[K, ..., A] for an Ensemble, [1, ..., A] for any other network (one member)."""
    if isinstance(network, Ensemble):
        return network.members(x)
    return network(x)[None]
