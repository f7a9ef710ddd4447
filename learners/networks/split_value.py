"""Agent57's split value: two recurrent networks, one for the extrinsic and one for the intrinsic reward,
acting as one recurrent network whose "q" head is their combination for policy j:

    Q(x, a, j) = h(h^-1(Q_e(x, a, j)) + beta_j * h^-1(Q_i(x, a, j)))    (h: value rescaling; without it,
                                                                          Q_e + beta_j * Q_i)

Two networks rather than two heads on one core: the paper trains them apart so that the intrinsic
reward's scale and noise never reach the extrinsic value's features (and each has its own optimiser
state); a shared core would mix their gradients. The pair has RecurrentNetwork's interface (inputs,
initial_state, step, unroll, lstm_size), so R2D2's burn-in unroll and recurrent actors take it as is:
its core state is the two networks' states concatenated, (h_e ++ h_i, c_e ++ c_i) [B, H_e + H_i].
Heads: "q_e", "q_i" (each network's "q") and "q" (the combination; needs the input "policy_index"), and
the extrinsic network's other heads under their own names (MEME's distillation head "pi").
"""

from __future__ import annotations

from typing import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet.learners.returns import h, h_inv
from rillet.learners.networks.recurrent import RecurrentNetwork

__all__ = ["SplitValueNetwork", "combine_values"]


def combine_values(q_e: jax.Array, q_i: jax.Array, beta: jax.Array, value_rescaling: bool) -> jax.Array:
    """Q = h(h^-1(q_e) + beta * h^-1(q_i)) (or q_e + beta * q_i): q_e, q_i [..., A]; beta [...] per row."""
    beta = jnp.asarray(beta, q_e.dtype)[..., None]
    if value_rescaling:
        return h(h_inv(q_e) + beta * h_inv(q_i))
    return q_e + beta * q_i


class SplitValueNetwork(eqx.Module):
    """The extrinsic and intrinsic recurrent networks; betas [N] (beta_j of each policy j, constants)."""

    extrinsic: RecurrentNetwork
    intrinsic: RecurrentNetwork
    betas: tuple = eqx.field(static=True)
    value_rescaling: bool = eqx.field(static=True)

    @property
    def inputs(self):
        """The core inputs both networks read (the intrinsic network declares the same ones)."""
        return self.extrinsic.inputs

    @property
    def lstm_size(self) -> int:
        return self.extrinsic.lstm_size + self.intrinsic.lstm_size

    def initial_state(self, batch: int):
        zeros = jnp.zeros((batch, self.lstm_size), jnp.float32)
        return zeros, zeros

    def _split(self, state):
        """(h, c) [B, H_e + H_i] -> the extrinsic and intrinsic networks' states."""
        cut = self.extrinsic.lstm_size
        return tuple(s[..., :cut] for s in state), tuple(s[..., cut:] for s in state)

    def _heads(self, heads_e: dict, heads_i: dict, inputs: Mapping[str, jax.Array]) -> dict:
        beta = jnp.asarray(self.betas, jnp.float32)[jnp.asarray(inputs["policy_index"], jnp.int32)]
        q = combine_values(heads_e["q"], heads_i["q"], beta, self.value_rescaling)
        extra = {name: out for name, out in heads_e.items() if name != "q"}  # e.g. the distillation head "pi"
        return {"q": q, "q_e": heads_e["q"], "q_i": heads_i["q"], **extra}

    def unroll(self, observation, inputs: Mapping[str, jax.Array], is_first, state, scan_unroll: int = 1):
        """As RecurrentNetwork.unroll: -> (features [T, B, H_e + H_i], heads, final state)."""
        state_e, state_i = self._split(state)
        f_e, heads_e, final_e = self.extrinsic.unroll(observation, inputs, is_first, state_e, scan_unroll)
        f_i, heads_i, final_i = self.intrinsic.unroll(observation, inputs, is_first, state_i, scan_unroll)
        final = tuple(jnp.concatenate(pair, axis=-1) for pair in zip(final_e, final_i))
        return jnp.concatenate([f_e, f_i], axis=-1), self._heads(heads_e, heads_i, inputs), final

    def step(self, observation, inputs: Mapping[str, jax.Array], is_first, state):
        """As RecurrentNetwork.step: one actor step of both networks."""
        state_e, state_i = self._split(state)
        f_e, heads_e, new_e = self.extrinsic.step(observation, inputs, is_first, state_e)
        f_i, heads_i, new_i = self.intrinsic.step(observation, inputs, is_first, state_i)
        new = tuple(jnp.concatenate(pair, axis=-1) for pair in zip(new_e, new_i))
        return jnp.concatenate([f_e, f_i], axis=-1), self._heads(heads_e, heads_i, inputs), new
