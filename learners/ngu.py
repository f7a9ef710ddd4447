"""NGU (Badia et al., 2020, "Never Give Up"): R2D2's recurrent value core learning a family of N
policies, policy j on r_e + beta_j * r_i with discount gamma_j, plus the two learned novelty networks
the actors' intrinsic reward is made of (an inverse-dynamics embedding and RND).

A batch is R2D2's (see `learners.r2d2`) with three more extras per step [B, L]:
    policy_index int32 (the j of the actor's environment, fixed per environment),
    prev_intrinsic_reward f32 (r_i received on arriving at this step's observation, 0 at is_first),
    and the core input prev_reward as in R2D2.
Transition t (x_t, a_t, r_e = reward[t], x_{t+1}) learns from r_i = prev_intrinsic_reward[t + 1].

NGU is a composition: R2D2's network with two more core inputs (one-hot j, previous r_i), R2D2's
`sequence_loss` given the mixed reward and gamma_j per sequence, the grouped optimiser step over three
groups ("q", "embedding", "rnd"), and `inverse_dynamics` / `rnd` for the novelty networks. The Q loss
has no gradient path into the novelty networks (their outputs enter only through recorded rewards).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet import validation as check
from rillet.actors.cluster_memory import ClusterConfig
from rillet.actors.episodic_novelty import EpisodicConfig
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.learners import optim, r2d2, recurrent_value, sequence_targets, td_regularisers
from rillet.learners.casm import CASM, CASMConfig, casm_loss
from rillet.learners.inverse_dynamics import InverseDynamics, inverse_dynamics_loss
from rillet.learners.networks.recurrent import CoreInput, RecurrentNetwork
from rillet.learners.policy_family import family_betas, family_gammas
from rillet.learners.rnd import (RND, RunningStats, freeze_target, init_stats, lifelong_multiplier, rnd_loss,
                                update_stats)
from rillet.learners.target_network import update_target

NOVELTIES = ("ngu", "recode")
EMBEDDING_MODELS = ("inverse_dynamics", "casm")

__all__ = ["NGUConfig", "NGUState", "ActingParams", "init", "update", "spec_extras", "core_inputs", "acting_params",
           "without_extrinsic_reward"]


@dataclasses.dataclass(frozen=True)
class NGUConfig(r2d2.R2D2Config):
    """NGU hyper-parameters: R2D2's (burn-in, trace, network, ...) with NGU's defaults (PAPERS.md:
    transformed Retrace with lambda 0.95, Adam 1e-4 for Q and 5e-4 for the novelty networks, target
    copy every 1500 updates), plus the policy family and the novelty constants. `gamma` is not used:
    each sequence is discounted by its policy's gamma_j. The episodic-memory constants (capacity,
    neighbours, kernel) are the actors' (`actors.episodic_novelty.EpisodicConfig` via `episodic()`).
    """

    estimator: str = "retrace"
    target_update_period: int = 1500
    num_policies: int = 32
    beta: float = 0.3
    gamma_max: float = 0.997
    gamma_min: float = 0.99
    novelty_learning_rate: float = 5e-4
    embedding_size: int = 32
    rnd_output_size: int = 128
    novelty_hidden_sizes: tuple[int, ...] = (128,)
    max_multiplier: float = 5.0
    # the episodic kernel's constants, defaults from EpisodicConfig (flat here: one CLI option each)
    memory_capacity: int = EpisodicConfig.capacity
    num_neighbours: int = EpisodicConfig.num_neighbours
    cluster_distance: float = EpisodicConfig.cluster_distance
    kernel_epsilon: float = EpisodicConfig.kernel_epsilon
    pseudo_count_constant: float = EpisodicConfig.pseudo_count_constant
    max_similarity: float = EpisodicConfig.max_similarity
    novelty_sync_period: int = 100
    """Actors take new novelty networks (embedding, RND) every this many ticks (the Q-network every
    tick): with f changing between every tick, the embeddings in an episode's memory come from many
    versions of f, no two are neighbours, and every observation scores as novel."""
    eval_policy_index: int = 0
    """The j an evaluation acts with (greedily): 0 is the exploitative policy."""
    novelty: str = "ngu"
    """The actors' intrinsic reward: "ngu" (episodic novelty times RND's lifelong multiplier) or "recode"
    (`actors.recode_novelty`: a cluster memory over the same learned embedding, never reset; it shares
    num_neighbours, kernel_epsilon and pseudo_count_constant with the episodic kernel)."""
    cluster_capacity: int = ClusterConfig.capacity
    cluster_count_decay: float = ClusterConfig.count_decay
    cluster_insert_threshold: float = ClusterConfig.insert_threshold
    cluster_insert_probability: float = ClusterConfig.insert_probability
    embedding_model: str = "inverse_dynamics"
    """The learned embedding f the novelty reads: "inverse_dynamics" (NGU's: a_t from f(x_t), f(x_{t+1}))
    or "casm" (RECODE's masked transformer over the trace's observations and actions, `learners.casm`;
    f is its observation encoder, of embedding_size, torso and novelty_hidden_sizes)."""
    casm_d_model: int = CASMConfig.d_model
    casm_num_heads: int = CASMConfig.num_heads
    casm_num_layers: int = CASMConfig.num_layers
    casm_context_length: int = CASMConfig.context_length
    casm_mask_probability: float = CASMConfig.mask_probability
    reward_free: bool = False
    """Reward-free pre-training (behaviour transfer, Campos et al. 2021): learn from the intrinsic reward
    only. The learner zeroes the extrinsic reward and the prev_reward core input of every batch
    (`without_extrinsic_reward`) and the actors feed the core a previous reward of 0, so nothing the
    environment pays reaches the loss, the targets or the acting network. Policy j then learns beta_j * r_i;
    the evaluation policy (eval_policy_index) must have beta_j > 0 (j = 0 has none: it would learn nothing)."""

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.novelty_hidden_sizes, list):
            object.__setattr__(self, "novelty_hidden_sizes", tuple(self.novelty_hidden_sizes))

    def validate(self) -> "NGUConfig":
        """Raises ConfigError naming the first bad field; returns self."""
        super().validate()
        owner = "NGUConfig"
        for name, low in (("num_policies", 1), ("embedding_size", 1), ("rnd_output_size", 1),
                          ("novelty_sync_period", 1)):
            check.integer(owner, name, getattr(self, name), low=low)
        check.integer(owner, "eval_policy_index", self.eval_policy_index, low=0, high=self.num_policies - 1,
                      fix=f"eval_policy_index in [0, num_policies - 1 = {self.num_policies - 1}]")
        check.number(owner, "beta", self.beta, 0.0)
        for name in ("gamma_max", "gamma_min"):
            check.number(owner, name, getattr(self, name), 0.0, 1.0, high_open=True)
        check.number(owner, "novelty_learning_rate", self.novelty_learning_rate, 0.0, low_open=True)
        check.number(owner, "max_multiplier", self.max_multiplier, 1.0)
        check.int_tuple(owner, "novelty_hidden_sizes", self.novelty_hidden_sizes, nonempty=True, low=1)
        self.episodic().validate()
        check.one_of(owner, "novelty", self.novelty, NOVELTIES)
        if self.novelty == "recode":
            self.cluster().validate()
        check.one_of(owner, "embedding_model", self.embedding_model, EMBEDDING_MODELS)
        if self.embedding_model == "casm":
            self.casm().validate()
        check.boolean(owner, "reward_free", self.reward_free, fix="reward_free")
        if self.reward_free:
            betas = family_betas(self.num_policies, self.beta)
            check.require(bool(betas[self.eval_policy_index] > 0), owner, "eval_policy_index", self.eval_policy_index,
                          f"a policy with intrinsic weight beta_j > 0 when reward_free (betas: {np.round(betas, 3)})",
                          fix=f"eval_policy_index (e.g. {self.num_policies - 1}, the most exploratory) and beta > 0")
        return self

    def casm(self) -> CASMConfig:
        """The CASM embedding's options as a `CASMConfig` (encoder: embedding_size, torso, novelty_hidden_sizes)."""
        return CASMConfig(embedding_size=self.embedding_size, d_model=self.casm_d_model, num_heads=self.casm_num_heads,
                          num_layers=self.casm_num_layers, context_length=self.casm_context_length,
                          mask_probability=self.casm_mask_probability, torso=self.torso,
                          hidden_sizes=self.novelty_hidden_sizes)

    def cluster(self) -> ClusterConfig:
        """RECODE's cluster-memory constants as a `ClusterConfig`."""
        return ClusterConfig(capacity=self.cluster_capacity, num_neighbours=self.num_neighbours,
                             kernel_epsilon=self.kernel_epsilon, pseudo_count_constant=self.pseudo_count_constant,
                             count_decay=self.cluster_count_decay, insert_threshold=self.cluster_insert_threshold,
                             insert_probability=self.cluster_insert_probability)

    def discounts(self) -> np.ndarray:
        """gamma_j of each policy j [N] (NGU's family: from gamma_max down to gamma_min)."""
        return family_gammas(self.num_policies, self.gamma_max, self.gamma_min)

    def episodic(self):
        """The actors' episodic-memory constants as an `EpisodicConfig`."""
        return EpisodicConfig(capacity=self.memory_capacity, num_neighbours=self.num_neighbours,
                              cluster_distance=self.cluster_distance, kernel_epsilon=self.kernel_epsilon,
                              pseudo_count_constant=self.pseudo_count_constant, max_similarity=self.max_similarity)


class NGUState(eqx.Module):
    """online/target: the recurrent Q-networks; embedding, rnd: the novelty networks; rnd_stats: the
    running mean/variance of RND errors; rnd_obs_stats: per-entry statistics of the observations RND
    whitens (vector observations; None for images); opt_state {"q", "embedding", "rnd"}; steps, key;
    td_stats {value head: RunningStats} when a TD regulariser is on (`learners.td_regularisers`), else None."""

    online: RecurrentNetwork
    target: RecurrentNetwork
    embedding: InverseDynamics | CASM
    rnd: RND
    rnd_stats: RunningStats
    rnd_obs_stats: RunningStats | None
    opt_state: dict
    steps: jax.Array
    key: jax.Array
    td_stats: dict | None = None


class ActingParams(eqx.Module):
    """What NGU actors act with: the Q-network and the novelty networks and statistics."""

    q: RecurrentNetwork
    embedding: InverseDynamics | CASM
    rnd: RND
    rnd_stats: RunningStats
    rnd_obs_stats: RunningStats | None


def optimizers(config: NGUConfig) -> dict:
    """Three groups: "q" (R2D2's clipped Adam), "embedding" and "rnd" (Adam at novelty_learning_rate; RND's
    target network is frozen: only its predictor has an optimiser)."""
    return {**r2d2.optimizers(config), "embedding": optim.adam(config.novelty_learning_rate),
            "rnd": freeze_target(optim.adam(config.novelty_learning_rate))}


def core_inputs(spec: StepSpec, config: NGUConfig) -> tuple[CoreInput, ...]:
    """R2D2's inputs (previous action, previous extrinsic reward), the previous intrinsic reward and
    the one-hot policy index j."""
    return (*r2d2.core_inputs(spec, dataclasses.replace(config, use_prev_action_reward=True)),
            CoreInput("prev_intrinsic_reward"), CoreInput("policy_index", int(config.num_policies)))


def spec_extras(spec: StepSpec, config: NGUConfig) -> StepSpec:
    """R2D2's extras plus policy_index, prev_intrinsic_reward and its episodic factor prev_episodic_reward."""
    return r2d2.spec_extras(spec, config).with_extras(policy_index=ArraySpec((), "int32"),
                                                      prev_intrinsic_reward=ArraySpec((), "float32"),
                                                      prev_episodic_reward=ArraySpec((), "float32"))


def init(key: jax.Array, spec: StepSpec, config: NGUConfig) -> NGUState:
    """Validates `config`; online = target Q-network, fresh novelty networks and statistics."""
    config.validate()
    q_key, emb_key, rnd_key, state_key = jax.random.split(optim.key_data(key), 4)
    online = r2d2.build_network(spec, config, q_key, core_inputs(spec, config))
    novelty = dict(hidden_sizes=config.novelty_hidden_sizes, torso=config.torso)
    if config.embedding_model == "casm":
        embedding = CASM(spec, emb_key, config.casm())
    else:
        embedding = InverseDynamics(spec, emb_key, embedding_size=config.embedding_size, **novelty)
    rnd = RND(spec, rnd_key, output_size=config.rnd_output_size, **novelty)
    modules = {"q": online, "embedding": embedding, "rnd": rnd}
    whitened = len(spec.observation.shape) == 1 and spec.observation.np_dtype != np.uint8
    return NGUState(online=online, target=online, embedding=embedding, rnd=rnd, rnd_stats=init_stats(),
                    rnd_obs_stats=init_stats(spec.observation.shape) if whitened else None,
                    opt_state=optim.init_groups(optimizers(config), modules), steps=jnp.zeros((), jnp.int32),
                    key=state_key, td_stats=td_regularisers.init_td_stats(config))


def acting_params(state: NGUState) -> ActingParams:
    """The parameters published to actors."""
    return ActingParams(q=state.online, embedding=state.embedding, rnd=state.rnd, rnd_stats=state.rnd_stats,
                        rnd_obs_stats=state.rnd_obs_stats)


def _flat(x: jax.Array) -> jax.Array:
    return jnp.reshape(x, (-1, *x.shape[2:]))


def _next_observations(batch, config: NGUConfig) -> tuple[jax.Array, jax.Array]:
    """x_{t+1} of the learned transitions, flat [B * T, *obs], and whether each is valid [B * T]."""
    bi, T = config.burn_in, config.trace_length
    obs = _flat(jnp.asarray(batch["observation"])[:, bi + 1:bi + T + 1])
    return obs, _flat(recurrent_value.transition_mask(batch, bi, T))


def policy_terms(batch, config: NGUConfig) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(beta_j [B], gamma_j [B], r_e [B, T], r_i [B, T]) of the learned transitions: each sequence's
    policy weights (its j at the first learned step) and its two reward streams."""
    bi, T = config.burn_in, config.trace_length
    j = jnp.asarray(batch["extras"]["policy_index"], jnp.int32)[:, bi]  # [B]
    beta_j = jnp.asarray(family_betas(config.num_policies, config.beta))[j]
    gamma_j = jnp.asarray(config.discounts())[j]
    r_e = jnp.asarray(batch["reward"], jnp.float32)[:, bi:bi + T]
    r_i = jnp.asarray(batch["extras"]["prev_intrinsic_reward"], jnp.float32)[:, bi + 1:bi + T + 1]
    return beta_j, gamma_j, r_e, r_i


def without_extrinsic_reward(batch: Mapping[str, Any]) -> dict:
    """`batch` with its extrinsic reward [B, L] and the prev_reward core input [B, L] (if recorded) set to 0:
    what a reward-free learner sees (`NGUConfig.reward_free`)."""
    extras = dict(batch["extras"])
    if "prev_reward" in extras:
        extras["prev_reward"] = jnp.zeros_like(jnp.asarray(extras["prev_reward"], jnp.float32))
    return {**batch, "reward": jnp.zeros_like(jnp.asarray(batch["reward"], jnp.float32)), "extras": extras}


def _mixed_q_loss(modules, target, batch, config: NGUConfig, td_stats: dict | None = None):
    """NGU's value loss: one network on r_e + beta_j * r_i with gamma_j (transformed Retrace)."""
    beta_j, gamma_j, r_e, r_i = policy_terms(batch, config)
    reward = sequence_targets.mix_rewards({"extrinsic": r_e, "intrinsic": r_i}, {"extrinsic": 1.0, "intrinsic": beta_j})
    return r2d2.sequence_loss(modules["q"], target, batch, config, reward=reward, gamma=gamma_j,
                              td_stats=None if td_stats is None else td_stats["q"])


@dataclasses.dataclass(frozen=True)
class ValueParts:
    """How an agent of NGU's family splits its Q-networks into optimiser groups and trains them.

    groups: online -> {group name: module}; join: (online, {group: module}) -> online;
    loss: (modules, target, batch, config, td_stats) -> (loss [], aux with td, valid, q_taken [B, T] and
          td_errors {value head: raw td [B, T]}); td_stats {value head: RunningStats} or None.
    """

    groups: Callable[[Any], dict]
    join: Callable[[Any, dict], Any]
    loss: Callable[..., tuple[jax.Array, dict]]


MIXED_VALUE = ValueParts(groups=lambda online: {"q": online}, join=lambda online, modules: modules["q"],
                         loss=_mixed_q_loss)


def _embedding_loss(embedding, batch, config: NGUConfig, key: jax.Array | None) -> tuple[jax.Array, dict]:
    """The embedding's loss on the learned transitions (x_t, a_t, x_{t+1}): inverse dynamics on each, or
    CASM's masked-action loss on each trace as one window of T + 1 steps (masks drawn with key)."""
    bi, T = config.burn_in, config.trace_length
    observation = jnp.asarray(batch["observation"])[:, bi:bi + T + 1]  # [B, T+1, *obs]
    action = jnp.asarray(batch["action"], jnp.int32)[:, bi:bi + T + 1]
    valid = recurrent_value.transition_mask(batch, bi, T)  # [B, T]
    if config.embedding_model == "casm":
        return casm_loss({"embedding": embedding}, observation, action, valid, key)
    return inverse_dynamics_loss({"embedding": embedding}, _flat(observation[:, :-1]), _flat(observation[:, 1:]),
                                 _flat(action[:, :-1]), _flat(valid))


def _novelty_loss(modules, batch, config: NGUConfig, obs_stats: RunningStats | None, key: jax.Array | None):
    """The embedding's and RND's losses on the learned transitions; RND whitens x_{t+1} with obs_stats."""
    obs_next, valid = _next_observations(batch, config)
    emb_loss, emb_aux = _embedding_loss(modules["embedding"], batch, config, key)
    novelty_loss, rnd_aux = rnd_loss({"rnd": modules["rnd"]}, obs_next, valid, obs_stats)
    aux = {"rnd_error": rnd_aux["error"], "rnd_valid": valid, "embedding_loss": emb_loss,
           "embedding_accuracy": emb_aux["accuracy"], "rnd_loss": novelty_loss}
    return emb_loss + novelty_loss, aux


def _loss(modules, target, batch, config: NGUConfig, obs_stats: RunningStats | None, value: ValueParts,
          td_stats: dict | None = None, key: jax.Array | None = None):
    """The value loss of `value` plus the novelty networks' losses (key: the embedding loss's draws;
    needed by CASM only)."""
    q_loss, aux = value.loss(modules, target, batch, config, td_stats)
    novelty_loss, novelty_aux = _novelty_loss(modules, batch, config, obs_stats, key)
    r_i = policy_terms(batch, config)[3]
    n_valid = jnp.maximum(jnp.sum(aux["valid"]), 1)
    aux = {**aux, **novelty_aux, "q_loss": q_loss,
           "intrinsic_reward": jnp.sum(jnp.where(aux["valid"], r_i, 0.0)) / n_valid}
    return q_loss + novelty_loss, aux


def update_with(value: ValueParts, optimizers: dict, state: NGUState, batch: Mapping[str, Any], config: NGUConfig,
                extra_metrics: tuple[str, ...] = ()):
    """One step of the value groups of `value` and the two novelty groups (call it inside a jitted
    update). Returns (new_state, metrics): R2D2's (`r2d2.value_metrics`, loss is the value loss,
    grad_norm over the value groups) plus embedding_loss, embedding_accuracy, rnd_loss,
    intrinsic_reward (mean recorded r_i over valid transitions), rnd_error_mean/std (the running
    statistics after this batch), lifelong_multiplier (mean over the batch's valid next observations)
    and the aux entries named in extra_metrics. With config.reward_free the batch's extrinsic reward never
    reaches the losses (`without_extrinsic_reward`)."""
    if config.reward_free:
        batch = without_extrinsic_reward(batch)
    value_groups = value.groups(state.online)
    modules = {**value_groups, "embedding": state.embedding, "rnd": state.rnd}
    obs_stats = state.rnd_obs_stats
    if obs_stats is not None:  # whitening statistics first, so that no batch meets empty ones
        obs_stats = update_stats(obs_stats, *_next_observations(batch, config))
    key, loss_key = jax.random.split(state.key)
    modules, opt_state, (_, aux), norms = optim.group_step(
        _loss, optimizers, modules, state.opt_state, state.target, batch, config, obs_stats, value, state.td_stats,
        loss_key)
    steps = state.steps + 1
    stats = update_stats(state.rnd_stats, aux["rnd_error"], aux["rnd_valid"])
    multiplier = lifelong_multiplier(aux["rnd_error"], stats, config.max_multiplier)
    valid = aux["rnd_valid"]
    grad_norm = jnp.sqrt(sum(jnp.square(norms[name]) for name in value_groups))
    metrics = {**r2d2.value_metrics(aux["q_loss"], aux, grad_norm, config.priority_eta),
               **{k: aux[k] for k in ("embedding_loss", "embedding_accuracy", "rnd_loss", "intrinsic_reward",
                                      *extra_metrics)},
               "rnd_error_mean": stats.mean, "rnd_error_std": jnp.sqrt(stats.var),
               "lifelong_multiplier": jnp.sum(jnp.where(valid, multiplier, 0.0)) / jnp.maximum(jnp.sum(valid), 1)}
    online = value.join(state.online, {name: modules[name] for name in value_groups})
    metrics.update(r2d2.regulariser_metrics(aux, online, batch, config))
    td_stats = td_regularisers.update_td_stats(state.td_stats, aux["td_errors"], aux["valid"], config.td_scale_window)
    target = update_target(online, state.target, steps, config.target_update_period)
    return NGUState(online=online, target=target, embedding=modules["embedding"], rnd=modules["rnd"],
                    rnd_stats=stats, rnd_obs_stats=obs_stats, opt_state=opt_state, steps=steps, key=key,
                    td_stats=td_stats), metrics


@eqx.filter_jit
def update(state: NGUState, batch: Mapping[str, Any], config: NGUConfig):
    """One step of NGU's three groups ("q", "embedding", "rnd"); metrics as `update_with`."""
    return update_with(MIXED_VALUE, optimizers(config), state, batch, config)
