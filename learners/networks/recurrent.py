"""Recurrent Q-network (R2D2): torso -> [features, one-hot a_{t-1}, r_{t-1}] -> LSTM -> Q head.

Time-major: obs [T, B, *obs] -> q [T, B, A]. The LSTM state is a tuple (h [B, H], c [B, H]) and is
reset to zeros before any step with is_first (an episode starting inside the sequence).
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError
from rillet.learners.networks import DuelingHead, LinearHead
from rillet.learners.networks.mlp import MLP
from rillet.learners.networks.nature_dqn import FEATURES, NatureDQN

__all__ = ["RecurrentQNetwork", "recurrent_q_network", "LSTMState"]

LSTMState = tuple  # (h [B, H], c [B, H]) float32


class RecurrentQNetwork(eqx.Module):
    """Torso (MLP or Nature-DQN conv), optional previous action/reward inputs, LSTM, Q head."""

    torso: eqx.Module
    core: eqx.nn.LSTMCell
    head: eqx.Module
    num_actions: int = eqx.field(static=True)
    use_prev_action_reward: bool = eqx.field(static=True)

    @property
    def lstm_size(self) -> int:
        return self.core.hidden_size

    def initial_state(self, batch: int) -> LSTMState:
        """Zero state (h [batch, H], c [batch, H]) float32."""
        zeros = jnp.zeros((batch, self.lstm_size), jnp.float32)
        return zeros, zeros

    def _core_inputs(self, obs, prev_action, prev_reward) -> jax.Array:
        """obs [..., *obs], prev_action [...] int, prev_reward [...] -> LSTM inputs [..., F']."""
        x = self.torso(obs)
        if not self.use_prev_action_reward:
            return x
        one_hot = jax.nn.one_hot(jnp.asarray(prev_action, jnp.int32), self.num_actions, dtype=x.dtype)
        reward = jnp.asarray(prev_reward, x.dtype)[..., None]
        return jnp.concatenate([x, one_hot, reward], axis=-1)

    def _cell(self, x, is_first, state):
        """One LSTM step over a batch: x [B, F'], is_first [B] -> (out [B, H], state)."""
        keep = jnp.logical_not(jnp.asarray(is_first, bool))[:, None]
        h, c = (jnp.where(keep, s, 0.0) for s in state)
        h, c = jax.vmap(self.core)(x, (h, c))
        return h, (h, c)

    def unroll(self, obs, prev_action, prev_reward, is_first, state: LSTMState, scan_unroll: int = 1):
        """obs [T, B, *obs], prev_action [T, B], prev_reward [T, B], is_first [T, B] bool,
        state (h, c) [B, H] -> (q [T, B, A] float32, final state (h, c) [B, H]). scan_unroll: time
        steps per loop iteration (same result, less loop overhead on GPU)."""
        inputs = self._core_inputs(obs, prev_action, prev_reward)  # torso runs on all T*B at once

        def body(carry, xs):
            out, carry = self._cell(xs[0], xs[1], carry)
            return carry, out

        xs = (inputs, jnp.asarray(is_first, bool))
        final, outs = jax.lax.scan(body, tuple(state), xs, unroll=scan_unroll)
        return self.head(outs), final

    def step(self, obs, prev_action, prev_reward, is_first, state: LSTMState):
        """One actor step: obs [B, *obs], prev_action [B], prev_reward [B], is_first [B] bool,
        state (h, c) [B, H] -> (q [B, A], new state)."""
        out, state = self._cell(self._core_inputs(obs, prev_action, prev_reward), is_first, state)
        return self.head(out), state


def recurrent_q_network(spec: StepSpec, key: jax.Array, *, hidden_sizes: Sequence[int] = (512,),
                        lstm_size: int = 512, dueling: bool = True,
                        use_prev_action_reward: bool = True) -> RecurrentQNetwork:
    """Builds the network for `spec`: rank-1 obs [D] -> ReLU MLP torso with `hidden_sizes`
    (output hidden_sizes[-1]); rank-3 uint8 [C, H, W] -> Nature-DQN torso (512 features,
    hidden_sizes unused). Raises ConfigError for continuous actions or other observations."""
    num_actions = spec.num_actions
    if num_actions is None or int(num_actions) < 1 or spec.action.shape != () \
            or not np.issubdtype(spec.action.np_dtype, np.integer):
        raise ConfigError(
            f"R2D2 needs scalar discrete actions, but '{spec.env_id or 'unnamed env'}' has action spec "
            f"{spec.action.shape} {spec.action.dtype} (num_actions={num_actions}).")
    if isinstance(lstm_size, bool) or not isinstance(lstm_size, (int, np.integer)) or lstm_size < 1:
        raise ConfigError(f"lstm_size must be a positive integer, got {lstm_size!r}.")
    k_torso, k_core, k_head = jax.random.split(key, 3)
    obs = spec.observation
    if len(obs.shape) == 1:
        hidden = tuple(int(h) for h in hidden_sizes)
        if not hidden:
            raise ConfigError("vector observations need at least one torso layer: set hidden_sizes, e.g. (64,).")
        torso = MLP(obs.shape[0], hidden[:-1], hidden[-1], k_torso, activate_final=True)
        features = hidden[-1]
    elif len(obs.shape) == 3 and obs.np_dtype == np.uint8:
        torso, features = NatureDQN(*obs.shape, key=k_torso), FEATURES
    else:
        raise ConfigError(
            f"Unsupported observation spec {obs.shape} {obs.dtype}: R2D2 supports vectors [D] (MLP torso) "
            "and uint8 images [C, H, W] (Nature-DQN torso).")
    in_size = features + (int(num_actions) + 1 if use_prev_action_reward else 0)
    head_cls = DuelingHead if dueling else LinearHead
    return RecurrentQNetwork(
        torso=torso,
        core=eqx.nn.LSTMCell(in_size, int(lstm_size), key=k_core),
        head=head_cls(int(lstm_size), int(num_actions), k_head),
        num_actions=int(num_actions),
        use_prev_action_reward=bool(use_prev_action_reward),
    )
