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
from rillet.learners import optim, recurrent_value, returns, sequence_targets, td_regularisers
from rillet.learners.distillation import DISTILLATION_ACTING, acting_head, distillation_loss, greedy_churn
from rillet.learners.networks import TORSOS, DuelingHead, LinearHead
from rillet.learners.networks.recurrent import CoreInput, RecurrentNetwork, recurrent_network
from rillet.learners.target_network import update_target
from rillet.learners.value_state import ValueState, init_value_state

__all__ = ["R2D2Config", "R2D2State", "init", "update", "sequence_loss", "spec_extras", "core_inputs",
           "build_network", "check_discrete_actions", "check_sequence_length", "optimizers", "value_metrics",
           "add_distillation", "regulariser_aux", "regulariser_metrics", "EXTRAS"]

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
    soft_watkins_kappa: float = 0.01
    """The "soft_watkins" estimator's tolerance (MEME; PAPERS.md: unverified)."""
    # MEME's parts, off for R2D2, NGU and Agent57 (on in MEMEConfig); any value agent may switch them on.
    trust_region: bool = False
    """Bootstrap from the online network and drop the loss terms outside trust_region_alpha * sigma of
    the target network's value that would move further out (`learners.td_regularisers`)."""
    trust_region_alpha: float = 3.0
    """The trust region's radius in running TD-error standard deviations (PAPERS.md: 3, unverified)."""
    normalise_td: bool = False
    """Divide each value head's TD errors by max(running std, batch std, td_scale_floor) for its loss
    and the priorities (`learners.td_regularisers`)."""
    td_scale_floor: float = 0.01
    td_scale_window: int = 100_000
    """The running TD-error std follows about the last this many errors (this library's choice)."""
    distillation: bool = False
    """A policy head "pi" trained towards the greedy policy of the online value (`learners.distillation`)."""
    distillation_weight: float = 1.0
    distillation_acting: str = "argmax"
    """With the head on, actors act from it: "argmax" (epsilon-greedy over its argmax, the issue's
    "act epsilon-greedily from it"), "sample" (from its softmax, epsilon-mixed) or "off" (epsilon-greedy
    over argmax Q)."""
    measure_churn: bool = False
    """Report q_churn and policy_churn: the share of the batch's states whose greedy action (of Q; of
    the acting head) changed with the update (one more forward unroll per update)."""

    def __post_init__(self):
        if isinstance(self.hidden_sizes, list):
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    @property
    def sequence_length(self) -> int:
        """L = burn_in + trace_length + 1 (the last step only bootstraps)."""
        return self.burn_in + self.trace_length + 1

    def sequence_layout(self) -> str:
        """What sequence_length adds up, for error messages."""
        return f"burn_in={self.burn_in} + trace_length={self.trace_length} + 1 bootstrap step"

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
        self._validate_meme_parts(owner)
        check.number(owner, "learning_rate", self.learning_rate, 0.0, 1.0, low_open=True)  # Adam: steps ~ lr
        check.number(owner, "adam_eps", self.adam_eps, 0.0, low_open=True)
        if self.max_grad_norm is not None:
            check.number(owner, "max_grad_norm", self.max_grad_norm, 0.0, low_open=True,
                         fix="max_grad_norm (None: no clipping)")
        for name in ("value_rescaling", "dueling", "use_prev_action_reward"):
            check.boolean(owner, name, getattr(self, name))
        check.int_tuple(owner, "hidden_sizes", self.hidden_sizes, nonempty=True, low=1)
        return self

    def _validate_meme_parts(self, owner: str) -> None:
        for name in ("trust_region", "normalise_td", "distillation", "measure_churn"):
            check.boolean(owner, name, getattr(self, name))
        for name in ("soft_watkins_kappa", "distillation_weight"):
            check.number(owner, name, getattr(self, name), 0.0)
        for name in ("trust_region_alpha", "td_scale_floor"):
            check.number(owner, name, getattr(self, name), 0.0, low_open=True)
        check.integer(owner, "td_scale_window", self.td_scale_window, low=1)
        check.one_of(owner, "distillation_acting", self.distillation_acting, DISTILLATION_ACTING)


