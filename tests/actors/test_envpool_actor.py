"""The EnvPool actor loop at episode boundaries: is_first/is_last/is_terminal and truncation."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.envpool_env import BatchedEnv, check_env_id, env_step_spec
from rillet.actors.exploration import apex_epsilons
from rillet.actors.policies import random_policy
from rillet.datasets.specs import ArraySpec
from rillet.errors import ConfigError, EnvironmentIdError


def collect(env, ticks, seed=0, policy=None):
    policy = policy or random_policy(env.spec.num_actions)
    return list(envpool_actor(env, policy, lambda: None, None, seed=seed, max_ticks=ticks))


def episodes_of(steps, i):
    """Splits env i's stream into complete episodes (lists of per-step dicts)."""
    eps, cur = [], None
    for s in steps:
        step = {k: s[k][i] for k in ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal")}
        if step["is_first"]:
            assert cur is None, "an episode started before the previous one ended"
            cur = []
        assert cur is not None, "a step arrived outside an episode"
        cur.append(step)
        if step["is_last"]:
            eps.append(cur)
            cur = None
    return eps


@settings(max_examples=6, deadline=None)
@given(num_envs=st.integers(1, 5), limit=st.integers(4, 30), seed=st.integers(0, 1000))
def test_episode_boundaries_with_auto_reset(num_envs, limit, seed):
    env = BatchedEnv("CartPole-v1", num_envs, seed=seed, max_episode_steps=limit)
    steps = collect(env, 4 * limit + 10, seed=seed)
    for i in range(num_envs):
        eps = episodes_of(steps, i)
        assert eps, "every env finishes at least one episode in 4x its step limit"
        for ep in eps:
            T = len(ep) - 1
            assert ep[0]["is_first"] and ep[-1]["is_last"]
            assert not any(s["is_first"] for s in ep[1:]) and not any(s["is_last"] for s in ep[:-1])
            assert 1 <= T <= limit
            # CartPole pays 1 per action; the last step (action ignored by EnvPool) pays nothing.
            np.testing.assert_array_equal([s["reward"] for s in ep], [1.0] * T + [0.0])
            assert ep[-1]["discount"] == 0.0
            x, theta = ep[-1]["observation"][0], ep[-1]["observation"][2]
            out_of_bounds = max(abs(x) / 2.4, abs(theta) / (12 * 2 * np.pi / 360))  # > 1: CartPole terminates
            if ep[-1]["is_terminal"]:  # the pole fell or the cart left the track
                assert ep[-2]["discount"] == 0.0 and out_of_bounds > 1 - 1e-5
            else:  # truncated at the step limit: bootstrapping continues through step T-1. (EnvPool reports
                # a fall exactly at the limit as a truncation too: terminated = done & ~trunc.)
                assert T == limit and ep[-2]["discount"] == 1.0
            assert all(s["discount"] == 1.0 for s in ep[:-2])
            assert np.abs(ep[0]["observation"]).max() <= 0.05, "an episode starts from a fresh reset state"


def test_last_step_action_is_ignored_by_envpool():
    """Whatever action is sent with an is_last step, the next step is the same reset state."""
    outs = []
    for forced in (0, 1):
        env = BatchedEnv("CartPole-v1", 1, seed=3, max_episode_steps=5)
        out = env.reset()
        obs_after_last = None
        for _ in range(6):
            action = np.array([forced if out.last[0] else 0])
            nxt = env.step(action)
            if out.last[0]:
                obs_after_last = nxt.observation[0]
                assert nxt.first[0] and nxt.reward[0] == 0.0
            out = nxt
        assert obs_after_last is not None, "the 5-step limit ends an episode within 6 steps"
        outs.append(obs_after_last)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_gymnasium_and_dm_apis_give_the_same_steps():
    streams = []
    for api in ("gymnasium", "dm"):
        env = BatchedEnv("CartPole-v1", 3, seed=7, api=api, max_episode_steps=12)
        streams.append(collect(env, 40, seed=1))
        assert env.spec == env_step_spec("CartPole-v1")
    assert len(streams[0]) == len(streams[1]) == 40
    for a, b in zip(*streams):
        for k in ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_specs_from_envpool():
    cart = env_step_spec("CartPole-v1")
    assert cart.observation.shape == (4,) and cart.observation.dtype == "float32"
    assert cart.action.shape == () and cart.num_actions == 2
    pong = env_step_spec("Pong-v5")
    assert pong.observation.shape == (4, 84, 84) and pong.observation.dtype == "uint8"
    assert pong.num_actions == 6


def test_unknown_env_id_lists_close_matches():
    with pytest.raises(EnvironmentIdError, match="CartPole-v1"):
        check_env_id("Cartpole-v1")
    with pytest.raises(EnvironmentIdError, match="envpool.list_all_envs"):
        BatchedEnv("NoSuchGame-v0", 2, seed=0)


def test_bad_env_config():
    with pytest.raises(ConfigError, match="num_envs"):
        BatchedEnv("CartPole-v1", 0, seed=0)


def test_apex_epsilons_ladder():
    eps = apex_epsilons(8, 0.4, 7.0)
    assert eps.shape == (8,) and eps.dtype == np.float32
    np.testing.assert_allclose(eps[0], 0.4)
    np.testing.assert_allclose(eps[-1], 0.4 ** 8, rtol=1e-5)
    assert np.all(np.diff(eps) < 0)


def test_observation_indices_hide_entries():
    full = BatchedEnv("CartPole-v1", 2, seed=4)
    part = BatchedEnv("CartPole-v1", 2, seed=4, observation_indices=(0, 2))
    assert part.spec.observation.shape == (2,) and part.spec == env_step_spec("CartPole-v1", (0, 2))
    a, b = full.reset(), part.reset()
    np.testing.assert_array_equal(a.observation[:, [0, 2]], b.observation)
    for _ in range(5):
        a, b = full.step(np.array([1, 0])), part.step(np.array([1, 0]))
        np.testing.assert_array_equal(a.observation[:, [0, 2]], b.observation)
    with pytest.raises(ConfigError, match="observation_indices"):
        BatchedEnv("CartPole-v1", 1, seed=0, observation_indices=(7,))


def test_dm_control_dict_observations_are_flattened_in_both_apis():
    spec = env_step_spec("PointMassEasy-v1")
    assert spec.observation == ArraySpec((4,), "float32") and spec.action == ArraySpec((2,), "float32")
    assert spec.num_actions is None
    outs = []
    for api in ("gymnasium", "dm"):
        env = BatchedEnv("PointMassEasy-v1", 2, seed=1, api=api)
        env.reset()
        out = env.step(np.full((2, 2), 0.5, np.float32))
        assert out.observation.shape == (2, 4) and out.observation.dtype == np.float32
        outs.append(out.observation)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_continuous_actions_are_rescaled_from_unit_box():
    """Pendulum's torque lies in [-2, 2]: action 1.0 must act like torque 2.0 in raw EnvPool."""
    import envpool

    ours = BatchedEnv("Pendulum-v1", 1, seed=3)
    raw = envpool.make("Pendulum-v1", env_type="gymnasium", num_envs=1, batch_size=1, seed=3)
    ours.reset()
    raw.reset()
    for a in (1.0, -1.0, 0.5):
        out = ours.step(np.array([[a]], np.float32))
        obs, *_ = raw.step(np.array([[2.0 * a]], np.float32))
        np.testing.assert_allclose(out.observation, obs, rtol=1e-6)


def test_random_policy_for_continuous_actions():
    env = BatchedEnv("PointMassEasy-v1", 3, seed=0)
    steps = collect(env, 5, policy=random_policy(None, env.spec.action.shape))
    actions = np.stack([s["action"] for s in steps])
    assert actions.shape == (5, 3, 2) and actions.dtype == np.float32
    assert (np.abs(actions) <= 1.0).all() and actions.std() > 0.1
