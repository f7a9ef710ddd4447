"""R2D2 (Kapturowski et al., 2019): recurrent double-Q learning from stored-state sequences with
burn-in, value rescaling, switchable multi-step return estimators and sequence priorities.

A batch is B sequences of L = burn_in + trace_length + 1 RLDS steps (batch-major):

    observation [B, L, *obs], action [B, L] int, reward [B, L], discount [B, L] (env discount),
    is_first, is_last, is_terminal, mask [B, L] bool (mask False on padding after an episode end),
    extras: recurrent_state_h, recurrent_state_c [B, L, H] (LSTM state *before* step t; only step
            0 is used), behaviour_prob [B, L] (mu(a_t|x_t) of the actor), prev_action [B, L] int
            (a_{t-1}, 0 at is_first), prev_reward [B, L] (r_{t-1}, 0 at is_first),
    optional weights [B] (importance weights).

Steps 0..burn_in-1 only warm up the LSTM states (no gradient); the trace_length transitions
starting at burn_in..L-2 are learned; step L-1 is the bootstrap state. Transition t is valid iff
mask[t] and not is_last[t] and not is_first[t+1].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError, SpecMismatchError
from rillet.learners import returns
from rillet.learners.networks.recurrent import RecurrentQNetwork, recurrent_q_network
from rillet.learners.target_network import update_target

__all__ = ["R2D2Config", "R2D2State", "init", "update", "sequence_loss", "sequence_priorities",
           "spec_extras", "actor_step", "EXTRAS"]

EXTRAS = ("recurrent_state_h", "recurrent_state_c", "behaviour_prob", "prev_action", "prev_reward")


@dataclasses.dataclass(frozen=True)
class R2D2Config:
    """R2D2 hyper-parameters. Defaults are the paper's Atari setting (shared/PAPERS.md: burn-in 40,
    trace 80, n = 5, gamma = 0.997, eta = 0.9, target copy every 2500 updates, h with eps = 1e-3;
    lambda = 0.95 from NGU/Agent57's Retrace). learning_rate 1e-4 and adam_eps 1e-3 come from the
    R2D2 paper's hyper-parameter table (not in PAPERS.md: unverified); max_grad_norm 40 is a common
    reimplementation choice (unverified; None disables clipping). For CartPole use small sizes,
    e.g. lstm_size=64, hidden_sizes=(64,), burn_in=10, trace_length=20, gamma=0.99, lr 1e-3.

    estimator: one of returns.ESTIMATORS; "nstep" and "peng" truncate after n_step steps, the
    trace estimators ("retrace", "watkins", "tree_backup") run to the end of the trace.
    """

    burn_in: int = 40
    trace_length: int = 80
    estimator: str = "nstep"
    n_step: int = 5
    lambda_: float = 0.95
    gamma: float = 0.997
    value_rescaling: bool = True
    priority_eta: float = 0.9
    target_update_period: int = 2500
    learning_rate: float = 1e-4
    adam_eps: float = 1e-3
    max_grad_norm: float | None = 40.0
    lstm_size: int = 512
    hidden_sizes: tuple[int, ...] = (512,)  # MLP torso for vector observations only
    dueling: bool = True
    use_prev_action_reward: bool = True
    scan_unroll: int = 1
    """LSTM time steps per loop iteration of the unrolled scan (`jax.lax.scan(unroll=)`): the same
    result; larger values cut per-step loop overhead on GPU at the cost of compile time."""
    target_epsilon: float = 0.0
    """Target policy pi = (1 - e) * greedy(online Q) + e / A. With e = 0 (R2D2's greedy target)
    Retrace, Watkins and tree-backup coincide; e > 0 makes their trace cuts differ."""

    def __post_init__(self):
        if isinstance(self.hidden_sizes, list):
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    @property
    def sequence_length(self) -> int:
        """L = burn_in + trace_length + 1 (the last step only bootstraps)."""
        return self.burn_in + self.trace_length + 1

    def validate(self) -> "R2D2Config":
        """Raises ConfigError naming the first bad field; returns self."""

        def integer(name, low):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ConfigError(f"R2D2Config.{name}={v!r} is invalid: it must be an integer >= {low}.")

        def number(name, low, high, low_open=False):
            v = getattr(self, name)
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            if not ok or v > high or v < low or (low_open and v == low):
                lo = "(" if low_open else "["
                raise ConfigError(f"R2D2Config.{name}={v!r} is invalid: it must lie in {lo}{low}, {high}].")

        integer("burn_in", 0)
        integer("trace_length", 1)
        integer("n_step", 1)
        integer("target_update_period", 1)
        integer("lstm_size", 1)
        integer("scan_unroll", 1)
        returns.check_estimator(self.estimator)
        number("lambda_", 0.0, 1.0)
        number("gamma", 0.0, 1.0)
        number("priority_eta", 0.0, 1.0)
        number("target_epsilon", 0.0, 1.0)
        number("learning_rate", 0.0, math.inf, low_open=True)
        number("adam_eps", 0.0, math.inf, low_open=True)
        if self.max_grad_norm is not None:
            number("max_grad_norm", 0.0, math.inf, low_open=True)
        for name in ("value_rescaling", "dueling", "use_prev_action_reward"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"R2D2Config.{name}={getattr(self, name)!r} must be True or False.")
        hs = self.hidden_sizes
        if not isinstance(hs, tuple) or not hs or any(
                isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1 for x in hs):
            raise ConfigError(f"R2D2Config.hidden_sizes={hs!r} must be a non-empty tuple of positive ints.")
        return self


class R2D2State(eqx.Module):
    """online/target: RecurrentQNetwork; opt_state: optax state; steps: int32 [] updates done;
    key: uint32 [2] raw PRNG key data."""

    online: RecurrentQNetwork
    target: RecurrentQNetwork
    opt_state: optax.OptState
    steps: jax.Array
    key: jax.Array


def _optimizer(config: R2D2Config) -> optax.GradientTransformation:
    adam = optax.adam(config.learning_rate, eps=config.adam_eps)
    if config.max_grad_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adam)


def build_network(spec: StepSpec, config: R2D2Config, key: jax.Array) -> RecurrentQNetwork:
    return recurrent_q_network(spec, key, hidden_sizes=config.hidden_sizes, lstm_size=config.lstm_size,
                               dueling=config.dueling, use_prev_action_reward=config.use_prev_action_reward)


def init(key: jax.Array, spec: StepSpec, config: R2D2Config) -> R2D2State:
    """Validates `config`; online = target network, Adam state, steps = 0."""
    config.validate()
    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    net_key, state_key = jax.random.split(key)
    online = build_network(spec, config, net_key)
    opt_state = _optimizer(config).init(eqx.filter(online, eqx.is_inexact_array))
    return R2D2State(online=online, target=online, opt_state=opt_state,
                     steps=jnp.zeros((), jnp.int32), key=state_key)


def spec_extras(spec: StepSpec, config: R2D2Config) -> StepSpec:
    """`spec` plus the per-step extras R2D2 actors must record (names in EXTRAS)."""
    state = ArraySpec((int(config.lstm_size),), "float32")
    return spec.with_extras(recurrent_state_h=state, recurrent_state_c=state,
                            behaviour_prob=ArraySpec((), "float32"),
                            prev_action=ArraySpec((), spec.action.dtype),
                            prev_reward=ArraySpec((), "float32"))


@eqx.filter_jit
def actor_step(network: RecurrentQNetwork, obs, prev_action, prev_reward, is_first, state):
    """Jitted actor step: obs [B, *obs], prev_action [B], prev_reward [B], is_first [B],
    state (h, c) [B, H] -> (q [B, A], new state). Record `state` (the input) as the step's extras."""
    return network.step(obs, prev_action, prev_reward, is_first, state)


def sequence_priorities(td: jax.Array, valid: jax.Array, eta: float) -> jax.Array:
    """p = eta * max|td| + (1 - eta) * mean|td| over valid steps; td, valid [B, T] -> [B] (0 if none)."""
    abs_td = jnp.where(valid, jnp.abs(td), 0.0)
    count = jnp.sum(valid, axis=-1)
    mean = jnp.sum(abs_td, axis=-1) / jnp.maximum(count, 1)
    return eta * jnp.max(abs_td, axis=-1) + (1.0 - eta) * mean


def _time_major(x):
    return jnp.swapaxes(jnp.asarray(x), 0, 1)


def sequence_loss(online: RecurrentQNetwork, target: RecurrentQNetwork, batch: Mapping[str, Any],
                  config: R2D2Config):
    """Masked, importance-weighted 0.5 * td^2 loss: mean over each sequence's valid transitions,
    then weighted mean over B. Returns (loss [], aux) with aux td, valid [B, T], q_taken [B, T]."""
    bi, T = config.burn_in, config.trace_length
    L = np.shape(batch["action"])[1]
    if L != config.sequence_length:
        raise SpecMismatchError(
            f"R2D2 batch has sequences of length {L}; burn_in={bi} + trace_length={T} + 1 bootstrap "
            f"step = {config.sequence_length}. Write replay sequences of that length.")
    ex = batch["extras"]
    obs, first = _time_major(batch["observation"]), _time_major(batch["is_first"])
    prev_a, prev_r = _time_major(ex["prev_action"]), _time_major(ex["prev_reward"])
    state0 = (jnp.asarray(ex["recurrent_state_h"])[:, 0], jnp.asarray(ex["recurrent_state_c"])[:, 0])
    state0 = jax.lax.stop_gradient(state0)

    online_state = state0
    if bi > 0:  # burn-in: warm the online state up without gradients
        _, online_state = online.unroll(obs[:bi], prev_a[:bi], prev_r[:bi], first[:bi], state0,
                                        config.scan_unroll)
        online_state = jax.lax.stop_gradient(online_state)
    q_online, _ = online.unroll(obs[bi:], prev_a[bi:], prev_r[bi:], first[bi:], online_state,
                                config.scan_unroll)
    q_target, _ = target.unroll(obs, prev_a, prev_r, first, state0, config.scan_unroll)
    q_online = jnp.swapaxes(q_online, 0, 1)  # [B, T+1, A]
    q_target = jax.lax.stop_gradient(jnp.swapaxes(q_target, 0, 1)[:, bi:])

    actions = jnp.asarray(batch["action"], jnp.int32)[:, bi:]  # [B, T+1]
    step = slice(bi, bi + T)
    valid = (jnp.asarray(batch["mask"], bool)[:, step] & ~jnp.asarray(batch["is_last"], bool)[:, step]
             & ~jnp.asarray(batch["is_first"], bool)[:, bi + 1:])
    reward = jnp.asarray(batch["reward"], jnp.float32)[:, step]
    discount = config.gamma * jnp.asarray(batch["discount"], jnp.float32)[:, step]
    mu = jnp.asarray(ex["behaviour_prob"], jnp.float32)[:, step]
    greedy = jnp.argmax(jax.lax.stop_gradient(q_online), axis=-1)  # double Q: online argmax
    num_actions = q_online.shape[-1]
    pi = ((1.0 - config.target_epsilon) * jax.nn.one_hot(greedy, num_actions, dtype=jnp.float32)
          + config.target_epsilon / num_actions)

    def targets(q, a, r, d, p, m, v):
        return returns.returns_for(config.estimator, q, a, r, d, p, m, v, lambda_=config.lambda_,
                                   n=config.n_step, value_rescaling=config.value_rescaling)

    g = jax.lax.stop_gradient(jax.vmap(targets)(q_target, actions, reward, discount, pi, mu, valid))
    q_taken = jnp.take_along_axis(q_online[:, :T], actions[:, :T, None], axis=-1)[..., 0]
    td = jnp.where(valid, g - q_taken, 0.0)
    per_sequence = jnp.sum(0.5 * jnp.square(td), axis=-1) / jnp.maximum(jnp.sum(valid, axis=-1), 1)
    weights = jnp.asarray(batch.get("weights", jnp.ones_like(per_sequence)), jnp.float32)
    loss = jnp.mean(weights * per_sequence)
    return loss, {"td": td, "valid": valid, "q_taken": q_taken}


def _loss(params, static, target, batch, config):
    return sequence_loss(eqx.combine(params, static), target, batch, config)


@eqx.filter_jit
def update(state: R2D2State, batch: Mapping[str, Any], config: R2D2Config):
    """One Adam step on `sequence_loss`. Returns (new_state, metrics): loss [], mean_q [] (mean
    Q(x_t, a_t) over valid steps), grad_norm [] (before clipping), priorities [B] (new sequence
    priorities), valid_steps []. The target is a hard copy of the online network whenever the new
    step count is a multiple of target_update_period."""
    params, static = eqx.partition(state.online, eqx.is_inexact_array)
    (loss, aux), grads = jax.value_and_grad(_loss, has_aux=True)(params, static, state.target, batch, config)
    updates, opt_state = _optimizer(config).update(grads, state.opt_state, params)
    online = eqx.apply_updates(state.online, updates)
    steps = state.steps + 1

    target = update_target(online, state.target, steps, config.target_update_period)

    valid = aux["valid"]
    n_valid = jnp.sum(valid)
    metrics = {
        "loss": loss,
        "mean_q": jnp.sum(jnp.where(valid, aux["q_taken"], 0.0)) / jnp.maximum(n_valid, 1),
        "grad_norm": optax.global_norm(grads),
        "priorities": sequence_priorities(aux["td"], valid, config.priority_eta),
        "valid_steps": n_valid,
    }
    new_state = R2D2State(online=online, target=target, opt_state=opt_state, steps=steps, key=state.key)
    return new_state, metrics
