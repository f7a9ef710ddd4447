"""TDU: a bootstrapped ensemble with priors whose exploration members learn from r + beta * sigma (the
TD-error uncertainty of the exploitation members); actors follow one exploration member per episode
(DQN's ensemble actor), evaluation is greedy on the exploitation members' mean. DQN's replay, batch
check and epsilon ladder; only the learner and which members act differ.

r2d2-tdu: the same on R2D2's recurrent core (`learners.recurrent_tdu`): R2D2's record with heads "q"
(exploitation) and "explore" (exploration) of members; actors act epsilon-greedily on the exploration
heads' mean, evaluation greedily on the exploitation heads' mean."""

from __future__ import annotations

import dataclasses

import numpy as np

from rillet.actors.policies import (greedy, recurrent_actor_state, recurrent_epsilon_greedy, recurrent_observe,
                                   with_bootstrap_masks)
from rillet.learners import recurrent_tdu, tdu
from rillet.learners.agents.dqn import DQN, ensemble_actor
from rillet.learners.agents.r2d2 import R2D2
from rillet.learners.agents.registry import ActorParts, learner_fields, register


def _actor(spec, config: tdu.TDUConfig, num_envs: int, exploration: dict) -> ActorParts:
    return ensemble_actor(tdu.explore_member_q_values(config), config, num_envs, exploration)


def _evaluator(spec, config: tdu.TDUConfig, num_envs: int) -> ActorParts:
    return ActorParts(greedy(tdu.exploit_q_values(config)), None)


TDU = register(dataclasses.replace(
    DQN,
    name="tdu",
    **learner_fields(tdu, tdu.TDUConfig),
    actor=_actor,
    evaluator=_evaluator,
    defaults=None,
    summary="TDU: exploration members learn from r + beta * std of the TD errors over a bootstrapped ensemble",
))


def _recurrent_actor(spec, config: recurrent_tdu.RecurrentTDUConfig, num_envs: int, exploration: dict,
                     head: str = "explore") -> ActorParts:
    """Epsilon-greedy over the mean of `head`'s members, recording bootstrap masks when on."""
    state = recurrent_actor_state(exploration["epsilon"], config.lstm_size, spec.action.dtype)
    policy = recurrent_epsilon_greedy(head, members=True)
    if config.bootstrap_masks and head == "explore":
        policy = with_bootstrap_masks(policy, config.ensemble_size, config.bootstrap_probability)
    return ActorParts(policy, state, recurrent_observe)


def _recurrent_evaluator(spec, config: recurrent_tdu.RecurrentTDUConfig, num_envs: int) -> ActorParts:
    return _recurrent_actor(spec, config, num_envs, {"epsilon": np.zeros(num_envs, np.float32)}, head="q")


R2D2_TDU = register(dataclasses.replace(
    R2D2,
    name="r2d2-tdu",
    **learner_fields(recurrent_tdu, recurrent_tdu.RecurrentTDUConfig),
    actor=_recurrent_actor,
    evaluator=_recurrent_evaluator,
    summary="TDU on R2D2's recurrent core: exploration heads learn from r + beta * std of the exploitation "
            "heads' TD errors",
))
