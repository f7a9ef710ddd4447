"""Episodic novelty (NGU's per-episode intrinsic reward; Badia et al., 2020, "Never Give Up", Alg. 1).

Each of B environments keeps a ring-buffer memory of controllable-state embeddings, emptied when its
episode starts. A new embedding e = f(x_t) is rewarded by how far it lies from its k nearest
neighbours in that memory, then appended:

    d_i     = ||e - N_i||^2 for the k nearest N_i (fewer while the memory holds fewer)
    d_m^2  <- mean of every such d_i this environment has seen (kept across episodes)
    d_i     = max(d_i / d_m^2 - xi, 0)
    K_i     = eps / (d_i + eps)
    s       = sqrt(sum_i K_i) + c;   r = 0 if s > s_m else 1 / s

An actor step reads: ``memory = reset_where(memory, first)``, then
``reward, memory = episodic_reward(memory, embedding, config)``. The state is an Equinox module
(a pytree: jittable, checkpointable). Both functions donate the memory passed in, so that no call
copies the embeddings; only the returned memory may be used afterwards. Memory per environment:
(capacity + 1) * D * 4 bytes of embeddings (one spare slot; 30,001 x 32 x 4 = 3.84 MB) plus 16 bytes
of counters; a call also holds the [B, capacity + 1] distances while it runs.
"""

from __future__ import annotations

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet import validation as check

_TINY = float(jnp.finfo(jnp.float32).tiny)  # floor of d_m^2: an all-zero history normalises 0 to 0


@dataclasses.dataclass(frozen=True)
class EpisodicConfig:
    """The kernel's constants; defaults from NGU's hyper-parameter table (Badia et al., 2020, appendix).

    kernel_epsilon: the appendix table gives 1e-4 (used here); the method section's text says 1e-3.
    pseudo_count_constant is c, max_similarity is s_m, cluster_distance is xi; capacity is the
    number of embeddings each environment's memory holds (its ring overwrites the oldest).
    """

    capacity: int = 30_000
    num_neighbours: int = 10
    cluster_distance: float = 0.008
    kernel_epsilon: float = 1e-4
    pseudo_count_constant: float = 1e-3
    max_similarity: float = 8.0

    def validate(self) -> "EpisodicConfig":
        """Raises ConfigError naming the first bad field; returns self."""
        owner = "EpisodicConfig"
        check.integer(owner, "capacity", self.capacity, low=1, fix="capacity (e.g. 30000)")
        check.integer(owner, "num_neighbours", self.num_neighbours, low=1, fix="num_neighbours (e.g. 10)")
        check.number(owner, "cluster_distance", self.cluster_distance, 0.0)
        check.number(owner, "kernel_epsilon", self.kernel_epsilon, 0.0, low_open=True,
                     fix="kernel_epsilon (e.g. 1e-4)")
        check.number(owner, "pseudo_count_constant", self.pseudo_count_constant, 0.0, low_open=True,
                     fix="pseudo_count_constant (e.g. 1e-3)")
        check.number(owner, "max_similarity", self.max_similarity, 0.0, low_open=True,
                     fix="max_similarity (e.g. 8.0)")
        return self


class EpisodicMemory(eqx.Module):
    """B per-environment ring memories of capacity M over M + 1 slots; D is the embedding size.

    The held embeddings are the `size` slots before `next` (cyclically); the slot at `next` holds no
    current embedding (after a reset, every slot is stale). `episodic_reward` writes the new
    embedding there first and then reads only the held slots: a write before any read lets XLA update
    the donated buffer in place, where reading first made it copy every embedding on each call.

    embeddings [B, M + 1, D] float32; size [B] int32 (<= M); next [B] int32 (in [0, M]);
    dist_count [B] float32 and dist_mean [B] float32: the number and mean of every neighbour squared
    distance seen (d_m^2), kept across episodes.
    """

    embeddings: jax.Array
    size: jax.Array
    next: jax.Array
    dist_count: jax.Array
    dist_mean: jax.Array

    @property
    def capacity(self) -> int:
        """M, the most embeddings an environment's memory holds."""
        return self.embeddings.shape[1] - 1


def init_memory(num_envs: int, capacity: int, dim: int) -> EpisodicMemory:
    """Empty memories for num_envs environments, each of `capacity` embeddings of size `dim`."""
    check.integer("init_memory", "num_envs", num_envs, low=1)
    check.integer("init_memory", "capacity", capacity, low=1, fix="capacity (e.g. config.capacity)")
    check.integer("init_memory", "dim", dim, low=1)
    counter = functools.partial(jnp.zeros, num_envs)  # one buffer per field: each is donated on its own
    return EpisodicMemory(jnp.zeros((num_envs, capacity + 1, dim), jnp.float32), counter(jnp.int32),
                          counter(jnp.int32), counter(jnp.float32), counter(jnp.float32))