R2D2State = ValueState  # online/target RecurrentNetworks, {"q": optax state}, steps, key, td_stats


def optimizers(config: R2D2Config) -> dict:
    """One parameter group, "q": Adam after global-norm clipping (None: no clipping)."""
    return {"q": optim.adam(config.learning_rate, config.adam_eps, config.max_grad_norm)}


def core_inputs(spec: StepSpec, config: R2D2Config) -> tuple[CoreInput, ...]:
    """The core's extra inputs: the previous action (one-hot) and reward, unless switched off."""
    if not config.use_prev_action_reward:
        return ()
    return CoreInput("prev_action", int(spec.num_actions)), CoreInput("prev_reward")


def check_discrete_actions(spec: StepSpec) -> int:
    """The number of actions; ConfigError unless `spec` has scalar discrete actions."""
    num_actions = spec.num_actions
    if num_actions is None or int(num_actions) < 1 or spec.action.shape != () \
            or not np.issubdtype(spec.action.np_dtype, np.integer):
        raise ConfigError(
            f"R2D2 needs scalar discrete actions, but '{spec.env_id or 'unnamed env'}' has action spec "
            f"{spec.action.shape} {spec.action.dtype} (num_actions={num_actions}).")
    return int(num_actions)


def build_network(spec: StepSpec, config: R2D2Config, key: jax.Array,
                  inputs: tuple[CoreInput, ...] | None = None, policy_head: bool | None = None) -> RecurrentNetwork:
    """The recurrent Q-network for `spec`: config.torso, LSTM of lstm_size, a (dueling) head "q" and,
    with policy_head (None: config.distillation), a linear head "pi" of policy logits; the core's
    extra inputs are `inputs` (None: R2D2's `core_inputs`)."""
    num_actions = check_discrete_actions(spec)
    head_cls = DuelingHead if config.dueling else LinearHead
    inputs = core_inputs(spec, config) if inputs is None else inputs
    heads = {"q": lambda size, k: head_cls(size, int(num_actions), k)}
    if config.distillation if policy_head is None else policy_head:
        heads["pi"] = lambda size, k: LinearHead(size, int(num_actions), k)
    return recurrent_network(spec, key, inputs=inputs, lstm_size=config.lstm_size, heads=heads,
                             torso=config.torso, hidden_sizes=config.hidden_sizes)


def init(key: jax.Array, spec: StepSpec, config: R2D2Config) -> R2D2State:
    """Validates `config`; online = target network, Adam state, steps = 0."""
    config.validate()
    return init_value_state(key, lambda k: build_network(spec, config, k), optimizers(config),
                            td_regularisers.init_td_stats(config))


def spec_extras(spec: StepSpec, config: R2D2Config) -> StepSpec:
    """`spec` plus the per-step extras R2D2 actors must record (names in EXTRAS)."""
    state = ArraySpec((int(config.lstm_size),), "float32")
    return spec.with_extras(recurrent_state_h=state, recurrent_state_c=state,
                            behaviour_prob=ArraySpec((), "float32"),
                            prev_action=ArraySpec((), spec.action.dtype),
                            prev_reward=ArraySpec((), "float32"))


