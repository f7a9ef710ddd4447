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


class ModelledValueHead(eqx.Module):
    """q_m(h) = psi'(h, sg phi_hat(h)): features [..., H] -> [..., A]; model phi_hat: [..., H] -> [..., d]."""

    model: MLP
    value: ConditionedQ

    def __init__(self, in_size: int, phi_size: int, hidden: int, num_actions: int, dueling: bool, key: jax.Array):
        k_model, k_value = jax.random.split(key)
        self.model = MLP(in_size, (hidden,), phi_size, k_model)
        self.value = ConditionedQ(in_size, phi_size, hidden, num_actions, dueling, k_value)

    def predict(self, features: jax.Array) -> jax.Array:
        """phi_hat(h) [..., d], with its gradient into h (the model loss shapes the core's features)."""
        return self.model(features)

    def __call__(self, features: jax.Array) -> jax.Array:
        return self.value(features, jax.lax.stop_gradient(self.predict(features)))


class HindsightHead(eqx.Module):
    """phi(sg h): features [..., H] -> [..., d]; values(h_t, phi) = psi(sg h_t, phi) -> [..., A]."""

    feature: MLP
    value: ConditionedQ

    def __init__(self, in_size: int, phi_size: int, hidden: int, num_actions: int, dueling: bool, key: jax.Array):
        k_feature, k_value = jax.random.split(key)
        self.feature = MLP(in_size, (hidden,), phi_size, k_feature)
        self.value = ConditionedQ(in_size, phi_size, hidden, num_actions, dueling, k_value)

    def __call__(self, features: jax.Array) -> jax.Array:
        return self.feature(jax.lax.stop_gradient(features))

    def values(self, features: jax.Array, phi: jax.Array) -> jax.Array:
        """q+ = psi(sg h_t, phi): features [..., H] of step t, phi [..., d] of step t + k -> [..., A]."""
        return self.value(jax.lax.stop_gradient(features), phi)
