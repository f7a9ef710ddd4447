"""NGU's actors on real EnvPool MiniGrid environments: each environment's episodic memory holds exactly
the observations of its current episode (EnvPool auto-resets at different times), the recorded
prev_intrinsic_reward is 0 at episode starts and equals the intrinsic reward recomputed from the same
parameters and memory, and the per-episode statistics stage counts what the steps say."""


import dataclasses

import jax
import numpy as np
import pytest

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.envpool_env import BatchedEnv
from rillet.actors.episode_stats import episode_stats, summarise_episodes
from rillet.actors.episodic_novelty import init_memory
from rillet.actors.novelty_policy import intrinsic_reward
from rillet.learners.agents import get_agent
from rillet.learners.ngu import NGUConfig
from rillet.errors import CheckpointError
from rillet.pipelines.acting import ActorCarry
from rillet.pipelines.checkpointing import Checkpointer
from rillet.pipelines.stages import Stream

CONFIG = NGUConfig(lstm_size=8, hidden_sizes=(8,), novelty_hidden_sizes=(8,), embedding_size=4, rnd_output_size=4,
                   num_policies=3, memory_capacity=64, burn_in=1, trace_length=3)
ENV = "MiniGrid-Empty-5x5-v0"


def actor_run(num_envs, limit, ticks, seed=0):
    env = BatchedEnv(ENV, num_envs, seed=seed, max_episode_steps=limit)
    agent = get_agent("ngu")
    spec = agent.spec(env.spec, CONFIG)
    params = agent.network(agent.init(jax.random.PRNGKey(seed), spec, CONFIG))
    parts = agent.actor(spec, CONFIG, num_envs, {"epsilon": np.full(num_envs, 0.5, np.float32),
                                                 "policy_index": np.arange(num_envs) % 3})
    states = []

    def policy(p, obs, actor_state, key):  # records the actor state after each tick
        out = parts.policy(p, obs, actor_state, key)
        states.append(jax.tree.map(np.asarray, {"size": out[2]["memory"].size}))
        return out

    steps = list(envpool_actor(env, policy, lambda: params, parts.actor_state, seed=seed, observe=parts.observe,
                               max_ticks=ticks))
    env.close()
    return params, steps, states


@pytest.mark.parametrize("num_envs,limit", [(3, 4), (5, 7)])
def test_memories_hold_exactly_the_current_episode(num_envs, limit):
    _, steps, states = actor_run(num_envs, limit, ticks=4 * limit + 3)
    since_start = np.zeros(num_envs, int)
    for s, state in zip(steps, states):
        since_start = np.where(s["is_first"], 1, since_start + 1)
        np.testing.assert_array_equal(state["size"], np.minimum(since_start, CONFIG.memory_capacity))
    assert sum(int(s["is_first"].sum()) for s in steps) > num_envs, "episodes restarted during the run"


def test_recorded_intrinsic_reward_is_the_recomputed_one():
    params, steps, _ = actor_run(2, 5, ticks=14, seed=3)
    memory = init_memory(2, CONFIG.memory_capacity, CONFIG.embedding_size)
    for s in steps:
        recorded = s["extras"]["prev_intrinsic_reward"]
        assert np.all(recorded[s["is_first"]] == 0.0)
        expected, episodic, memory = intrinsic_reward(params, s["observation"], memory, s["is_first"],
                                                      CONFIG.episodic(), CONFIG.max_multiplier)
        np.testing.assert_allclose(recorded, np.asarray(expected), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s["extras"]["prev_episodic_reward"], np.asarray(episodic), rtol=1e-5, atol=1e-6)
        assert np.all(np.asarray(expected) >= np.asarray(episodic) - 1e-6)  # the multiplier is >= 1
    assert any(np.any(s["extras"]["prev_intrinsic_reward"] > 0) for s in steps)
    np.testing.assert_array_equal(steps[0]["extras"]["policy_index"], [0, 1])


def test_episode_stats_count_returns_lengths_and_observations():
    def step(first, last, reward, obs, j=(0, 1), r_i=(0.0, 0.0)):
        return {"is_first": np.array(first), "is_last": np.array(last), "reward": np.array(reward, np.float32),
                "observation": np.array(obs, np.float32)[:, None],
                "extras": {"policy_index": np.array(j), "prev_intrinsic_reward": np.array(r_i, np.float32),
                           "prev_episodic_reward": np.array(r_i, np.float32) / 2}}

    steps = [step([1, 1], [0, 0], [1.0, 2.0], [0, 5]),
             step([0, 0], [0, 1], [3.0, 0.0], [1, 6], r_i=(0.5, 0.25)),
             step([0, 1], [1, 0], [0.0, 7.0], [0, 9], r_i=(0.75, 0.0))]
    ended = []
    assert len(list(Stream(steps) | episode_stats(ended.append))) == 3
    assert ended == [
        {"policy_index": 1, "return": 2.0, "length": 1, "intrinsic_return": 0.25, "episodic_return": 0.125,
         "distinct_observations": 2, "distinct_observations_total": 4},
        {"policy_index": 0, "return": 4.0, "length": 2, "intrinsic_return": 1.25, "episodic_return": 0.625,
         "distinct_observations": 2, "distinct_observations_total": 4}]  # env 1's 9 comes after env 0's end
    summary = summarise_episodes(ended)
    assert summary["return_j0"] == 4.0 and summary["return_j1"] == 2.0 and summary["episode_return"] == 3.0
    assert summary["distinct_observations_total"] == 4.0
    assert summarise_episodes([]) == {}


