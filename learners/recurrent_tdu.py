"""TDU on the recurrent value core: R2D2's network, burn-in unroll and sequence targets with two
ensembles of heads with priors on the shared LSTM core (`networks.ensemble.MemberHeads`):

    "q"        N - E exploitation heads, trained on the reward r; evaluation acts on their mean;
    "explore"  E exploration heads, trained on r_t + beta * sigma_t, where sigma_t is the std over the
               exploitation heads of their TD errors at step t (as their estimator computes them, in the
               value-rescaled space when value_rescaling is on); actors act on their mean.

The heads' TD errors come from `r2d2.sequence_td` vmapped over the heads (no loop); sigma and the bonus
from `tdu`; bootstrap masks, when on, are the actors' per-step extras [B, L, N] (first the exploitation
heads, then the exploration heads) and drop a head's loss on the steps it does not train on. MEME's
regularisers (trust region, TD normalisation, distillation) are not composed here (validate says so).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet import validation as check
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.learners import optim, r2d2, recurrent_value, sequence_targets
from rillet.learners.networks import DuelingHead, LinearHead
from rillet.learners.networks.ensemble import member_heads
from rillet.learners.networks.recurrent import RecurrentNetwork, recurrent_network
from rillet.learners.target_network import update_target
from rillet.learners.tdu import td_uncertainty
from rillet.learners.value_state import ValueState, init_value_state

__all__ = ["RecurrentTDUConfig", "init", "update", "spec_extras", "build_network", "member_sequence_td"]


@dataclasses.dataclass(frozen=True)
class RecurrentTDUConfig(r2d2.R2D2Config):
    """R2D2's options plus the heads' ensemble (N, E, priors, masks) and TDU's bonus scale beta."""

    ensemble_size: int = 10
    """N: heads in all; the first N - E (head "q") give sigma and are evaluated, the last E explore."""
    exploration_members: int = 5
    prior_scale: float = 3.0
    bootstrap_probability: float = 1.0
    tdu_beta: float = 0.01

    def validate(self) -> "RecurrentTDUConfig":
        """R2D2's checks, TDU's (N >= 3, 1 <= E <= N - 2, beta >= 0, masks in (0, 1]) and MEME's parts off."""
        super().validate()
        owner = "RecurrentTDUConfig"
        check.integer(owner, "ensemble_size", self.ensemble_size, low=3, fix="ensemble_size >= 3 (e.g. 10)")
        check.integer(owner, "exploration_members", self.exploration_members, low=1, high=self.ensemble_size - 2,
                      fix=f"exploration_members in [1, ensemble_size - 2 = {self.ensemble_size - 2}] (e.g. half)")
        check.number(owner, "prior_scale", self.prior_scale, 0.0)
        check.number(owner, "bootstrap_probability", self.bootstrap_probability, 0.0, 1.0, low_open=True)
        check.number(owner, "tdu_beta", self.tdu_beta, 0.0, fix="tdu_beta >= 0 (e.g. 0.01)")
        for name in ("trust_region", "normalise_td", "distillation", "measure_churn"):
            check.require(not getattr(self, name), owner, name, getattr(self, name),
                          "is not composed with recurrent TDU", fix=f"{name}=False")
        return self

    @property
    def exploitation_members(self) -> int:
        return self.ensemble_size - self.exploration_members

    @property
    def bootstrap_masks(self) -> bool:
        return self.bootstrap_probability < 1.0


def build_network(spec: StepSpec, config: RecurrentTDUConfig, key: jax.Array) -> RecurrentNetwork:
    """R2D2's core (torso, LSTM, previous action and reward) with heads "q" (N - E members) and
    "explore" (E members), each a MemberHeads of (dueling) heads with priors: features -> [..., K, A]."""
    head_cls = DuelingHead if config.dueling else LinearHead
    actions = r2d2.check_discrete_actions(spec)

    def heads(size: int):
        return lambda features, k: member_heads(lambda kk: head_cls(features, actions, kk), k, size,
                                                config.prior_scale)

    return recurrent_network(spec, key, inputs=r2d2.core_inputs(spec, config), lstm_size=config.lstm_size,
                             heads={"q": heads(config.exploitation_members),
                                    "explore": heads(config.exploration_members)},
                             torso=config.torso, hidden_sizes=config.hidden_sizes)


def init(key: jax.Array, spec: StepSpec, config: RecurrentTDUConfig):
    """Validates `config`; online = target network, Adam state, steps = 0."""
    config.validate()
    return init_value_state(key, lambda k: build_network(spec, config, k), r2d2.optimizers(config))


