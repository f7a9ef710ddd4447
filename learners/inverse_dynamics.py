"""NGU's controllable embedding f (Badia et al., 2020, §2): a Siamese inverse-dynamics model.

f: torso -> linear to 32 features. A classifier h (one ReLU hidden layer of 128) reads
(f(x_t), f(x_{t+1})) and predicts a_t; both are trained with softmax cross-entropy on a_t, so f keeps
what the agent's actions control and drops the rest. The episodic memory stores f(x).
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from rillet import validation as check
from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError
from rillet.learners.networks import MLP, LinearHead, QNetwork, make_torso
from rillet.learners.rnd import masked_mean

__all__ = ["InverseDynamics", "embed", "action_logits", "inverse_dynamics_loss"]


class InverseDynamics(eqx.Module):
    """embed: obs [..., *obs_shape] -> f(x) [..., embedding_size] (torso -> linear, no activation);
    classifier: [..., 2 * embedding_size] -> logits [..., A] (MLP, one ReLU hidden layer).

    The torso is `make_torso(spec, key, torso, hidden_sizes)`. Defaults (32, 128) are the sizes our
    brief quotes from NGU. Raises ConfigError for a spec without discrete actions.
    """

    embed: QNetwork
    classifier: MLP

    def __init__(self, spec: StepSpec, key: jax.Array, embedding_size: int = 32,
                 hidden_sizes: Sequence[int] = (128,), torso: str = "auto", classifier_hidden: int = 128):
        if spec.num_actions is None or int(spec.num_actions) < 1:
            raise ConfigError(
                f"The inverse-dynamics embedding predicts a discrete action, but the spec of "
                f"'{spec.env_id or 'unnamed env'}' has num_actions={spec.num_actions}. Use an "
                "environment with discrete actions.")
        check.integer("InverseDynamics", "embedding_size", embedding_size, low=1)
        check.integer("InverseDynamics", "classifier_hidden", classifier_hidden, low=1)
        torso_key, head_key, classifier_key = jax.random.split(key, 3)
        body, features = make_torso(spec, torso_key, torso, tuple(int(h) for h in hidden_sizes))
        self.embed = QNetwork(body, LinearHead(features, embedding_size, head_key))
        self.classifier = MLP(2 * embedding_size, (classifier_hidden,), int(spec.num_actions), classifier_key)


def embed(model: InverseDynamics, observation: jax.Array) -> jax.Array:
    """The controllable embedding f(x): observation [B, *obs] -> [B, embedding_size] float32."""
    return model.embed(observation)


def action_logits(model: InverseDynamics, observation: jax.Array, next_observation: jax.Array) -> jax.Array:
    """h(f(x_t), f(x_{t+1})): observation, next_observation [N, *obs] -> logits over a_t [N, A].

    Both observations go through the one shared embedding in a single call.
    """
    both = embed(model, jnp.concatenate([jnp.asarray(observation), jnp.asarray(next_observation)]))
    f_t, f_next = jnp.split(both, 2)
    return model.classifier(jnp.concatenate([f_t, f_next], axis=-1))


def inverse_dynamics_loss(modules: dict, observation: jax.Array, next_observation: jax.Array,
                          action: jax.Array, valid: jax.Array) -> tuple[jax.Array, dict]:
    """Softmax cross-entropy of a_t under h(f(x_t), f(x_{t+1})), averaged over valid rows.

    modules: {"embedding": InverseDynamics}; observation, next_observation [N, *obs];
    action [N] int (a_t, taken between them); valid [N] bool (False: padding or an episode boundary).
    Returns (loss [], {"accuracy": [] fraction of valid rows whose argmax logit is a_t}).
    """
    logits = action_logits(modules["embedding"], observation, next_observation)
    valid = jnp.asarray(valid, bool)
    action = jnp.where(valid, jnp.asarray(action, jnp.int32), 0)  # padding may hold any action
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, action)
    correct = (jnp.argmax(logits, axis=-1) == action).astype(jnp.float32)
    return masked_mean(cross_entropy, valid), {"accuracy": masked_mean(correct, valid)}