def sequence_loss(online: RecurrentNetwork, target: RecurrentNetwork, batch: Mapping[str, Any],
                  config: R2D2Config, reward: jax.Array | None = None, gamma: jax.Array | float | None = None,
                  td_stats=None):
    """Masked, importance-weighted 0.5 * td^2 loss: mean over each sequence's valid transitions,
    then weighted mean over B (plus the distillation head's loss when it is on). Returns (loss [], aux)
    with aux td (as the loss and priorities use it), valid, q_taken [B, T], td_errors {"q": raw td}.

    reward [B, T]: the reward of each learned transition (None: the batch's extrinsic reward, e.g. a
    mix r_e + beta_j * r_i otherwise); gamma [] or [B] (None: config.gamma; e.g. gamma_j per sequence);
    td_stats: the head's running TD-error `RunningStats` when a regulariser is on (else None).
    """
    online_heads, target_heads = unroll(online, target, batch, config)
    pi = sequence_targets.target_policy(online_heads["q"], config.target_epsilon)
    td, valid, q_taken, q_target_taken = sequence_td(online_heads["q"], target_heads["q"], pi, batch, config,
                                                     reward, gamma)
    used_td, keep, sigma = td_regularisers.regularised_td(td, valid, q_taken, q_target_taken, td_stats, config)
    loss = sequence_targets.td_loss(used_td, keep, batch.get("weights"))
    aux = {"td": used_td, "valid": valid, "q_taken": q_taken, "td_errors": {"q": td},
           **regulariser_aux({"q": keep}, valid, {"q": sigma}, config)}
    return add_distillation(loss, aux, online_heads, online_heads["q"], batch, config)


def regulariser_aux(keeps: Mapping[str, jax.Array], valid: jax.Array, sigmas: Mapping[str, jax.Array],
                    config: R2D2Config) -> dict:
    """When a TD regulariser is on: trust_region_kept, the share of valid loss terms kept (keeps {head:
    [B, T]}; averaged over the heads), and td_scale_<head>, each head's sigma. Else {}."""
    if not td_regularisers.uses_td_stats(config):
        return {}
    kept = sum(jnp.sum(keep) for keep in keeps.values()) / (len(keeps) * jnp.maximum(jnp.sum(valid), 1))
    return {"trust_region_kept": kept, **{f"td_scale_{name}": sigma for name, sigma in sigmas.items()}}


def add_distillation(loss: jax.Array, aux: dict, online_heads: dict, q: jax.Array, batch: Mapping[str, Any],
                     config: R2D2Config) -> tuple[jax.Array, dict]:
    """(loss + distillation_weight * the "pi" head's loss towards argmax q [B, T+1, A], aux with
    distillation_loss and distillation_agreement) when config.distillation; with measure_churn, aux
    also keeps the heads before the update (heads_before). As they are otherwise."""
    T = config.trace_length
    if config.measure_churn:
        head = acting_head(config)[0]
        aux = {**aux, "heads_before": jax.lax.stop_gradient({"q": q[:, :T], "acting": online_heads[head][:, :T]})}
    if not config.distillation:
        return loss, aux
    d_loss, agreement = distillation_loss(online_heads["pi"][:, :T], q[:, :T], aux["valid"], batch.get("weights"))
    return loss + config.distillation_weight * d_loss, {**aux, "distillation_loss": d_loss,
                                                        "distillation_agreement": agreement}


def regulariser_metrics(aux: Mapping[str, Any], online, batch: Mapping[str, Any], config: R2D2Config) -> dict:
    """The metrics of MEME's parts from a loss's aux: distillation_loss/agreement, trust_region_kept,
    td_scale_<head>, and with measure_churn q_churn and policy_churn of the updated network `online`."""
    names = ("distillation_loss", "distillation_agreement", "trust_region_kept")
    metrics = {k: v for k, v in aux.items() if k in names or k.startswith("td_scale_")}
    if config.measure_churn:
        T, head = config.trace_length, acting_head(config)[0]
        after = recurrent_value.online_unroll(online, batch, config.burn_in, config.scan_unroll)
        before = aux["heads_before"]
        metrics["q_churn"] = greedy_churn(before["q"], after["q"][:, :T], aux["valid"])
        metrics["policy_churn"] = greedy_churn(before["acting"], after[head][:, :T], aux["valid"])
    return metrics


def unroll(online, target, batch: Mapping[str, Any], config: R2D2Config) -> tuple[dict, dict]:
    """Checks the sequence length, then R2D2's burn-in unroll: (online heads, target heads), each
    {head: [B, T+1, ...]} over the steps after the burn-in."""
    check_sequence_length(batch, config)
    return recurrent_value.unroll_with_burn_in(online, target, batch, config.burn_in, config.scan_unroll)


