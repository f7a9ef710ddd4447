"""DQN: double Q-learning on n-step transitions from (prioritized) replay; epsilon-greedy actors on
Ape-X's ladder, a greedy evaluator. Every part below is shared; this record only names them."""

from __future__ import annotations

import dataclasses

import numpy as np

from rillet.actors.exploration import EpsilonLadder
from rillet.actors.policies import (epsilon_greedy, greedy, member_epsilon_greedy, member_observe,
                                   with_bootstrap_masks)
from rillet.learners import dqn
from rillet.learners.agents.registry import ActorParts, Agent, ReplayItem, register


def ensemble_actor(members_fn, config: dqn.DQNConfig, num_envs: int, exploration: dict) -> ActorParts:
    """Epsilon-greedy actors of an ensemble (exploration {"epsilon": [num_envs]}): on one member per
    episode (`members_fn(params, obs) -> [K, B, A]`) when config.ensemble_acting is "member", else on
    the members' mean; recording bootstrap masks when config.bootstrap_masks."""
    epsilon = np.asarray(exploration["epsilon"], np.float32)
    if config.ensemble_acting == "member":
        state = {"epsilon": epsilon, "member": np.zeros(num_envs, np.int32), "is_first": np.ones(num_envs, bool)}
        parts = ActorParts(member_epsilon_greedy(members_fn), state, observe=member_observe)
    else:
        parts = ActorParts(epsilon_greedy(dqn.q_values), {"epsilon": epsilon})
    if not config.bootstrap_masks:
        return parts
    return dataclasses.replace(parts, policy=with_bootstrap_masks(parts.policy, config.ensemble_size,
                                                                  config.bootstrap_probability))


def _actor(spec, config: dqn.DQNConfig, num_envs: int, exploration: dict) -> ActorParts:
    return ensemble_actor(dqn.member_q_values, config, num_envs, exploration)


def _evaluator(spec, config: dqn.DQNConfig, num_envs: int) -> ActorParts:
    return ActorParts(greedy(dqn.q_values), None)


DQN = register(Agent(
    name="dqn",
    config_type=dqn.DQNConfig,
    spec=dqn.spec_extras,
    init=dqn.init,
    update=dqn.update,
    network=lambda state: state.online,
    actor=_actor,
    evaluator=_evaluator,
    replay_item=lambda config: ReplayItem("transition"),
    check_batch=dqn.check_batch_spec,
    exploration=lambda config, actor: EpsilonLadder(actor.epsilon_base, actor.epsilon_alpha),
    summary="double DQN, n-step transitions, Ape-X epsilon-greedy actors",
))


BOOTDQN = register(dataclasses.replace(
    DQN,
    name="bootdqn",
    defaults=lambda: dqn.DQNConfig(ensemble_size=10, prior_scale=3.0, bootstrap_probability=0.5,
                                   ensemble_acting="member"),
    summary="bootstrapped DQN with randomised priors: K members, bootstrap masks, one member per episode",
))
