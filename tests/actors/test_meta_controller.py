"""Agent57's actors on real EnvPool MiniGrid environments: each environment's bandit picks the policy
index at its episode starts only (every arm once first), records each finished episode's return, and
its state goes through the actors' carry; the evaluator plays the bandits' best arm."""

import jax
import numpy as np

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.envpool_env import BatchedEnv
from rillet.learners.agent57 import Agent57Config
from rillet.learners.agents import get_agent
from rillet.pipelines.acting import ActorCarry

CONFIG = Agent57Config(lstm_size=8, hidden_sizes=(8,), novelty_hidden_sizes=(8,), embedding_size=4, rnd_output_size=4,
                       num_policies=10, memory_capacity=32, burn_in=1, trace_length=3)
ENV = "MiniGrid-Empty-5x5-v0"


def run_actors(num_envs=3, limit=3, ticks=14):
    agent = get_agent("agent57")
    env = BatchedEnv(ENV, num_envs, seed=2, max_episode_steps=limit)
    spec = agent.spec(env.spec, CONFIG)
    params = agent.network(agent.init(jax.random.PRNGKey(0), spec, CONFIG))
    parts = agent.actor_parts(spec, CONFIG, _actor_options(), num_envs)
    latest = {}
    steps = list(envpool_actor(env, parts.policy, lambda: params, parts.actor_state, seed=2, observe=parts.observe,
                               max_ticks=ticks, on_actor_state=lambda s: latest.update(state=s)))
    env.close()
    return agent, spec, parts, steps, latest["state"]


def _actor_options():
    from rillet.pipelines.config import ActorConfig

    return ActorConfig()


def test_arms_change_only_at_episode_starts_every_arm_first():
    _, _, parts, steps, state = run_actors()
    j = np.stack([s["extras"]["policy_index"] for s in steps])  # [T, B]
    first = np.stack([s["is_first"] for s in steps])
    assert np.all(j[1:][~first[1:]] == j[:-1][~first[1:]]), "j changes only where an episode starts"
    for b in range(j.shape[1]):
        arms = j[first[:, b], b]
        np.testing.assert_array_equal(arms, np.arange(len(arms)))  # forced pulls: arm k at episode k
    ended = np.stack([s["is_last"] for s in steps]).sum(axis=0)
    np.testing.assert_array_equal(np.asarray(state["bandit"].pulls), ended)


def test_bandit_state_goes_through_the_carry_and_the_evaluator_plays_the_best_arm():
    agent, spec, parts, _, state = run_actors()
    carried = jax.tree.map(np.array, parts.carry(state))
    carried["bandit"]["rewards"][:] = 0.0
    carried["bandit"]["rewards"][:, 0] = 1.0  # each bandit's first pull (arm 0) earned the most
    fresh = agent.actor_parts(spec, CONFIG, _actor_options(), 3)
    resumed = ActorCarry(carried).start(fresh)
    np.testing.assert_array_equal(resumed["bandit"].pulls, carried["bandit"]["pulls"])
    np.testing.assert_array_equal(resumed["memory"].dist_count, carried["episodic"]["dist_count"])
    carry = ActorCarry()
    carry.latest = carried
    evaluation = carry.evaluation_state(agent.evaluator(spec, CONFIG, 2))
    np.testing.assert_array_equal(evaluation["policy_index"], [0, 0])
    carried["bandit"]["rewards"][:, 1] = 2.0  # now arm 1's pulls earned the most
    np.testing.assert_array_equal(carry.evaluation_state(agent.evaluator(spec, CONFIG, 2))["policy_index"], [1, 1])
