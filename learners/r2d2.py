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

R2D2 is a composition of shared parts: the recurrent core (`networks.recurrent`, inputs prev_action
and prev_reward, one head "q"), its burn-in unroll and transition mask (`recurrent_value`), the
array-level targets, loss and priorities (`sequence_targets`) and the grouped optimiser step (`optim`,
one group "q"). Agents built on R2D2 reuse these parts with other inputs, heads, rewards and groups.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet import validation as check
from rillet.errors import ConfigError, SpecMismatchError
from rillet.learners import optim, recurrent_value, returns, sequence_targets
from rillet.learners.networks import TORSOS, DuelingHead, LinearHead
from rillet.learners.networks.recurrent import CoreInput, RecurrentNetwork, recurrent_network
from rillet.learners.target_network import update_target
from rillet.learners.value_state import ValueState, init_value_state

__all__ = ["R2D2Config", "R2D2State", "init", "update", "sequence_loss", "spec_extras", "core_inputs",
           "build_network", "optimizers", "value_metrics", "EXTRAS"]

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
    torso: str = "auto"
    """networks.TORSOS: "auto" (an MLP for vectors, the Nature-DQN conv torso for uint8 images), "mlp",
    "nature_dqn"."""
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
        owner = "R2D2Config"
        for name, low in (("burn_in", 0), ("trace_length", 1), ("n_step", 1), ("target_update_period", 1),
                          ("lstm_size", 1), ("scan_unroll", 1)):
            check.integer(owner, name, getattr(self, name), low=low)
        returns.check_estimator(self.estimator)
        check.one_of(owner, "torso", self.torso, TORSOS)
        for name in ("lambda_", "gamma", "priority_eta", "target_epsilon"):
            check.number(owner, name, getattr(self, name), 0.0, 1.0)
        check.number(owner, "learning_rate", self.learning_rate, 0.0, low_open=True)
        check.number(owner, "adam_eps", self.adam_eps, 0.0, low_open=True)
        if self.max_grad_norm is not None:
            check.number(owner, "max_grad_norm", self.max_grad_norm, 0.0, low_open=True, fix="max_grad_norm (None: no clipping)")
        for name in ("value_rescaling", "dueling", "use_prev_action_reward"):
            check.boolean(owner, name, getattr(self, name))
        check.int_tuple(owner, "hidden_sizes", self.hidden_sizes, nonempty=True, low=1)
        return self


R2D2State = ValueState  # online/target RecurrentNetworks, {"q": optax state}, steps, key


def optimizers(config: R2D2Config) -> dict:
    """One parameter group, "q": Adam after global-norm clipping (None: no clipping)."""
    return {"q": optim.adam(config.learning_rate, config.adam_eps, config.max_grad_norm)}


def core_inputs(spec: StepSpec, config: R2D2Config) -> tuple[CoreInput, ...]:
    """The core's extra inputs: the previous action (one-hot) and reward, unless switched off."""
    if not config.use_prev_action_reward:
        return ()
    return CoreInput("prev_action", int(spec.num_actions)), CoreInput("prev_reward")


def build_network(spec: StepSpec, config: R2D2Config, key: jax.Array,
                  inputs: tuple[CoreInput, ...] | None = None) -> RecurrentNetwork:
    """The recurrent Q-network for `spec`: config.torso, LSTM of lstm_size, a (dueling) head "q";
    the core's extra inputs are `inputs` (None: R2D2's `core_inputs`)."""
    num_actions = spec.num_actions
    if num_actions is None or int(num_actions) < 1 or spec.action.shape != () \
            or not np.issubdtype(spec.action.np_dtype, np.integer):
        raise ConfigError(
            f"R2D2 needs scalar discrete actions, but '{spec.env_id or 'unnamed env'}' has action spec "
            f"{spec.action.shape} {spec.action.dtype} (num_actions={num_actions}).")
    head_cls = DuelingHead if config.dueling else LinearHead
    inputs = core_inputs(spec, config) if inputs is None else inputs
    return recurrent_network(spec, key, inputs=inputs, lstm_size=config.lstm_size,
                             heads={"q": lambda size, k: head_cls(size, int(num_actions), k)},
                             torso=config.torso, hidden_sizes=config.hidden_sizes)


def init(key: jax.Array, spec: StepSpec, config: R2D2Config) -> R2D2State:
    """Validates `config`; online = target network, Adam state, steps = 0."""
    config.validate()
    return init_value_state(key, lambda k: build_network(spec, config, k), optimizers(config))


def spec_extras(spec: StepSpec, config: R2D2Config) -> StepSpec:
    """`spec` plus the per-step extras R2D2 actors must record (names in EXTRAS)."""
    state = ArraySpec((int(config.lstm_size),), "float32")
    return spec.with_extras(recurrent_state_h=state, recurrent_state_c=state,
                            behaviour_prob=ArraySpec((), "float32"),
                            prev_action=ArraySpec((), spec.action.dtype),
                            prev_reward=ArraySpec((), "float32"))


