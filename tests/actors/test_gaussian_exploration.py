"""TD3's actors: a uniform warm-up, then Gaussian noise around the deterministic action, clipped to
[-1, 1], recording log mu(a|x) of the taken action; the evaluator acts deterministically."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.actors.exploration import GaussianNoise
from rillet.actors.policies import deterministic, gaussian_actor_state, gaussian_exploration
from rillet.errors import ConfigError


def mean_action(params, observation):
    return jnp.tanh(observation[:, :2] * params)


def test_warmup_is_uniform_then_gaussian_around_the_mean_with_its_log_density():
    policy = gaussian_exploration(mean_action)
    state = gaussian_actor_state(GaussianNoise(0.1).parameters(4)["noise_scale"], warmup_steps=6)  # 2 per env
    obs = jnp.full((4, 3), 0.5)
    mean = np.tanh(0.5)
    for tick in range(4):
        action, extras, state = policy(1.0, obs, state, jax.random.PRNGKey(tick))
        action, log_prob = np.asarray(action), np.asarray(extras["behaviour_log_prob"])
        assert action.shape == (4, 2) and (np.abs(action) <= 1).all()
        if tick < 2:
            np.testing.assert_allclose(log_prob, -2 * math.log(2), rtol=1e-6)
        else:
            z = (action - mean) / 0.1
            expected = (-0.5 * z ** 2 - math.log(0.1) - 0.5 * math.log(2 * math.pi)).sum(-1)
            np.testing.assert_allclose(log_prob, expected, rtol=1e-5)
            assert np.abs(action - mean).max() < 0.6
        np.testing.assert_array_equal(np.asarray(state["warmup_left"]), max(0, 1 - tick))


def test_deterministic_evaluator_and_bad_noise():
    action, extras, _ = deterministic(mean_action)(2.0, jnp.ones((3, 2)), None, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(action), np.tanh(2.0), rtol=1e-6)
    assert extras == {}
    with pytest.raises(ConfigError, match="noise scale"):
        GaussianNoise(0.0)