@functools.partial(jax.jit, donate_argnames="memory")
def reset_where(memory: EpisodicMemory, first: jax.Array) -> EpisodicMemory:
    """Empties the memories of environments whose episode starts (first [B] bool): size and next
    become 0. The running mean d_m^2 (dist_count, dist_mean) is kept; embeddings are left in place.
    `memory` is donated (see `episodic_reward`)."""
    first = jnp.asarray(first, bool)
    return dataclasses.replace(memory, size=jnp.where(first, 0, memory.size),
                               next=jnp.where(first, 0, memory.next))


def _held_slots(size: jax.Array, next_slot: jax.Array, num_slots: int) -> jax.Array:
    """[B, num_slots] bool: the `size` [B] slots before `next_slot` [B], cyclically."""
    age = (next_slot[:, None] - jnp.arange(num_slots)[None, :]) % num_slots  # 0 at next_slot
    return (age >= 1) & (age <= size[:, None])


def _nearest(embeddings: jax.Array, held: jax.Array, embedding: jax.Array,
             k: int) -> tuple[jax.Array, jax.Array]:
    """Squared distances [B, k] from embedding [B, D] to its k nearest held rows of embeddings
    [B, S, D] (held [B, S] bool), ascending, and which of them are real [B, k] bool: the first
    min(#held, k) of each row. Slots not held count as +inf, so top_k reaches them only after every
    held one; k must be <= S."""
    dist = jnp.sum(jnp.square(embeddings - embedding[:, None, :]), axis=-1)  # [B, S]
    neg, _ = jax.lax.top_k(jnp.where(held, -dist, -jnp.inf), k)
    valid = jnp.arange(k)[None, :] < jnp.sum(held, axis=-1)[:, None]
    return jnp.where(valid, -neg, 0.0), valid


def _running_mean(memory: EpisodicMemory, dist: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The cumulative count and mean [B] of every neighbour distance, this query's valid ones added.
    An empty query (no valid distance) leaves both unchanged."""
    n = jnp.sum(valid, axis=-1).astype(jnp.float32)
    count = memory.dist_count + n
    total = jnp.sum(jnp.where(valid, dist, 0.0), axis=-1)
    mean = memory.dist_mean + (total - n * memory.dist_mean) / jnp.maximum(count, 1.0)
    return count, mean


def _kernel_reward(dist: jax.Array, valid: jax.Array, mean: jax.Array, config: EpisodicConfig) -> jax.Array:
    """NGU's inverse kernel reward [B] from neighbour squared distances dist [B, k'] (valid [B, k'])
    and the running mean d_m^2 [B]. A row with no valid neighbour gets 0 (nothing to compare with)."""
    d = dist / jnp.maximum(mean, _TINY)[:, None]
    d = jnp.maximum(d - config.cluster_distance, 0.0)
    kernel = jnp.where(valid, config.kernel_epsilon / (d + config.kernel_epsilon), 0.0)
    s = jnp.sqrt(jnp.sum(kernel, axis=-1)) + config.pseudo_count_constant
    reward = jnp.where(s > config.max_similarity, 0.0, 1.0 / s)
    return jnp.where(jnp.any(valid, axis=-1), reward, 0.0)


@functools.partial(jax.jit, static_argnames="config", donate_argnames="memory")
def episodic_reward(memory: EpisodicMemory, embedding: jax.Array,
                    config: EpisodicConfig) -> tuple[jax.Array, EpisodicMemory]:
    """Episodic novelty rewards [B] float32 of embedding [B, D], then the memory with it appended.

    Each reward is computed against the memory as it was; then the embedding goes in. With an empty
    memory (the first step of an episode) the reward is 0, as there is nothing to compare with, and
    the running mean d_m^2 is not updated. `config` is static (hashable).

    `memory` is donated: its buffers are reused for the returned memory, so the write is O(B * D)
    rather than a copy of every embedding; use only the returned memory afterwards.
    """
    embedding = jnp.asarray(embedding, jnp.float32)
    b, num_slots, _ = memory.embeddings.shape
    capacity = num_slots - 1
    held = _held_slots(memory.size, memory.next, num_slots)  # before the append; `next` is not held
    embeddings = memory.embeddings.at[jnp.arange(b), memory.next].set(
        embedding, indices_are_sorted=True, unique_indices=True)
    dist, valid = _nearest(embeddings, held, embedding, min(config.num_neighbours, capacity))
    count, mean = _running_mean(memory, dist, valid)
    reward = _kernel_reward(dist, valid, mean, config)
    return reward, EpisodicMemory(embeddings, jnp.minimum(memory.size + 1, capacity),
                                  (memory.next + 1) % num_slots, count, mean)
