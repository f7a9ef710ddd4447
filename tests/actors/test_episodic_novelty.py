"""Episodic novelty (NGU): hand-checked kernel values, a per-environment numpy loop reference, and
resets exactly at episode starts."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rillet.actors.episodic_novelty import (EpisodicConfig, EpisodicMemory, episodic_reward, init_memory,
                                            reset_where)
from rillet.errors import ConfigError

C, XI, EPS = 1e-3, 0.008, 1e-4  # NGU's c, xi and kernel epsilon (the config defaults)


def one_env_memory(rows, capacity, size, next_slot, count=0.0, mean=0.0) -> EpisodicMemory:
    """One environment's memory written out by hand: rows [capacity + 1, D] (every slot, held or not)."""
    rows = np.asarray(rows, np.float32)
    assert rows.shape[0] == capacity + 1
    return EpisodicMemory(jnp.asarray(rows[None]), jnp.array([size], jnp.int32), jnp.array([next_slot], jnp.int32),
                          jnp.array([count], jnp.float32), jnp.array([mean], jnp.float32))


def test_fewer_held_than_k_uses_those_held_and_never_an_empty_slot():
    # capacity 4 holds 3 embeddings in slots 0..2; slot 3 is written next; slot 4 is stale and equal to
    # the query, so reading it would add a distance 0 (K = 1) and a fourth distance to the mean.
    rows = [[0, 0], [1, 0], [0, 2], [5, 5], [0, 0]]
    memory = one_env_memory(rows, capacity=4, size=3, next_slot=3)
    reward, memory = episodic_reward(memory, jnp.zeros((1, 2)), EpisodicConfig(num_neighbours=10))
    mean = (0 + 1 + 4) / 3  # squared distances 0, 1, 4
    kernel = [EPS / (max(d / mean - XI, 0) + EPS) for d in (0, 1, 4)]  # 1, 1e-4 / 0.5921, 1e-4 / 2.3921
    expected = 1 / (math.sqrt(sum(kernel)) + C)
    np.testing.assert_allclose(reward, [expected], rtol=1e-6)
    np.testing.assert_allclose([memory.dist_count[0], memory.dist_mean[0]], [3, mean], rtol=1e-6)
    assert int(memory.size[0]) == 4 and int(memory.next[0]) == 4
    np.testing.assert_array_equal(memory.embeddings[0, 3], [0, 0])  # appended where `next` pointed


@pytest.mark.parametrize("held", [1, 4, 10, 12])
def test_identical_embeddings_give_kernel_one_per_neighbour(held):
    # Every distance is 0, so after normalising (0 / d_m^2 = 0) and the cluster cut every K_i is 1 and
    # s = sqrt(n) + c with n = min(held, k = 10) neighbours. The prior mean 2 (over 5) moves to 10 / (5 + n).
    e = np.array([0.3, -1.2, 2.0], np.float32)
    memory = one_env_memory(np.tile(e, (13, 1)), capacity=12, size=held, next_slot=held, count=5.0, mean=2.0)
    reward, memory = episodic_reward(memory, e[None], EpisodicConfig())
    n = min(held, 10)
    np.testing.assert_allclose(reward, [1 / (math.sqrt(n) + C)], rtol=1e-6)
    np.testing.assert_allclose(memory.dist_mean, [10 / (5 + n)], rtol=1e-6)
    np.testing.assert_allclose(memory.dist_count, [5 + n])


@pytest.mark.parametrize("held, num_neighbours, max_similarity, expected", [
    (64, 64, 8.0, 0.0),                              # s = 8 + c > 8: cut off
    (63, 64, 8.0, 1 / (math.sqrt(63) + C)),          # s = 7.938... <= 8: kept
    (4, 10, 2.0, 0.0),                               # s = 2.001 > 2
    (3, 10, 2.0, 1 / (math.sqrt(3) + C)),            # s = 1.733
])
def test_similarity_above_max_similarity_gives_zero(held, num_neighbours, max_similarity, expected):
    e = np.ones(2, np.float32)
    memory = one_env_memory(np.tile(e, (71, 1)), capacity=70, size=held, next_slot=held)
    config = EpisodicConfig(num_neighbours=num_neighbours, max_similarity=max_similarity).validate()
    reward, _ = episodic_reward(memory, e[None], config)
    np.testing.assert_allclose(reward, [expected], rtol=1e-6)


def test_empty_memory_gives_zero_then_holds_one():
    config = EpisodicConfig()
    e = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    reward, memory = episodic_reward(init_memory(2, 3, 2), e, config)
    np.testing.assert_array_equal(reward, [0.0, 0.0])  # nothing to compare with (1 / c would be 1000)
    np.testing.assert_array_equal(memory.size, [1, 1])
    np.testing.assert_array_equal(memory.dist_count, [0, 0])  # an empty query leaves d_m^2 alone
    reward, memory = episodic_reward(memory, e, config)
    np.testing.assert_allclose(reward, [1 / (1 + C)] * 2, rtol=1e-6)  # one identical neighbour
    np.testing.assert_array_equal(memory.size, [2, 2])


