"""Agent builders: what an online run needs from one agent, in one place (the network / actor /
learner / replay split). The runner (`online.py`) and the acting loop (`acting.py`) are written
against this interface only; adding an agent means adding a builder here, not a runner.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from rillet.actors.exploration import apex_epsilons
from rillet.actors.policies import (discretised_policy, epsilon_greedy, greedy, recurrent_actor_state,
                                    recurrent_epsilon_greedy, recurrent_observe)
from rillet.datasets import reverb_tables
from rillet.datasets.reverb_writer import NStepTransitionWriter, SequenceWriter
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError
from rillet.learners import dqn, pac, r2d2


@dataclasses.dataclass(frozen=True)
class ActorParts:
    """policy(params, obs, actor_state, key); initial actor_state; observe hook (or None)."""

    policy: Callable
    actor_state: Any
    observe: Callable | None = None


class TransitionReplay:
    """Replay of n-step transitions (feed-forward agents); the actors act with the online network."""

    def signature(self, spec: StepSpec, config):
        return reverb_tables.transition_signature(spec)

    def writer(self, address: str, table: str, spec: StepSpec, config):
        return NStepTransitionWriter(address, table, spec, n=config.replay.n_step, gamma=config.gamma)

    def network(self, state):
        return state.online


class DQNBuilder(TransitionReplay):
    """Feed-forward DQN: n-step transitions, uniform or prioritized replay, epsilon-greedy actors."""

    name = "dqn"

    def learner_config(self, config) -> dqn.DQNConfig:
        return config.learner

    def spec(self, env_spec: StepSpec, config) -> StepSpec:
        return env_spec

    def init(self, key, spec: StepSpec, config):
        return dqn.init(key, spec, config.learner)

    def update(self, state, batch, config):
        return dqn.update(state, batch, config.learner)

    def check_batch(self, spec: StepSpec, batch) -> None:
        dqn.check_batch_spec(spec, batch)

    def actor(self, spec: StepSpec, config, epsilons: np.ndarray) -> ActorParts:
        return ActorParts(epsilon_greedy(dqn.q_values), {"epsilon": epsilons})

    def evaluator(self, spec: StepSpec, config) -> tuple[Callable, Callable[[int], Any], Callable | None]:
        """(greedy policy, actor_state_fn(num_envs), observe hook) for evaluation."""
        return greedy(dqn.q_values), lambda n: None, None

    @staticmethod
    def priorities(metrics) -> np.ndarray:
        return np.asarray(metrics["td_abs"]) + 1e-6


class R2D2Builder:
    """Recurrent R2D2: stored-state sequences of burn_in + trace + 1 steps written every
    replay.sequence_period steps, prioritized by eta*max|td| + (1-eta)*mean|td|."""

    name = "r2d2"

    def learner_config(self, config) -> r2d2.R2D2Config:
        return config.r2d2

    def spec(self, env_spec: StepSpec, config) -> StepSpec:
        return r2d2.spec_extras(env_spec, config.r2d2).with_extras(policy_index=ArraySpec((), "int32"))

    def init(self, key, spec: StepSpec, config):
        return r2d2.init(key, spec, config.r2d2)

    def update(self, state, batch, config):
        return r2d2.update(state, batch, config.r2d2)

    def check_batch(self, spec: StepSpec, batch) -> None:
        from rillet.datasets.specs import check_batch

        check_batch({**spec.fields(), "mask": ArraySpec((), "bool")}, batch, leading_dims=2, what="sequence batch")

    def signature(self, spec: StepSpec, config):
        return reverb_tables.sequence_signature(spec, config.r2d2.sequence_length)

    def writer(self, address: str, table: str, spec: StepSpec, config):
        return SequenceWriter(address, table, spec, length=config.r2d2.sequence_length,
                              period=config.replay.sequence_period)

    def network(self, state):
        return state.online

    def actor(self, spec: StepSpec, config, epsilons: np.ndarray) -> ActorParts:
        state = recurrent_actor_state(epsilons, config.r2d2.lstm_size, spec.action.dtype)
        return ActorParts(recurrent_epsilon_greedy(_recurrent_step), state, recurrent_observe)

    def evaluator(self, spec: StepSpec, config):
        policy = recurrent_epsilon_greedy(_recurrent_step)
        state_fn = lambda n: recurrent_actor_state(np.zeros(n, np.float32), config.r2d2.lstm_size, spec.action.dtype)
        return policy, state_fn, recurrent_observe

    @staticmethod
    def priorities(metrics) -> np.ndarray:
        return np.asarray(metrics["priorities"]) + 1e-6


def _recurrent_step(network, obs, prev_action, prev_reward, is_first, core):
    return network.step(obs, prev_action, prev_reward, is_first, core)


class PACBuilder(TransitionReplay):
    """Perceiver actor-critic online (config.pac.alpha = 0: pure policy improvement from the
    distributional critic) on one continuous-control task: n-step transitions, actions sampled
    per dimension from the discretised policy (the exploration), task id 0 recorded as an extra."""

    name = "pac"

    def learner_config(self, config) -> pac.PACConfig:
        return config.pac

    def spec(self, env_spec: StepSpec, config) -> StepSpec:
        return env_spec.with_extras(task_id=ArraySpec((), "int32"))

    def init(self, key, spec: StepSpec, config):
        return pac.init(key, spec, config.pac)

    def update(self, state, batch, config):
        return pac.update(state, self._learner_batch(batch), config.pac)

    def check_batch(self, spec: StepSpec, batch) -> None:
        from rillet.datasets.specs import check_batch

        check_batch({"observation": spec.observation, "action": spec.action, "reward": spec.reward,
                     "discount": spec.discount, "next_observation": spec.observation}, batch,
                    leading_dims=1, what="PAC transition batch")

    @staticmethod
    def _learner_batch(batch) -> dict:
        keys = ("observation", "action", "reward", "discount", "next_observation")
        return {**{k: batch[k] for k in keys}, "task_id": batch["extras"]["task_id"]}

    def actor(self, spec: StepSpec, config, epsilons: np.ndarray) -> ActorParts:
        del epsilons  # PAC explores by sampling its own stochastic policy
        return ActorParts(discretised_policy(0, config.pac.num_bins, "sample"), None)

    def evaluator(self, spec: StepSpec, config):
        return discretised_policy(0, config.pac.num_bins, "mode"), lambda n: None, None

    @staticmethod
    def priorities(metrics) -> np.ndarray:
        raise ConfigError("PAC trains from uniform replay; use --replay.sampler uniform.")


BUILDERS: dict[str, Any] = {"dqn": DQNBuilder(), "r2d2": R2D2Builder(), "pac": PACBuilder()}


def builder_for(agent: str):
    """The builder of an agent name; ConfigError naming the known agents otherwise."""
    try:
        return BUILDERS[agent]
    except KeyError:
        raise ConfigError(f"unknown agent {agent!r}; known agents: {sorted(BUILDERS)}. Fix --agent.") from None


def actor_epsilons(config) -> np.ndarray:
    """The Ape-X epsilon ladder of config.actor."""
    a = config.actor
    return apex_epsilons(a.num_envs, a.epsilon_base, a.epsilon_alpha)
