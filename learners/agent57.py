"""Agent57 (Badia et al., 2020, "Agent57: Outperforming the Atari Human Benchmark"): NGU's parts with the
value split in two networks, Agent57's discount ladder, and a bandit meta-controller on the actors.

    Q(x, a, j) = h(h^-1(Q_e(x, a, j)) + beta_j h^-1(Q_i(x, a, j)))

Q_e learns from r_e and Q_i from r_i, each by transformed Retrace with gamma_j of its sequence's policy,
both towards the target policy argmax_a Q of the combined online value; each network is its own
optimiser group ("q_e", "q_i"), beside NGU's "embedding" and "rnd". Acting and priorities use the
combined value. A batch is NGU's (`learners.ngu`); the recorded core state is the two networks'
concatenated ([B, L, 2 * lstm_size]). Everything but the value split is NGU's (`ngu.update_with`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet import validation as check
from rillet.actors.bandit import BanditConfig
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.learners import ngu, optim, r2d2, sequence_targets, td_regularisers
from rillet.learners.networks.split_value import SplitValueNetwork, combine_values
from rillet.learners.policy_family import agent57_gammas, family_betas

__all__ = ["Agent57Config", "init", "update", "spec_extras", "optimizers"]


@dataclasses.dataclass(frozen=True)
class Agent57Config(ngu.NGUConfig):
    """NGU's options plus Agent57's: the discount ladder (gamma0 for j = 0, gamma1 at j = 7 and 8,
    gamma2 at j = N - 1; `policy_family.agent57_gammas`) and the meta-controller's bandit (window,
    epsilon, beta; `actors.bandit`). The paper's trace of 160 steps written every 80 is
    `--agent57.trace-length 160 --replay.sequence-period 80` (defaults stay R2D2's 80 / 40)."""

    num_policies: int = 32
    gamma0: float = 0.9999
    gamma1: float = 0.997
    gamma2: float = 0.99
    bandit_window: int = BanditConfig.window
    bandit_epsilon: float = BanditConfig.epsilon
    bandit_beta: float = BanditConfig.beta
    meta_controller: bool = True
    """False: no bandit; environment i plays policy j = i mod N throughout (NGU's fixed assignment; the
    ablation), and evaluation plays eval_policy_index."""

    def validate(self) -> "Agent57Config":
        super().validate()
        for name in ("gamma0", "gamma1", "gamma2"):
            check.number("Agent57Config", name, getattr(self, name), 0.0, 1.0, high_open=True)
        check.integer("Agent57Config", "num_policies", self.num_policies, low=10,
                      fix="num_policies >= 10 (Agent57's ladder: 8 fixed rungs and a tail; the paper: 32)")
        check.boolean("Agent57Config", "meta_controller", self.meta_controller)
        self.bandit().validate()
        return self

    def discounts(self) -> np.ndarray:
        """gamma_j [N] of Agent57's ladder."""
        return agent57_gammas(self.num_policies, self.gamma0, self.gamma1, self.gamma2)

    def bandit(self) -> BanditConfig:
        """The actors' meta-controller options."""
        return BanditConfig(window=self.bandit_window, epsilon=self.bandit_epsilon, beta=self.bandit_beta)


def optimizers(config: Agent57Config) -> dict:
    """Four groups: "q_e" and "q_i" (each R2D2's clipped Adam and its own state), "embedding", "rnd"."""
    value = r2d2.optimizers(config)["q"]
    return {"q_e": value, "q_i": value, **{k: v for k, v in ngu.optimizers(config).items() if k != "q"}}


def spec_extras(spec: StepSpec, config: Agent57Config) -> StepSpec:
    """NGU's extras, with the recorded core state of both networks (2 * lstm_size)."""
    state = ArraySpec((2 * int(config.lstm_size),), "float32")
    return ngu.spec_extras(spec, config).with_extras(recurrent_state_h=state, recurrent_state_c=state)


def init(key: jax.Array, spec: StepSpec, config: Agent57Config) -> ngu.NGUState:
    """NGU's state with online = target = a SplitValueNetwork and one optimiser state per group."""
    config.validate()
    key, e_key, i_key = jax.random.split(optim.key_data(key), 3)
    state = ngu.init(key, spec, config)
    inputs = ngu.core_inputs(spec, config)
    online = SplitValueNetwork(r2d2.build_network(spec, config, e_key, inputs),
                               r2d2.build_network(spec, config, i_key, inputs, policy_head=False),
                               betas=tuple(float(b) for b in family_betas(config.num_policies, config.beta)),
                               value_rescaling=bool(config.value_rescaling))
    modules = {**SPLIT_VALUE.groups(online), "embedding": state.embedding, "rnd": state.rnd}
    return dataclasses.replace(state, online=online, target=online,
                               opt_state=optim.init_groups(optimizers(config), modules),
                               td_stats=td_regularisers.init_td_stats(config, ("q_e", "q_i")))


def _combined(x_e: jax.Array, x_i: jax.Array, beta_j: jax.Array, value_rescaling: bool) -> jax.Array:
    """Per-transition combination of two [B, T] value arrays with beta_j [B]."""
    return combine_values(x_e[..., None], x_i[..., None], beta_j[:, None], value_rescaling)[..., 0]


def _split_q_loss(modules, target: SplitValueNetwork, batch: Mapping[str, Any], config: Agent57Config,
                  td_stats: dict | None = None):
    """Two transformed Retrace losses, Q_e on r_e and Q_i on r_i, sharing the target policy of the
    combined online value, each through its own TD regularisers (td_stats {"q_e", "q_i"}); td (for
    priorities) is that of the combined value, or with normalise_td the mean of the two normalised
    |td|. Adds the distillation head's loss towards the combined value's greedy policy when it is on."""
    online = SPLIT_VALUE.join(target, modules)
    online_heads, target_heads = r2d2.unroll(online, target, batch, config)
    pi = sequence_targets.target_policy(online_heads["q"], config.target_epsilon)
    beta_j, gamma_j, r_e, r_i = ngu.policy_terms(batch, config)
    raw, used, keeps, sigmas, q_taken = {}, {}, {}, {}, {}
    for name, reward in (("q_e", r_e), ("q_i", r_i)):
        raw[name], valid, q_taken[name], q_target = r2d2.sequence_td(
            online_heads[name], target_heads[name], pi, batch, config, reward, gamma_j)
        stats = None if td_stats is None else td_stats[name]
        used[name], keeps[name], sigmas[name] = td_regularisers.regularised_td(
            raw[name], valid, q_taken[name], q_target, stats, config)
    losses = {name: sequence_targets.td_loss(used[name], keeps[name], batch.get("weights")) for name in used}
    q = _combined(q_taken["q_e"], q_taken["q_i"], beta_j, config.value_rescaling)
    if config.normalise_td:
        td = 0.5 * (jnp.abs(used["q_e"]) + jnp.abs(used["q_i"]))
    else:
        td = _combined(q_taken["q_e"] + raw["q_e"], q_taken["q_i"] + raw["q_i"], beta_j, config.value_rescaling) - q
    aux = {"td": jnp.where(valid, td, 0.0), "valid": valid, "q_taken": q, "loss_e": losses["q_e"],
           "loss_i": losses["q_i"], "td_errors": raw, **r2d2.regulariser_aux(keeps, valid, sigmas, config)}
    return r2d2.add_distillation(losses["q_e"] + losses["q_i"], aux, online_heads, online_heads["q"], batch, config)


SPLIT_VALUE = ngu.ValueParts(
    groups=lambda online: {"q_e": online.extrinsic, "q_i": online.intrinsic},
    join=lambda online, modules: dataclasses.replace(online, extrinsic=modules["q_e"], intrinsic=modules["q_i"]),
    loss=_split_q_loss)


@eqx.filter_jit
def update(state: ngu.NGUState, batch: Mapping[str, Any], config: Agent57Config):
    """One step of the four groups. Metrics: NGU's (`ngu.update_with`; loss = loss_e + loss_i, mean_q
    and priorities of the combined value) plus loss_e and loss_i."""
    return ngu.update_with(SPLIT_VALUE, optimizers(config), state, batch, config, extra_metrics=("loss_e", "loss_i"))