def test_reset_empties_only_the_starting_environments_and_keeps_the_running_mean():
    config = EpisodicConfig()
    memory = init_memory(2, 5, 2)
    for e in ([0.0, 0.0], [1.0, 0.0], [0.0, 3.0]):
        _, memory = episodic_reward(memory, jnp.array([e, e]), config)
    count, mean = np.asarray(memory.dist_count), np.asarray(memory.dist_mean)
    assert count[0] == 3 and mean[0] > 0
    memory = reset_where(memory, jnp.array([True, False]))
    np.testing.assert_array_equal(memory.size, [0, 3])
    np.testing.assert_array_equal(memory.dist_count, count)
    np.testing.assert_array_equal(memory.dist_mean, mean)
    reward, memory = episodic_reward(memory, jnp.zeros((2, 2)), config)
    assert reward[0] == 0 and reward[1] > 0  # env 0's old embeddings are stale, not held
    np.testing.assert_array_equal(memory.size, [1, 4])


def reference_rewards(embeddings, first, capacity, config):
    """NGU's episodic reward one environment at a time, in float64: embeddings [T, B, D], first [T, B]
    -> rewards [T, B] and each environment's final mean squared neighbour distance [B]."""
    steps, envs, _ = embeddings.shape
    rewards, means = np.zeros((steps, envs)), np.zeros(envs)
    for b in range(envs):
        memory, total, count = [], 0.0, 0
        for t in range(steps):
            e = embeddings[t, b].astype(np.float64)
            if first[t, b]:
                memory = []
            if memory:
                dists = sorted(float(np.sum((m - e) ** 2)) for m in memory)[: config.num_neighbours]
                total, count = total + sum(dists), count + len(dists)
                scale = max(total / count, np.finfo(np.float32).tiny)
                similarity = sum(config.kernel_epsilon / (max(d / scale - config.cluster_distance, 0.0)
                                                          + config.kernel_epsilon) for d in dists)
                s = math.sqrt(similarity) + config.pseudo_count_constant
                rewards[t, b] = 0.0 if s > config.max_similarity else 1.0 / s
            memory.append(e)
            if len(memory) > capacity:
                memory.pop(0)
        means[b] = total / count if count else 0.0
    return rewards, means


@pytest.mark.parametrize("capacity, config", [
    (5, EpisodicConfig(num_neighbours=3)),
    (7, EpisodicConfig(num_neighbours=10, max_similarity=2.0)),  # k > capacity; the cut-off within reach
])
def test_batched_rewards_match_a_loop_reference(capacity, config):
    rng = np.random.default_rng(capacity)
    steps, envs, dim = 40, 5, 3
    lattice = rng.integers(0, 2, size=(steps, envs, dim)).astype(np.float32)  # 8 points: exact repeats
    embeddings = np.where(rng.random((steps, envs, 1)) < 0.5, lattice,
                          rng.normal(size=(steps, envs, dim))).astype(np.float32)
    first = rng.random((steps, envs)) < 0.1
    first[0] = True
    first[:, 0] = False  # env 0 never restarts: its ring wraps many times
    first[0, 0] = True
    first[12, 1] = first[30, 1] = True  # env 1 restarts after wrapping

    memory, rewards = init_memory(envs, capacity, dim), []
    for t in range(steps):
        memory = reset_where(memory, jnp.asarray(first[t]))
        reward, memory = episodic_reward(memory, jnp.asarray(embeddings[t]), config)
        rewards.append(np.asarray(reward))
    expected, means = reference_rewards(embeddings, first, capacity, config)
    np.testing.assert_allclose(np.stack(rewards), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(memory.dist_mean, means, rtol=1e-5)
    assert (expected > 0).sum() > steps * envs // 2  # most steps are rewarded: the comparison is not vacuous


ENVS, CAPACITY = 6, 4
EMBEDDINGS = np.random.default_rng(7).normal(size=(40, ENVS, 2)).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=ENVS, max_size=ENVS), min_size=1, max_size=36))
def test_memory_resets_exactly_at_episode_starts(firsts):
    config = EpisodicConfig(num_neighbours=2)  # s <= sqrt(2) + c < 8: a held neighbour always rewards
    memory = init_memory(ENVS, CAPACITY, 2)
    since_start = np.zeros(ENVS, int)
    for t, first in enumerate(np.array(firsts, bool)):
        since_start = np.where(first, 0, since_start) + 1
        memory = reset_where(memory, jnp.asarray(first))
        reward, memory = episodic_reward(memory, jnp.asarray(EMBEDDINGS[t]), config)
        np.testing.assert_array_equal(memory.size, np.minimum(since_start, CAPACITY))
        np.testing.assert_array_equal(np.asarray(reward) == 0, since_start == 1)


def test_default_config_is_valid():
    config = EpisodicConfig()
    assert config.validate() is config
    assert (config.capacity, config.num_neighbours, config.kernel_epsilon) == (30_000, 10, 1e-4)


@pytest.mark.parametrize("field, value", [
    ("num_neighbours", 0), ("num_neighbours", 2.5), ("capacity", 0), ("cluster_distance", -0.1),
    ("kernel_epsilon", 0.0), ("pseudo_count_constant", 0.0), ("max_similarity", float("nan")),
])
def test_validate_names_the_bad_field(field, value):
    with pytest.raises(ConfigError, match=f"EpisodicConfig.{field}="):
        EpisodicConfig(**{field: value}).validate()
