"""RECODE's intrinsic reward for the NGU-family actors: the cluster memory's novelty of the embedded
observation, in place of NGU's episodic novelty times RND's lifelong multiplier.

    r_i(x_t) = cluster_reward(f(x_t))        (0 at is_first; x_t still enters the memory there)

f is the agent's learned embedding (`ActingParams.embedding`). The memory is one `ClusterMemory` in
the actor state, read and updated by all B environments of the actor (their embeddings in order, one
tick at a time), never reset at episode ends, and carried whole through checkpoints (`memory_carry`,
`memory_resume`). Actor threads of one process that must share one memory use
`actors.shared_cluster_memory.SharedClusterMemory`; the runner has one actor thread per process.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from rillet.actors.cluster_memory import ClusterConfig, ClusterMemory, cluster_reward, memory_fields, memory_from_fields
from rillet.learners.inverse_dynamics import embed

__all__ = ["recode_score", "memory_carry", "memory_resume", "memory_metrics"]


def recode_score(cluster: ClusterConfig) -> Callable:
    """The scoring of `actors.novelty_policy.novelty_policy` for RECODE: (params, observation [B, *obs],
    memory: ClusterMemory, first [B]) -> (r_i [B], r_i [B], memory). The second output (recorded as
    prev_episodic_reward) is r_i itself: RECODE has no lifelong multiplier."""

    def score(params, observation, memory: ClusterMemory, first):
        rewards, memory = cluster_reward(memory, embed(params.embedding, observation), cluster)
        r_i = jnp.where(first, 0.0, rewards).astype(jnp.float32)
        return r_i, r_i, memory

    return score


def memory_carry(actor_state: dict) -> dict:
    """What outlives episodes: the whole cluster memory, its fields by name (a checkpointable dict)."""
    return memory_fields(actor_state["memory"])


def memory_resume(actor_state: dict, carried: dict) -> dict:
    """The actor state with the carried cluster memory in place of the fresh one."""
    return {**actor_state, "memory": memory_from_fields(carried, actor_state["memory"])}


def memory_metrics(carried: dict) -> dict:
    """Scalars of a carried memory: atoms in use, d_m^2, the raw rewards' running mean and std, the
    counts' total."""
    stats = carried["reward_stats"]
    return {"cluster_atoms": carried["size"], "cluster_dist_mean": carried["dist_mean"],
            "cluster_reward_mean": stats["mean"], "cluster_reward_std": np.sqrt(stats["var"]),
            "cluster_count_total": np.sum(carried["counts"])}
