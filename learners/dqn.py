"""Double DQN with n-step targets, Huber loss and (periodic or Polyak) target networks.

Pure functions over pytrees: `init(key, spec, config) -> LearnerState` and
`update(state, batch, config) -> (state, metrics)`. A batch is a dict of n-step transitions:

    observation [B, *obs], action [B] int32, reward [B] f32,
    discount [B] f32 (full bootstrap discount incl. gamma^n; 0 at terminal),
    next_observation [B, *obs], optional weights [B] f32 (importance weights, default 1), optional
    extras {"bootstrap_mask": [B, K] f32} (an ensemble's bootstrap masks, default ones).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rillet.datasets.specs import ArraySpec, StepSpec, check_batch
from rillet import validation as check
from rillet.errors import SpecMismatchError
from rillet.learners import optim, value_ops
from rillet.learners.networks import TORSOS, q_network
from rillet.learners.networks.ensemble import ensemble, member_outputs
from rillet.learners.target_network import update_target
from rillet.learners.value_state import ValueState, init_value_state

ENSEMBLE_ACTING = ("mean", "member")

__all__ = ["DQNConfig", "LearnerState", "init", "update", "td_targets", "q_values", "member_q_values",
           "member_td_errors", "member_loss", "gradient_step", "spec_extras", "check_batch_spec"]


@dataclasses.dataclass(frozen=True)
class DQNConfig:
    """DQN hyper-parameters (defaults suit CartPole). Hashable: it is a static jit argument."""

    learning_rate: float = 1e-3
    adam_eps: float = 1e-8
    max_grad_norm: float = 10.0
    huber_delta: float = 1.0
    double_q: bool = True
    hidden_sizes: tuple[int, ...] = (256, 256)
    target_update_period: int = 500  # hard copy every this many updates (ignored with Polyak)
    target_polyak_tau: float | None = None  # if set: target <- tau*online + (1-tau)*target each update
    dueling: bool = False
    torso: str = "auto"
    """networks.TORSOS: "auto" (an MLP for vectors, the Nature-DQN conv torso for uint8 images), "mlp",
    "nature_dqn", "nfnet" (normaliser-free residual)."""
    learning_rate_end: float | None = None
    """If set, the learning rate moves linearly from learning_rate to this value over
    learning_rate_decay_updates updates, starting after learning_rate_decay_start updates."""
    learning_rate_decay_start: int = 0
    learning_rate_decay_updates: int = 0
    ensemble_size: int = 1
    """K > 1: K Q-networks (`networks.ensemble`), each trained on its own double-Q target; actors and
    evaluation act on the members' mean Q."""
    prior_scale: float = 0.0
    """With an ensemble: each member adds prior_scale times a fixed random prior network (0: none)."""
    ensemble_acting: str = "mean"
    """With an ensemble, what actors act on: "mean" (the members' mean Q) or "member" (each environment
    follows one member, drawn where its episode starts: Thompson-style). Evaluation acts on the mean."""
    bootstrap_probability: float = 1.0
    """With an ensemble: the probability that a transition trains a member (bootstrapped DQN's masks,
    drawn once per transition by the actors and recorded as the extra `bootstrap_mask` [K]). 1: no masks."""

    def __post_init__(self):
        if isinstance(self.hidden_sizes, list):  # e.g. from JSON / CLI; keep the config hashable
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    def validate(self) -> "DQNConfig":
        """Raises ConfigError naming the first bad field; returns self."""
        owner = "DQNConfig"
        check.number(owner, "learning_rate", self.learning_rate, 0.0, 1.0, low_open=True,  # Adam: steps ~ lr
                     fix="learning_rate (e.g. 1e-3 for CartPole, 6.25e-5 for Atari)")
        for name in ("adam_eps", "max_grad_norm", "huber_delta"):
            check.number(owner, name, getattr(self, name), 0.0, low_open=True)
        check.boolean(owner, "double_q", self.double_q)
        check.boolean(owner, "dueling", self.dueling)
        check.one_of(owner, "torso", self.torso, TORSOS)
        check.integer(owner, "target_update_period", self.target_update_period, low=1,
                      fix="target_update_period (updates between hard target copies, e.g. 500)")
        if self.target_polyak_tau is not None:
            check.number(owner, "target_polyak_tau", self.target_polyak_tau, 0.0, 1.0, low_open=True,
                         fix="target_polyak_tau: None (periodic hard copies) or e.g. 0.005")
        check.int_tuple(owner, "hidden_sizes", self.hidden_sizes, low=1, fix="hidden_sizes, e.g. (256, 256)")
        if self.learning_rate_end is not None:
            check.number(owner, "learning_rate_end", self.learning_rate_end, 0.0, 1.0, low_open=True)
            check.integer(owner, "learning_rate_decay_updates", self.learning_rate_decay_updates, low=1,
                          fix="learning_rate_decay_updates (>= 1 with learning_rate_end)")
        check.integer(owner, "learning_rate_decay_start", self.learning_rate_decay_start, low=0)
        check.integer(owner, "ensemble_size", self.ensemble_size, low=1,
                      fix="ensemble_size (1: one Q-network; e.g. 5 for an ensemble)")
        check.number(owner, "prior_scale", self.prior_scale, 0.0, fix="prior_scale (0: no priors; e.g. 3.0)")
        check.one_of(owner, "ensemble_acting", self.ensemble_acting, ENSEMBLE_ACTING)
        check.number(owner, "bootstrap_probability", self.bootstrap_probability, 0.0, 1.0, low_open=True,
                     fix="bootstrap_probability in (0, 1] (1: every member trains on every transition; e.g. 0.5)")
        return self

    @property
    def bootstrap_masks(self) -> bool:
        """Whether actors record a bootstrap mask per transition (an ensemble with probability < 1)."""
        return self.ensemble_size > 1 and self.bootstrap_probability < 1.0

    def learning_rate_schedule(self) -> optax.ScalarOrSchedule:
        """The learning rate: constant, or held then decayed linearly to learning_rate_end."""
        if self.learning_rate_end is None:
            return self.learning_rate
        return optax.linear_schedule(self.learning_rate, self.learning_rate_end, self.learning_rate_decay_updates,
                                     transition_begin=self.learning_rate_decay_start)


