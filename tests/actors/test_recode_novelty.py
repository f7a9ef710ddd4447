"""RECODE's actors on real EnvPool MiniGrid environments: one cluster memory for all environments,
never reset at episode ends; the recorded intrinsic reward is the cluster reward recomputed from the
same embedding and memory (0 at episode starts); the memory survives a checkpoint whole."""

import jax
import numpy as np

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.cluster_memory import cluster_reward
from rillet.actors.envpool_env import BatchedEnv
from rillet.learners.agents import get_agent
from rillet.learners.inverse_dynamics import embed
from rillet.learners.recode import RECODEConfig
from rillet.pipelines.acting import ActorCarry
from rillet.pipelines.checkpointing import Checkpointer

CONFIG = RECODEConfig(lstm_size=8, hidden_sizes=(8,), novelty_hidden_sizes=(8,), embedding_size=4, rnd_output_size=4,
                      num_policies=10, memory_capacity=8, burn_in=1, trace_length=3, torso="mlp", cluster_capacity=64,
                      distillation=False)
ENV = "MiniGrid-Empty-5x5-v0"
NUM_ENVS = 3


def _setup():
    agent = get_agent("recode")
    env = BatchedEnv(ENV, NUM_ENVS, seed=0, max_episode_steps=5)
    spec = agent.spec(env.spec, CONFIG)
    env.close()
    params = agent.network(agent.init(jax.random.PRNGKey(0), spec, CONFIG))
    exploration = {"epsilon": np.full(NUM_ENVS, 0.5, np.float32), "policy_index": np.arange(NUM_ENVS)}
    return agent, spec, params, exploration


def _run(parts, params, actor_state, seed, ticks):
    """The steps of `ticks` ticks and the memories before each tick."""
    env = BatchedEnv(ENV, NUM_ENVS, seed=seed, max_episode_steps=5)
    memories = []

    def policy(p, obs, state, key):
        memories.append(jax.tree.map(np.array, state["memory"]))
        return parts.policy(p, obs, state, key)

    latest = {}
    steps = list(envpool_actor(env, policy, lambda: params, actor_state, seed=seed, observe=parts.observe,
                               max_ticks=ticks, on_actor_state=lambda s: latest.update(state=s)))
    env.close()
    return steps, memories, latest["state"]


def test_one_memory_for_all_environments_never_reset_and_rewards_recomputed():
    agent, spec, params, exploration = _setup()
    parts = agent.actor(spec, CONFIG, NUM_ENVS, exploration)
    steps, memories, _ = _run(parts, params, parts.actor_state, seed=1, ticks=14)
    sizes = [int(m.size) for m in memories]
    assert sizes == sorted(sizes) and sizes[-1] > 0, "atoms are only ever added (capacity not reached)"
    assert sum(int(s["is_first"].sum()) for s in steps) > NUM_ENVS, "episodes restarted during the run"
    for s, memory in zip(steps[1:], memories[1:]):
        expected, _ = cluster_reward(jax.tree.map(jax.numpy.asarray, memory),
                                     embed(params.embedding, s["observation"]), CONFIG.cluster())
        expected = np.where(s["is_first"], 0.0, np.asarray(expected))
        np.testing.assert_allclose(s["extras"]["prev_intrinsic_reward"], expected, rtol=1e-5, atol=1e-6)
    assert all(np.all(s["extras"]["prev_intrinsic_reward"][s["is_first"]] == 0) for s in steps)


def test_the_memory_survives_a_checkpoint_whole(tmp_path):
    agent, spec, params, exploration = _setup()
    parts = agent.actor(spec, CONFIG, NUM_ENVS, exploration)
    _, _, state = _run(parts, params, parts.actor_state, seed=2, ticks=10)
    ckpt = Checkpointer(str(tmp_path / "ckpt"), {"test": 1})
    ckpt.save(1, {"w": np.zeros(2, np.float32)}, {}, actor=jax.tree.map(np.array, parts.carry(state)))
    restored = ckpt.restore_actor()
    ckpt.close()
    resumed = ActorCarry(restored).start(agent.actor(spec, CONFIG, NUM_ENVS, exploration))
    saved, back = parts.carry(state)["episodic"], parts.carry(resumed)["episodic"]  # Agent57's: novelty, bandit
    for field in ("atoms", "counts", "size", "dist_mean", "steps", "key"):
        np.testing.assert_array_equal(np.asarray(back[field]), np.asarray(saved[field]))
    assert int(back["size"]) > 0
    fresh = parts.carry(agent.actor(spec, CONFIG, NUM_ENVS, exploration).actor_state)["episodic"]
    assert int(fresh["size"]) == 0  # what a resume without the carry would have started from


def test_an_unknown_novelty_or_bad_cluster_constant_is_a_config_error():
    import pytest

    from rillet.errors import ConfigError
    from rillet.learners.ngu import NGUConfig

    with pytest.raises(ConfigError, match="novelty"):
        NGUConfig(novelty="count").validate()
    with pytest.raises(ConfigError, match="count_decay"):
        NGUConfig(novelty="recode", cluster_count_decay=1.5).validate()
    assert NGUConfig(novelty="recode").cluster().capacity == 50_000
