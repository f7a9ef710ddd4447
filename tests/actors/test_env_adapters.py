"""The dm_env and gymnasium adapters and the env-id front door against EnvPool's semantics, on real environments."""

import dataclasses

import dm_env
import gymnasium
import numpy as np
import pytest
from dm_env import specs

from rillet.actors.envpool_env import BatchedEnv
from rillet.actors.environments import (check_env_id, env_step_spec, make_batched_env, register_environment,
                                        unregister_environment)
from rillet.actors.gymnasium_batch import GymnasiumBatch, GymnasiumVectorBatch
from rillet.errors import ConfigError, EnvironmentIdError

LIMIT = 12


def run(env, actions):
    """actions [T, B] -> the reset output and T step outputs."""
    outs = [env.reset()]
    outs += [env.step(a) for a in actions]
    return outs


def episodes(outs, b):
    """[(length, ended by termination)] of env b's finished episodes, checking the per-step rules."""
    found, length = [], 0
    for prev, out in zip(outs, outs[1:]):
        assert out.first[b] == prev.last[b]  # auto-reset exactly on the call after a last step
        assert out.terminal[b] == (out.last[b] and out.discount[b] == 0.0)
        if out.first[b]:
            assert out.reward[b] == 0.0 and out.discount[b] == 1.0 and not out.last[b]
            length = 0
            continue
        length += 1
        assert out.discount[b] == (0.0 if out.terminal[b] else 1.0)
        if out.last[b]:
            found.append((length, bool(out.terminal[b])))
    return found


def test_gymnasium_cartpole_has_envpools_step_structure():
    # envs 0, 1 alternate left/right (balanced: truncated at LIMIT); envs 2, 3 always push right (fall over).
    actions = np.array([[t % 2, (t + 1) % 2, 1, 1] for t in range(40)], np.int32)
    ours = make_batched_env("gymnasium/CartPole-v1", 4, seed=3, max_episode_steps=LIMIT, num_threads=2)
    pool = BatchedEnv("CartPole-v1", 4, seed=3, max_episode_steps=LIMIT)
    assert dataclasses.replace(ours.spec, env_id="") == dataclasses.replace(pool.spec, env_id="")
    assert ours.spec == env_step_spec("gymnasium/CartPole-v1")
    for env in (ours, pool):
        outs = run(env, actions)
        assert all(o.observation.shape == (4, 4) and o.observation.dtype == np.float32 for o in outs)
        for b in (0, 1):
            found = episodes(outs, b)
            assert found and all(ended == (length < LIMIT) for length, ended in found)
            assert (LIMIT, False) in found  # a truncation: last, discount 1, not terminal
        for b in (2, 3):
            found = episodes(outs, b)
            assert len(found) >= 3 and all(ended and length < LIMIT for length, ended in found)
        env.close()


def deep_sea_right(observation, mapping):
    """The 'right' action [B] in each env's current cell of observation [B, N, N] (bsuite's action mapping)."""
    cells = [np.unravel_index(np.argmax(o), o.shape) for o in observation]
    return np.array([mapping[r, c] for r, c in cells], np.int32)


def test_deep_sea_episode_length_return_and_auto_reset():
    from bsuite import sweep
    from bsuite.environments.deep_sea import DeepSea

    size = 10
    mapping = DeepSea(**sweep.SETTINGS["deep_sea/0"])._action_mapping
    env = make_batched_env("bsuite/deep_sea/0", 2, seed=0)
    assert env.spec.observation.shape == (size, size) and env.spec.num_actions == 2
    out = env.reset()
    returns = np.zeros(2)
    for t in range(size):
        right = deep_sea_right(out.observation, mapping)
        action = right if t else np.array([right[0], 1 - right[1]])  # env 1 goes left once, at the top
        out = env.step(action)
        returns += out.reward
        assert out.last.tolist() == [t == size - 1] * 2
    np.testing.assert_allclose(returns, [1.0 - 0.01, -0.01 * (size - 1) / size], rtol=1e-5)
    assert out.terminal.all() and (out.discount == 0.0).all()
    out = env.step(np.zeros(2, np.int32))
    assert out.first.all() and (out.reward == 0.0).all() and (out.discount == 1.0).all()
    assert (out.observation[:, 0, 0] == 1.0).all() and out.observation.sum() == 2.0


def test_bsuite_ids_follow_bsuites_sweep():
    assert env_step_spec("bsuite/deep_sea/10").observation.shape == (30, 30)
    with pytest.raises(ConfigError, match="environment arguments"):
        make_batched_env("bsuite/deep_sea/0", 1, seed=0, no_such_setting=1)