LearnerState = ValueState  # online/target Q-networks, {"q": optax state}, steps, key


def optimizers(config: DQNConfig) -> dict:
    """One parameter group, "q": Adam after global-norm clipping."""
    return {"q": optim.adam(config.learning_rate_schedule(), config.adam_eps, config.max_grad_norm)}


def init(key: jax.Array, spec: StepSpec, config: DQNConfig) -> LearnerState:
    """Validates `config` and builds online = target network, Adam state, steps = 0."""
    config.validate()
    return init_value_state(key, lambda k: build_network(spec, config, k), optimizers(config))


def build_network(spec: StepSpec, config: DQNConfig, key: jax.Array) -> eqx.Module:
    """One Q-network, or an `Ensemble` of config.ensemble_size of them (with priors if prior_scale > 0)."""
    if config.ensemble_size == 1 and config.prior_scale == 0:
        return q_network(spec, config, key)
    return ensemble(lambda k: q_network(spec, config, k), key, config.ensemble_size, config.prior_scale)


def q_values(network: eqx.Module, observation: jax.Array) -> jax.Array:
    """Q-values: observation [B, *obs] -> [B, A] (float32)."""
    return network(jnp.asarray(observation))


def member_q_values(network: eqx.Module, observation: jax.Array) -> jax.Array:
    """Each member's Q-values: observation [B, *obs] -> [K, B, A] (K = 1 for a single network)."""
    return member_outputs(network, jnp.asarray(observation))


