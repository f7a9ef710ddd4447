"""The shared parts agents are composed of, each on its own: array-level sequence targets (two reward
streams, a discount per sequence) against loop references, the grouped optimiser step, named core
inputs of the recurrent network, the exploration family and the agent registry."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rillet.actors.exploration import EpsilonLadder, apex_epsilons
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError
from rillet.learners import optim, sequence_targets as st
from rillet.learners.agents import Agent, ReplayItem, agent_names, get_agent, register, unregister
from rillet.learners.networks import LinearHead
from rillet.learners.networks.recurrent import CoreInput, recurrent_network

B, T, A = 3, 6, 4
SPEC = StepSpec(ArraySpec((5,), "float32"), ArraySpec((), "int32"), num_actions=A)


def arrays(seed=0):
    rng = np.random.default_rng(seed)
    return dict(q=rng.normal(size=(B, T + 1, A)).astype(np.float32),
                actions=rng.integers(0, A, (B, T + 1)).astype(np.int32),
                r_e=rng.normal(size=(B, T)).astype(np.float32), r_i=rng.uniform(size=(B, T)).astype(np.float32),
                env_discount=(rng.uniform(size=(B, T)) > 0.15).astype(np.float32),
                mu=rng.uniform(0.2, 1.0, (B, T)).astype(np.float32),
                beta=np.array([0.0, 0.3, 1.0], np.float32), gamma=np.array([0.99, 0.9, 0.5], np.float32))


def test_mix_rewards_and_sequence_discounts_per_sequence():
    a = arrays()
    mixed = np.asarray(st.mix_rewards({"e": a["r_e"], "i": a["r_i"]}, {"e": 1.0, "i": a["beta"]}))
    np.testing.assert_allclose(mixed, a["r_e"] + a["beta"][:, None] * a["r_i"], rtol=1e-6)
    d = np.asarray(st.sequence_discounts(a["env_discount"], a["gamma"]))
    np.testing.assert_allclose(d, a["gamma"][:, None] * a["env_discount"], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(st.sequence_discounts(a["env_discount"], 0.9)), 0.9 * a["env_discount"])
    with pytest.raises(ValueError, match="same reward streams"):
        st.mix_rewards({"e": a["r_e"]}, {"e": 1.0, "i": 0.5})


def _loop_nstep(q, pi, r, d, valid, n):
    """G_t = sum_{k<m} (prod_{j<k} d_{t+j}) r_{t+k} + prod_{j<m} d_{t+j} E_pi Q(x_{t+m}), m = min(n, to the
    end of the valid part), one sequence, by loops."""
    end = int(np.argmin(valid)) if not valid.all() else len(r)
    out = np.zeros(len(r))
    for t in range(end):
        m, g, total = min(n, end - t), 0.0, 1.0
        for k in range(m):
            g += total * r[t + k]
            total *= d[t + k]
        out[t] = g + total * float(pi[t + m] @ q[t + m])
    return out


def _loop_retrace(q, pi, actions, r, d, mu, valid, lam):
    """Retrace by its backward recursion G_t = r_t + d_t (E_pi Q_{t+1} + c_{t+1} (G_{t+1} - Q(x_{t+1}, a_{t+1})))."""
    end = int(np.argmin(valid)) if not valid.all() else len(r)
    out = np.zeros(len(r))
    for t in reversed(range(end)):
        v_next = float(pi[t + 1] @ q[t + 1])
        if t + 1 < end:
            c = lam * min(1.0, pi[t + 1, actions[t + 1]] / mu[t + 1])
            v_next += c * (out[t + 1] - q[t + 1, actions[t + 1]])
        out[t] = r[t] + d[t] * v_next
    return out


@pytest.mark.parametrize("estimator", ["nstep", "retrace"])
def test_targets_with_two_reward_streams_and_a_discount_per_sequence_match_loops(estimator):
    a = arrays(1)
    valid = np.ones((B, T), bool)
    valid[2, 4:] = False  # the third sequence's episode ends after 4 transitions
    reward = st.mix_rewards({"e": a["r_e"], "i": a["r_i"]}, {"e": 1.0, "i": a["beta"]})
    discount = st.sequence_discounts(a["env_discount"], a["gamma"])
    pi = st.target_policy(jnp.asarray(a["q"]), 0.1)
    g = np.asarray(st.sequence_targets(estimator, a["q"], pi, a["actions"], reward, discount, a["mu"], valid,
                                       lambda_=0.8, n=3))
    pi, reward, discount = np.asarray(pi), np.asarray(reward), np.asarray(discount)
    for b in range(B):
        if estimator == "nstep":
            want = _loop_nstep(a["q"][b], pi[b], reward[b], discount[b], valid[b], 3)
        else:
            want = _loop_retrace(a["q"][b], pi[b], a["actions"][b], reward[b], discount[b], a["mu"][b], valid[b], 0.8)
        np.testing.assert_allclose(g[b], want, rtol=1e-5, atol=1e-5)
    assert (g[2, 4:] == 0).all()


def test_td_loss_and_priorities():
    td = jnp.array([[1.0, -3.0, 100.0], [2.0, 0.0, 0.0]])
    valid = jnp.array([[True, True, False], [True, False, False]])
    np.testing.assert_allclose(float(st.td_loss(td, valid)), ((0.5 + 4.5) / 2 + 2.0 / 1) / 2)
    np.testing.assert_allclose(float(st.td_loss(td, valid, jnp.array([1.0, 0.0]))), 2.5 / 2)
    np.testing.assert_allclose(np.asarray(st.sequence_priorities(td, valid, 0.5)), [0.5 * 3 + 0.5 * 2, 2.0])


def test_group_step_updates_each_group_with_its_own_optimiser_only():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    modules = {"a": eqx.nn.Linear(3, 2, key=k1), "b": eqx.nn.Linear(3, 2, key=k2)}
    x = jnp.ones((4, 3))

    def loss_fn(m, x):
        return jnp.sum(jax.vmap(m["a"])(x) ** 2) + jnp.sum(jax.vmap(m["b"])(x) ** 2), None

    groups = {"a": optax.sgd(0.1), "b": optax.sgd(0.0)}
    new, states, (loss, _), norms = optim.group_step(loss_fn, groups, modules, optim.init_groups(groups, modules), x)
    grads = jax.grad(lambda m: loss_fn(m, x)[0])(modules)
    np.testing.assert_allclose(np.asarray(new["a"].weight), np.asarray(modules["a"].weight - 0.1 * grads["a"].weight),
                               rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(new["b"].weight), np.asarray(modules["b"].weight))
    np.testing.assert_allclose(float(norms["b"]), float(optax.global_norm(grads["b"])), rtol=1e-6)
    assert float(loss) > 0 and set(states) == {"a", "b"}
    # Adam in one group, plain SGD in the other: each group keeps its own optimiser state.
    groups = {"a": optim.adam(1e-2, max_grad_norm=1.0), "b": optax.sgd(0.1)}
    states = optim.init_groups(groups, modules)
    _, states, _, _ = optim.group_step(loss_fn, groups, modules, states, x)
    assert int(jax.tree.leaves(states["a"][1])[0]) == 1  # Adam's step count, behind the clipping
    assert jax.tree.leaves(states["b"]) == []


def test_named_core_inputs_reach_the_core():
    inputs = (CoreInput("prev_action", A), CoreInput("policy_index", 8), CoreInput("prev_intrinsic_reward"))
    net = recurrent_network(SPEC, jax.random.PRNGKey(2), inputs=inputs, lstm_size=16, hidden_sizes=(12,),
                            heads={"q": lambda size, k: LinearHead(size, A, k), "aux": lambda size, k: LinearHead(size, 2, k)})
    assert net.core.input_size == 12 + A + 8 + 1
    obs = jnp.ones((2, 5))
    given = {"prev_action": jnp.array([1, 3]), "policy_index": jnp.array([0, 7]),
             "prev_intrinsic_reward": jnp.array([0.5, -1.0])}
    x = net.core_inputs(obs, given)
    np.testing.assert_array_equal(np.asarray(x[:, 12:12 + A]), np.eye(A)[[1, 3]])
    np.testing.assert_array_equal(np.asarray(x[:, 12 + A:12 + A + 8]), np.eye(8)[[0, 7]])
    np.testing.assert_array_equal(np.asarray(x[:, -1]), [0.5, -1.0])
    state = net.initial_state(2)
    features, heads, _ = net.step(obs, given, jnp.zeros(2, bool), state)
    assert heads["q"].shape == (2, A) and heads["aux"].shape == (2, 2) and features.shape == (2, 16)
    for name, value in (("policy_index", jnp.array([5, 7])), ("prev_intrinsic_reward", jnp.array([3.0, -1.0]))):
        changed, _, _ = net.step(obs, {**given, name: value}, jnp.zeros(2, bool), state)
        assert not np.allclose(np.asarray(changed[0]), np.asarray(features[0]))  # row 0's input changed
        np.testing.assert_allclose(np.asarray(changed[1]), np.asarray(features[1]), rtol=1e-6)
    with pytest.raises(KeyError, match="policy_index"):
        net.core_inputs(obs, {"prev_action": given["prev_action"], "prev_intrinsic_reward": given["prev_action"]})


def test_adding_a_head_leaves_the_first_heads_initialisation_unchanged():
    one = recurrent_network(SPEC, jax.random.PRNGKey(3), inputs=(), lstm_size=8, hidden_sizes=(8,),
                            heads={"q": lambda size, k: LinearHead(size, A, k)})
    two = recurrent_network(SPEC, jax.random.PRNGKey(3), inputs=(), lstm_size=8, hidden_sizes=(8,),
                            heads={"q": lambda size, k: LinearHead(size, A, k), "v": lambda size, k: LinearHead(size, 1, k)})
    np.testing.assert_array_equal(np.asarray(one.heads["q"].linear.weight), np.asarray(two.heads["q"].linear.weight))


def test_epsilon_ladder_is_the_apex_family_and_reaches_the_actors():
    ladder = EpsilonLadder(0.4, 7.0)
    np.testing.assert_array_equal(ladder.parameters(8)["epsilon"], apex_epsilons(8, 0.4, 7.0))
    with pytest.raises(ConfigError):
        EpsilonLadder(1.5, 7.0)
    from rillet.pipelines.config import ActorConfig

    agent = get_agent("dqn")
    parts = agent.actor_parts(SPEC, agent.default_config(), ActorConfig(epsilon_base=0.5, epsilon_alpha=2.0), 5)
    np.testing.assert_array_equal(parts.actor_state["epsilon"], apex_epsilons(5, 0.5, 2.0))
    assert get_agent("pac").exploration(None, ActorConfig()) is None  # PAC samples its own policy


def test_registry_lookup_and_duplicate_names():
    assert {"dqn", "r2d2", "pac"} <= set(agent_names())
    with pytest.raises(ConfigError, match="known agents"):
        get_agent("sarsa")
    dqn = get_agent("dqn")
    with pytest.raises(ConfigError, match="already registered"):
        register(dataclasses.replace(dqn))
    toy = register(dataclasses.replace(dqn, name="toy-registry"))
    assert get_agent("toy-registry") is toy
    unregister("toy-registry")
    assert "toy-registry" not in agent_names()
    with pytest.raises(ConfigError, match="length"):
        ReplayItem("sequence")
    assert isinstance(dqn, Agent) and dqn.replay_item(dqn.default_config()) == ReplayItem("transition")
