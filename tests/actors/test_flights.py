"""Flights (actors/flights.py): the pre-trained policy acts for exactly its sampled length unless the episode
ends; flights end at is_first and the new episode starts out of one; the recorded behaviour probability
is the acting policy's; both policies' states advance every tick; the fraction of steps in flights is
computable from the extras; and the actor runs in the real actor loop with a real agent's parts."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rillet.actors.envpool_env import EnvOutput
from rillet.actors.flights import FlightConfig, flight_actor, flight_fraction, flight_lengths, flight_spec
from rillet.errors import ConfigError
from rillet.learners.agents import ActorParts

OWN_ACTION, PRE_ACTION = 3, 7


def own_parts(epsilon, record_prob=True) -> ActorParts:
    """A fake agent policy: action 3; probability (t + 1) / 100 of its t-th call; counts its calls."""

    def policy(params, observation, s, key):
        b = observation.shape[0]
        extras = {"seen_epsilon": s["epsilon"]}
        if record_prob:
            extras["behaviour_prob"] = (s["t"] + 1).astype(jnp.float32) / 100
        return jnp.full(b, OWN_ACTION, jnp.int32), extras, {**s, "t": s["t"] + 1}

    b = len(epsilon)
    return ActorParts(policy, {"epsilon": jnp.asarray(epsilon, jnp.float32), "t": jnp.zeros(b, jnp.int32),
                               "prev_action": jnp.zeros(b, jnp.int32)})


def pretrained(b, record_prob=True):
    """A fake pre-trained policy: action 7, probability 0.5 + t / 1000; its "age" counts the steps since its
    episode started (reset by its observe hook), like a recurrent core's state."""

    def policy(params, observation, s, key):
        extras = {"behaviour_prob": 0.5 + s["age"].astype(jnp.float32) / 1000} if record_prob else {}
        return jnp.full(observation.shape[0], PRE_ACTION, jnp.int32), extras, {**s, "age": s["age"] + 1}

    def observe(s, out):
        return {**s, "age": jnp.where(out.first, 0, s["age"])}

    state = {"age": jnp.zeros(b, jnp.int32), "prev_action": jnp.zeros(b, jnp.int32)}
    return SimpleNamespace(parts=ActorParts(policy, state, observe), params=None)


def drive(parts: ActorParts, firsts: np.ndarray, seed: int = 0):
    """Runs `parts` over T ticks; firsts [T, B] marks episode starts (t = 0 is one). Returns the actions
    [T, B], the extras (each [T, B]) and the actor states after each tick."""
    t_max, b = firsts.shape
    state, key = parts.actor_state, jax.random.PRNGKey(seed)
    actions, extras, states = [], [], []
    for t in range(t_max):
        out = EnvOutput(np.zeros((b, 2), np.float32), np.zeros(b, np.float32), np.ones(b, np.float32), firsts[t],
                        np.zeros(b, bool), np.zeros(b, bool))
        state = parts.observe(state, out)
        key, sub = jax.random.split(key)
        action, ex, state = parts.policy(None, out.observation, state, sub)
        actions.append(np.asarray(action))
        extras.append(jax.tree.map(np.asarray, ex))
        states.append(jax.tree.map(np.asarray, state))
    return np.stack(actions), {k: np.stack([e[k] for e in extras]) for k in extras[0]}, states


def episode_starts(t_max, b, at=()):
    firsts = np.zeros((t_max, b), bool)
    firsts[0] = True
    for t, env in at:
        firsts[t, env] = True
    return firsts


def check_flights_run_their_length(actions, extras, firsts):
    """Every flight, from its first step with flight_remaining = L - 1, covers the next L steps with
    flight_remaining L-1, ..., 0, all acted by the pre-trained policy, unless an episode starts inside it.
    Returns the lengths of the completed flights."""
    in_flight, left = extras["in_flight"], extras["flight_remaining"]
    np.testing.assert_array_equal(actions, np.where(in_flight, PRE_ACTION, OWN_ACTION))
    lengths = []
    for env in range(actions.shape[1]):
        t = 0
        while t < len(actions):
            if not in_flight[t, env]:
                assert left[t, env] == 0
                t += 1
                continue
            length = left[t, env] + 1
            span = range(t, min(t + length, len(actions)))
            cut = next((u for u in span if u > t and firsts[u, env]), None)
            span = span if cut is None else range(t, cut)
            assert in_flight[span, env].all(), (env, t, length)
            np.testing.assert_array_equal(left[span, env], length - 1 - np.arange(len(span)))
            if cut is None and t + length <= len(actions):
                lengths.append(int(length))
            t = span[-1] + 1
    return lengths