class Drift(dm_env.Environment):
    """A user's environment: reward = the action; seed even: terminates after 3 steps, odd: truncated after 4."""

    def __init__(self, seed):
        self._length, self._terminates, self._t = 3 + seed % 2, seed % 2 == 0, 0

    def reset(self):
        self._t = 0
        return dm_env.restart(self._observation())

    def step(self, action):
        self._t += 1
        reward = float(action[0])
        if self._t < self._length:
            return dm_env.transition(reward, self._observation())
        end = dm_env.termination if self._terminates else dm_env.truncation
        return end(reward, self._observation())

    def _observation(self):
        return {"velocity": np.array([1.0, 2.0]), "position": np.array([float(self._t)])}

    def observation_spec(self):
        return {"velocity": specs.Array((2,), np.float64), "position": specs.Array((1,), np.float64)}

    def action_spec(self):
        return specs.BoundedArray((1,), np.float32, minimum=-2.0, maximum=2.0)


def test_registered_dm_env_works_by_name():
    register_environment("drift", Drift)
    try:
        spec = env_step_spec("drift")
        assert (spec.observation.shape, spec.observation.dtype, spec.action.shape, spec.num_actions) == \
            ((3,), "float32", (1,), None)
        assert env_step_spec("drift", (0,)).observation.shape == (1,)
        env = make_batched_env("drift", 2, seed=0, num_threads=4)
        outs = run(env, np.full((10, 2, 1), 0.5, np.float32))
        assert outs[1].observation.tolist() == [[1.0, 1.0, 2.0]] * 2  # sorted keys: position, velocity
        np.testing.assert_allclose(outs[1].reward, [1.0, 1.0])  # 0.5 in [-1, 1] -> 1.0 in [-2, 2]
        assert episodes(outs, 0)[:2] == [(3, True), (3, True)]
        assert episodes(outs, 1)[:2] == [(4, False), (4, False)]
        limited = run(make_batched_env("drift", 1, seed=1, max_episode_steps=2), np.zeros((4, 1, 1)))
        assert episodes(limited, 0) == [(2, False)]
        with pytest.raises(ConfigError, match="already registered"):
            register_environment("drift", Drift)
    finally:
        unregister_environment("drift")
    with pytest.raises(EnvironmentIdError, match="register_environment"):
        check_env_id("drift")


def test_registered_gymnasium_factory_and_a_vector_env():
    register_environment("my-cartpole", lambda **kw: gymnasium.make("CartPole-v1", **kw), api="gymnasium")
    try:
        looped = make_batched_env("my-cartpole", 3, seed=5, max_episode_steps=LIMIT)
    finally:
        unregister_environment("my-cartpole")
    vector = GymnasiumVectorBatch(gymnasium.make_vec("CartPole-v1", 3, vectorization_mode="sync",
                                                     max_episode_steps=LIMIT), seed=5)
    actions = np.array([[t % 2, 1, 0] for t in range(30)], np.int32)
    for a, b in zip(run(looped, actions), run(vector, actions)):  # both seed env i with 5 + i: equal outputs
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert vector.spec == dataclasses.replace(looped.spec, env_id="CartPole-v1")
    same_step = {"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP}
    with pytest.raises(ConfigError, match="NEXT_STEP"):
        GymnasiumVectorBatch(gymnasium.make_vec("CartPole-v1", 2, vectorization_mode="sync", vector_kwargs=same_step),
                             seed=0)


def test_evaluation_takes_any_env_id():
    from rillet.evals.returns import episode_returns

    def left(params, observation, state, key):
        return np.zeros(len(observation), np.int32), {}, state

    returns = episode_returns("bsuite/deep_sea/0", left, None, num_episodes=3)
    assert returns.shape == (3,) and (returns < 0.5).all()  # no treasure without going right at every row


@pytest.mark.parametrize("env_id, match", [
    ("bsuite/deep_sea/99", "deep_sea/0-20"),
    ("bsuite/no_such_experiment/0", "bsuite's sweep"),
    ("gymnasium/CartPol-v1", "CartPole-v1"),
    ("my-unregistered-env", "register_environment"),
])
def test_unknown_ids_say_what_to_do(env_id, match):
    with pytest.raises(EnvironmentIdError, match=match):
        check_env_id(env_id)
    with pytest.raises(EnvironmentIdError, match=match):
        make_batched_env(env_id, 1, seed=0)


@pytest.mark.parametrize("env_id", ["bsuite/deep_sea/0", "gymnasium/CartPole-v1", "CartPole-v1"])
def test_num_envs_below_one_is_a_config_error(env_id):
    with pytest.raises(ConfigError, match="num_envs"):
        make_batched_env(env_id, 0, seed=0)
