"""The PAC acting policy's three actions per dimension (sample / mode / mean) on a real two-task Perceiver."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.actors.policies import discretised_policy
from rillet.learners.networks import perceiver

BINS = 5  # centres -1, -0.5, 0, 0.5, 1


@pytest.fixture(scope="module")
def network():
    # task 0: obs 4 / act 2; task 1: obs 3 / act 1
    return perceiver.PerceiverActorCritic(perceiver.get_config("test"), (4, 3), (2, 1), BINS, 11,
                                          jax.random.PRNGKey(0))


def _probs(network, obs, task_id):
    obs = jnp.pad(jnp.asarray(obs, jnp.float32), ((0, 0), (0, 4 - obs.shape[1])))
    tasks = jnp.full((obs.shape[0],), task_id, jnp.int32)
    return np.asarray(jax.nn.softmax(network.policy_logits(network.encode(obs, tasks)), -1))  # [B, D_max, K]


@pytest.mark.parametrize("task_id, obs_size, act_size", [(0, 4, 2), (1, 3, 1)])
def test_mode_mean_and_sample_against_the_policy_distribution(network, task_id, obs_size, act_size):
    obs = np.random.default_rng(task_id).normal(size=(6, obs_size)).astype(np.float32)
    probs = _probs(network, obs, task_id)[:, :act_size]  # [6, A, K]
    centres = np.linspace(-1.0, 1.0, BINS)
    key = jax.random.PRNGKey(1)

    mode, extras, _ = discretised_policy(task_id, BINS, "mode")(network, obs, None, key)
    assert mode.shape == (6, act_size) and np.all(np.asarray(extras["task_id"]) == task_id)
    np.testing.assert_allclose(mode, centres[probs.argmax(-1)], atol=1e-6)

    mean, _, _ = discretised_policy(task_id, BINS, "mean")(network, obs, None, key)
    np.testing.assert_allclose(mean, probs @ centres, atol=1e-5)
    assert not np.allclose(mean, mode)  # an untrained policy is spread: its mean is no bin centre

    sample, _, _ = discretised_policy(task_id, BINS, "sample")(network, obs, None, key)
    assert sample.shape == (6, act_size)
    assert np.all(np.min(np.abs(np.asarray(sample)[..., None] - centres), -1) < 1e-6)  # bin centres only


def test_sampled_actions_follow_the_distribution(network):
    obs = np.zeros((2000, 3), np.float32)  # one state, many draws
    probs = _probs(network, obs[:1], 1)[0, 0]
    sample, _, _ = discretised_policy(1, BINS, "sample")(network, obs, None, jax.random.PRNGKey(2))
    freq = np.bincount(np.round((np.asarray(sample)[:, 0] + 1) * (BINS - 1) / 2).astype(int), minlength=BINS) / 2000
    np.testing.assert_allclose(freq, probs, atol=0.04)


def test_unknown_action_is_a_clear_error():
    with pytest.raises(ValueError, match="'argmax'.*'sample', 'mode', 'mean'"):
        discretised_policy(0, BINS, "argmax")
