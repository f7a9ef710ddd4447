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
from rillet.learners import ngu, optim, r2d2, sequence_targets
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
                               r2d2.build_network(spec, config, i_key, inputs),
                               betas=tuple(float(b) for b in family_betas(config.num_policies, config.beta)),
                               value_rescaling=bool(config.value_rescaling))
    modules = {**SPLIT_VALUE.groups(online), "embedding": state.embedding, "rnd": state.rnd}
    return dataclasses.replace(state, online=online, target=online,
                               opt_state=optim.init_groups(optimizers(config), modules))


def _combined(x_e: jax.Array, x_i: jax.Array, beta_j: jax.Array, value_rescaling: bool) -> jax.Array:
    """Per-transition combination of two [B, T] value arrays with beta_j [B]."""
    return combine_values(x_e[..., None], x_i[..., None], beta_j[:, None], value_rescaling)[..., 0]


def _split_q_loss(modules, target: SplitValueNetwork, batch: Mapping[str, Any], config: Agent57Config):
    """Two transformed Retrace losses, Q_e on r_e and Q_i on r_i, sharing the target policy of the
    combined online value; td (for priorities) is that of the combined value."""
    online = SPLIT_VALUE.join(target, modules)
    online_heads, target_heads = r2d2.unroll(online, target, batch, config)
    pi = sequence_targets.target_policy(online_heads["q"], config.target_epsilon)
    beta_j, gamma_j, r_e, r_i = ngu.policy_terms(batch, config)
    td_e, valid, q_e = r2d2.sequence_td(online_heads["q_e"], target_heads["q_e"], pi, batch, config, r_e, gamma_j)
    td_i, _, q_i = r2d2.sequence_td(online_heads["q_i"], target_heads["q_i"], pi, batch, config, r_i, gamma_j)
    weights = batch.get("weights")
    loss_e = sequence_targets.td_loss(td_e, valid, weights)
    loss_i = sequence_targets.td_loss(td_i, valid, weights)
    q = _combined(q_e, q_i, beta_j, config.value_rescaling)
    td = jnp.where(valid, _combined(q_e + td_e, q_i + td_i, beta_j, config.value_rescaling) - q, 0.0)
    return loss_e + loss_i, {"td": td, "valid": valid, "q_taken": q, "loss_e": loss_e, "loss_i": loss_i}


SPLIT_VALUE = ngu.ValueParts(
    groups=lambda online: {"q_e": online.extrinsic, "q_i": online.intrinsic},
    join=lambda online, modules: dataclasses.replace(online, extrinsic=modules["q_e"], intrinsic=modules["q_i"]),
    loss=_split_q_loss)


@eqx.filter_jit
def update(state: ngu.NGUState, batch: Mapping[str, Any], config: Agent57Config):
    """One step of the four groups. Metrics: NGU's (`ngu.update_with`; loss = loss_e + loss_i, mean_q
    and priorities of the combined value) plus loss_e and loss_i."""
    return ngu.update_with(SPLIT_VALUE, optimizers(config), state, batch, config, extra_metrics=("loss_e", "loss_i"))