def sequence_loss(online: RecurrentNetwork, target: RecurrentNetwork, batch: Mapping[str, Any],
                  config: R2D2Config, reward: jax.Array | None = None, gamma: jax.Array | float | None = None):
    """Masked, importance-weighted 0.5 * td^2 loss: mean over each sequence's valid transitions,
    then weighted mean over B. Returns (loss [], aux) with aux td, valid [B, T], q_taken [B, T].

    reward [B, T]: the reward of each learned transition (None: the batch's extrinsic reward, e.g. a
    mix r_e + beta_j * r_i otherwise); gamma [] or [B] (None: config.gamma; e.g. gamma_j per sequence).
    """
    online_heads, target_heads = unroll(online, target, batch, config)
    pi = sequence_targets.target_policy(online_heads["q"], config.target_epsilon)
    td, valid, q_taken = sequence_td(online_heads["q"], target_heads["q"], pi, batch, config, reward, gamma)
    loss = sequence_targets.td_loss(td, valid, batch.get("weights"))
    return loss, {"td": td, "valid": valid, "q_taken": q_taken}


def unroll(online, target, batch: Mapping[str, Any], config: R2D2Config) -> tuple[dict, dict]:
    """Checks the sequence length, then R2D2's burn-in unroll: (online heads, target heads), each
    {head: [B, T+1, ...]} over the steps after the burn-in."""
    L = np.shape(batch["action"])[1]
    if L != config.sequence_length:
        raise SpecMismatchError(
            f"R2D2 batch has sequences of length {L}; burn_in={config.burn_in} + trace_length="
            f"{config.trace_length} + 1 bootstrap step = {config.sequence_length}. Write replay sequences of "
            "that length.")
    return recurrent_value.unroll_with_burn_in(online, target, batch, config.burn_in, config.scan_unroll)


def sequence_td(q_online: jax.Array, q_target: jax.Array, pi: jax.Array, batch: Mapping[str, Any],
                config: R2D2Config, reward: jax.Array | None = None, gamma: jax.Array | float | None = None):
    """(td [B, T], valid [B, T], q_taken [B, T]) of the online values q_online [B, T+1, A] against the
    targets of `config.estimator` from q_target [B, T+1, A] and the target policy pi [B, T+1, A];
    reward and gamma as in `sequence_loss`."""
    bi, T = config.burn_in, config.trace_length
    actions = jnp.asarray(batch["action"], jnp.int32)[:, bi:]  # [B, T+1]
    step = slice(bi, bi + T)
    valid = recurrent_value.transition_mask(batch, bi, T)
    discount = sequence_targets.sequence_discounts(batch["discount"][:, step],
                                                   config.gamma if gamma is None else gamma)
    if reward is None:
        reward = jnp.asarray(batch["reward"], jnp.float32)[:, step]
    g = sequence_targets.sequence_targets(
        config.estimator, q_target, pi, actions, reward, discount,
        jnp.asarray(batch["extras"]["behaviour_prob"], jnp.float32)[:, step], valid,
        lambda_=config.lambda_, n=config.n_step, value_rescaling=config.value_rescaling)
    q_taken = jnp.take_along_axis(q_online[:, :T], actions[:, :T, None], axis=-1)[..., 0]
    return jnp.where(valid, g - q_taken, 0.0), valid, q_taken


@eqx.filter_jit
def update(state: R2D2State, batch: Mapping[str, Any], config: R2D2Config):
    """One Adam step on `sequence_loss`. Returns (new_state, metrics): loss [], mean_q [] (mean
    Q(x_t, a_t) over valid steps), grad_norm [] (before clipping), priorities [B] (new sequence
    priorities), valid_steps []. The target is a hard copy of the online network whenever the new
    step count is a multiple of target_update_period."""
    def loss_fn(modules, target, batch):
        return sequence_loss(modules["q"], target, batch, config)

    modules, opt_state, (loss, aux), norms = optim.group_step(
        loss_fn, optimizers(config), {"q": state.online}, state.opt_state, state.target, batch)
    online, steps = modules["q"], state.steps + 1
    metrics = value_metrics(loss, aux, norms["q"], config.priority_eta)
    target = update_target(online, state.target, steps, config.target_update_period)
    return R2D2State(online=online, target=target, opt_state=opt_state, steps=steps, key=state.key), metrics


def value_metrics(loss: jax.Array, aux: Mapping[str, jax.Array], grad_norm: jax.Array, eta: float) -> dict:
    """The metrics of a sequence value update from `sequence_loss`'s aux: loss [], mean_q [] (mean
    Q(x_t, a_t) over valid steps), grad_norm [], priorities [B], valid_steps []."""
    valid = aux["valid"]
    n_valid = jnp.sum(valid)
    return {
        "loss": loss,
        "mean_q": jnp.sum(jnp.where(valid, aux["q_taken"], 0.0)) / jnp.maximum(n_valid, 1),
        "grad_norm": grad_norm,
        "priorities": sequence_targets.sequence_priorities(aux["td"], valid, eta),
        "valid_steps": n_valid,
    }
