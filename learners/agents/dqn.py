"""DQN: double Q-learning on n-step transitions from (prioritized) replay; epsilon-greedy actors on
Ape-X's ladder, a greedy evaluator. Every part below is shared; this record only names them."""

from __future__ import annotations

import numpy as np

from rillet.actors.exploration import EpsilonLadder
from rillet.actors.policies import epsilon_greedy, greedy, member_epsilon_greedy, member_observe
from rillet.learners import dqn
from rillet.learners.agents.registry import ActorParts, Agent, ReplayItem, register


def _actor(spec, config: dqn.DQNConfig, num_envs: int, exploration: dict) -> ActorParts:
    epsilon = np.asarray(exploration["epsilon"], np.float32)
    if config.ensemble_acting == "member":
        state = {"epsilon": epsilon, "member": np.zeros(num_envs, np.int32), "is_first": np.ones(num_envs, bool)}
        return ActorParts(member_epsilon_greedy(dqn.member_q_values), state, observe=member_observe)
    return ActorParts(epsilon_greedy(dqn.q_values), {"epsilon": epsilon})


def _evaluator(spec, config: dqn.DQNConfig, num_envs: int) -> ActorParts:
    return ActorParts(greedy(dqn.q_values), None)


DQN = register(Agent(
    name="dqn",
    config_type=dqn.DQNConfig,
    spec=lambda env_spec, config: env_spec,
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
