"""The recurrent value core's sequence plumbing, shared by the recurrent value agents (R2D2 and the
agents built on it): stored-state unrolls with burn-in for the online and target networks, and the
mask of the transitions a sequence may learn from.

A batch holds B sequences of L = burn_in + T + 1 RLDS steps (batch-major): observation [B, L, *obs],
is_first, is_last, mask [B, L], extras {recurrent_state_h, recurrent_state_c [B, L, H] (the core state
*before* each step; only step 0 is read), and one [B, L] array per core input the network declares}.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from rillet.datasets.specs import ArraySpec, StepSpec, check_batch
from rillet.learners.networks.recurrent import RecurrentNetwork

__all__ = ["STATE_EXTRAS", "core_inputs", "initial_core_state", "online_unroll", "online_unroll_features",
           "target_unroll", "unroll_with_burn_in", "transition_mask", "check_sequence_batch"]

STATE_EXTRAS = ("recurrent_state_h", "recurrent_state_c")


def _time_major(x) -> jax.Array:
    return jnp.swapaxes(jnp.asarray(x), 0, 1)


def _batch_major(tree) -> Any:
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), tree)


def core_inputs(network: RecurrentNetwork, extras: Mapping[str, Any]) -> dict:
    """{name: extras[name] [B, L]} for every input the network's core declares."""
    return {i.name: extras[i.name] for i in network.inputs}


def initial_core_state(extras: Mapping[str, Any]) -> tuple:
    """The stored core state entering step 0, (h [B, H], c [B, H]), without gradient."""
    return jax.lax.stop_gradient(tuple(jnp.asarray(extras[k])[:, 0] for k in STATE_EXTRAS))


def _sequence(network: RecurrentNetwork, batch: Mapping[str, Any]):
    """Time-major observation [L, B, *obs], is_first [L, B], inputs {name: [L, B]} and stored state."""
    extras = batch["extras"]
    inputs = {k: _time_major(v) for k, v in core_inputs(network, extras).items()}
    return _time_major(batch["observation"]), _time_major(batch["is_first"]), inputs, initial_core_state(extras)


def online_unroll_features(online: RecurrentNetwork, batch: Mapping[str, Any], burn_in: int,
                           scan_unroll: int = 1) -> tuple[jax.Array, dict]:
    """The online half of `unroll_with_burn_in`: from the stored state of step 0, a warm-up over the
    first `burn_in` steps without gradient, then the remaining steps -> (features [B, L - burn_in, H],
    {head: [B, L - burn_in, ...]}); the features are the core's outputs h_t the heads read."""
    obs, first, inputs, state = _sequence(online, batch)
    if burn_in > 0:
        head = {k: v[:burn_in] for k, v in inputs.items()}
        _, _, state = online.unroll(obs[:burn_in], head, first[:burn_in], state, scan_unroll)
        state = jax.lax.stop_gradient(state)
    tail = {k: v[burn_in:] for k, v in inputs.items()}
    features, heads, _ = online.unroll(obs[burn_in:], tail, first[burn_in:], state, scan_unroll)
    return _batch_major((features, heads))


def online_unroll(online: RecurrentNetwork, batch: Mapping[str, Any], burn_in: int, scan_unroll: int = 1) -> dict:
    """`online_unroll_features`' heads only: {head: [B, L - burn_in, ...]}."""
    return online_unroll_features(online, batch, burn_in, scan_unroll)[1]


def target_unroll(target: RecurrentNetwork, batch: Mapping[str, Any], burn_in: int, scan_unroll: int = 1) -> dict:
    """The target half of `unroll_with_burn_in`: all L steps from the stored state of step 0, no gradient
    -> {head: [B, L - burn_in, ...]} at the steps after the burn-in."""
    obs, first, inputs, state0 = _sequence(target, batch)
    _, target_heads, _ = target.unroll(obs, inputs, first, state0, scan_unroll)
    return _batch_major(jax.lax.stop_gradient({k: v[burn_in:] for k, v in target_heads.items()}))


def unroll_with_burn_in(online: RecurrentNetwork, target: RecurrentNetwork, batch: Mapping[str, Any],
                        burn_in: int, scan_unroll: int = 1) -> tuple[dict, dict]:
    """R2D2's stored-state unroll: both networks start from the stored state of step 0; the online
    network warms up over the first `burn_in` steps without gradient, then unrolls the remaining
    L - burn_in steps; the target network unrolls all L steps (no gradient).

    Returns (online heads, target heads), each {head name: [B, L - burn_in, ...]} at the same steps.
    """
    target_heads = target_unroll(target, batch, burn_in, scan_unroll)
    return online_unroll(online, batch, burn_in, scan_unroll), target_heads


def transition_mask(batch: Mapping[str, Any], burn_in: int, trace_length: int) -> jax.Array:
    """valid [B, T]: transition t (steps burn_in .. burn_in + T - 1) is learned from iff its step is
    real (mask), it is not an episode's last step, and the next step does not start a new episode."""
    step = slice(burn_in, burn_in + trace_length)
    return (jnp.asarray(batch["mask"], bool)[:, step] & ~jnp.asarray(batch["is_last"], bool)[:, step]
            & ~jnp.asarray(batch["is_first"], bool)[:, burn_in + 1:burn_in + trace_length + 1])


def check_sequence_batch(spec: StepSpec, batch: Mapping[str, Any]) -> None:
    """SpecMismatchError unless `batch` is a [B, L] batch of sequences of `spec`'s steps with a mask."""
    check_batch({**spec.fields(), "mask": ArraySpec((), "bool")}, batch, leading_dims=2, what="sequence batch")
