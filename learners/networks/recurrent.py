"""The recurrent core shared by the recurrent agents: torso -> [features, named extra inputs] -> LSTM
-> named heads. R2D2 declares two extra inputs (the previous action, one-hot, and the previous reward)
and one head "q"; NGU adds the previous intrinsic reward and a one-hot policy index; HiMo adds heads.

Time-major: observation [T, B, *obs], each input [T, B] -> features [T, B, H] and each head [T, B, ...].
The LSTM state is a tuple (h [B, H], c [B, H]) and is reset to zeros before any step with is_first
(an episode starting inside the sequence).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError
from rillet.learners.networks import make_torso

__all__ = ["CoreInput", "RecurrentNetwork", "recurrent_network", "LSTMState"]

LSTMState = tuple  # (h [B, H], c [B, H]) float32


@dataclasses.dataclass(frozen=True)
class CoreInput:
    """A named extra input of the core, read by name from a batch's extras (or an actor's state).

    size > 0: an integer index encoded one-hot over `size` classes (previous action, policy index);
    size == 0: a real scalar (previous extrinsic or intrinsic reward).
    """

    name: str
    size: int = 0

    @property
    def width(self) -> int:
        """Entries this input adds to the core's input vector."""
        return self.size or 1

    def encode(self, value: jax.Array, dtype) -> jax.Array:
        """value [...] -> [..., width] in `dtype`."""
        if self.size:
            return jax.nn.one_hot(jnp.asarray(value, jnp.int32), self.size, dtype=dtype)
        return jnp.asarray(value, dtype)[..., None]


class RecurrentNetwork(eqx.Module):
    """Torso, named extra inputs, LSTM core and named heads over the core's features."""

    torso: eqx.Module
    core: eqx.nn.LSTMCell
    heads: dict
    inputs: tuple[CoreInput, ...] = eqx.field(static=True)

    @property
    def lstm_size(self) -> int:
        return self.core.hidden_size

    def initial_state(self, batch: int) -> LSTMState:
        """Zero state (h [batch, H], c [batch, H]) float32."""
        zeros = jnp.zeros((batch, self.lstm_size), jnp.float32)
        return zeros, zeros

    def core_inputs(self, observation: jax.Array, inputs: Mapping[str, jax.Array]) -> jax.Array:
        """observation [..., *obs] and every declared input [...] -> LSTM inputs [..., F + widths]."""
        x = self.torso(observation)
        missing = [i.name for i in self.inputs if i.name not in inputs]
        if missing:
            raise KeyError(f"the recurrent core needs the inputs {missing}; got {sorted(inputs)}.")
        if not self.inputs:
            return x
        return jnp.concatenate([x, *(i.encode(inputs[i.name], x.dtype) for i in self.inputs)], axis=-1)

    def _cell(self, x, is_first, state):
        """One LSTM step over a batch: x [B, F'], is_first [B] -> (features [B, H], state)."""
        keep = jnp.logical_not(jnp.asarray(is_first, bool))[:, None]
        h, c = (jnp.where(keep, s, 0.0) for s in state)
        h, c = jax.vmap(self.core)(x, (h, c))
        return h, (h, c)

    def apply_heads(self, features: jax.Array) -> dict:
        """features [..., H] -> {head name: head(features) [..., *out]}."""
        return {name: head(features) for name, head in self.heads.items()}

    def unroll(self, observation, inputs: Mapping[str, jax.Array], is_first, state: LSTMState,
               scan_unroll: int = 1):
        """observation [T, B, *obs], inputs {name: [T, B]}, is_first [T, B] bool, state (h, c) [B, H]
        -> (features [T, B, H], {head: [T, B, ...]}, final state). scan_unroll: time steps per loop
        iteration (the same result, less loop overhead on GPU)."""
        xs = (self.core_inputs(observation, inputs), jnp.asarray(is_first, bool))  # torso on all T*B at once

        def body(carry, x):
            out, carry = self._cell(x[0], x[1], carry)
            return carry, out

        final, features = jax.lax.scan(body, tuple(state), xs, unroll=scan_unroll)
        return features, self.apply_heads(features), final

    def step(self, observation, inputs: Mapping[str, jax.Array], is_first, state: LSTMState):
        """One actor step: observation [B, *obs], inputs {name: [B]}, is_first [B] bool, state (h, c)
        [B, H] -> (features [B, H], {head: [B, ...]}, new state)."""
        features, state = self._cell(self.core_inputs(observation, inputs), is_first, state)
        return features, self.apply_heads(features), state


HeadFactory = Callable[[int, jax.Array], eqx.Module]  # (in_size, key) -> head module


def recurrent_network(spec: StepSpec, key: jax.Array, *, inputs: Sequence[CoreInput], lstm_size: int,
                      heads: Mapping[str, HeadFactory], torso: str = "auto",
                      hidden_sizes: Sequence[int] = (512,)) -> RecurrentNetwork:
    """Builds a RecurrentNetwork for `spec`: the torso `torso` (see `networks.make_torso`), the declared
    inputs and heads (each made by heads[name](lstm_size, key)). key splits into torso, core and head
    keys; the first head gets the head key itself and further heads keys split from it, so adding a
    head leaves the others' initialisation unchanged."""
    if isinstance(lstm_size, bool) or not isinstance(lstm_size, (int, np.integer)) or lstm_size < 1:
        raise ConfigError(f"lstm_size must be a positive integer, got {lstm_size!r}.")
    if not heads:
        raise ConfigError("a recurrent network needs at least one head.")
    names = [i.name for i in inputs]
    if len(set(names)) != len(names):
        raise ConfigError(f"core input names must be distinct, got {names}.")
    k_torso, k_core, k_head = jax.random.split(key, 3)
    torso_module, features = make_torso(spec, k_torso, torso, hidden_sizes)
    head_keys = [k_head, *jax.random.split(k_head, len(heads) - 1)] if len(heads) > 1 else [k_head]
    in_size = features + sum(i.width for i in inputs)
    return RecurrentNetwork(
        torso=torso_module,
        core=eqx.nn.LSTMCell(in_size, int(lstm_size), key=k_core),
        heads={name: make(int(lstm_size), k) for (name, make), k in zip(heads.items(), head_keys)},
        inputs=tuple(inputs),
    )
