"""From EnvPool steps through the Reverb n-step writer and sampler into the DQN learner: the
learner's targets equal an n-step double-Q value computed by hand from the raw episodes, and
replay items that do not fit the learner's spec are refused with a clear error."""

import dataclasses

import equinox as eqx
import jax
import numpy as np
import pytest
import reverb

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.envpool_env import BatchedEnv, env_step_spec
from rillet.actors.policies import random_policy
from rillet.datasets import reverb_sampler, reverb_tables
from rillet.datasets.reverb_writer import NStepTransitionWriter
from rillet.errors import SpecMismatchError
from rillet.learners import dqn
from rillet.pipelines.config import ActorConfig, OnlineConfig, ReplayConfig
from rillet.pipelines.online import serve_replay, train_online

N, GAMMA = 3, 0.9


def raw_episodes(steps, num_envs):
    """Per env, complete episodes as lists of per-step dicts."""
    out = []
    for i in range(num_envs):
        cur = None
        for s in steps:
            step = {k: s[k][i] for k in ("observation", "action", "reward", "discount", "is_first", "is_last")}
            if step["is_first"]:
                cur = []
            cur.append(step)
            if step["is_last"]:
                out.append(cur)
    return out


def hand_target(episode, t, online, target):
    """y = sum_k gamma^k (prod d) r_{t+k} + gamma^m (prod d) Q_target(o_{t+m}, argmax_a Q_online(o_{t+m}, a))."""
    T = len(episode) - 1
    m = min(N, T - t)
    ret, disc = 0.0, 1.0
    for k in range(m):
        ret += disc * float(episode[t + k]["reward"])
        disc *= GAMMA * float(episode[t + k]["discount"])
    obs = np.asarray(episode[t + m]["observation"])[None]
    q_sel = np.asarray(dqn.q_values(online, obs))[0]
    q_val = np.asarray(dqn.q_values(target, obs))[0]
    return ret + disc * q_val[int(np.argmax(q_sel))]


def test_learner_targets_equal_hand_computed_nstep_double_q():
    env = BatchedEnv("CartPole-v1", 2, seed=5, max_episode_steps=9)
    spec = env.spec
    steps = list(envpool_actor(env, random_policy(2), lambda: None, None, seed=1, max_ticks=60))
    server = reverb.Server([reverb.Table.queue("q", 10_000, signature=reverb_tables.transition_signature(spec))])
    address = f"127.0.0.1:{server.port}"
    with NStepTransitionWriter(address, "q", spec, n=N, gamma=GAMMA) as writer:
        for s in steps:
            writer.write(s)
    episodes = raw_episodes(steps, 2)
    expected_count = sum(len(ep) - 1 for ep in episodes)
    assert writer.items_written == expected_count
    batch = next(reverb_sampler.sample_batches(address, "q", expected_count, num_workers_per_iterator=1,
                                               rate_limiter_timeout_ms=1_000))["data"]
    config = dqn.DQNConfig(hidden_sizes=(16,))
    state = dqn.init(jax.random.PRNGKey(0), spec, config)
    other = dqn.init(jax.random.PRNGKey(1), spec, config)
    state = eqx.tree_at(lambda s: s.target, state, other.online)  # online != target: double Q matters
    dqn.check_batch_spec(spec, batch)
    targets = np.asarray(dqn.td_targets(state, batch, config))

    by_obs = {}
    for ep in episodes:
        for t in range(len(ep) - 1):
            by_obs[np.asarray(ep[t]["observation"]).tobytes()] = (ep, t)
    assert len(by_obs) == expected_count
    for j in range(expected_count):
        ep, t = by_obs[batch["observation"][j].tobytes()]
        np.testing.assert_allclose(targets[j], hand_target(ep, t, state.online, state.target), rtol=1e-5, atol=1e-5)
    server.stop()


def test_replay_items_that_do_not_fit_the_learner_are_refused(tmp_path):
    cart = env_step_spec("CartPole-v1")
    template = dqn.init(jax.random.PRNGKey(0), cart, dqn.DQNConfig()).online
    base = OnlineConfig(env_id="CartPole-v1", progress=False, run_dir=str(tmp_path / "r"))
    server = serve_replay(base, cart, template)
    try:
        learner_for_acrobot = dataclasses.replace(
            base, env_id="Acrobot-v1", local_actors=False,
            replay=ReplayConfig(address=f"127.0.0.1:{server.port}"), actor=ActorConfig(num_envs=2))
        with pytest.raises(SpecMismatchError, match="observation"):
            train_online(learner_for_acrobot)
    finally:
        server.stop()
    batch = {"observation": np.zeros((4, 4), np.float32), "action": np.zeros(4, np.int32),
             "reward": np.zeros(4, np.float32), "discount": np.zeros(4, np.float32),
             "next_observation": np.zeros((4, 4), np.float32)}
    with pytest.raises(SpecMismatchError, match="observation"):
        dqn.check_batch_spec(env_step_spec("Acrobot-v1"), batch)


def test_importance_weights_correct_prioritized_sampling():
    from rillet.datasets.replay_stage import importance_weights

    p = np.array([0.5, 0.25, 0.25])
    w = importance_weights(p, table_size=3, beta=1.0)
    # (3 * p) ** -1 = [2/3, 4/3, 4/3], normalised by the max 4/3.
    np.testing.assert_allclose(w, [0.5, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(importance_weights(p, 3, 0.0), [1.0, 1.0, 1.0])