def spec_extras(spec: StepSpec, config: RecurrentTDUConfig) -> StepSpec:
    """R2D2's extras and the policy index, plus the bootstrap mask [N] when config.bootstrap_masks."""
    spec = r2d2.spec_extras(spec, config).with_extras(policy_index=ArraySpec((), "int32"))
    if config.bootstrap_masks:
        spec = spec.with_extras(bootstrap_mask=ArraySpec((config.ensemble_size,), "float32"))
    return spec


def member_sequence_td(q_online: jax.Array, q_target: jax.Array, batch: Mapping[str, Any],
                       config: RecurrentTDUConfig, reward: jax.Array | None = None):
    """Each head's sequence TD errors: q_online, q_target [B, T+1, K, A] -> (td [K, B, T], q_taken
    [K, B, T]); each head bootstraps with its own greedy target policy; reward [B, T] or None (r)."""
    def one_head(q, q_t):
        pi = sequence_targets.target_policy(q, config.target_epsilon)
        td, _, q_taken, _ = r2d2.sequence_td(q, q_t, pi, batch, config, reward)
        return td, q_taken
    return jax.vmap(one_head, in_axes=(2, 2))(q_online, q_target)


def _head_masks(batch: Mapping[str, Any], config: RecurrentTDUConfig, valid: jax.Array) -> jax.Array:
    """keep [N, B, T]: valid and, with bootstrap masks, the head's mask at the step."""
    keep = jnp.broadcast_to(valid, (config.ensemble_size,) + valid.shape)
    if not config.bootstrap_masks:
        return keep
    step = slice(config.burn_in, config.burn_in + config.trace_length)
    mask = jnp.moveaxis(jnp.asarray(batch["extras"]["bootstrap_mask"], jnp.float32)[:, step], -1, 0)
    return keep & (mask > 0)


def _loss(modules, target, batch: Mapping[str, Any], config: RecurrentTDUConfig):
    online_heads, target_heads = r2d2.unroll(modules["q"], target, batch, config)
    valid = recurrent_value.transition_mask(batch, config.burn_in, config.trace_length)
    td_r, q_taken = member_sequence_td(online_heads["q"], target_heads["q"], batch, config)  # [N-E, B, T]
    sigma = jnp.where(valid, td_uncertainty(td_r), 0.0)  # [B, T]
    step = slice(config.burn_in, config.burn_in + config.trace_length)
    bonus_reward = jnp.asarray(batch["reward"], jnp.float32)[:, step] + config.tdu_beta * sigma
    td_x, q_explore = member_sequence_td(online_heads["explore"], target_heads["explore"], batch, config,
                                         bonus_reward)
    td = jnp.concatenate([td_r, td_x])  # [N, B, T]
    keep = _head_masks(batch, config, valid)
    weights = batch.get("weights")
    loss = jnp.mean(jax.vmap(lambda d, k: sequence_targets.td_loss(d, k, weights))(td, keep))
    n_valid = jnp.maximum(jnp.sum(valid), 1)
    aux = {"td": jnp.mean(jnp.abs(td_r), axis=0), "valid": valid, "q_taken": jnp.mean(q_taken, axis=0),
           "sigma_mean": jnp.sum(sigma) / n_valid, "sigma_max": jnp.max(sigma),
           "disagreement": jnp.sum(jnp.where(valid, jnp.std(q_taken, axis=0), 0.0)) / n_valid,
           "explore_mean_q": jnp.sum(jnp.where(valid, jnp.mean(q_explore, axis=0), 0.0)) / n_valid}
    return loss, aux


@eqx.filter_jit
def update(state, batch: Mapping[str, Any], config: RecurrentTDUConfig):
    """One Adam step of every head and the shared core. Metrics: R2D2's (`r2d2.value_metrics`, from the
    exploitation heads' mean |TD error| and mean Q) and sigma_mean, sigma_max (over valid steps),
    disagreement (the exploitation heads' std of Q(x_t, a_t)), explore_mean_q."""
    modules, opt_state, (loss, aux), norms = optim.group_step(
        _loss, r2d2.optimizers(config), {"q": state.online}, state.opt_state, state.target, batch, config)
    online, steps = modules["q"], state.steps + 1
    metrics = {**r2d2.value_metrics(loss, aux, norms["q"], config.priority_eta),
               **{k: aux[k] for k in ("sigma_mean", "sigma_max", "disagreement", "explore_mean_q")}}
    target = update_target(online, state.target, steps, config.target_update_period)
    return ValueState(online=online, target=target, opt_state=opt_state, steps=steps, key=state.key), metrics
