"""Behaviour cloning with a value agent's own network: the baseline of offline value learning.

The network's acting head ("q") is read as logits of a softmax policy and trained by cross-entropy on
the dataset's actions, with the agent's optimiser (`dqn.optimizers`, `r2d2.optimizers`), so that the
comparison with the value learner changes only the loss. The greedy policy of the trained head is the
policy's mode, which the agent's evaluator plays unchanged.

Which steps count:
    transitions (DQN's network)   every row: q_values(o_t) [B, A] against a_t [B]
    sequences (R2D2's network)    the steps after the burn-in, q [B, T', A] (T' = L - burn_in) from the
                                  online unroll, against a_t where the step is real (mask) and not an
                                  episode's last step (whose action RLDS leaves unused)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from rillet.learners import dqn, optim, r2d2, recurrent_value
from rillet.learners.value_state import ValueState

__all__ = ["transition_logits", "sequence_logits", "cloning_loss", "update"]


def transition_logits(network: eqx.Module, batch: Mapping[str, Any], config: dqn.DQNConfig):
    """(logits [B, A], actions [B] int32, valid [B] bool) of a transition batch."""
    action = jnp.asarray(batch["action"], jnp.int32)
    return dqn.q_values(network, batch["observation"]), action, jnp.ones(action.shape, bool)


def sequence_logits(network: eqx.Module, batch: Mapping[str, Any], config: r2d2.R2D2Config):
    """(logits [B, T', A], actions [B, T'] int32, valid [B, T'] bool) of a sequence batch after the burn-in."""
    bi = config.burn_in
    q = recurrent_value.online_unroll(network, batch, bi, config.scan_unroll)["q"]
    valid = jnp.asarray(batch["mask"], bool)[:, bi:] & ~jnp.asarray(batch["is_last"], bool)[:, bi:]
    return q, jnp.asarray(batch["action"], jnp.int32)[:, bi:], valid


def cloning_loss(logits: jax.Array, actions: jax.Array, valid: jax.Array) -> tuple[jax.Array, dict]:
    """Mean cross-entropy of softmax(logits [..., A]) on actions [...] over the valid entries; aux:
    accuracy (the argmax is the action) and the number of valid entries."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), actions)
    n = jnp.maximum(jnp.sum(valid), 1)
    hit = jnp.argmax(logits, axis=-1) == actions
    return jnp.sum(jnp.where(valid, ce, 0.0)) / n, {"accuracy": jnp.sum(hit & valid) / n,
                                                     "valid_steps": jnp.sum(valid)}


def _optimizers(config) -> dict:
    return r2d2.optimizers(config) if isinstance(config, r2d2.R2D2Config) else dqn.optimizers(config)


@eqx.filter_jit
def update(state: ValueState, batch: Mapping[str, Any], config, logits_fn: Callable):
    """One optimiser step of `cloning_loss` on `logits_fn(network, batch, config)` (transition_logits or
    sequence_logits). The target network follows the online one (it is never read). Returns (new_state,
    metrics): loss, accuracy, valid_steps, grad_norm."""
    def loss_fn(modules, batch):
        return cloning_loss(*logits_fn(modules["q"], batch, config))

    modules, opt_state, (loss, aux), norms = optim.group_step(
        loss_fn, _optimizers(config), {"q": state.online}, state.opt_state, batch)
    online = modules["q"]
    new_state = ValueState(online=online, target=online, opt_state=opt_state, steps=state.steps + 1,
                           key=state.key, td_stats=state.td_stats)
    return new_state, {"loss": loss, **aux, "grad_norm": norms["q"]}
