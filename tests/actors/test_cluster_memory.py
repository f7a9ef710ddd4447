"""Cluster memory (RECODE): insert, merge, replacement by 1/c^2, count decay, the kernel and N(e)
against a numpy loop, rewards falling on revisits, batched = one by one, config errors."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.actors.cluster_memory import (ClusterConfig, ClusterMemory, choose_replaced, cluster_count,
                                          cluster_reward, init_cluster_memory, k_nearest, kernel, memory_step,
                                          merge_atom, normalise_reward, squared_distances, update_dist_mean)
from rillet.errors import ConfigError
from rillet.learners.running_stats import RunningStats

C, EPS = 1e-3, 1e-4  # the config defaults of c and the kernel's epsilon
step = jax.jit(memory_step, static_argnames="config")  # one embedding; compiled once per config


def memory(atoms, counts, size=None, dist_mean=1.0, dist_count=100.0, seed=0) -> ClusterMemory:
    """A memory written out by hand: atoms [M, D] and counts [M] (every slot), the first `size` in use."""
    atoms = np.asarray(atoms, np.float32)
    size = len(atoms) if size is None else size
    zero = jnp.zeros((), jnp.float32)
    return ClusterMemory(jnp.asarray(atoms), jnp.asarray(counts, jnp.float32), jnp.asarray(size, jnp.int32),
                         jnp.asarray(dist_mean, jnp.float32), jnp.asarray(dist_count, jnp.float32),
                         jnp.zeros((), jnp.int32), RunningStats(zero, zero, zero), jax.random.PRNGKey(seed))


def test_empty_memory_inserts_the_first_embedding_and_rewards_it_fully():
    config = ClusterConfig(capacity=4, insert_probability=1e-6)  # inserted although u < eta is unlikely
    state = init_cluster_memory(config, 3, key=0)
    reward, state = step(state, jnp.array([1.0, -2.0, 0.5]), config)
    np.testing.assert_allclose(reward, 1 / C, rtol=1e-6)  # N(e) = 0: nothing to compare with
    assert int(state.size) == 1 and int(state.steps) == 1
    np.testing.assert_array_equal(state.atoms[0], [1.0, -2.0, 0.5])
    np.testing.assert_array_equal(state.counts, [1, 0, 0, 0])
    assert float(state.dist_mean) == 0 and float(state.dist_count) == 0  # no neighbour yet: d_m^2 untouched


def test_far_embedding_goes_into_the_next_free_slot():
    config = ClusterConfig(capacity=4, insert_probability=1.0, insert_threshold=1.0, count_decay=0.5)
    state = memory([[0, 0], [1, 0], [7, 7], [7, 7]], [2, 4, 0, 0], size=2, dist_mean=1.0)
    _, state = step(state, jnp.array([10.0, 0.0]), config)
    assert int(state.size) == 3
    np.testing.assert_array_equal(state.atoms[:3], [[0, 0], [1, 0], [10, 0]])
    np.testing.assert_allclose(state.counts, [1, 2, 1, 0])  # old counts halved, the new atom 1


def test_near_embedding_merges_into_its_nearest_atom_as_a_running_mean():
    gamma = 0.9
    config = ClusterConfig(capacity=3, insert_probability=1.0, insert_threshold=1.0, count_decay=gamma)
    state = memory([[0, 0], [10, 0], [0, 10]], [3, 5, 1], dist_mean=50.0)
    e = np.array([1.0, 1.0])
    _, state = step(state, jnp.asarray(e), config)  # ||e - f_0||^2 = 2 < kappa d_m^2: merged
    c0 = 3 * gamma
    np.testing.assert_allclose(state.atoms[0], (c0 * np.zeros(2) + e) / (c0 + 1), rtol=1e-6)
    np.testing.assert_allclose(state.counts, [c0 + 1, 5 * gamma, gamma], rtol=1e-6)
    np.testing.assert_array_equal(state.atoms[1:], [[10, 0], [0, 10]])
    atom, count = merge_atom(jnp.array([2.0, 4.0]), jnp.array(3.0), jnp.array([6.0, 0.0]))
    np.testing.assert_allclose(atom, [3.0, 3.0])
    assert float(count) == 4.0


def test_counts_decay_by_gamma_once_per_embedding():
    gamma = 0.8
    config = ClusterConfig(capacity=3, count_decay=gamma, insert_threshold=1e6)  # never far: always merged
    state = memory([[0, 0], [10, 0], [0, 10]], [2, 5, 1], dist_mean=1.0)
    for _ in range(3):
        _, state = step(state, jnp.zeros(2), config)
    c0 = ((2 * gamma + 1) * gamma + 1) * gamma + 1
    np.testing.assert_allclose(state.counts, [c0, 5 * gamma**3, gamma**3], rtol=1e-6)


def test_replacement_picks_low_counts_and_hands_the_count_to_the_nearest_atom():
    gamma = 0.999
    config = ClusterConfig(capacity=3, insert_probability=1.0, insert_threshold=1e-3, count_decay=gamma)
    state = memory([[0, 0], [5, 0], [6, 0]], [100, 1, 100], dist_mean=1.0)  # atom 1's nearest is atom 2
    e = jnp.array([-50.0, 50.0])
    keys = jax.random.split(jax.random.PRNGKey(1), 400)
    each_key = jax.jit(jax.vmap(lambda key: memory_step(dataclasses.replace(state, key=key), e, config)[1]))
    after = each_key(keys)
    replaced = np.asarray(jnp.all(after.atoms == e, axis=-1))  # [keys, M]
    assert np.all(replaced.sum(axis=1) == 1)  # exactly one slot took e (the memory is full)
    assert replaced[:, 1].mean() > 0.98  # P(j = 1) = 1 / (1 + 2e-4)
    rows = replaced[:, 1]
    np.testing.assert_allclose(after.counts[rows], np.tile([100 * gamma, 1, 100 * gamma + gamma], (rows.sum(), 1)),
                               rtol=1e-6)
    assert np.all(np.asarray(after.size) == 3)


def test_choose_replaced_draws_in_proportion_to_inverse_squared_counts():
    counts, in_use = jnp.array([1.0, 2.0, 0.01, 1e-30]), jnp.array([True, True, False, False])
    draws = jax.vmap(lambda k: choose_replaced(counts, in_use, k))(jax.random.split(jax.random.PRNGKey(0), 4000))
    share = np.bincount(np.asarray(draws), minlength=4) / 4000
    np.testing.assert_allclose(share, [0.8, 0.2, 0, 0], atol=0.03)  # 1 : 1/4, free slots never
    tiny = choose_replaced(jnp.array([1e-30, 1.0]), jnp.array([True, True]), jax.random.PRNGKey(0))
    assert int(tiny) == 0  # 1 / c^2 = 1e60 would overflow float32; log space does not


def reference_count(atoms, counts, size, e, dist_mean):
    """N(e) in float64, one atom at a time."""
    total = 0.0
    for f, c in zip(atoms[:size].astype(np.float64), counts[:size]):
        d = float(np.sum((f - e) ** 2))
        if d < dist_mean:
            total += (1 + c) * EPS / (EPS + d / dist_mean)
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_and_count_match_a_numpy_loop(seed):
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(50, 4)).astype(np.float32)
    counts = rng.uniform(0, 20, size=50).astype(np.float32)
    e = rng.normal(size=4).astype(np.float32)
    dist = np.sum((atoms.astype(np.float64) - e) ** 2, axis=1)
    dist_mean = float(np.quantile(dist[:40], 0.3))  # about a third of the atoms in use fall inside
    sq = squared_distances(jnp.asarray(atoms), jnp.asarray(e))
    np.testing.assert_allclose(sq, dist, rtol=1e-5)
    expected_k = np.where(dist < dist_mean, EPS / (EPS + dist / dist_mean), 0.0)
    np.testing.assert_allclose(kernel(sq, jnp.float32(dist_mean), EPS), expected_k, rtol=1e-4, atol=1e-12)
    in_use = jnp.arange(50) < 40
    count = cluster_count(sq, jnp.asarray(counts), in_use, jnp.float32(dist_mean), EPS)
    np.testing.assert_allclose(count, reference_count(atoms, counts, 40, e, dist_mean), rtol=1e-4)


def test_kernel_at_zero_distance_and_zero_dist_mean():
    np.testing.assert_allclose(kernel(jnp.array([0.0, 1.0, 4.0]), jnp.float32(4.0), EPS), [1.0, EPS / (EPS + 0.25), 0])
    np.testing.assert_array_equal(kernel(jnp.array([0.0, 1e-3]), jnp.float32(0.0), EPS), [1.0, 0.0])


@pytest.mark.parametrize("m, k, block", [(50, 10, 8), (7, 7, 128), (300, 3, 16), (5, 2, 1)])
def test_k_nearest_is_exact(m, k, block):
    rng = np.random.default_rng(m)
    values = rng.integers(0, 20, size=m).astype(np.float32)  # ties
    values[rng.random(m) < 0.2] = np.inf  # free slots
    dist, index = jax.jit(k_nearest, static_argnums=(1, 2))(jnp.asarray(values), k, block)
    np.testing.assert_array_equal(dist, np.sort(values)[:k])
    np.testing.assert_array_equal(values[np.asarray(index)], np.sort(values)[:k])
    assert len(set(np.asarray(index).tolist())) == k


def test_dist_mean_starts_as_a_plain_mean_then_averages_exponentially():
    valid = jnp.array([True, True, False])
    mean, n = update_dist_mean(jnp.float32(0), jnp.float32(0), jnp.array([1.0, 3.0, 0.0]), valid, 0.1)
    assert (float(mean), float(n)) == (2.0, 1.0)  # the first update sets it
    mean, n = update_dist_mean(mean, n, jnp.array([4.0, 8.0, 0.0]), valid, 0.1)
    assert (float(mean), float(n)) == (4.0, 2.0)  # weight 1/2
    mean, n = update_dist_mean(mean, jnp.float32(50), jnp.array([14.0, 14.0, 0.0]), valid, 0.1)
    np.testing.assert_allclose(mean, 0.9 * 4 + 0.1 * 14)  # 1/51 < tau: the exponential average
    same = update_dist_mean(mean, n, jnp.array([9.0, 9.0, 9.0]), jnp.zeros(3, bool), 0.1)
    assert float(same[0]) == float(mean) and float(same[1]) == float(n)  # no neighbour: unchanged


def test_reward_falls_as_the_same_state_is_revisited():
    config = ClusterConfig(capacity=8)
    state = init_cluster_memory(config, 2, key=3)
    rewards = []
    for _ in range(20):
        reward, state = step(state, jnp.array([0.5, -0.5]), config)
        rewards.append(float(reward))
    assert rewards[0] == pytest.approx(1 / C)
    assert rewards[1] == pytest.approx(1 / (math.sqrt(2) + C))  # one atom, count 1, K = 1: N = 2
    assert all(b < a for a, b in zip(rewards, rewards[1:]))
    assert int(state.size) == 1


def test_normalised_reward_divides_by_the_running_std():
    config = ClusterConfig()
    zero = jnp.zeros((), jnp.float32)
    stats = RunningStats(zero, zero, zero)
    first, stats = normalise_reward(stats, jnp.float32(5.0), config)
    assert float(first) == 1.0  # no spread yet: its own magnitude
    second, stats = normalise_reward(stats, jnp.float32(1.0), config)
    np.testing.assert_allclose(second, 1.0 / 2.0)  # std of {5, 1} is 2
    third, _ = normalise_reward(stats, jnp.float32(3.0), config)
    np.testing.assert_allclose(third, 3.0 / math.sqrt(8 / 3), rtol=1e-6)


# a memory of 6 atoms that fills by the 8th embedding of the stream below and then replaces atoms
SMALL = ClusterConfig(capacity=6, num_neighbours=3, insert_probability=0.7, insert_threshold=0.3, distance_rate=0.2,
                      reward_window=20)


def test_a_batch_equals_its_embeddings_one_by_one():
    config = SMALL  # repeats (a lattice) merge, other embeddings are mostly far
    rng = np.random.default_rng(0)
    lattice = rng.integers(0, 3, size=(48, 3)).astype(np.float32)
    stream = np.where(rng.random((48, 1)) < 0.5, lattice, rng.normal(size=(48, 3)) * 2).astype(np.float32)
    batched, singly = init_cluster_memory(config, 3, 7), init_cluster_memory(config, 3, 7)
    batch_rewards, single_rewards = [], []
    for chunk in stream.reshape(6, 8, 3):
        rewards, batched = cluster_reward(batched, jnp.asarray(chunk), config)
        batch_rewards.append(np.asarray(rewards))
        for e in chunk:
            reward, singly = cluster_reward(singly, jnp.asarray(e[None]), config)
            single_rewards.append(float(reward[0]))
    np.testing.assert_allclose(np.concatenate(batch_rewards), single_rewards, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(singly)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert int(batched.size) == 6 and int(batched.steps) == 48


def test_cluster_reward_donates_the_memory():
    state = init_cluster_memory(SMALL, 3, key=0)
    atoms = state.atoms
    _, state = cluster_reward(state, jnp.ones((8, 3)), SMALL)  # compiled already by the test above
    assert atoms.is_deleted()


@pytest.mark.parametrize("field, value", [
    ("capacity", 0), ("num_neighbours", 0), ("kernel_epsilon", 0.0), ("pseudo_count_constant", -1.0),
    ("count_decay", 1.5), ("count_decay", 0.0), ("insert_threshold", 0.0), ("insert_probability", 0.0),
    ("insert_probability", 1.1), ("distance_rate", 0.0), ("reward_window", 0), ("reward_std_floor", 0.0),
    ("capacity", 2.5),
])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"ClusterConfig.{field}="):
        ClusterConfig(**{field: value}).validate()
    with pytest.raises(ConfigError, match=f"ClusterConfig.{field}="):
        init_cluster_memory(ClusterConfig(**{field: value}), 4, key=0)


def test_defaults_validate_and_size_the_memory():
    config = ClusterConfig().validate()
    state = init_cluster_memory(config, 32, key=jax.random.key(0))
    assert state.atoms.shape == (50_000, 32) and state.capacity == 50_000
    assert state.key.dtype == jnp.uint32 and state.key.shape == (2,)
    with pytest.raises(ConfigError, match="embedding_size"):
        init_cluster_memory(config, 0, key=0)
