"""R2D2: the recurrent value core (torso, LSTM with the previous action and reward as named inputs,
a dueling head "q") trained on stored-state sequences with burn-in, one of six return estimators,
value rescaling and sequence priorities; epsilon-greedy recurrent actors on Ape-X's ladder."""

from __future__ import annotations

import numpy as np

from rillet.actors.exploration import EpsilonLadder
from rillet.actors.policies import recurrent_actor_state, recurrent_epsilon_greedy, recurrent_observe
from rillet.datasets.specs import ArraySpec
from rillet.learners import r2d2, recurrent_value
from rillet.learners.distillation import acting_head
from rillet.learners.agents.registry import ActorParts, Agent, ReplayItem, register


def _spec(env_spec, config: r2d2.R2D2Config):
    return r2d2.spec_extras(env_spec, config).with_extras(policy_index=ArraySpec((), "int32"))


def _actor(spec, config: r2d2.R2D2Config, num_envs: int, exploration: dict, evaluation: bool = False) -> ActorParts:
    """Epsilon-greedy over the acting head (`distillation.acting_head`: "q", or MEME's "pi" when on)."""
    state = recurrent_actor_state(exploration["epsilon"], config.lstm_size, spec.action.dtype)
    head, sample = acting_head(config)
    return ActorParts(recurrent_epsilon_greedy(head, sample and not evaluation), state, recurrent_observe)


def _evaluator(spec, config: r2d2.R2D2Config, num_envs: int) -> ActorParts:
    """Greedy (epsilon 0) over the acting head's argmax."""
    return _actor(spec, config, num_envs, {"epsilon": np.zeros(num_envs, np.float32)}, evaluation=True)


R2D2 = register(Agent(
    name="r2d2",
    config_type=r2d2.R2D2Config,
    spec=_spec,
    init=r2d2.init,
    update=r2d2.update,
    network=lambda state: state.online,
    actor=_actor,
    evaluator=_evaluator,
    replay_item=lambda config: ReplayItem("sequence", config.sequence_length),
    check_batch=recurrent_value.check_sequence_batch,
    exploration=lambda config, actor: EpsilonLadder(actor.epsilon_base, actor.epsilon_alpha),
    summary="recurrent double Q on stored-state sequences, burn-in, six return estimators",
))
