"""MEME's policy distillation head (Kapturowski et al., 2023) and the policy churn it is meant to smooth.

A head "pi" of logits [..., A] beside the Q head, trained by cross-entropy towards the greedy policy of
the (combined) online value, one_hot(argmax_a Q(x_t, a)), on the learned transitions:

    L_pi = mean over sequences of mean over valid t of -log softmax(pi(x_t))[argmax_a Q(x_t, a)]

Actors may act from it instead of argmax Q (`acting_head`): "argmax" (the default) is epsilon-greedy
over argmax pi, "sample" draws a ~ (1 - eps) softmax(pi) + eps / A. The head moves slowly where Q's argmax flips between
near-equal actions, so the acting policy changes less between updates (policy churn, `greedy_churn`).
The head's weight in the loss (1.0) and the sampling are this library's reading of the paper: unverified.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rillet.learners.sequence_targets import sequence_mean

__all__ = ["DISTILLATION_ACTING", "acting_head", "distillation_loss", "greedy_churn"]

DISTILLATION_ACTING = ("argmax", "sample", "off")


def acting_head(config: Any) -> tuple[str, bool]:
    """(head name, sample) the actors of `config` act with: ("pi", True/False) when the distillation head
    is on and config.distillation_acting is "sample"/"argmax"; ("q", False) otherwise."""
    if getattr(config, "distillation", False) and config.distillation_acting != "off":
        return "pi", config.distillation_acting == "sample"
    return "q", False


def distillation_loss(logits: jax.Array, q: jax.Array, valid: jax.Array,
                      weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(loss [], agreement []) of the head: logits, q [B, T, A] at the learned steps; valid [B, T];
    weights [B] (importance weights) or None. agreement: the share of valid steps where argmax pi
    equals argmax Q. No gradient reaches q."""
    greedy = jnp.argmax(jax.lax.stop_gradient(q), axis=-1)
    log_pi = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    cross_entropy = -jnp.take_along_axis(log_pi, greedy[..., None], axis=-1)[..., 0]
    agree = (jnp.argmax(logits, axis=-1) == greedy).astype(jnp.float32)
    return sequence_mean(cross_entropy, valid, weights), sequence_mean(agree, valid)


def greedy_churn(before: jax.Array, after: jax.Array, valid: jax.Array) -> jax.Array:
    """The share of valid states whose greedy action changed: before, after [B, T, A] (one head's
    outputs on the same states before and after an update); valid [B, T] -> []."""
    changed = jnp.argmax(before, axis=-1) != jnp.argmax(after, axis=-1)
    return jnp.sum(jnp.where(valid, changed, False)) / jnp.maximum(jnp.sum(valid), 1)