def test_a_fixed_length_flight_runs_exactly_that_long():
    parts = flight_actor(own_parts([0.0, 1.0, 1.0]), pretrained(3), FlightConfig("uniform", min_length=3, max_length=3))
    actions, extras, _ = drive(parts, episode_starts(9, 3))
    np.testing.assert_array_equal(actions[:, 0], [OWN_ACTION] * 9)  # epsilon 0: never a flight
    np.testing.assert_array_equal(actions[:, 1], [PRE_ACTION] * 9)  # epsilon 1: flight after flight
    np.testing.assert_array_equal(extras["flight_remaining"][:, 1], [2, 1, 0] * 3)
    np.testing.assert_array_equal(extras["in_flight"][:, 0], [False] * 9)
    assert flight_fraction(extras["in_flight"]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("config", [FlightConfig("geometric", mean_length=4.0, max_length=30),
                                    FlightConfig("uniform", min_length=2, max_length=6),
                                    FlightConfig("zeta", zeta_exponent=1.5, max_length=12)])
def test_random_flights_run_exactly_their_sampled_length(config):
    b, t_max = 6, 120
    firsts = episode_starts(t_max, b, at=[(40, 0), (41, 1), (77, 2), (90, 5)])
    actions, extras, _ = drive(flight_actor(own_parts(np.full(b, 0.3)), pretrained(b), config), firsts, seed=4)
    lengths = check_flights_run_their_length(actions, extras, firsts)
    assert len(lengths) > 10 and min(lengths) >= config.min_length and max(lengths) <= config.max_length


def test_an_episode_start_ends_the_flight_and_the_next_episode_starts_out_of_it():
    config = FlightConfig("uniform", min_length=5, max_length=5)
    # env 0: epsilon 1, restarted at t = 2 inside its first flight; env 1: epsilon 0, never flies.
    firsts = episode_starts(8, 2, at=[(2, 0), (2, 1)])
    actions, extras, states = drive(flight_actor(own_parts([1.0, 0.0]), pretrained(2), config), firsts)
    # The flight started at t = 0 is cut at t = 2: a fresh one starts there (epsilon 1), 5 steps long.
    np.testing.assert_array_equal(extras["flight_remaining"][:, 0], [4, 3, 4, 3, 2, 1, 0, 4])
    np.testing.assert_array_equal(actions[:, 1], [OWN_ACTION] * 8)
    # Out of a flight after the start: epsilon 0 at the restart, and the state's counter reads 0.
    parts = flight_actor(own_parts([0.0]), pretrained(1), config)
    in_flight = {**parts.actor_state, "remaining": jnp.asarray([3], jnp.int32)}
    out = EnvOutput(np.zeros((1, 2), np.float32), np.zeros(1, np.float32), np.ones(1, np.float32),
                    np.ones(1, bool), np.zeros(1, bool), np.zeros(1, bool))
    observed = parts.observe(in_flight, out)
    assert int(observed["remaining"][0]) == 0
    action, ex, _ = parts.policy(None, out.observation, observed, jax.random.PRNGKey(0))
    assert int(action[0]) == OWN_ACTION and not bool(ex["in_flight"][0])


def test_both_policies_advance_every_tick_and_see_the_taken_action():
    b = 4
    firsts = episode_starts(30, b, at=[(12, 1), (20, 3)])
    parts = flight_actor(own_parts(np.full(b, 0.4)), pretrained(b), FlightConfig("geometric", mean_length=3.0))
    actions, extras, states = drive(parts, firsts, seed=1)
    age = np.zeros(b, int)
    for t, state in enumerate(states):
        age = np.where(firsts[t], 1, age + 1)  # stepped on every observation, reset at episode starts
        np.testing.assert_array_equal(state["pretrained"]["age"], age)
        np.testing.assert_array_equal(state["own"]["t"], t + 1)
        np.testing.assert_array_equal(state["pretrained"]["prev_action"], actions[t])
        np.testing.assert_array_equal(state["own"]["prev_action"], actions[t])
    assert extras["in_flight"].any() and not extras["in_flight"].all()


def test_the_recorded_behaviour_probability_is_the_acting_policys():
    b, t_max = 5, 60
    firsts = episode_starts(t_max, b, at=[(25, 2)])
    actions, extras, states = drive(flight_actor(own_parts(np.full(b, 0.35)), pretrained(b), FlightConfig(
        "uniform", min_length=1, max_length=8)), firsts, seed=2)
    t = np.arange(t_max)[:, None]
    own_prob = np.broadcast_to((t + 1) / 100, (t_max, b))  # the own policy's probability at its t-th call
    age = np.stack([s["pretrained"]["age"] for s in states]) - 1  # the pre-trained policy's age at that call
    pre_prob = 0.5 + age / 1000
    flying = extras["in_flight"]
    assert flying.any() and (~flying).any()
    np.testing.assert_allclose(extras["behaviour_prob"], np.where(flying, pre_prob, own_prob), rtol=1e-6)
    # A policy that records no probability acts deterministically: probability 1 where it acted.
    _, extras, _ = drive(flight_actor(own_parts(np.full(b, 0.35), record_prob=False), pretrained(b, False),
                                      FlightConfig("uniform", min_length=1, max_length=8)), firsts, seed=2)
    np.testing.assert_array_equal(extras["behaviour_prob"], np.ones((t_max, b), np.float32))


def test_flights_replace_the_own_epsilon_unless_kept():
    actions, extras, _ = drive(flight_actor(own_parts([0.2, 0.9]), pretrained(2), FlightConfig()), episode_starts(3, 2))
    np.testing.assert_array_equal(extras["seen_epsilon"], np.zeros((3, 2)))  # the own policy acts greedily
    parts = flight_actor(own_parts([0.2, 0.9]), pretrained(2), FlightConfig(keep_own_epsilon=True))
    np.testing.assert_allclose(drive(parts, episode_starts(3, 2))[1]["seen_epsilon"], [[0.2, 0.9]] * 3)
    np.testing.assert_allclose(parts.actor_state["epsilon"], [0.2, 0.9])
    parts = flight_actor(own_parts([0.2, 0.9], record_prob=False), pretrained(2), FlightConfig(keep_own_epsilon=True))
    with pytest.raises(ConfigError, match="records no behaviour_prob"):
        drive(parts, episode_starts(1, 2))


def test_the_fraction_of_steps_in_flights_matches_its_expectation():
    """Out of flights, a flight starts with probability epsilon and lasts E[L] steps, so the stationary
    fraction of steps in flights is epsilon E[L] / (epsilon E[L] + 1 - epsilon)."""
    eps, b, t_max = 0.2, 64, 400
    config = FlightConfig("uniform", min_length=1, max_length=5)  # E[L] = 3
    _, extras, _ = drive(flight_actor(own_parts(np.full(b, eps)), pretrained(b), config), episode_starts(t_max, b))
    expected = eps * 3 / (eps * 3 + 1 - eps)
    assert flight_fraction(extras["in_flight"][50:]) == pytest.approx(expected, abs=0.03)
    assert flight_fraction(extras["in_flight"]) == float(extras["in_flight"].mean())


def test_length_distributions():
    key = jax.random.PRNGKey(0)
    lengths = lambda config, n: np.asarray(flight_lengths(key, config, (n,)))  # noqa: E731
    geometric = lengths(FlightConfig("geometric", mean_length=5.0, max_length=10_000), 20_000)
    assert geometric.min() == 1 and geometric.mean() == pytest.approx(5.0, rel=0.05)
    assert lengths(FlightConfig("geometric", mean_length=1.0), 100).tolist() == [1] * 100
    assert lengths(FlightConfig("geometric", mean_length=50.0, max_length=8), 1000).max() == 8
    assert set(lengths(FlightConfig("uniform", min_length=2, max_length=4), 3000).tolist()) == {2, 3, 4}
    zeta = lengths(FlightConfig("zeta", zeta_exponent=2.0, max_length=4), 40_000)
    want = np.arange(1, 5) ** -2.0
    np.testing.assert_allclose(np.bincount(zeta, minlength=5)[1:] / zeta.size, want / want.sum(), atol=0.01)


@pytest.mark.parametrize("kw, match", [
    ({"distribution": "poisson"}, "distribution"), ({"mean_length": 0.5}, "mean_length"),
    ({"max_length": 0}, "max_length"), ({"min_length": 5, "max_length": 3}, "min_length"),
    ({"zeta_exponent": 0.0}, "zeta_exponent"), ({"keep_own_epsilon": 1}, "keep_own_epsilon")])
def test_bad_flight_configs_are_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        FlightConfig(**kw).validate()


def test_factory_checks():
    no_epsilon = ActorParts(lambda p, o, s, k: (o[:, 0], {}, s), None)
    with pytest.raises(ConfigError, match="pass epsilon"):
        flight_actor(no_epsilon, pretrained(2), FlightConfig())
    given = flight_actor(no_epsilon, pretrained(2), FlightConfig(), epsilon=[0.1, 0.2])
    assert given.actor_state["remaining"].shape == (2,)
    with pytest.raises(ConfigError, match="epsilon"):
        flight_actor(no_epsilon, pretrained(2), FlightConfig(), epsilon=[1.5, 0.2])
    mismatched = SimpleNamespace(parts=ActorParts(None, {"epsilon": np.zeros(3)}), params=None)
    with pytest.raises(ConfigError, match="same num_envs"):
        flight_actor(own_parts([0.1, 0.2]), mismatched, FlightConfig())


def test_in_the_actor_loop_with_a_real_agent():
    """R2D2's actors with flights of a greedy DQN network, in EnvPool: the steps carry the flight extras of
    `flight_spec`, flight steps take the DQN's greedy action, the others R2D2's greedy action (behaviour
    probability 1: its epsilon is now the flight probability), and R2D2's prev_action input is the action taken."""
    import dataclasses

    from rillet.actors.actor_loop import envpool_actor
    from rillet.actors.envpool_env import BatchedEnv
    from rillet.learners import dqn
    from rillet.learners.agents import get_agent
    from rillet.learners.r2d2 import R2D2Config
    from rillet.pipelines.config import ActorConfig

    b = 3
    env = BatchedEnv("CartPole-v1", b, seed=0, max_episode_steps=15)
    agent, cfg = get_agent("r2d2"), R2D2Config(lstm_size=8, hidden_sizes=(8,))
    spec = agent.spec(env.spec, cfg)
    own = agent.actor_parts(spec, cfg, ActorConfig(epsilon_base=0.5, epsilon_alpha=1.0), b)
    net = agent.network(agent.init(jax.random.PRNGKey(0), spec, cfg))
    dqn_net = dqn.init(jax.random.PRNGKey(1), env.spec, dataclasses.replace(dqn.DQNConfig(), hidden_sizes=(8,))).online
    frozen = SimpleNamespace(parts=get_agent("dqn").evaluator(env.spec, None, b), params=dqn_net)
    parts = flight_actor(own, frozen, FlightConfig("geometric", mean_length=4.0))
    states = []
    steps = list(envpool_actor(env, parts.policy, lambda: net, parts.actor_state, seed=0, observe=parts.observe,
                               max_ticks=40, on_actor_state=lambda s: states.append(jax.tree.map(np.asarray, s))))
    env.close()
    assert set(flight_spec(spec).extras) <= set(steps[0]["extras"])
    in_flight = np.stack([s["extras"]["in_flight"] for s in steps])
    assert in_flight.any() and (~in_flight).any()
    for step, state in zip(steps, states):
        flying = step["extras"]["in_flight"]
        greedy_dqn = np.asarray(dqn.q_values(dqn_net, step["observation"])).argmax(-1)
        np.testing.assert_array_equal(step["action"][flying], greedy_dqn[flying])
        np.testing.assert_array_equal(step["extras"]["behaviour_prob"], 1.0)
        np.testing.assert_array_equal(state["own"]["prev_action"], step["action"])
    # Off flights the action is R2D2's greedy one: replay its core over the steps from the recorded state.
    for step in steps:
        s = step["extras"]
        inputs = {"prev_action": s["prev_action"], "prev_reward": s["prev_reward"]}
        core = (s["recurrent_state_h"], s["recurrent_state_c"])
        _, heads, _ = net.step(step["observation"], inputs, step["is_first"], core)
        own_greedy = np.asarray(heads["q"]).argmax(-1)
        np.testing.assert_array_equal(step["action"][~s["in_flight"]], own_greedy[~s["in_flight"]])
