"""TDU: a bootstrapped ensemble with priors whose exploration members learn from r + beta * sigma (the
TD-error uncertainty of the exploitation members); actors follow one exploration member per episode
(DQN's ensemble actor), evaluation is greedy on the exploitation members' mean. DQN's replay, batch
check and epsilon ladder; only the learner and which members act differ."""

from __future__ import annotations

import dataclasses

from rillet.actors.policies import greedy
from rillet.learners import tdu
from rillet.learners.agents.dqn import DQN, ensemble_actor
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
