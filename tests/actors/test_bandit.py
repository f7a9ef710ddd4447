"""Agent57's sliding-window UCB bandit on synthetic reward sequences: every arm is pulled once first,
it concentrates on the best arm within its window, and it follows a change of the best arm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.actors.bandit import BanditConfig, greedy_arm, init_bandit, record_returns, select_arms, window_means
from rillet.errors import ConfigError


def play(means_at, episodes, num_envs=4, num_arms=5, config=BanditConfig(window=40, epsilon=0.1, beta=1.0), seed=0):
    """Runs the bandits for `episodes` episodes; means_at(e) [N] gives the arms' mean reward at episode e
    (rewards are those means plus N(0, 0.1) noise). Returns the arms pulled [episodes, B] and the state."""
    state = init_bandit(num_envs, num_arms, config.window, jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    choose, done = jnp.ones(num_envs, bool), jnp.ones(num_envs, bool)
    select = jax.jit(select_arms, static_argnums=1)
    record = jax.jit(record_returns)
    pulled = []
    for e in range(episodes):
        arm, state = select(state, config, choose)
        reward = np.asarray(means_at(e))[np.asarray(arm)] + rng.normal(0, 0.1, num_envs)
        state = record(state, arm, reward, done)
        pulled.append(np.asarray(arm))
    return np.stack(pulled), state


def test_every_arm_is_pulled_once_first():
    pulled, _ = play(lambda e: np.arange(5.0), 5)
    np.testing.assert_array_equal(pulled, np.tile(np.arange(5)[:, None], (1, 4)))


def test_concentrates_on_the_best_arm_of_a_stationary_sequence():
    pulled, state = play(lambda e: np.array([0.0, 0.2, 1.0, 0.4, 0.1]), 120)
    late = pulled[60:]
    assert np.mean(late == 2) > 0.8  # epsilon 0.1: about 0.92 expected
    assert int(greedy_arm(state)) == 2


def test_follows_a_change_of_the_best_arm():
    means = lambda e: np.array([1.0, 0.0, 0.0, 0.0, 0.3]) if e < 80 else np.array([0.0, 0.0, 0.0, 0.0, 0.3]) + \
        np.array([0, 0, 0, 1.2, 0])
    pulled, state = play(means, 200)
    assert np.mean(pulled[50:80] == 0) > 0.75
    assert np.mean(pulled[160:] == 3) > 0.75  # within the window of 40 pulls after the change
    assert int(greedy_arm(state)) == 3


def test_only_the_chosen_and_the_done_move():
    config = BanditConfig(window=3, epsilon=0.0)
    state = init_bandit(2, 3, 3, jax.random.PRNGKey(1))
    arm, state = select_arms(state, config, jnp.array([True, False]))
    np.testing.assert_array_equal(arm, [0, -1])
    state = record_returns(state, jnp.array([0, 2]), jnp.array([5.0, 7.0]), jnp.array([True, False]))
    np.testing.assert_array_equal(state.pulls, [1, 0])
    mu, n = window_means(state)
    np.testing.assert_allclose(mu, [[5.0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(n, [[1.0, 0, 0], [0, 0, 0]])


def test_window_forgets_the_oldest_pull():
    config = BanditConfig(window=2, epsilon=0.0)
    state = init_bandit(1, 2, 2, jax.random.PRNGKey(2))
    for arm, reward in ((0, 1.0), (1, 2.0), (1, 4.0)):
        state = record_returns(state, jnp.array([arm]), jnp.array([reward]), jnp.array([True]))
    mu, n = window_means(state)  # the pull of arm 0 fell out of the window of 2
    np.testing.assert_allclose(n, [[0.0, 2.0]])
    np.testing.assert_allclose(mu, [[0.0, 3.0]])
    arm, _ = select_arms(state, config, jnp.array([True]))
    assert int(arm[0]) == 0  # an arm absent from the window scores +inf


@pytest.mark.parametrize("field,value", [("window", 0), ("epsilon", 1.5), ("beta", -1.0)])
def test_bad_options_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=field):
        BanditConfig(**{field: value}).validate()