def _targets(online, target, batch, config: DQNConfig) -> jax.Array:
    """r + D * Q_target(s', a*) with a* = argmax Q_online(s') (double) or Q_target(s') (plain). [B]"""
    q_t_value = q_values(target, batch["next_observation"])
    selector = q_values(online, batch["next_observation"]) if config.double_q else q_t_value
    a_star = jnp.argmax(selector, axis=-1)
    bootstrap = jnp.take_along_axis(q_t_value, a_star[:, None], axis=-1)[:, 0]
    reward = jnp.asarray(batch["reward"], jnp.float32)
    discount = jnp.asarray(batch["discount"], jnp.float32)
    return jax.lax.stop_gradient(reward + discount * bootstrap)


@eqx.filter_jit
def td_targets(state: LearnerState, batch: Mapping[str, Any], config: DQNConfig) -> jax.Array:
    """TD targets [B]: r + D * Q_target(s', argmax_a Q_online(s', a)) (double_q=True). For an ensemble
    these are the targets of the members' mean Q; each member trains on its own (`update`)."""
    return _targets(state.online, state.target, batch, config)


def _member_td(q_tm1, action, reward, discount, q_t_value, q_t_selector, double_q: bool) -> jax.Array:
    """TD errors [K, B] of K members: q_* [K, B, A]; action, reward, discount [B]."""
    def one_member(q, q_value, q_selector):
        if double_q:
            return jax.vmap(value_ops.double_q_learning)(q, action, reward, discount, q_value, q_selector)
        return jax.vmap(value_ops.q_learning)(q, action, reward, discount, q_value)
    return jax.vmap(one_member)(q_tm1, q_t_value, q_t_selector)


def member_td_errors(online, target, batch: Mapping[str, Any], config: DQNConfig):
    """Each member's n-step TD error against its own (double-Q) target: (td [K, B], q_tm1 [K, B, A]);
    K = 1 without an ensemble. td_k = r + D * Q'_k(s', argmax_a Q_k(s', a)) - Q_k(s, a)."""
    obs, next_obs = batch["observation"], batch["next_observation"]
    action = jnp.asarray(batch["action"], jnp.int32)
    reward = jnp.asarray(batch["reward"], jnp.float32)
    discount = jnp.asarray(batch["discount"], jnp.float32)
    q_tm1 = member_q_values(online, obs)  # [K, B, A]
    q_t_value = member_q_values(target, next_obs)  # [K, B, A]
    q_t_selector = member_q_values(online, next_obs) if config.double_q else q_t_value
    return _member_td(q_tm1, action, reward, discount, q_t_value, q_t_selector, config.double_q), q_tm1


def bootstrap_mask(batch: Mapping[str, Any], num_members: int) -> jax.Array:
    """[K, B] float32: the batch's recorded `bootstrap_mask` extras [B, K] transposed, or ones."""
    mask = batch.get("extras", {}).get("bootstrap_mask")
    if mask is None:
        return jnp.ones((num_members, jnp.shape(batch["reward"])[0]), jnp.float32)
    return jnp.asarray(mask, jnp.float32).T


def member_loss(td: jax.Array, batch: Mapping[str, Any], config: DQNConfig) -> jax.Array:
    """mean_k,i m_ki * w_i * huber(td_ki): td [K, B]; bootstrap masks m [K, B] zero a member's loss on
    the transitions it does not train on; w [B] importance weights (default 1)."""
    weights = jnp.asarray(batch.get("weights", jnp.ones(td.shape[1])), jnp.float32)
    return jnp.mean(bootstrap_mask(batch, td.shape[0]) * weights * optax.huber_loss(td, delta=config.huber_delta))


def taken_q(q: jax.Array, action: jax.Array) -> jax.Array:
    """Q(s, a) of each member: q [K, B, A], action [B] -> [K, B]."""
    action = jnp.asarray(action, jnp.int32)
    return jnp.take_along_axis(q, jnp.broadcast_to(action[None, :, None], q.shape[:2] + (1,)), axis=-1)[..., 0]


def _loss(modules, target, batch, config: DQNConfig):
    td, q_tm1 = member_td_errors(modules["q"], target, batch, config)  # [K, B], [K, B, A]
    loss = member_loss(td, batch, config)
    return loss, {"mean_q": jnp.mean(taken_q(q_tm1, batch["action"])), "td_abs": jnp.mean(jnp.abs(td), axis=0)}