def check_sequence_length(batch: Mapping[str, Any], config: R2D2Config) -> None:
    """SpecMismatchError unless the batch's sequences [B, L] have config.sequence_length steps."""
    L = np.shape(batch["action"])[1]
    if L != config.sequence_length:
        raise SpecMismatchError(
            f"{type(config).__name__} takes sequences of {config.sequence_layout()} = {config.sequence_length} "
            f"steps, but the batch has sequences of length {L}. Write replay sequences of that length (the agent "
            "record's replay item gives it).")


def sequence_td(q_online: jax.Array, q_target: jax.Array, pi: jax.Array, batch: Mapping[str, Any],
                config: R2D2Config, reward: jax.Array | None = None, gamma: jax.Array | float | None = None):
    """(td [B, T], valid [B, T], q_taken [B, T], q_target_taken [B, T]) of the online values q_online
    [B, T+1, A] against the targets of `config.estimator` from the target policy pi [B, T+1, A] and the
    bootstrap values: q_target [B, T+1, A], or the online values (no gradient) with
    config.trust_region; q_target_taken is the target network's Q(x_t, a_t). reward and gamma as in
    `sequence_loss`."""
    bi, T = config.burn_in, config.trace_length
    actions = jnp.asarray(batch["action"], jnp.int32)[:, bi:]  # [B, T+1]
    step = slice(bi, bi + T)
    valid = recurrent_value.transition_mask(batch, bi, T)
    discount = sequence_targets.sequence_discounts(batch["discount"][:, step],
                                                   config.gamma if gamma is None else gamma)
    if reward is None:
        reward = jnp.asarray(batch["reward"], jnp.float32)[:, step]
    bootstrap = jax.lax.stop_gradient(q_online) if config.trust_region else q_target
    g = sequence_targets.sequence_targets(
        config.estimator, bootstrap, pi, actions, reward, discount,
        jnp.asarray(batch["extras"]["behaviour_prob"], jnp.float32)[:, step], valid,
        lambda_=config.lambda_, n=config.n_step, value_rescaling=config.value_rescaling,
        kappa=config.soft_watkins_kappa)

    def taken(q):
        return jnp.take_along_axis(q[:, :T], actions[:, :T, None], axis=-1)[..., 0]

    q_taken = taken(q_online)
    return jnp.where(valid, g - q_taken, 0.0), valid, q_taken, taken(q_target)


@eqx.filter_jit
def update(state: R2D2State, batch: Mapping[str, Any], config: R2D2Config):
    """One Adam step on `sequence_loss`. Returns (new_state, metrics): loss [], mean_q [] (mean
    Q(x_t, a_t) over valid steps), grad_norm [] (before clipping), priorities [B] (new sequence
    priorities), valid_steps [], and those of `regulariser_metrics` for the parts switched on. The
    target is a hard copy of the online network whenever the new step count is a multiple of
    target_update_period."""
    def loss_fn(modules, target, batch, td_stats):
        return sequence_loss(modules["q"], target, batch, config, td_stats=None if td_stats is None else td_stats["q"])

    modules, opt_state, (loss, aux), norms = optim.group_step(
        loss_fn, optimizers(config), {"q": state.online}, state.opt_state, state.target, batch, state.td_stats)
    online, steps = modules["q"], state.steps + 1
    metrics = {**value_metrics(loss, aux, norms["q"], config.priority_eta),
               **regulariser_metrics(aux, online, batch, config)}
    target = update_target(online, state.target, steps, config.target_update_period)
    td_stats = td_regularisers.update_td_stats(state.td_stats, aux["td_errors"], aux["valid"], config.td_scale_window)
    return R2D2State(online=online, target=target, opt_state=opt_state, steps=steps, key=state.key,
                     td_stats=td_stats), metrics


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
