"""Flights in real EnvPool episodes (CartPole cut at 7 steps, so flights of 5 are often cut by auto-resets):
every flight runs exactly its length unless an episode starts; at an episode start the flight ends and the
first step is decided afresh; the recorded behaviour probability is the acting policy's (the pre-trained
R2D2 actor's epsilon-greedy probability on flight steps, 1 for the greedy own policy otherwise)."""

from types import SimpleNamespace

import jax
import numpy as np

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.envpool_env import BatchedEnv
from rillet.actors.flights import FlightConfig, flight_actor
from rillet.learners import dqn
from rillet.learners.agents import get_agent
from rillet.learners.r2d2 import R2D2Config
from rillet.pipelines.config import ActorConfig

LENGTH, B = 5, 4


def run_flights(ticks=80):
    env = BatchedEnv("CartPole-v1", B, seed=1, max_episode_steps=7)
    own_agent, pre_agent = get_agent("dqn"), get_agent("r2d2")
    dqn_cfg, r2d2_cfg = dqn.DQNConfig(hidden_sizes=(8,)), R2D2Config(lstm_size=8, hidden_sizes=(8,))
    own = own_agent.actor_parts(env.spec, dqn_cfg, ActorConfig(epsilon_base=0.3, epsilon_alpha=0.0), B)
    pre_spec = pre_agent.spec(env.spec, r2d2_cfg)
    pre_parts = pre_agent.actor(pre_spec, r2d2_cfg, B, {"epsilon": np.full(B, 0.5, np.float32)})
    pre_net = pre_agent.network(pre_agent.init(jax.random.PRNGKey(2), pre_spec, r2d2_cfg))
    parts = flight_actor(own, SimpleNamespace(parts=pre_parts, params=pre_net),
                         FlightConfig("uniform", min_length=LENGTH, max_length=LENGTH))
    own_net = own_agent.network(own_agent.init(jax.random.PRNGKey(3), env.spec, dqn_cfg))
    steps = list(envpool_actor(env, parts.policy, lambda: own_net, parts.actor_state, seed=0, observe=parts.observe,
                               max_ticks=ticks))
    env.close()
    return steps, own_net


def test_flights_run_their_length_unless_an_episode_starts_and_restart_after_auto_reset():
    steps, _ = run_flights()
    first = np.stack([s["is_first"] for s in steps])
    flying = np.stack([s["extras"]["in_flight"] for s in steps])
    left = np.stack([s["extras"]["flight_remaining"] for s in steps])
    assert first[1:].any() and flying.any() and (~flying).any()
    cut = 0
    for t in range(1, len(steps)):
        for b in range(B):
            if first[t, b]:  # an episode start ends any flight; the step is decided afresh
                cut += int(left[t - 1, b] > 0)
                assert not flying[t, b] or left[t, b] == LENGTH - 1
            elif left[t - 1, b] > 0:  # inside a flight: it goes on, one step fewer
                assert flying[t, b] and left[t, b] == left[t - 1, b] - 1
            else:  # out of a flight: a new one starts (LENGTH - 1 left) or the own policy acts
                assert left[t, b] == (LENGTH - 1 if flying[t, b] else 0)
    assert cut > 0  # some flights were cut by auto-resets


def test_the_recorded_behaviour_probability_is_the_acting_policys():
    steps, own_net = run_flights()
    for step in steps:
        flying, prob = step["extras"]["in_flight"], step["extras"]["behaviour_prob"]
        np.testing.assert_array_equal(prob[~flying], 1.0)  # the own policy acts greedily off flights
        assert set(np.round(prob[flying], 6)) <= {0.75, 0.25}  # R2D2's epsilon 0.5 over 2 actions
        greedy = np.asarray(dqn.q_values(own_net, step["observation"])).argmax(-1)
        np.testing.assert_array_equal(step["action"][~flying], greedy[~flying])