def test_novelty_networks_are_refreshed_every_sync_period_ticks():
    """The Q-network is the newest each tick; the novelty networks scoring r_i change only every
    novelty_sync_period ticks (recomputed here with the version each tick must have used)."""
    config = dataclasses.replace(CONFIG, novelty_sync_period=3)
    env = BatchedEnv(ENV, 2, seed=4)
    agent = get_agent("ngu")
    spec = agent.spec(env.spec, config)
    versions = [agent.network(agent.init(jax.random.PRNGKey(k), spec, config)) for k in (11, 12)]
    parts = agent.actor(spec, config, 2, {"epsilon": np.full(2, 0.5, np.float32), "policy_index": np.zeros(2)})
    tick = 0

    def params_source():  # version 0 at tick 0, version 1 afterwards
        return versions[min(tick, 1)]

    steps = []
    for s in envpool_actor(env, parts.policy, params_source, parts.actor_state, seed=4, observe=parts.observe,
                           max_ticks=8):
        steps.append(s)
        tick += 1
    env.close()
    memory = init_memory(2, config.memory_capacity, config.embedding_size)
    for t, s in enumerate(steps):
        scoring = versions[0] if t < 3 else versions[1]  # refreshed at ticks 0, 3, 6
        expected, _, memory = intrinsic_reward(scoring, s["observation"], memory, s["is_first"], config.episodic(),
                                            config.max_multiplier)
        np.testing.assert_allclose(s["extras"]["prev_intrinsic_reward"], np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_evaluator_acts_greedily_as_the_chosen_policy():
    spec = get_agent("ngu").spec(BatchedEnv(ENV, 1, seed=0).spec, CONFIG)
    for j in (0, 2):
        state = get_agent("ngu").evaluator(spec, dataclasses.replace(CONFIG, eval_policy_index=j), 3).actor_state
        assert np.asarray(state["policy_index"]).tolist() == [j, j, j]
        assert np.asarray(state["epsilon"]).tolist() == [0.0, 0.0, 0.0]


def test_actor_resumes_bit_for_bit_from_a_checkpoint(tmp_path):
    """What an NGU actor carries across episodes (d_m^2 per environment) goes through a real orbax
    checkpoint; an actor resumed from it acts exactly as the original one continuing, both starting new
    episodes (a resumed run's episodes start anew: memories, core state and previous inputs are not
    carried). A fresh actor, without the carry, scores the same observations differently."""
    agent = get_agent("ngu")
    spec = agent.spec(BatchedEnv(ENV, 1, seed=0).spec, CONFIG)
    params = agent.network(agent.init(jax.random.PRNGKey(6), spec, CONFIG))
    exploration = {"epsilon": np.full(3, 0.3, np.float32), "policy_index": np.arange(3)}

    def run(actor_state, env_seed, ticks):
        parts, latest = agent.actor(spec, CONFIG, 3, exploration), {}
        env = BatchedEnv(ENV, 3, seed=env_seed, max_episode_steps=5)
        steps = list(envpool_actor(env, parts.policy, lambda: params, actor_state, seed=env_seed, observe=parts.observe,
                                   max_ticks=ticks, on_actor_state=lambda s: latest.update(state=s)))
        env.close()
        return steps, latest["state"]

    parts = agent.actor(spec, CONFIG, 3, exploration)
    _, original = run(parts.actor_state, 5, 12)
    carried = parts.carry(original)
    assert np.all(np.asarray(carried["dist_count"]) > 0)
    ckpt = Checkpointer(str(tmp_path / "ckpt"), {"test": 1})
    ckpt.save(1, {"w": np.zeros(2, np.float32)}, {}, actor=jax.tree.map(np.array, carried))
    restored = ckpt.restore_actor()
    ckpt.close()
    resumed = ActorCarry(restored).start(agent.actor(spec, CONFIG, 3, exploration))

    continued, after = run(original, 9, 8)
    again, after_resume = run(resumed, 9, 8)
    fresh, _ = run(agent.actor(spec, CONFIG, 3, exploration).actor_state, 9, 8)
    for a, b in zip(continued, again):
        np.testing.assert_array_equal(a["action"], b["action"])
        np.testing.assert_array_equal(a["extras"]["prev_intrinsic_reward"], b["extras"]["prev_intrinsic_reward"])
    for k in ("dist_count", "dist_mean"):
        np.testing.assert_array_equal(parts.carry(after)[k], parts.carry(after_resume)[k])
    assert any(not np.array_equal(a["extras"]["prev_intrinsic_reward"], f["extras"]["prev_intrinsic_reward"])
               for a, f in zip(continued, fresh)), "the carried d_m^2 changes the intrinsic reward"


def test_resume_refuses_a_carry_for_other_actors():
    agent = get_agent("ngu")
    spec = agent.spec(BatchedEnv(ENV, 1, seed=0).spec, CONFIG)
    parts = agent.actor(spec, CONFIG, 2, {"epsilon": np.zeros(2, np.float32), "policy_index": np.zeros(2)})
    with pytest.raises(CheckpointError, match="num-envs"):
        ActorCarry({"dist_count": np.ones(3, np.float32), "dist_mean": np.ones(3, np.float32)}).start(parts)
