"""HiMo's heads over a recurrent core's features h (Guez et al., 2020, "Value-driven Hindsight Modelling"),
in Q form ([..., A] over actions):

    "q"    ModelledValueHead  q_m(h) = psi'(h, sg phi_hat(h)): the value actors act on and targets bootstrap
                              from; `predict(h)` is the model phi_hat(h) [..., d] of the hindsight feature.
    "phi"  HindsightHead      phi(sg h) [..., d]: the hindsight feature a later step's features give an earlier
                              step; `values(h_t, phi)` is the hindsight value q+ = psi(sg h_t, phi) [..., A].

The stop-gradients sit inside the modules, so every caller gets them exactly as the paper writes them:
phi and psi never send a gradient into h (only their own weights learn from the hindsight loss), and q_m
reads phi_hat's output without a gradient (the value loss does not train the model). psi and psi' are
one ReLU layer of `hidden` units over [h, phi] and a (dueling) Q head; phi and phi_hat are MLPs with one
hidden layer of `hidden` units (sizes: this library's choice, not the paper's).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet.learners.networks import DuelingHead, LinearHead
from rillet.learners.networks.mlp import MLP

__all__ = ["ConditionedQ", "ModelledValueHead", "HindsightHead"]


class ConditionedQ(eqx.Module):
    """psi: (features [..., H], phi [..., d]) -> Q [..., A], a ReLU layer over [features, phi] then a Q head."""

    layer: MLP
    head: eqx.Module

    def __init__(self, in_size: int, phi_size: int, hidden: int, num_actions: int, dueling: bool, key: jax.Array):
        k_layer, k_head = jax.random.split(key)
        self.layer = MLP(in_size + phi_size, (), hidden, k_layer, activate_final=True)
        self.head = (DuelingHead if dueling else LinearHead)(hidden, num_actions, k_head)

    def __call__(self, features: jax.Array, phi: jax.Array) -> jax.Array:
        return self.head(self.layer(jnp.concatenate([features, phi.astype(features.dtype)], axis=-1)))


class _FeatureAndValue(eqx.Module):
    """A feature MLP phi: [..., H] -> [..., d] (one hidden layer) and a value psi = ConditionedQ over [h, phi]."""

    phi: MLP
    psi: ConditionedQ

    def __init__(self, in_size: int, phi_size: int, hidden: int, num_actions: int, dueling: bool, key: jax.Array):
        k_phi, k_psi = jax.random.split(key)
        self.phi = MLP(in_size, (hidden,), phi_size, k_phi)
        self.psi = ConditionedQ(in_size, phi_size, hidden, num_actions, dueling, k_psi)


class ModelledValueHead(_FeatureAndValue):
    """q_m(h) = psi'(h, sg phi_hat(h)): features [..., H] -> [..., A]; here `phi` is the model phi_hat and
    `psi` is psi'."""

    def predict(self, features: jax.Array) -> jax.Array:
        """phi_hat(h) [..., d], with its gradient into h (the model loss shapes the core's features)."""
        return self.phi(features)

    def __call__(self, features: jax.Array) -> jax.Array:
        return self.psi(features, jax.lax.stop_gradient(self.predict(features)))


class HindsightHead(_FeatureAndValue):
    """phi(sg h): features [..., H] -> [..., d]; values(h_t, phi) = psi(sg h_t, phi) -> [..., A]."""

    def __call__(self, features: jax.Array) -> jax.Array:
        return self.phi(jax.lax.stop_gradient(features))

    def values(self, features: jax.Array, phi: jax.Array) -> jax.Array:
        """q+ = psi(sg h_t, phi): features [..., H] of step t, phi [..., d] of step t + k -> [..., A]."""
        return self.psi(jax.lax.stop_gradient(features), phi)