def gradient_step(state: LearnerState, batch: Mapping[str, Any], config: DQNConfig, loss_fn):
    """One Adam step of `loss_fn(modules, target, batch, config) -> (loss, aux)` (aux with "mean_q" and
    "td_abs" [B]) and the target update. Returns (new_state, metrics): "loss", "mean_q", "grad_norm" (before
    clipping), "td_abs" [B], "priorities" [B] (= td_abs), and every other entry of aux."""
    modules, opt_state, (loss, aux), norms = optim.group_step(
        loss_fn, optimizers(config), {"q": state.online}, state.opt_state, state.target, batch, config)
    online, steps = modules["q"], state.steps + 1
    target = update_target(online, state.target, steps, config.target_update_period, config.target_polyak_tau)
    new_state = LearnerState(online=online, target=target, opt_state=opt_state, steps=steps, key=state.key)
    return new_state, {**aux, "loss": loss, "grad_norm": norms["q"], "priorities": aux["td_abs"]}


@eqx.filter_jit
def update(state: LearnerState, batch: Mapping[str, Any], config: DQNConfig):
    """One gradient step. Returns (new_state, metrics) with metrics = {"loss": [], "mean_q": []
    (mean Q(s, a) over the batch), "grad_norm": [] (before clipping), "td_abs": [B] |TD error|,
    "priorities": [B] the new replay priorities (= td_abs)}. With an ensemble, td_abs is the mean
    over members of each member's |TD error|, and each member's loss is masked by its bootstrap mask.

    The target network is a hard copy of the new online network whenever the new step count is
    a multiple of `target_update_period`, or Polyak-averaged every step if `target_polyak_tau`.
    """
    return gradient_step(state, batch, config, _loss)


def spec_extras(spec: StepSpec, config: DQNConfig) -> StepSpec:
    """`spec`, plus the bootstrap mask [K] float32 the actors record when config.bootstrap_masks."""
    if not config.bootstrap_masks:
        return spec
    return spec.with_extras(bootstrap_mask=ArraySpec((config.ensemble_size,), "float32"))


def transition_spec(spec: StepSpec, weights: bool = False) -> dict[str, ArraySpec]:
    """The per-example layout of a DQN batch (without the leading [B] axis)."""
    layout = {
        "observation": spec.observation,
        "action": spec.action,
        "reward": spec.reward,
        "discount": spec.discount,
        "next_observation": spec.observation,
    }
    if weights:
        layout["weights"] = ArraySpec((), "float32")
    return layout


def check_batch_spec(spec: StepSpec, batch: Mapping[str, Any]) -> None:
    """Raises SpecMismatchError unless `batch` is a [B]-batch of transitions for `spec`.

    Checks shapes/dtypes of every field, a common batch size, and 0 <= action < num_actions.
    Call it on the first batch; `update` itself is jitted and does not check.
    """
    if not isinstance(batch, Mapping):
        raise SpecMismatchError(f"DQN batch must be a dict of arrays, got {type(batch).__name__}.")
    layout = transition_spec(spec, weights="weights" in batch)
    check_batch(layout, batch, leading_dims=1, what="DQN transition batch")
    sizes = {k: np.shape(batch[k])[0] if np.ndim(batch[k]) else None for k in layout}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise SpecMismatchError(
            f"DQN transition batch: fields must share one leading batch axis [B], got sizes {sizes}. "
            "Sample all fields of a transition together."
        )
    if spec.num_actions is not None:
        actions = np.asarray(batch["action"])
        if actions.size and (actions.min() < 0 or actions.max() >= spec.num_actions):
            raise SpecMismatchError(
                f"DQN transition batch: field 'action' has values in [{actions.min()}, {actions.max()}], "
                f"outside [0, {spec.num_actions}) for {spec.env_id or 'this env'}. Check the action encoding."
            )
