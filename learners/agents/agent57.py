"""Agent57: NGU's parts with the value split in two networks (extrinsic, intrinsic; their own optimiser
groups), Agent57's discount ladder, and actors whose policy index j is chosen at every episode start by
a sliding-window UCB bandit over the N policies (its state checkpointed with the actors' carry).
Evaluation acts greedily as the bandits' best arm (pooled over the actors), or as eval_policy_index."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from rillet.actors.meta_controller import bandit_actor_state, bandit_carry, bandit_observe, bandit_resume, greedy_arm_of
from rillet.learners import agent57
from rillet.learners.agents.ngu import NGU, evaluation_parts, greedy_exploration, novelty_actor
from rillet.learners.agents.registry import ActorParts, learner_fields, register


def _actor(spec, config: agent57.Agent57Config, num_envs: int, exploration: dict) -> ActorParts:
    """NGU's novelty actors over the split value (core state 2 * lstm_size) with the meta-controller."""
    parts = novelty_actor(spec, config, num_envs, exploration, core_size=2 * config.lstm_size)
    if not config.meta_controller:
        return parts
    bandit = bandit_actor_state(num_envs, config.num_policies, config.bandit_window, jax.random.PRNGKey(num_envs))
    summary = None if parts.carry_metrics is None else (lambda c: parts.carry_metrics(c["episodic"]))
    return ActorParts(parts.policy, {**parts.actor_state, **bandit}, bandit_observe(parts.observe, config.bandit()),
                      carry=lambda s: {"episodic": parts.carry(s), "bandit": bandit_carry(s)},
                      resume=lambda s, c: bandit_resume(parts.resume(s, c["episodic"]), c["bandit"]),
                      carry_metrics=summary)


def _evaluator(spec, config: agent57.Agent57Config, num_envs: int) -> ActorParts:
    """Greedy (epsilon 0) as eval_policy_index; with the meta-controller, resumed from the actors' carry
    as their bandits' best arm."""
    parts = evaluation_parts(novelty_actor(spec, config, num_envs, greedy_exploration(config, num_envs),
                                           core_size=2 * config.lstm_size, evaluation=True))
    if not config.meta_controller:
        return parts

    def best_arm(actor_state: dict, actors_carry: dict) -> dict:
        arm = greedy_arm_of(actors_carry["bandit"], config.num_policies)
        return {**actor_state, "policy_index": np.full(num_envs, arm, np.int32)}

    return dataclasses.replace(parts, resume=best_arm)


AGENT57 = register(dataclasses.replace(
    NGU,  # NGU's batch check, replay item, acting parameters and policy family; the rest is Agent57's
    name="agent57",
    **learner_fields(agent57, agent57.Agent57Config),
    actor=_actor,
    evaluator=_evaluator,
    defaults=None,
    summary="NGU + split extrinsic/intrinsic values, Agent57's discount ladder, a bandit choosing j per episode",
))
