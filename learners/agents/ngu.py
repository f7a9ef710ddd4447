"""NGU: R2D2's recurrent value core with two more core inputs (previous intrinsic reward, one-hot
policy index j), trained on r_e + beta_j * r_i with gamma_j per sequence (transformed Retrace), plus
the inverse-dynamics embedding and RND in their own optimiser groups; actors score each observation's
episodic and lifelong novelty and act epsilon-greedily as policy j of NGU's family."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rillet.actors.cluster_memory import init_cluster_memory
from rillet.actors.exploration import EpsilonLadder, PolicyFamily
from rillet.actors.novelty_policy import ngu_score, novelty_actor_state, novelty_policy
from rillet.actors.policies import recurrent_observe, reward_free_observe
from rillet.actors.recode_novelty import memory_carry, memory_metrics, memory_resume, recode_score
from rillet.learners import ngu, recurrent_value
from rillet.learners.distillation import acting_head
from rillet.learners.agents.registry import ActorParts, Agent, ReplayItem, learner_fields, register


def novelty_actor(spec, config: ngu.NGUConfig, num_envs: int, exploration: dict, core_size: int | None = None,
                  evaluation: bool = False) -> ActorParts:
    """NGU's actors: the novelty policy epsilon-greedy as policy j (exploration {"epsilon",
    "policy_index"} [num_envs]) over config's acting head (`distillation.acting_head`; an evaluation
    takes its argmax); core_size: the recorded core state's size (default lstm_size). The intrinsic
    reward is config.novelty's: NGU's episodic x lifelong novelty, or RECODE's cluster memory. With
    config.reward_free the core's previous-reward input is 0 (`reward_free_observe`)."""
    state = novelty_actor_state(exploration["epsilon"], exploration["policy_index"], core_size or config.lstm_size,
                                config.embedding_size, config.memory_capacity, spec.action.dtype)
    head, sample = acting_head(config)
    if config.novelty == "recode":
        memory = init_cluster_memory(config.cluster(), config.embedding_size, jax.random.PRNGKey(num_envs))
        score, carry, resume, summary = recode_score(config.cluster()), memory_carry, memory_resume, memory_metrics
        state = {**state, "memory": memory}
    else:
        score, carry, resume = ngu_score(config.episodic(), config.max_multiplier), _running_distances, _resume
        summary = None
    policy = novelty_policy(score, config.novelty_sync_period, head, sample and not evaluation)
    observe = reward_free_observe if config.reward_free else recurrent_observe
    return ActorParts(policy, state, observe, carry=carry, resume=resume, carry_metrics=summary)


def _running_distances(actor_state: dict) -> dict:
    """What of an NGU actor's state outlives episodes: the running mean d_m^2 of each environment's
    neighbour distances (count and mean [B]). Memories, core state and previous inputs restart."""
    memory = actor_state["memory"]
    return {"dist_count": memory.dist_count, "dist_mean": memory.dist_mean}


def _resume(actor_state: dict, carried: dict) -> dict:
    memory = dataclasses.replace(actor_state["memory"], dist_count=jnp.array(carried["dist_count"], jnp.float32),
                                 dist_mean=jnp.array(carried["dist_mean"], jnp.float32))
    return {**actor_state, "memory": memory}


def greedy_exploration(config: ngu.NGUConfig, num_envs: int) -> dict:
    """An evaluation's exploration parameters: epsilon 0, policy config.eval_policy_index."""
    return {"epsilon": np.zeros(num_envs, np.float32),
            "policy_index": np.full(num_envs, config.eval_policy_index, np.int32)}


def _evaluator(spec, config: ngu.NGUConfig, num_envs: int) -> ActorParts:
    """Greedy (epsilon 0) as policy config.eval_policy_index (0: the exploitative policy); it reads
    nothing of the actors' carry (its d_m^2 starts fresh)."""
    return evaluation_parts(novelty_actor(spec, config, num_envs, greedy_exploration(config, num_envs),
                                          evaluation=True))


def evaluation_parts(parts: ActorParts) -> ActorParts:
    """Actor parts as an evaluator's: no carry of their own, nothing read from the actors' carry."""
    return dataclasses.replace(parts, carry=None, resume=None, carry_metrics=None)


def family(config: ngu.NGUConfig, actor) -> PolicyFamily:
    """N policies, j = i mod N per environment, epsilon on Ape-X's ladder."""
    return PolicyFamily(config.num_policies, EpsilonLadder(actor.epsilon_base, actor.epsilon_alpha))


NGU = register(Agent(
    name="ngu",
    **learner_fields(ngu, ngu.NGUConfig),
    network=ngu.acting_params,
    actor=novelty_actor,
    evaluator=_evaluator,
    replay_item=lambda config: ReplayItem("sequence", config.sequence_length),
    check_batch=recurrent_value.check_sequence_batch,
    exploration=family,
    summary="R2D2 core + episodic and lifelong novelty, a family of N policies (beta_j, gamma_j)",
))
