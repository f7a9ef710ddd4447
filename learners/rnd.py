"""Random Network Distillation (Burda et al., 2019) as NGU's lifelong novelty (Badia et al., 2020, §2).

A fixed, randomly initialised target g and a trained predictor ĝ of the same architecture (torso ->
linear to 128 outputs); err(x) = ||ĝ(x) - g(x)||². The running mean μ_e and standard deviation σ_e
of err normalise it into the lifelong multiplier α = clip(1 + (err - μ_e) / σ_e, 1, L), L = 5.

The target never changes, two ways at once: `rnd_error` stops its gradient, and the optimiser the
agent gives the "rnd" group is `freeze_target(opt)`, which has no state for the target and returns
None updates for it (so `eqx.apply_updates` leaves it untouched, even under weight decay). Training
by filter instead: `eqx.partition(rnd, trainable(rnd))` splits off the predictor's arrays.
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from rillet import validation as check
from rillet.datasets.specs import StepSpec
from rillet.learners.networks import LinearHead, QNetwork, make_torso
from rillet.learners.running_stats import RunningStats, init_stats, update_stats

__all__ = [
    "RND", "rnd_error", "rnd_loss", "normalise_observation", "trainable", "freeze_target", "masked_mean",
    "RunningStats", "init_stats", "update_stats", "lifelong_multiplier",
]


class RND(eqx.Module):
    """Target g and predictor ĝ, each torso -> linear: obs [..., *obs_shape] -> [..., output_size].

    The torso comes from `make_torso(spec, key, torso, hidden_sizes)`: a ReLU MLP for vectors [D],
    the Nature-DQN conv torso for uint8 images [C, H, W]. The default output size 128 is the one our
    brief quotes from NGU (not re-checked against the paper's hyperparameter table); the two
    networks are initialised from independent keys.
    """

    target: QNetwork
    predictor: QNetwork

    def __init__(self, spec: StepSpec, key: jax.Array, output_size: int = 128,
                 hidden_sizes: Sequence[int] = (128,), torso: str = "auto"):
        check.integer("RND", "output_size", output_size, low=1)
        hidden = tuple(int(h) for h in hidden_sizes)
        target_key, predictor_key = jax.random.split(key)
        self.target = _torso_linear(spec, target_key, output_size, hidden, torso)
        self.predictor = _torso_linear(spec, predictor_key, output_size, hidden, torso)


def _torso_linear(spec: StepSpec, key: jax.Array, out_size: int, hidden: tuple[int, ...],
                  torso: str) -> QNetwork:
    """make_torso's torso followed by one linear layer to out_size (no activation)."""
    torso_key, head_key = jax.random.split(key)
    body, features = make_torso(spec, torso_key, torso, hidden)
    return QNetwork(body, LinearHead(features, out_size, head_key))


def masked_mean(values: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean of values [N] over the rows where valid [N] (bool) is True -> []; 0 when none is."""
    valid = jnp.asarray(valid, bool)
    total = jnp.sum(jnp.where(valid, values, 0.0))
    return total / jnp.maximum(jnp.sum(valid), 1).astype(total.dtype)


def normalise_observation(observation: jax.Array, stats: RunningStats | None, clip: float = 5.0) -> jax.Array:
    """RND's input whitening: (x - mean) / std per entry, clipped to [-clip, clip], for float vector
    observations [B, D] with per-entry `stats` ([D]); images (uint8, scaled by their torso) and
    stats None or still empty pass through unchanged."""
    observation = jnp.asarray(observation)
    if stats is None or observation.dtype == jnp.uint8:
        return observation
    white = jnp.clip((observation - stats.mean) / jnp.sqrt(stats.var + 1e-8), -clip, clip)
    return jnp.where(stats.count > 0, white, observation)


def rnd_error(rnd: RND, observation: jax.Array, obs_stats: RunningStats | None = None) -> jax.Array:
    """err(x) = ||ĝ(x) - g(x)||² summed over the output: observation [B, *obs] -> [B] float32, the
    observation first whitened with obs_stats (`normalise_observation`; None: as it is).

    The target's output is under stop_gradient: no gradient reaches g.
    """
    observation = normalise_observation(observation, obs_stats)
    target = jax.lax.stop_gradient(rnd.target(observation))
    prediction = rnd.predictor(observation)
    return jnp.sum(jnp.square(prediction - target), axis=-1)


def rnd_loss(modules: dict, observation: jax.Array, valid: jax.Array,
             obs_stats: RunningStats | None = None) -> tuple[jax.Array, dict]:
    """The predictor's loss: mean err over valid rows.

    modules: {"rnd": RND}; observation [N, *obs]; valid [N] bool; obs_stats as in `rnd_error`.
    Returns (loss [], {"error": err [N]}) (err of every row, invalid ones included, for logging).
    """
    error = rnd_error(modules["rnd"], observation, obs_stats)
    return masked_mean(error, valid), {"error": error}


def trainable(rnd: RND):
    """Filter spec for `eqx.partition`/`eqx.filter`: True on the predictor's floating-point arrays,
    False elsewhere (the whole target)."""
    spec = jax.tree.map(lambda _: False, rnd)
    return eqx.tree_at(lambda r: r.predictor, spec, jax.tree.map(eqx.is_inexact_array, rnd.predictor))


def freeze_target(optimiser: optax.GradientTransformation) -> optax.GradientTransformation:
    """`optimiser` applied to the predictor of an RND only; the target gets no state and None
    updates (left as is by `eqx.apply_updates`). Use it as the outermost transformation of the
    "rnd" group: groups = {"rnd": freeze_target(adam(5e-4)), ...}.
    """

    def init(params: RND):
        return optimiser.init(params.predictor)

    def update(updates: RND, state, params: RND | None = None):
        inner = None if params is None else params.predictor
        predictor_updates, state = optimiser.update(updates.predictor, state, inner)
        updates = eqx.tree_at(lambda r: (r.target, r.predictor), updates, (None, predictor_updates))
        return updates, state

    return optax.GradientTransformation(init, update)


def lifelong_multiplier(error: jax.Array, stats: RunningStats, max_multiplier: float = 5.0,
                        eps: float = 1e-8) -> jax.Array:
    """NGU's α_t clipped: min(max(1 + (err - μ_e) / sqrt(σ_e² + eps), 1), L) for error [B] -> [B].

    L = max_multiplier (NGU: 5). Before any statistics (count == 0) every multiplier is 1.
    """
    if isinstance(max_multiplier, (int, float)):
        check.number("lifelong_multiplier", "max_multiplier", max_multiplier, 1.0)
    error = jnp.asarray(error, jnp.float32)
    alpha = 1.0 + (error - stats.mean) / jnp.sqrt(stats.var + eps)
    clipped = jnp.clip(alpha, 1.0, max_multiplier)
    return jnp.where(stats.count > 0, clipped, jnp.ones_like(clipped))
