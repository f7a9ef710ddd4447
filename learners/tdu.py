"""TDU (Flennerhag et al., 2020): exploration from the uncertainty of temporal-difference errors.

One bootstrapped ensemble with randomised priors (`dqn` with `ensemble_size` N) holds two groups of
members: the first N - E, the exploitation members, learn from the reward r; the last E, the
exploration members, learn from r + beta * sg(sigma), where for each transition

    sigma(tau) = std over the exploitation members k of  delta_k = r + D * Q'_k(s', a*_k) - Q_k(s, a),

the same n-step (double-Q) TD errors they train on. Actors follow one exploration member per episode
(Thompson-style); evaluation acts greedily on the exploitation members' mean. All members run in one
vmapped call (`networks.ensemble`). Without exploration members this is bootstrapped DQN (the `bootdqn`
agent), so E >= 1 here.

Defaults: N = 20 members of which the 10 exploitation ones give sigma, beta = 0.01, from one public
reimplementation (../shared/PAPERS.md, TDU: unverified); all three are options.

Batch: DQN's n-step transitions (`learners.dqn`), with the bootstrap masks the actors record.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet import validation as check
from rillet.learners import dqn
from rillet.learners.dqn import LearnerState

__all__ = ["TDUConfig", "init", "update", "spec_extras", "td_uncertainty", "exploration_td",
           "exploit_q_values", "explore_member_q_values"]


@dataclasses.dataclass(frozen=True)
class TDUConfig(dqn.DQNConfig):
    """DQN's options (an ensemble with priors and bootstrap masks) plus TDU's split and bonus scale."""

    ensemble_size: int = 20
    prior_scale: float = 3.0
    bootstrap_probability: float = 0.5
    ensemble_acting: str = "member"
    exploration_members: int = 10
    """E: the last E members learn from r + beta * sigma and drive the actors; the other N - E give sigma."""
    tdu_beta: float = 0.01
    """beta: the scale of the TD-uncertainty bonus added to the exploration members' reward."""

    def validate(self) -> "TDUConfig":
        """DQN's checks, then 1 <= E <= N - 2 (sigma needs two exploitation members) and beta >= 0."""
        super().validate()
        owner = "TDUConfig"
        check.integer(owner, "ensemble_size", self.ensemble_size, low=3,
                      fix="ensemble_size >= 3 (e.g. 20: exploitation members give sigma, the rest explore)")
        check.integer(owner, "exploration_members", self.exploration_members, low=1, high=self.ensemble_size - 2,
                      fix=f"exploration_members in [1, ensemble_size - 2 = {self.ensemble_size - 2}] (e.g. half)")
        check.number(owner, "tdu_beta", self.tdu_beta, 0.0, fix="tdu_beta >= 0 (e.g. 0.01; 0: no bonus)")
        if self.ensemble_acting != "member":
            check.one_of(owner, "ensemble_acting", self.ensemble_acting, ("member",))
        return self

    @property
    def exploitation_members(self) -> int:
        """N - E: the members that learn from r alone and give sigma."""
        return self.ensemble_size - self.exploration_members


def init(key: jax.Array, spec, config: TDUConfig) -> LearnerState:
    """Validates `config`; online = target = an ensemble of config.ensemble_size members with priors."""
    config.validate()
    return dqn.init(key, spec, config)


def spec_extras(spec, config: TDUConfig):
    """The environment's spec plus the bootstrap mask [N] the actors record (`dqn.spec_extras`)."""
    return dqn.spec_extras(spec, config)


def td_uncertainty(td: jax.Array) -> jax.Array:
    """sigma [B]: the standard deviation over members of TD errors td [K, B] (K >= 2), without gradient."""
    return jax.lax.stop_gradient(jnp.std(td, axis=0))


def exploration_td(td: jax.Array, num_exploitation: int, beta: float) -> tuple[jax.Array, jax.Array]:
    """One-step TD errors td [N, B] of rewards r -> (the members' TD errors [N, B] with the exploration
    members' reward r + beta * sigma, sigma [B]). sigma comes from the first `num_exploitation` members;
    a one-step TD error is linear in the reward, so adding beta * sigma to r adds it to the TD error."""
    sigma = td_uncertainty(td[:num_exploitation])
    explores = (jnp.arange(td.shape[0]) >= num_exploitation).astype(td.dtype)
    return td + beta * explores[:, None] * sigma[None, :], sigma


def _loss(modules, target, batch: Mapping[str, Any], config: TDUConfig):
    td_r, q_tm1 = dqn.member_td_errors(modules["q"], target, batch, config)  # [N, B], [N, B, A]
    td, sigma = exploration_td(td_r, config.exploitation_members, config.tdu_beta)
    loss = dqn.member_loss(td, batch, config)
    q_taken = dqn.taken_q(q_tm1, batch["action"])  # [N, B]
    exploit = slice(0, config.exploitation_members)
    return loss, {"mean_q": jnp.mean(q_taken[exploit]), "td_abs": jnp.mean(jnp.abs(td_r[exploit]), axis=0),
                  "sigma_mean": jnp.mean(sigma), "sigma_max": jnp.max(sigma),
                  "bonus_mean": config.tdu_beta * jnp.mean(sigma),
                  "disagreement": jnp.mean(jnp.std(q_taken[exploit], axis=0)),
                  "explore_mean_q": jnp.mean(q_taken[config.exploitation_members:])}


@eqx.filter_jit
def update(state: LearnerState, batch: Mapping[str, Any], config: TDUConfig):
    """One gradient step of every member. Metrics: DQN's ("loss", "mean_q" and "td_abs" [B] of the
    exploitation members, "grad_norm", "priorities" [B] = td_abs) and TDU's: "sigma_mean", "sigma_max",
    "bonus_mean" (beta * mean sigma), "disagreement" (mean over the batch of the exploitation members'
    std of Q(s, a)), "explore_mean_q"."""
    return dqn.gradient_step(state, batch, config, _loss)


def exploit_q_values(config: TDUConfig):
    """network, observation [B, *obs] -> [B, A]: the exploitation members' mean Q (evaluation)."""
    def q(network, observation):
        return jnp.mean(dqn.member_q_values(network, observation)[:config.exploitation_members], axis=0)
    return q


def explore_member_q_values(config: TDUConfig):
    """network, observation [B, *obs] -> [E, B, A]: the exploration members' Q (the actors' members)."""
    def q(network, observation):
        return dqn.member_q_values(network, observation)[config.exploitation_members:]
    return q
